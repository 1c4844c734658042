package pull

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/host/statedb"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

type env struct {
	proxy  *regtest.Proxy
	reg    *registry.Client
	puller *Puller
	d      *ctrdtest.Daemon
	ctx    context.Context
}

func setup(t *testing.T) *env {
	t.Helper()
	return setupWith(t, regtest.NewRegistry(t))
}

// setupWith puts the counting proxy in front of the registry at host.
func setupWith(t *testing.T, host string) *env {
	t.Helper()
	d := ctrdtest.Start(t)
	p := regtest.NewProxy(t, host)
	reg, err := registry.New(registry.WithInsecure(p.Host))
	if err != nil {
		t.Fatal(err)
	}
	return &env{proxy: p, reg: reg, puller: newPuller(t, d.Client, reg), d: d,
		ctx: d.Context()}
}

// newPuller is New for a test: its error fails the test.
func newPuller(t testing.TB, client *containerd.Client, reg *registry.Client, opts ...Option) *Puller {
	t.Helper()
	p, err := New(client, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) pull(t *testing.T, ref, want string) (Result, error) {
	t.Helper()
	res, err := e.reg.Resolve(e.ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.puller.Pull(e.ctx, res, imagedigest.Normalize(want), nil)
}

func (e *env) unpacked(t *testing.T, name string) bool {
	t.Helper()
	img, err := e.d.Client.GetImage(e.ctx, name)
	if err != nil {
		return false
	}
	ok, err := img.IsUnpacked(e.ctx, "")
	return err == nil && ok
}

func TestPullSharedLayersOnce(t *testing.T) {
	e := setup(t)
	base := regtest.RandomImage(t, 256<<10, 4)
	regtest.PushImage(t, e.proxy.Host+"/app:v1", base)
	e.proxy.Reset()
	var reports int
	res, err := e.reg.Resolve(e.ctx, e.proxy.Host+"/app:v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := e.puller.Pull(e.ctx, res, "", func(Progress) { reports++ })
	if err != nil {
		t.Fatal(err)
	}
	first := e.proxy.BlobBytes()
	if !e.unpacked(t, r1.Name) || first < 4*256<<10 {
		t.Fatalf("first pull: unpacked=%v, %d blob bytes", e.unpacked(t, r1.Name), first)
	}
	if reports == 0 {
		t.Error("no progress reported")
	}
	// A second image sharing all but one layer downloads only that layer
	// (and its own config).
	regtest.PushImage(t, e.proxy.Host+"/app:v2", regtest.AppendRandomLayer(t, base, 300<<10))
	e.proxy.Reset()
	r2, err := e.pull(t, e.proxy.Host+"/app:v2", "")
	if err != nil {
		t.Fatal(err)
	}
	got := e.proxy.BlobBytes()
	if got < 300<<10 || got > 300<<10+16<<10 {
		t.Fatalf("second image downloaded %d blob bytes; want the one new layer (%d) plus a small config", got, 300<<10)
	}
	if !e.unpacked(t, r2.Name) || !e.unpacked(t, r1.Name) {
		t.Fatal("both images should be unpacked")
	}
}

// TestPullResumesInterruptedBlob runs against the Debian docker-registry
// server: the in-process registry understands only closed Range requests
// ("bytes=a-b"), while containerd resumes with an open one ("bytes=a-").
func TestPullResumesInterruptedBlob(t *testing.T) {
	e := setupWith(t, regtest.NewDistribution(t))
	const size = 8 << 20
	img := regtest.RandomImage(t, size, 1)
	regtest.PushImage(t, e.proxy.Host+"/big:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	e.proxy.Reset()
	e.proxy.CutBlob(ld.String(), size/2)
	_, err := e.pull(t, e.proxy.Host+"/big:v1", "")
	firstBytes := e.proxy.BlobBytes()
	if err == nil {
		// containerd may resume within the same pull; either way the total
		// must not exceed the blob plus 1 MiB.
		t.Logf("the pull survived the cut by itself (%d bytes)", firstBytes)
	} else {
		if _, err := e.pull(t, e.proxy.Host+"/big:v1", ""); err != nil {
			t.Fatalf("second pull after the cut: %v", err)
		}
	}
	total := e.proxy.BlobBytes()
	if total > size+(1<<20)+64<<10 {
		t.Fatalf("downloaded %d bytes for a %d byte blob cut at half: the rest was not resumed", total, size)
	}
}

// oneBigLayer pushes an image of one layer of size bytes to the Debian
// docker-registry (whose Range support resume needs) behind the counting
// proxy, and resolves it with a client that tries each request once (plus
// opts); the proxy's counts start after the resolution.
func oneBigLayer(t *testing.T, size int64, opts ...registry.Option) (*env, registry.Resolution, v1.Hash) {
	t.Helper()
	e := setupWith(t, regtest.NewDistribution(t))
	var err error
	if e.reg, err = registry.New(append([]registry.Option{registry.WithInsecure(e.proxy.Host), registry.WithRetry(1, time.Second, time.Millisecond, time.Millisecond)}, opts...)...); err != nil {
		t.Fatal(err)
	}
	e.puller = newPuller(t, e.d.Client, e.reg)
	img := regtest.RandomImage(t, size, 1)
	regtest.PushImage(t, e.proxy.Host+"/big:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	res, err := e.reg.Resolve(e.ctx, e.proxy.Host+"/big:v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.Reset()
	return e, res, ld
}

// TestPullResumesAcrossAttempts cuts a blob halfway and keeps the registry
// failing until the pull gives up; the next pull must fetch only the rest,
// from the partial ingest containerd kept.
func TestPullResumesAcrossAttempts(t *testing.T) {
	const size = 8 << 20
	e, res, ld := oneBigLayer(t, size)
	e.proxy.CutBlob(ld.String(), size/2)
	e.proxy.FailBlob(ld.String(), 10) // every reconnection within this pull fails
	if _, err := e.puller.Pull(e.ctx, res, "", nil); err == nil {
		t.Fatal("the first pull should fail: the registry kept failing after the cut")
	}
	first := e.proxy.BlobBytes()
	e.proxy.FailBlob(ld.String(), 0)
	// A real retry comes seconds later; give the daemon the moment it needs
	// to settle the partial ingest the failed attempt wrote.
	waitIngest(t, e, ld.String())
	e.proxy.Reset()
	r, err := e.puller.Pull(e.ctx, res, "", nil)
	if err != nil {
		t.Fatalf("second pull: %v", err)
	}
	second := e.proxy.BlobBytes()
	if rest := int64(size) - first; second > rest+1<<20+16<<10 {
		t.Fatalf("first attempt got %d bytes, the second fetched %d: more than the rest (%d) plus 1 MiB", first, second, rest)
	}
	if !e.unpacked(t, r.Name) {
		t.Fatal("not unpacked")
	}
	t.Logf("first attempt %d bytes, second %d bytes of %d", first, second, size)
}

func TestPullRejectsCorruptBlobAndKeepsPrevious(t *testing.T) {
	e := setup(t)
	good := regtest.RandomImage(t, 64<<10, 2)
	regtest.PushImage(t, e.proxy.Host+"/app:latest", good)
	r1, err := e.pull(t, e.proxy.Host+"/app:latest", "")
	if err != nil {
		t.Fatal(err)
	}
	next := regtest.RandomImage(t, 64<<10, 2)
	regtest.PushImage(t, e.proxy.Host+"/app:latest", next)
	layers, _ := next.Layers()
	ld, _ := layers[1].Digest()
	e.proxy.Corrupt(ld.String(), true)
	_, err = e.pull(t, e.proxy.Host+"/app:latest", "")
	if !errors.Is(err, registry.ErrDigestMismatch) && (err == nil || !strings.Contains(err.Error(), "digest")) {
		t.Fatalf("corrupt blob: %v; want a digest error", err)
	}
	if !e.unpacked(t, r1.Name) {
		t.Fatal("the previous image is no longer usable")
	}
	// The registry serves the right bytes again: the next pull fetches the
	// blob anew instead of committing the bytes that failed once more.
	e.proxy.Corrupt(ld.String(), false)
	e.proxy.Reset()
	if _, err := e.pull(t, e.proxy.Host+"/app:latest", ""); err != nil {
		t.Fatalf("after the registry mended the blob: %v (requests %q)", err, e.proxy.Requests())
	}
	if n := countRequests(e.proxy, "GET", ld.String()); n != 1 {
		t.Fatalf("%d GETs of the blob that failed verification; want 1 (requests %q)", n, e.proxy.Requests())
	}
}

// countRequests counts the proxy's requests of method whose path ends in
// suffix.
func countRequests(p *regtest.Proxy, method, suffix string) int {
	n := 0
	for _, r := range p.Requests() {
		if strings.HasPrefix(r, method+" ") && strings.HasSuffix(r, suffix) {
			n++
		}
	}
	return n
}

func TestPullRejectsCorruptManifestAndKeepsPrevious(t *testing.T) {
	e := setup(t)
	regtest.PushImage(t, e.proxy.Host+"/app:latest", regtest.RandomImage(t, 64<<10, 1))
	r1, err := e.pull(t, e.proxy.Host+"/app:latest", "")
	if err != nil {
		t.Fatal(err)
	}
	next := regtest.PushImage(t, e.proxy.Host+"/app:latest", regtest.RandomImage(t, 64<<10, 1))
	res, err := e.reg.Resolve(e.ctx, e.proxy.Host+"/app:latest", nil) // HEAD: the digest header is honest
	if err != nil || res.Digest.String() != next.String() {
		t.Fatalf("resolve: %+v %v", res, err)
	}
	e.proxy.Corrupt(next.String(), true) // ...but the manifest body is not
	if _, err := e.puller.Pull(e.ctx, res, "", nil); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("corrupt manifest: %v; want a digest error", err)
	}
	if _, err := e.d.Client.GetImage(e.ctx, e.proxy.Host+"/app@"+next.String()); err == nil {
		t.Fatal("an image was recorded for the corrupt manifest")
	}
	if !e.unpacked(t, r1.Name) {
		t.Fatal("the previous image is no longer usable")
	}
	e.proxy.Corrupt(next.String(), false)
	e.proxy.Reset()
	if _, err := e.puller.Pull(e.ctx, res, "", nil); err != nil {
		t.Fatalf("after the registry mended the manifest: %v (requests %q)", err, e.proxy.Requests())
	}
	if n := countRequests(e.proxy, "GET", next.String()); n != 1 {
		t.Fatalf("%d GETs of the manifest that failed verification; want 1 (requests %q)", n, e.proxy.Requests())
	}
}

func TestPullRefusesWrongPin(t *testing.T) {
	e := setup(t)
	regtest.PushImage(t, e.proxy.Host+"/app:latest", regtest.RandomImage(t, 64<<10, 1))
	e.proxy.Reset()
	_, err := e.pull(t, e.proxy.Host+"/app:latest", "sha256:"+strings.Repeat("ab", 32))
	if !errors.Is(err, registry.ErrDigestMismatch) || !strings.Contains(err.Error(), strings.Repeat("ab", 32)) {
		t.Fatalf("wrong pin: %v", err)
	}
	if e.proxy.BlobBytes() != 0 {
		t.Fatalf("a mismatched pin still downloaded %d blob bytes", e.proxy.BlobBytes())
	}
}

func TestPullIndexByIndexPin(t *testing.T) {
	e := setup(t)
	idx, per := regtest.PushIndex(t, e.proxy.Host+"/multi:latest", "linux/amd64", "linux/arm64")
	res, err := e.reg.Resolve(e.ctx, e.proxy.Host+"/multi:latest", nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.puller.Pull(e.ctx, res, imagedigest.Digest(idx.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	plat := e.reg.Platform().String()
	if r.Digest.String() != per[plat].String() || r.IndexDigest.String() != idx.String() || !e.unpacked(t, r.Name) {
		t.Fatalf("result %+v; want platform %s manifest %s", r, plat, per[plat])
	}
}

func TestCollectOnlyUnreferenced(t *testing.T) {
	e := setup(t)
	db, err := statedb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := imagestore.New(db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	regtest.PushImage(t, e.proxy.Host+"/a:1", regtest.RandomImage(t, 1024, 1))
	regtest.PushImage(t, e.proxy.Host+"/b:1", regtest.RandomImage(t, 1024, 1))
	ra, err := e.pull(t, e.proxy.Host+"/a:1", "")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := e.pull(t, e.proxy.Host+"/b:1", "")
	if err != nil {
		t.Fatal(err)
	}
	// Two ImageObjectIDs resolve to a's SHA; nothing refers to b's.
	for _, id := range []string{"img-1", "img-2"} {
		if err := store.Latch(imagestore.Record{ID: id, Ref: e.proxy.Host + "/a:1", Pair: imagedigest.Pair{Digest: ra.Digest}, Reason: imagestore.LatchCreate}); err != nil {
			t.Fatal(err)
		}
	}
	release := store.Hold(rb.Digest) // a refresh involving b is in flight
	if removed, err := e.puller.Collect(e.ctx, store); err != nil || len(removed) != 0 {
		t.Fatalf("collected %v (%v) while a refresh holds b", removed, err)
	}
	release()
	removed, err := e.puller.Collect(e.ctx, store)
	if err != nil || len(removed) != 1 || removed[0] != rb.Name {
		t.Fatalf("collected %v, %v; want only %s", removed, err, rb.Name)
	}
	if !e.unpacked(t, ra.Name) {
		t.Fatal("a referenced image was removed")
	}
}

// waitIngest waits until containerd holds a partial ingest of digest whose
// offset has stopped moving.
func waitIngest(t *testing.T, e *env, digest string) {
	t.Helper()
	var last int64 = -1
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		statuses, err := e.d.Client.ContentStore().ListStatuses(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range statuses {
			if strings.Contains(s.Ref, digest) && s.Offset > 0 {
				if s.Offset == last {
					return
				}
				last = s.Offset
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no settled partial ingest of %s", digest)
}

// TestPullTLSDecisionIsResolves: the pull reaches registries exactly as
// Resolve does (registry.Client.Hosts): an unlisted plain-HTTP registry gets
// no request at all, and a hosts.toml mirror serves every blob while the
// upstream sees none.
func TestPullTLSDecisionIsResolves(t *testing.T) {
	e := setup(t)
	ref := e.proxy.Host + "/app:v1"
	regtest.PushImage(t, ref, regtest.RandomImage(t, 256<<10, 2))
	res, err := e.reg.Resolve(e.ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}

	strict, err := registry.New(registry.WithHostsDir(""), registry.WithRetry(1, time.Second, time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.Reset()
	if _, err := newPuller(t, e.d.Client, strict).Pull(e.ctx, res, "", nil); !errors.Is(err, registry.ErrNotTLS) {
		t.Fatalf("pull from an unlisted plain-HTTP registry: %v; want ErrNotTLS", err)
	}
	if got := e.proxy.Requests(); len(got) != 0 {
		t.Fatalf("the plain-HTTP registry received %q", got)
	}

	dir := t.TempDir()
	mirror := regtest.NewProxy(t, e.proxy.Target())
	hostDir := filepath.Join(dir, strings.Replace(e.proxy.Host, ":", "_", 1)+"_")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+e.proxy.Host, "http://"+mirror.Host)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	mirrored, err := registry.New(registry.WithHostsDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.Reset()
	r, err := newPuller(t, e.d.Client, mirrored).Pull(e.ctx, res, "", nil)
	if err != nil {
		t.Fatalf("pull through the mirror: %v", err)
	}
	if len(e.proxy.Requests()) != 0 || mirror.BlobBytes() < 512<<10 {
		t.Fatalf("upstream %s; mirror %s: want every blob from the mirror", e.proxy, mirror)
	}
	if !e.unpacked(t, r.Name) {
		t.Fatal("not unpacked")
	}
}

// TestPullStallIsAbortedAndResumed: a registry that goes quiet mid-blob
// without closing the connection fails the pull once the rate stays under
// the floor for a window (it does not hang); the next pull resumes from
// what arrived.
func TestPullStallIsAbortedAndResumed(t *testing.T) {
	const size = 4 << 20
	e, res, ld := oneBigLayer(t, size, registry.WithDownloads(registry.Downloads{StallBelow: 1 << 10, StallWindow: time.Second}))
	e.proxy.StallBlob(ld.String(), 1<<20)
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	_, err := e.puller.Pull(ctx, res, "", nil)
	if !errors.Is(err, registry.ErrStalled) {
		t.Fatalf("a stalled download: %v; want ErrStalled", err)
	}
	first := e.proxy.BlobBytes()
	waitIngest(t, e, ld.String())
	e.proxy.Reset()
	if _, err := e.puller.Pull(e.ctx, res, "", nil); err != nil {
		t.Fatalf("after the stall: %v", err)
	}
	if second := e.proxy.BlobBytes(); second > size-first+256<<10+16<<10 {
		t.Fatalf("the stalled attempt got %d bytes; the next fetched %d of %d: not resumed", first, second, size)
	}
}

// TestChangedTagCostsTwoManifestRequests: the check's HEAD, the estimate's
// GET of the platform manifest (and the check's GET of the index, for a
// multi-arch tag), and nothing more: the pull starts from what was read.
func TestChangedTagCostsTwoManifestRequests(t *testing.T) {
	e := setup(t)
	manifestRequests := func() []string {
		var out []string
		for _, r := range e.proxy.Requests() {
			if strings.Contains(r, "/manifests/") {
				out = append(out, r)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		push  func(ref string)
		wantN int
	}{
		{"single-platform", func(ref string) { regtest.PushImage(t, ref, regtest.RandomImage(t, 64<<10, 2)) }, 2},
		{"multi-arch", func(ref string) {
			regtest.PushIndex(t, ref, "linux/amd64", "linux/arm64", "linux/"+e.reg.Platform().Architecture)
		}, 3},
	} {
		ref := e.proxy.Host + "/" + strings.ReplaceAll(tc.name, "-", "") + ":latest"
		tc.push(ref)
		e.proxy.Reset()
		res, err := e.reg.Resolve(e.ctx, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.puller.Manifest(e.ctx, res); err != nil {
			t.Fatalf("%s: estimate: %v", tc.name, err)
		}
		r, err := e.puller.Pull(e.ctx, res, "", nil)
		if err != nil {
			t.Fatalf("%s: pull: %v", tc.name, err)
		}
		if got := manifestRequests(); len(got) != tc.wantN {
			t.Errorf("%s: manifest requests %q; want %d", tc.name, got, tc.wantN)
		}
		if r.Digest != res.Digest || !e.unpacked(t, r.Name) {
			t.Errorf("%s: pulled %+v", tc.name, r)
		}
	}
}

// TestLinkIsMeasured: the registry client learns the uplink from its own
// traffic: a bandwidth estimate once a download of 64 KiB or more ended,
// offline while the registry cannot be reached, online again after.
func TestLinkIsMeasured(t *testing.T) {
	e := setup(t)
	var err error
	if e.reg, err = registry.New(registry.WithInsecure(e.proxy.Host), registry.WithRetry(1, time.Second, time.Millisecond, time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	e.puller = newPuller(t, e.d.Client, e.reg)
	if online, bw := e.reg.Link(); !online || bw != 0 {
		t.Fatalf("before any contact: online %v, bandwidth %d", online, bw)
	}
	ref := e.proxy.Host + "/app:v1"
	regtest.PushImage(t, ref, regtest.RandomImage(t, 512<<10, 1))
	if _, err := e.pull(t, ref, ""); err != nil {
		t.Fatal(err)
	}
	if online, bw := e.reg.Link(); !online || bw <= 0 {
		t.Fatalf("after a 512 KiB download: online %v, bandwidth %d", online, bw)
	}
	e.proxy.Down(true)
	if _, err := e.reg.Resolve(e.ctx, ref, nil); err == nil {
		t.Fatal("resolve with the registry down succeeded")
	}
	if online, _ := e.reg.Link(); online {
		t.Fatal("online while the registry drops every connection")
	}
	e.proxy.Down(false)
	if _, err := e.reg.Resolve(e.ctx, ref, nil); err != nil {
		t.Fatal(err)
	}
	if online, _ := e.reg.Link(); !online {
		t.Fatal("still offline after the registry answered")
	}
}
