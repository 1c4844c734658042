package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// retrying is an http.RoundTripper that retries 429 and 5xx answers and
// connection failures with exponential back-off, honouring Retry-After. It
// is the transport of every registry endpoint (Hosts), so every request,
// token fetches and the containerd pull's included, gets the same policy.
// When it gives up it returns a *GaveUpError rather than the last answer:
// containerd's client would otherwise retry a 429 or a dropped connection
// again on its own, without back-off, multiplying the load on a registry
// that asked for less.
type retrying struct {
	inner      http.RoundTripper
	maxTries   uint
	maxElapsed time.Duration
	initial    time.Duration
	maxWait    time.Duration
	// sleep is time.Sleep-like; tests replace it to keep time virtual.
	sleep func(context.Context, time.Duration) error
	// paused is shared by every endpoint of a Client: a registry that
	// answered 429 is left alone by every request until its Retry-After.
	paused *pauses
	// limits are the download rate cap and stall floor every response
	// body is read under (shared by every endpoint of a Client).
	limits *limits
	// link learns the uplink's state from every request and body.
	link *linkStats
	// down is shared by every endpoint of a Client: an endpoint that
	// refused a connection is skipped at once for a while (circuit
	// breaker), so a dead mirror costs nothing but its first refusal.
	down *downs
	// observer, if set, is told each request's outcome (WithRequestObserver).
	observer func(outcome string)
}

// DownFor is how long an endpoint that could not be connected to is
// skipped before a request tries it again.
const DownFor = 30 * time.Second

// downs are the endpoints (host:port) no connection could be made to, why,
// and until when they are skipped.
type downs struct {
	mu    sync.Mutex
	until map[string]downEntry
	now   clock // tests make it virtual
}

type downEntry struct {
	until time.Time
	err   error
}

// get is the connection error host is remembered for, or nil.
func (d *downs) get(host string) error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.until[host]
	if !ok || !d.now.read().Before(e.until) {
		return nil
	}
	return e.err
}

func (d *downs) set(host string, err error) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.until == nil {
		d.until = map[string]downEntry{}
	}
	if err == nil {
		delete(d.until, host)
		return
	}
	d.until[host] = downEntry{until: d.now.read().Add(DownFor), err: err}
}

// clock is time.Now, or a test's virtual time when set.
type clock func() time.Time

func (c clock) read() time.Time {
	if c != nil {
		return c()
	}
	return time.Now()
}

// EndpointDownError is a request not sent: its endpoint refused (or could
// not be reached for) a connection less than DownFor ago. containerd's
// resolver then tries the next endpoint (a hosts.toml mirror's registry)
// at once.
type EndpointDownError struct {
	Host string
	Err  error // the connection error the endpoint was marked down for
}

func (e *EndpointDownError) Unwrap() error { return e.Err }

func (e *EndpointDownError) Error() string {
	return fmt.Sprintf("%s skipped: %v (not tried again for %s)", e.Host, e.Err, DownFor)
}

// connectFailed reports whether err is a failure to connect at all
// (refused, no route, no such host, a dial timeout): retrying at once
// would fail the same way, and the next endpoint may answer.
func connectFailed(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return true
	case errors.As(err, &dns) && dns.IsNotFound:
		return true
	case errors.As(err, &op) && op.Op == "dial":
		return true
	}
	return false
}

// pauses are the registries (host:port) that asked for less, and until
// when.
type pauses struct {
	mu    sync.Mutex
	until map[string]time.Time
	now   clock // tests whose sleeps are virtual make it virtual too
}

// left is how long requests to host must still wait.
func (p *pauses) left(host string) time.Duration {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.until[host].Sub(p.now.read())
}

func (p *pauses) pause(host string, d time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.until == nil {
		p.until = map[string]time.Time{}
	}
	if t := p.now.read().Add(d); t.After(p.until[host]) {
		p.until[host] = t
	}
}

func (r *retrying) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	var tries uint
	b := &backoff.ExponentialBackOff{
		InitialInterval:     r.initial,
		RandomizationFactor: 0.2,
		Multiplier:          2,
		MaxInterval:         r.maxWait,
	}
	b.Reset()
	start := time.Now()
	if err := r.down.get(req.URL.Host); err != nil {
		r.observe(OutcomeEndpointDown)
		return nil, &GaveUpError{Err: &EndpointDownError{Host: req.URL.Host, Err: err}}
	}
	for {
		tries++
		// A registry that answered 429 to any request is paused for all.
		if d := r.paused.left(req.URL.Host); d > 0 {
			if err := r.sleep(ctx, min(d, r.maxWait)); err != nil {
				return nil, err
			}
		}
		attempt := req
		if tries > 1 && req.Body != nil && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			attempt = req.Clone(ctx)
			attempt.Body = body
		}
		resp, err := r.inner.RoundTrip(attempt)
		r.observe(outcomeOf(resp, err))
		r.link.contact(err)
		if err != nil && connectFailed(err) && ctx.Err() == nil {
			// Not retried: the endpoint is skipped for DownFor, and
			// containerd moves to the next one now.
			r.down.set(req.URL.Host, err)
			return nil, &GaveUpError{Tries: int(tries), Err: err}
		}
		wait, retry := r.decide(resp, err, b)
		if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
			r.paused.pause(req.URL.Host, wait)
		}
		if !retry || (req.Body != nil && req.GetBody == nil) {
			if err == nil && req.Method == http.MethodGet {
				r.limits.wrap(ctx, resp, r.link)
			}
			return resp, err
		}
		if tries >= r.maxTries || time.Since(start)+wait > r.maxElapsed {
			gaveUp := &GaveUpError{Tries: int(tries), Err: err}
			if resp != nil {
				gaveUp.Status = resp.Status
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
			}
			return nil, gaveUp
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if err := r.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// Request outcomes, as WithRequestObserver reports them: the answer's
// status class, a failure to reach the registry, or a request not sent
// because its endpoint is marked down.
const (
	Outcome2xx          = "2xx"
	Outcome3xx          = "3xx"
	Outcome4xx          = "4xx"
	Outcome5xx          = "5xx"
	OutcomeError        = "error"
	OutcomeEndpointDown = "endpoint-down"
)

func outcomeOf(resp *http.Response, err error) string {
	switch {
	case err != nil:
		return OutcomeError
	case resp.StatusCode >= 500:
		return Outcome5xx
	case resp.StatusCode >= 400:
		return Outcome4xx
	case resp.StatusCode >= 300:
		return Outcome3xx
	}
	return Outcome2xx
}

func (r *retrying) observe(outcome string) {
	if r.observer != nil {
		r.observer(outcome)
	}
}

// decide says whether to retry and after how long.
func (r *retrying) decide(resp *http.Response, err error, b *backoff.ExponentialBackOff) (time.Duration, bool) {
	if err != nil {
		var tlsErr tls.RecordHeaderError
		var certErr *tls.CertificateVerificationError
		switch {
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return 0, false
		case errors.As(err, &tlsErr), errors.As(err, &certErr):
			// Not transient: a plain-HTTP server (go-containerregistry tries
			// https first even for insecure registries) or a bad certificate.
			return 0, false
		}
		return b.NextBackOff(), true
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return 0, false
	}
	if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
		return min(d, r.maxWait), true
	}
	return b.NextBackOff(), true
}

// retryAfter parses a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// GaveUpError is a request that kept failing (429, 5xx or no connection)
// until the retries ran out. It deliberately does not unwrap: containerd's
// client retries network errors it can see; KindOf looks inside.
type GaveUpError struct {
	Tries int
	// Status is the last answer's status line, or "" when the last try got
	// no answer (then Err says why).
	Status string
	Err    error
}

func (e *GaveUpError) Error() string {
	if e.Status != "" {
		return fmt.Sprintf("%s after %d tries", e.Status, e.Tries)
	}
	return fmt.Sprintf("%v (after %d tries)", e.Err, e.Tries)
}
