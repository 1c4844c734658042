package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// ErrStalled: a download's rate stayed below the stall floor for a whole
// window. The connection is dropped; the next attempt resumes from what
// arrived (containerd asks for a Range from its ingest's offset). Also an
// ErrUnreachable.
var ErrStalled = fmt.Errorf("%w: the download stalled", ErrUnreachable)

// Downloads are the limits every response body is read under: a rate cap
// shared by all downloads at once, and a stall floor. The zero value sets
// none.
type Downloads struct {
	// RateLimit caps the bytes per second of all downloads together; 0 for
	// no cap.
	RateLimit int64
	// StallBelow and StallWindow: a download that reads fewer than
	// StallBelow bytes per second over a whole StallWindow is aborted (and
	// resumed by the next attempt). 0 turns it off.
	StallBelow  int64
	StallWindow time.Duration
}

// limits is a Client's current Downloads with the limiter they share.
type limits struct {
	mu      sync.Mutex
	d       Downloads
	limiter *rate.Limiter
}

// burst is the most one read takes from the limiter: small enough that
// concurrent downloads take turns, large enough not to cost a wait per
// network read.
const burst = 32 << 10

func (l *limits) set(d Downloads) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d == l.d {
		return
	}
	l.d = d
	switch {
	case d.RateLimit <= 0:
		l.limiter = nil
	case l.limiter == nil:
		l.limiter = rate.NewLimiter(rate.Limit(d.RateLimit), burst)
	default:
		l.limiter.SetLimit(rate.Limit(d.RateLimit))
	}
}

func (l *limits) get() (Downloads, *rate.Limiter) {
	if l == nil {
		return Downloads{}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.d, l.limiter
}

// wrap puts a response's body under the limits, and has it measured for
// the link's bandwidth estimate.
func (l *limits) wrap(ctx context.Context, resp *http.Response, link *linkStats) {
	d, lim := l.get()
	if resp == nil || resp.Body == nil {
		return
	}
	b := &limitedBody{rc: resp.Body, ctx: ctx, lim: lim, link: link, received: &link.received, start: time.Now()}
	if d.StallBelow > 0 && d.StallWindow > 0 {
		b.floor = d.StallBelow * int64(d.StallWindow/time.Second)
		b.window = d.StallWindow
		b.watch = time.AfterFunc(b.window, b.check)
	}
	resp.Body = b
}

// limitedBody reads a body at the shared rate and aborts it when it
// stalls: a timer looks at the bytes read in each window and closes the
// connection under a read that gets too few (a read blocked on a silent
// connection would otherwise wait for ever).
type limitedBody struct {
	rc  io.ReadCloser
	ctx context.Context
	lim *rate.Limiter
	// link gets the body's size and time when it ends (EOF), for the
	// bandwidth estimate.
	link *linkStats
	// received counts every byte read, for the data budget.
	received *atomic.Int64
	start    time.Time
	total    int64

	mu      sync.Mutex
	floor   int64 // bytes a window must bring
	window  time.Duration
	read    int64 // bytes read in the current window
	stalled bool
	watch   *time.Timer
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.lim != nil && len(p) > burst {
		p = p[:burst]
	}
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.read += int64(n)
	stalled := b.stalled
	b.mu.Unlock()
	b.total += int64(n)
	b.received.Add(int64(n))
	if err == io.EOF && b.link != nil {
		b.link.sample(b.total, time.Since(b.start))
		b.link = nil
	}
	if stalled {
		return n, fmt.Errorf("%w: fewer than %d bytes in %s", ErrStalled, b.floor, b.window)
	}
	if n > 0 && b.lim != nil {
		if werr := b.lim.WaitN(b.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// check ends a window: too few bytes and the body is closed (the blocked
// Read returns), else a new window starts.
func (b *limitedBody) check() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.read < b.floor {
		b.stalled = true
		b.rc.Close()
		return
	}
	b.read = 0
	b.watch.Reset(b.window)
}

func (b *limitedBody) Close() error {
	b.mu.Lock()
	if b.watch != nil {
		b.watch.Stop()
	}
	b.mu.Unlock()
	return b.rc.Close()
}
