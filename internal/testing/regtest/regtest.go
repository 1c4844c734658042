// Package regtest gives tests real registries to talk to: go-containerregistry's
// in-process registry, and a proxy in front of any registry that counts what
// crosses it and breaks it on request (missing headers, 5xx and 429, cut
// connections, corrupted bodies).
package regtest

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// NewRegistry starts an in-process registry on loopback and returns its
// host:port. It stops when the test ends.
func NewRegistry(t testing.TB) string {
	t.Helper()
	s := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(nopLogger())))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// Fault is one injected failure: the next matching request is answered with
// Status (and Retry-After, if set) instead of reaching the registry.
type Fault struct {
	Status     int
	RetryAfter string
}

// Proxy sits in front of a registry, counting requests and blob bytes and
// injecting faults. Its fields are safe to set while it serves.
type Proxy struct {
	// Host is the proxy's host:port; use it in references.
	Host string

	target *url.URL
	rp     *httputil.ReverseProxy

	mu          sync.Mutex
	requests    []string // "METHOD path"
	blobBytes   int64
	stripDigest bool
	refuseHead  bool
	faults      []Fault
	cut         map[string]int64 // blob digest -> bytes to send before cutting
	corrupt     map[string]bool  // digest -> flip a byte of its body
	failBlob    map[string]int   // blob digest -> GETs still to answer 503
	stall       map[string]int64 // blob digest -> bytes to send before going silent
	down        bool             // drop every connection
	rate        int64            // blob bytes per second; 0 for no limit
	basic       [2]string        // username and password every request must carry, when set
}

// RequireBasic makes the proxy answer 401 (a Basic challenge) to every
// request without this username and password.
func (p *Proxy) RequireBasic(user, password string) {
	p.mu.Lock()
	p.basic = [2]string{user, password}
	p.mu.Unlock()
}

// NewProxy starts a plain-HTTP proxy in front of the registry at host:port.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, s := newProxy(target)
	s.Start()
	t.Cleanup(s.Close)
	p.Host = strings.TrimPrefix(s.URL, "http://")
	return p
}

// NewTLSProxy starts a proxy in front of the registry at host:port that
// speaks HTTPS only, with a certificate for 127.0.0.1 from a CA of its own:
// caPEM, which nothing trusts unless told to.
func NewTLSProxy(t testing.TB, target string) (p *Proxy, caPEM []byte) {
	t.Helper()
	p, s := newProxy(target)
	s.StartTLS()
	t.Cleanup(s.Close)
	p.Host = strings.TrimPrefix(s.URL, "https://")
	return p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

func newProxy(target string) (*Proxy, *httptest.Server) {
	u, _ := url.Parse("http://" + target)
	p := &Proxy{target: u, rp: httputil.NewSingleHostReverseProxy(u), cut: map[string]int64{}, corrupt: map[string]bool{}, failBlob: map[string]int{},
		stall: map[string]int64{}}
	p.rp.ModifyResponse = p.modify
	return p, httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
}

// Target is the registry (host:port) the proxy forwards to.
func (p *Proxy) Target() string { return p.target.Host }

// Reset forgets the counts.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests, p.blobBytes = nil, 0
}

// Requests returns the requests seen since the last Reset, as "METHOD path".
func (p *Proxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

// BlobBytes returns the blob body bytes sent since the last Reset.
func (p *Proxy) BlobBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blobBytes
}

// StripDigestOnHEAD makes HEAD answers lack Docker-Content-Digest, as some
// registries do.
func (p *Proxy) StripDigestOnHEAD(on bool) { p.mu.Lock(); p.stripDigest = on; p.mu.Unlock() }

// RefuseHEAD answers every manifest HEAD with 405.
func (p *Proxy) RefuseHEAD(on bool) { p.mu.Lock(); p.refuseHead = on; p.mu.Unlock() }

// Fail queues faults for the next requests, one each.
func (p *Proxy) Fail(f ...Fault) { p.mu.Lock(); p.faults = append(p.faults, f...); p.mu.Unlock() }

// CutBlob makes the next download of blob digest stop after n bytes by
// dropping the connection.
func (p *Proxy) CutBlob(digest string, n int64) { p.mu.Lock(); p.cut[digest] = n; p.mu.Unlock() }

// Down makes the proxy drop every connection at once, as an unreachable
// registry would look.
func (p *Proxy) Down(on bool) { p.mu.Lock(); p.down = on; p.mu.Unlock() }

// Throttle limits blob downloads to about bytesPerSec (0: no limit).
func (p *Proxy) Throttle(bytesPerSec int64) { p.mu.Lock(); p.rate = bytesPerSec; p.mu.Unlock() }

// StallBlob makes the next download of blob digest send n bytes, then
// nothing, without closing the connection (a link that went quiet).
func (p *Proxy) StallBlob(digest string, n int64) { p.mu.Lock(); p.stall[digest] = n; p.mu.Unlock() }

// FailBlob answers the GETs of blob digest after the next one (which may be
// cut) with 503, n times.
func (p *Proxy) FailBlob(digest string, n int) { p.mu.Lock(); p.failBlob[digest] = n; p.mu.Unlock() }

// Corrupt flips a byte in every answer for digest (blob or manifest).
func (p *Proxy) Corrupt(digest string, on bool) { p.mu.Lock(); p.corrupt[digest] = on; p.mu.Unlock() }

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	p.requests = append(p.requests, r.Method+" "+r.URL.Path)
	if p.basic[0] != "" {
		if u, pw, ok := r.BasicAuth(); !ok || u != p.basic[0] || pw != p.basic[1] {
			p.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Basic realm="regtest"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	var fault *Fault
	if len(p.faults) > 0 {
		f := p.faults[0]
		p.faults = p.faults[1:]
		fault = &f
	}
	refuse := p.refuseHead && r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/")
	digest := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	if _, cutting := p.cut[digest]; fault == nil && !cutting && r.Method == http.MethodGet && p.failBlob[digest] > 0 {
		p.failBlob[digest]--
		fault = &Fault{Status: http.StatusServiceUnavailable}
	}
	p.mu.Unlock()
	switch {
	case fault != nil:
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		http.Error(w, http.StatusText(fault.Status), fault.Status)
	case refuse:
		http.Error(w, "HEAD not allowed", http.StatusMethodNotAllowed)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

func (p *Proxy) modify(resp *http.Response) error {
	r := resp.Request
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stripDigest && r.Method == http.MethodHead {
		resp.Header.Del("Docker-Content-Digest")
	}
	digest := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	isBlob := strings.Contains(r.URL.Path, "/blobs/")
	if p.corrupt[digest] && resp.StatusCode == http.StatusOK && r.Method == http.MethodGet {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if len(body) > 0 {
			body[len(body)/2] ^= 0xff
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	if isBlob && r.Method == http.MethodGet {
		body := resp.Body
		var limit int64 = -1
		if n, ok := p.cut[digest]; ok {
			limit = n
			delete(p.cut, digest)
		}
		stallAt, stall := p.stall[digest]
		delete(p.stall, digest)
		if !stall {
			stallAt = -1
		}
		resp.Body = &countingBody{ReadCloser: body, p: p, limit: limit, stallAt: stallAt, ctx: r.Context()}
	}
	return nil
}

type countingBody struct {
	io.ReadCloser
	p       *Proxy
	limit   int64 // bytes still allowed before cutting; -1 for no cut
	stallAt int64 // bytes still sent before going silent; -1 for never
	ctx     context.Context
}

func (b *countingBody) Read(buf []byte) (int, error) {
	if b.limit == 0 {
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	if b.stallAt == 0 {
		<-b.ctx.Done() // silent, connection open, until the client gives up
		return 0, b.ctx.Err()
	}
	if b.limit > 0 && int64(len(buf)) > b.limit {
		buf = buf[:b.limit]
	}
	if b.stallAt > 0 && int64(len(buf)) > b.stallAt {
		buf = buf[:b.stallAt]
	}
	n, err := b.ReadCloser.Read(buf)
	if b.limit > 0 {
		b.limit -= int64(n)
	}
	if b.stallAt > 0 {
		b.stallAt -= int64(n)
	}
	b.p.mu.Lock()
	b.p.blobBytes += int64(n)
	rate := b.p.rate
	b.p.mu.Unlock()
	if rate > 0 && n > 0 {
		time.Sleep(time.Duration(int64(n) * int64(time.Second) / rate))
	}
	return n, err
}

// PushImage pushes img to ref.
func PushImage(t testing.TB, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// RandomImage is an image of n random layers of size bytes each.
func RandomImage(t testing.TB, size int64, n int) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// AppendRandomLayer is base with one more random layer: an image sharing
// every layer of base but one.
func AppendRandomLayer(t testing.TB, base v1.Image, size int64) v1.Image {
	t.Helper()
	l, err := random.Layer(size, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// PushIndex pushes a multi-arch index of one random image per platform
// ("linux/amd64", "linux/arm64", ...) to ref and returns the index digest
// and each platform's manifest digest.
func PushIndex(t testing.TB, ref string, platforms ...string) (v1.Hash, map[string]v1.Hash) {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	digests := map[string]v1.Hash{}
	for _, pl := range platforms {
		p, err := v1.ParsePlatform(pl)
		if err != nil {
			t.Fatal(err)
		}
		img := RandomImage(t, 1024, 1)
		d, _ := img.Digest()
		digests[pl] = d
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("pushing index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d, digests
}

// String summarises the counts, for failure messages.
func (p *Proxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%d requests %v, %d blob bytes", len(p.requests), p.requests, p.blobBytes)
}
