package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	godigest "github.com/opencontainers/go-digest"

	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// setup starts a registry with a counting proxy in front and a client that
// reaches it over plain HTTP. waits records the retry layer's sleeps, which
// are skipped so tests take no real time.
func setup(t *testing.T, opts ...Option) (*regtest.Proxy, *Client, *[]time.Duration) {
	t.Helper()
	p := regtest.NewProxy(t, regtest.NewRegistry(t))
	c, err := New(append([]Option{WithInsecure(p.Host)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	waits := &[]time.Duration{}
	virtual := time.Now()
	c.retry.paused.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return virtual
	}
	c.retry.sleep = func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		*waits = append(*waits, d)
		virtual = virtual.Add(d)
		return nil
	}
	return p, c, waits
}

// TestNoChangeCheckCostsOneRequest runs against the in-process registry and
// against the Debian docker-registry server.
func TestNoChangeCheckCostsOneRequest(t *testing.T) {
	t.Run("in-process", func(t *testing.T) { noChangeCheck(t, regtest.NewRegistry(t)) })
	t.Run("docker-registry", func(t *testing.T) { noChangeCheck(t, regtest.NewDistribution(t)) })
}

func noChangeCheck(t *testing.T, registryHost string) {
	ctx := context.Background()
	p := regtest.NewProxy(t, registryHost)
	c, err := New(WithInsecure(p.Host))
	if err != nil {
		t.Fatal(err)
	}
	ref := p.Host + "/app:latest"
	want := regtest.PushImage(t, ref, regtest.RandomImage(t, 1<<20, 3))
	first, err := c.Resolve(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Digest.String() != want.String() || first.IndexDigest != "" {
		t.Fatalf("resolution %+v, want digest %s", first, want)
	}
	p.Reset()
	again, err := c.Resolve(ctx, ref, &first)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Requests(); len(got) != 1 || got[0] != "HEAD /v2/app/manifests/latest" {
		t.Fatalf("a no-change check made %s; want exactly one HEAD", p)
	}
	if p.BlobBytes() != 0 || again.Digest != first.Digest {
		t.Fatalf("no-change check: %s, resolution %+v", p, again)
	}

	// The tag moves: the same one request finds out.
	moved := regtest.PushImage(t, ref, regtest.RandomImage(t, 1024, 1))
	p.Reset()
	next, err := c.Resolve(ctx, ref, &first)
	if err != nil {
		t.Fatal(err)
	}
	if next.Digest.String() != moved.String() || len(p.Requests()) != 1 || p.BlobBytes() != 0 {
		t.Fatalf("moved tag: %+v, %s", next, p)
	}
}

func TestResolveWithoutDigestHeader(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []string{"header stripped", "HEAD refused"} {
		t.Run(mode, func(t *testing.T) {
			p, c, _ := setup(t)
			ref := p.Host + "/app:v1"
			want := regtest.PushImage(t, ref, regtest.RandomImage(t, 1024, 2))
			p.StripDigestOnHEAD(mode == "header stripped")
			p.RefuseHEAD(mode == "HEAD refused")
			res, err := c.Resolve(ctx, ref, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Digest.String() != want.String() {
				t.Fatalf("digest %s, want %s (the hash of the manifest)", res.Digest, want)
			}
			var sawGet bool
			for _, r := range p.Requests() {
				sawGet = sawGet || r == "GET /v2/app/manifests/v1"
			}
			if !sawGet || p.BlobBytes() != 0 {
				t.Fatalf("want a manifest GET and no blobs: %s", p)
			}
		})
	}
}

func TestResolveIndex(t *testing.T) {
	ctx := context.Background()
	p, c, _ := setup(t, WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
	ref := p.Host + "/multi:latest"
	idx, per := regtest.PushIndex(t, ref, "linux/amd64", "linux/arm64")
	res, err := c.Resolve(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest.String() != per["linux/arm64"].String() || res.IndexDigest.String() != idx.String() || res.Platform != "linux/arm64" {
		t.Fatalf("resolution %+v; want the arm64 manifest %s in index %s", res, per["linux/arm64"], idx)
	}
	// A pinned sha256 may name the index or the platform manifest, any case
	// (normalised where it enters).
	for _, pin := range []string{idx.String(), per["linux/arm64"].String(), strings.ToUpper(idx.Hex)} {
		if err := Verify(res, imagedigest.Normalize(pin)); err != nil {
			t.Errorf("Verify(%s): %v", pin, err)
		}
	}
	err = Verify(res, imagedigest.Digest(per["linux/amd64"].String()))
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), per["linux/amd64"].String()) || !strings.Contains(err.Error(), res.Digest.String()) {
		t.Fatalf("a digest of another platform: %v; want a mismatch naming both digests", err)
	}
	// Unchanged index: one request, no second GET of the index.
	p.Reset()
	if _, err := c.Resolve(ctx, ref, &res); err != nil || len(p.Requests()) != 1 {
		t.Fatalf("unchanged index: %v, %s", err, p)
	}
	// A platform the index lacks is a clear error.
	c2, err := New(WithInsecure(p.Host), WithPlatform(v1.Platform{OS: "linux", Architecture: "s390x"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Resolve(ctx, ref, nil); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no manifest for platform linux/s390x") {
		t.Fatalf("missing platform: %v", err)
	}
}

func TestRetriesHonourRetryAfter(t *testing.T) {
	ctx := context.Background()
	p, c, waits := setup(t, WithRetry(5, time.Minute, 100*time.Millisecond, 10*time.Second))
	ref := p.Host + "/app:latest"
	want := regtest.PushImage(t, ref, regtest.RandomImage(t, 1024, 1))
	p.Fail(regtest.Fault{Status: 500}, regtest.Fault{Status: 429, RetryAfter: "3"}, regtest.Fault{Status: 503})
	res, err := c.Resolve(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest.String() != want.String() {
		t.Fatalf("digest %s", res.Digest)
	}
	if len(*waits) != 3 || (*waits)[1] != 3*time.Second {
		t.Fatalf("waits %v: want three, the second the 3 s Retry-After", *waits)
	}
	// Retries give up after the configured tries with the registry's error.
	p.Fail(regtest.Fault{Status: 503}, regtest.Fault{Status: 503}, regtest.Fault{Status: 503}, regtest.Fault{Status: 503}, regtest.Fault{Status: 503})
	if _, err := c.Resolve(ctx, p.Host+"/app:latest", nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("after 5 failures: %v", err)
	}
}

func TestDistinctErrors(t *testing.T) {
	ctx := context.Background()
	p, c, _ := setup(t, WithRetry(2, time.Second, time.Millisecond, time.Millisecond))
	regtest.PushImage(t, p.Host+"/app:latest", regtest.RandomImage(t, 1024, 1))

	// An unreachable registry: a port nothing listens on.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()

	// A registry that wants credentials nobody configured.
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
	}))
	defer auth.Close()
	authHost := strings.TrimPrefix(auth.URL, "http://")
	c2, err := New(WithInsecure(dead, authHost), WithRetry(2, time.Second, time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		c    *Client
		ref  string
		want error
	}{
		{c, p.Host + "/app:nope", ErrNotFound},
		{c, p.Host + "/nothing/here:latest", ErrNotFound},
		{c2, dead + "/app:latest", ErrUnreachable},
		{c2, authHost + "/app:latest", ErrUnauthorized},
	}
	for _, tc := range tests {
		_, err := tc.c.Resolve(ctx, tc.ref, nil)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.ref) {
			t.Errorf("%s: %v; want %v naming the reference", tc.ref, err, tc.want)
		}
	}
	if _, err := c.Resolve(ctx, "Not A Reference!", nil); err == nil || !strings.Contains(err.Error(), "invalid image reference") {
		t.Errorf("bad reference: %v", err)
	}
}

// staticKeychain hands every registry the same credentials.
type staticKeychain struct{}

func (staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: "device", Password: "s3cret"}, nil
}

// TestNoPlainHTTPUnlessListed: an unlisted registry is reached over HTTPS
// only, loopback included; a plain-HTTP registry then sees no request at
// all (so no credentials), the error says so and how to fix it, and a
// listed one is reached over plain HTTP only.
func TestNoPlainHTTPUnlessListed(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var seen []string
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" Authorization="+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer fake.Close()
	host := strings.TrimPrefix(fake.URL, "http://")
	ref := host + "/x/y:latest"

	c, err := New(WithKeychain(staticKeychain{}), WithHostsDir(""), WithRetry(2, time.Second, time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Resolve(ctx, ref, nil)
	if !errors.Is(err, ErrNotTLS) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("unlisted plain-HTTP registry: %v; want ErrNotTLS", err)
	}
	if h := Hint(err, "list it in device.insecureRegistries"); !strings.Contains(h, "insecureRegistries") {
		t.Errorf("hint %q does not name the fix", h)
	}
	mu.Lock()
	if len(seen) != 0 {
		t.Fatalf("the plain-HTTP registry received %q: nothing may be sent in clear", seen)
	}
	mu.Unlock()
	for _, h := range []string{host, "127.0.0.1:5000", "localhost:5000", "10.1.2.3:5000", "172.16.0.9", "192.168.1.20:443", "registry.example"} {
		hosts, err := c.Hosts(h)
		if err != nil || len(hosts) != 1 || hosts[0].Scheme != "https" {
			t.Errorf("%s: %+v %v; want one https endpoint", h, hosts, err)
		}
	}

	// Listed: plain HTTP, and the credentials with it (the operator's choice).
	listed, err := New(WithKeychain(staticKeychain{}), WithHostsDir(""), WithInsecure(host))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listed.Resolve(ctx, ref, nil); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("listed registry: %v; want its 401", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || !strings.HasPrefix(seen[0], "HEAD /v2/x/y/manifests/latest") {
		t.Fatalf("listed registry saw %q", seen)
	}
	// A configuration change reaches a running client.
	listed.Reconfigure(nil, "")
	if hosts, _ := listed.Hosts(host); hosts[0].Scheme != "https" {
		t.Fatalf("after the insecure list was emptied: %s", hosts[0].Scheme)
	}
}

// TestHostsDir: containerd's certs.d layout, read while the client runs: a
// registry with a CA of its own is refused until its ca.crt is in place; a
// mirror that is down falls back to the upstream; a mirror that is up
// answers everything.
func TestHostsDir(t *testing.T) {
	ctx := context.Background()
	backend := regtest.NewRegistry(t)
	tlsProxy, caPEM := regtest.NewTLSProxy(t, backend)
	dir := t.TempDir()
	c, err := New(WithHostsDir(dir), WithRetry(1, time.Second, time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}

	plain := regtest.NewProxy(t, backend)
	want := regtest.PushImage(t, plain.Host+"/app:latest", regtest.RandomImage(t, 1024, 1))

	ref := tlsProxy.Host + "/app:latest"
	_, err = c.Resolve(ctx, ref, nil)
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(Hint(err, ""), "ca.crt") {
		t.Fatalf("self-signed registry without its CA: %v; want ErrUntrusted and a hint naming ca.crt", err)
	}
	hostDir := filepath.Join(dir, strings.Replace(tlsProxy.Host, ":", "_", 1)+"_")
	writeFile(t, filepath.Join(hostDir, "ca.crt"), string(caPEM))
	if res, err := c.Resolve(ctx, ref, nil); err != nil || res.Digest.String() != want.String() {
		t.Fatalf("with ca.crt in %s: %+v %v", hostDir, res, err)
	}

	// Mirrors in hosts.toml, tried in order, the upstream last.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	mirror := regtest.NewProxy(t, backend)
	upstream := regtest.NewProxy(t, backend)
	upDir := filepath.Join(dir, strings.Replace(upstream.Host, ":", "_", 1)+"_")
	hostsToml := func(mirrors ...string) {
		s := fmt.Sprintf("server = %q\n", "http://"+upstream.Host)
		for _, m := range mirrors {
			s += fmt.Sprintf("[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+m)
		}
		writeFile(t, filepath.Join(upDir, "hosts.toml"), s)
	}
	upRef := upstream.Host + "/app:latest"

	hostsToml(dead)
	if res, err := c.Resolve(ctx, upRef, nil); err != nil || res.Digest.String() != want.String() {
		t.Fatalf("mirror down: %+v %v; want the upstream's answer", res, err)
	}
	if len(upstream.Requests()) == 0 {
		t.Fatal("mirror down: the upstream was not asked")
	}

	// Edited while running: the mirror that is up answers, the upstream
	// sees nothing.
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	hostsToml(mirror.Host)
	upstream.Reset()
	res, err := c.Resolve(ctx, upRef, nil)
	if err != nil || res.Digest.String() != want.String() {
		t.Fatalf("mirror up: %+v %v", res, err)
	}
	if m, err := c.Manifest(ctx, res); err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest through the mirror: %v", err)
	}
	if len(upstream.Requests()) != 0 || len(mirror.Requests()) != 2 {
		t.Fatalf("mirror up: upstream %s, mirror %s; want the mirror's HEAD and GET only", upstream, mirror)
	}
}

// TestDeadMirrorCostsNothing: a hosts.toml mirror whose port is closed is
// not retried with back-off (that cost 7.5 s on every request): the
// request moves to the next endpoint at once, and the mirror is skipped
// until DownFor has passed.
func TestDeadMirrorCostsNothing(t *testing.T) {
	ctx := context.Background()
	backend := regtest.NewRegistry(t)
	dir := t.TempDir()
	c, err := New(WithHostsDir(dir)) // the default retries: 5 tries with back-off
	if err != nil {
		t.Fatal(err)
	}
	var slept time.Duration
	c.retry.sleep = func(_ context.Context, d time.Duration) error { slept += d; return nil }
	now := time.Now()
	c.retry.down.now = func() time.Time { return now }

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	upstream := regtest.NewProxy(t, backend)
	want := regtest.PushImage(t, upstream.Host+"/app:latest", regtest.RandomImage(t, 1024, 1))
	upDir := filepath.Join(dir, strings.Replace(upstream.Host, ":", "_", 1)+"_")
	writeFile(t, filepath.Join(upDir, "hosts.toml"), fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
		"http://"+upstream.Host, "http://"+dead))
	for i := range 3 {
		res, err := c.Resolve(ctx, upstream.Host+"/app:latest", nil)
		if err != nil || res.Digest.String() != want.String() {
			t.Fatalf("resolve %d: %+v %v", i, res, err)
		}
	}
	if slept != 0 {
		t.Fatalf("a refused connection was retried with back-off: %s slept", slept)
	}
	if c.retry.down.get(dead) == nil {
		t.Fatal("the dead mirror is not remembered as down")
	}
	now = now.Add(DownFor)
	if c.retry.down.get(dead) != nil {
		t.Fatal("the dead mirror is still skipped after DownFor")
	}

	// The only endpoint refusing: the error says unreachable, at once.
	_, err = c.Resolve(ctx, dead+"/app:latest", nil)
	if !errors.Is(err, ErrUnreachable) || slept != 0 {
		t.Fatalf("a registry refusing connections: %v (slept %s); want ErrUnreachable at once", err, slept)
	}
	if _, err := c.Resolve(ctx, dead+"/app:latest", nil); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "skipped") {
		t.Fatalf("asked again at once: %v; want it skipped as down, still ErrUnreachable", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	for v, want := range map[string]time.Duration{"0": 0, "7": 7 * time.Second} {
		if d, ok := retryAfter(v); !ok || d != want {
			t.Errorf("%q: %v %v", v, d, ok)
		}
	}
	if d, ok := retryAfter(time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)); !ok || d < 59*time.Minute {
		t.Errorf("HTTP date: %v %v", d, ok)
	}
	if _, ok := retryAfter("soon"); ok {
		t.Error("garbage accepted")
	}
}

// TestTooManyRequestsPausesTheRegistry: a 429 with Retry-After on one
// repository's request pauses every request to that registry, other
// repositories' included, until the time the registry asked for.
func TestTooManyRequestsPausesTheRegistry(t *testing.T) {
	ctx := context.Background()
	p, c, waits := setup(t, WithRetry(1, time.Minute, 100*time.Millisecond, 10*time.Second))
	regtest.PushImage(t, p.Host+"/a:latest", regtest.RandomImage(t, 1024, 1))
	regtest.PushImage(t, p.Host+"/b:latest", regtest.RandomImage(t, 1024, 1))
	p.Reset()
	p.Fail(regtest.Fault{Status: 429, RetryAfter: "4"})
	if _, err := c.Resolve(ctx, p.Host+"/a:latest", nil); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("a: %v; want its 429 (one try)", err)
	}
	if len(*waits) != 0 {
		t.Fatalf("waits before b: %v", *waits)
	}
	if _, err := c.Resolve(ctx, p.Host+"/b:latest", nil); err != nil {
		t.Fatal(err)
	}
	if len(*waits) != 1 || (*waits)[0] < 3*time.Second || (*waits)[0] > 4*time.Second {
		t.Fatalf("b waited %v; want the rest of a's 4 s Retry-After before its request", *waits)
	}
	if got := p.Requests(); len(got) != 2 || got[1] != "HEAD /v2/b/manifests/latest" {
		t.Fatalf("requests %q", got)
	}
}

// TestDownloadLimitsFollowTheConfiguration: the rate cap is one token
// bucket for every download of the client, changed in place (downloads in
// progress follow the new rate), and removed when the cap is.
func TestDownloadLimitsFollowTheConfiguration(t *testing.T) {
	c, err := New(WithDownloads(Downloads{RateLimit: 4 << 20}))
	if err != nil {
		t.Fatal(err)
	}
	_, lim := c.retry.limits.get()
	if lim == nil || lim.Limit() != 4<<20 || lim.Burst() != burst {
		t.Fatalf("limiter %+v", lim)
	}
	c.SetDownloads(Downloads{RateLimit: 1 << 20, StallBelow: 1024, StallWindow: time.Minute})
	d, lim2 := c.retry.limits.get()
	if lim2 != lim || lim.Limit() != 1<<20 || d.StallBelow != 1024 {
		t.Fatalf("after the change: %+v %+v (same bucket: %v)", d, lim2, lim2 == lim)
	}
	c.SetDownloads(Downloads{})
	if _, lim := c.retry.limits.get(); lim != nil {
		t.Fatal("the cap was removed but a limiter remains")
	}
}

// TestErrorsNameTheCause: a hostile registry's answers are reported by what
// happened, each with a hint that fits, never as "not found" when the tag
// exists.
func TestErrorsNameTheCause(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
		kind  error
		hint  string
	}{
		{"manifest over the size limit", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", godigest.FromBytes(manifest).String())
			w.Header().Set("Content-Length", "5000000")
			if r.Method == http.MethodGet {
				w.Write(bytes.Repeat([]byte(" "), 5000000))
			}
		}, ErrTooLarge, "larger than any image manifest"},
		{"manifest served as text/html", func(w http.ResponseWriter, r *http.Request) {
			page := []byte("<html><body>Please log in to the hotel's Wi-Fi</body></html>")
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(page)))
			w.Write(page)
		}, ErrNotManifest, "a web page"},
		{"tag missing", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
		}, ErrNotFound, "repository and tag names"},
		{"credentials refused", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, `{"errors":[{"code":"DENIED"}]}`, http.StatusForbidden)
		}, ErrUnauthorized, "docker login"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return
				}
				tc.serve(w, r)
			}))
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			c, err := New(WithInsecure(host), WithRetry(1, time.Second, time.Millisecond, time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Resolve(context.Background(), host+"/app:latest", nil)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("%v; want %v", err, tc.kind)
			}
			for _, other := range []error{ErrNotFound, ErrTooLarge, ErrNotManifest, ErrUnauthorized} {
				if other != tc.kind && errors.Is(err, other) {
					t.Fatalf("%v is also %v", err, other)
				}
			}
			if h := Hint(err, "--insecure"); !strings.Contains(h, tc.hint) {
				t.Fatalf("hint %q; want it to mention %q", h, tc.hint)
			}
		})
	}
}

// TestOptionsRefuse: an option given a value that cannot work makes New
// fail, naming the option.
func TestOptionsRefuse(t *testing.T) {
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithInsecure("ok:5000", ""), "WithInsecure: an empty registry name"},
		{WithTimeout(0), "WithTimeout: 0s"},
		{WithRetry(0, time.Second, time.Millisecond, time.Second), "WithRetry: 0 tries"},
		{WithRetry(3, time.Second, time.Second, time.Millisecond), "WithRetry"},
		{WithPlatform(v1.Platform{OS: "linux"}), "WithPlatform"},
		{WithKeychain(nil), "WithKeychain: nil"},
		{WithDownloads(Downloads{RateLimit: -1}), "WithDownloads: rate limit -1 is negative"},
	} {
		if c, err := New(tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, %v; want an error naming %q", c, err, tc.want)
		}
	}
}
