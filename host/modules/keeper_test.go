package modules

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/sdk"
)

// fakeRegistry serves content by digest and manifests by reference. The
// integration tests (cmd/pullwise TestPolicyModulesFromARegistry,
// TestSignedPolicyModules) prove the same against docker-registry; this one
// pins the keeper's rules quickly.
type fakeRegistry struct {
	mu        sync.Mutex
	manifests map[string][]byte
	blobs     map[godigest.Digest][]byte
	requests  int
}

func (f *fakeRegistry) FetchManifestAt(_ context.Context, ref string) (ocispec.Descriptor, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	b, ok := f.manifests[ref]
	if !ok {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%s: %w", ref, registry.ErrNotFound)
	}
	return ocispec.Descriptor{Digest: godigest.FromBytes(b), Size: int64(len(b))}, b, nil
}

func (f *fakeRegistry) FetchBlob(_ context.Context, ref string, d ocispec.Descriptor, max int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if d.Size > max {
		return nil, registry.ErrTooLarge
	}
	b, ok := f.blobs[d.Digest]
	if !ok {
		return nil, fmt.Errorf("%s: %w", d.Digest, registry.ErrNotFound)
	}
	return b, nil
}

func (f *fakeRegistry) Referrers(context.Context, string, godigest.Digest, string) ([]ocispec.Descriptor, error) {
	return nil, nil
}

func (f *fakeRegistry) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.requests }

// publish adds a module and returns its reference by digest.
func (f *fakeRegistry) publish(t *testing.T, wasm []byte) string {
	t.Helper()
	a, err := NewArtifact(wasm, sdk.Metadata{Name: "night", Version: "1.0.0", ABIVersion: sdk.ABIVersion})
	if err != nil {
		t.Fatal(err)
	}
	ref := "registry.local/policies/night@" + a.Manifest.Digest.String()
	f.mu.Lock()
	f.manifests[ref] = a.ManifestBody
	f.blobs[a.Layer.Digest] = wasm
	f.mu.Unlock()
	return ref
}

func newKeeper(t *testing.T, reg Registry) (*Keeper, chan struct{}) {
	t.Helper()
	arrived := make(chan struct{}, 8)
	k, err := New(context.Background(), t.TempDir(), reg, WithMaxSize(1<<20), WithOnChange(func() { arrived <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	return k, arrived
}

func waitArrival(t *testing.T, arrived chan struct{}) {
	t.Helper()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the keeper never reported")
	}
}

// TestKeeper: a module is fetched once, in the background, then served
// from the state directory with no request; a damaged copy is refused and
// fetched again; a reference without a digest, a manifest that is no
// module and a module over the size limit are refused with the reason.
func TestKeeper(t *testing.T) {
	reg := &fakeRegistry{manifests: map[string][]byte{}, blobs: map[godigest.Digest][]byte{}}
	k, arrived := newKeeper(t, reg)
	wasm := []byte("\x00asm\x01\x00\x00\x00 night")
	ref := reg.publish(t, wasm)

	if _, err := k.Get(ref); !errors.Is(err, ErrFetching) {
		t.Fatalf("first Get: %v; want ErrFetching", err)
	}
	waitArrival(t, arrived)
	got, err := k.Get(ref)
	if err != nil || string(got) != string(wasm) {
		t.Fatalf("after the fetch: %q, %v", got, err)
	}
	before := reg.count()
	for range 3 {
		if _, err := k.Get(ref); err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.count() - before; n != 0 {
		t.Errorf("a kept module cost %d registry requests", n)
	}

	// A damaged copy never runs; the keeper fetches it again.
	r, _ := ParseRef(ref)
	os.WriteFile(filepath.Join(k.path(r.Digest), moduleFile), []byte("tampered"), 0o600)
	if _, err := k.Get(ref); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a tampered module: %v", err)
	}
	waitArrival(t, arrived)
	if got, err := k.Get(ref); err != nil || string(got) != string(wasm) {
		t.Fatalf("after the fetch again: %q, %v", got, err)
	}

	for name, c := range map[string]struct {
		ref  string
		want string
	}{
		"a tag alone": {"registry.local/policies/night:1.0", "names no digest"},
		"not a ref":   {"Not A Ref", "not an OCI reference"},
	} {
		if _, err := k.Get(c.ref); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", name, err, c.want)
		}
	}

	// A manifest that is not a module, and a module over the limit: the
	// failure is reported with the attempt and the next try.
	image := `{"schemaVersion":2,"layers":[]}`
	notModule := "registry.local/policies/image@" + godigest.FromString(image).String()
	reg.manifests[notModule] = []byte(image)
	big := reg.publish(t, make([]byte, 2<<20))
	for name, c := range map[string]struct {
		ref  string
		want string
	}{
		"not a module": {notModule, "not a policy module"},
		"too large":    {big, "too large"},
	} {
		k.Get(c.ref)
		waitArrival(t, arrived)
		_, err := k.Get(c.ref)
		if !errors.Is(err, ErrFetching) || !strings.Contains(err.Error(), "attempt 1 failed") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want ErrFetching, attempt 1, %q", name, err, c.want)
		}
	}
}

// TestCollect: kept modules no reference names any more are removed; the
// ones named stay and are served without a request.
func TestCollect(t *testing.T) {
	reg := &fakeRegistry{manifests: map[string][]byte{}, blobs: map[godigest.Digest][]byte{}}
	k, arrived := newKeeper(t, reg)
	old := reg.publish(t, []byte("\x00asm\x01\x00\x00\x00 old"))
	cur := reg.publish(t, []byte("\x00asm\x01\x00\x00\x00 new"))
	for _, ref := range []string{old, cur} {
		k.Get(ref)
		waitArrival(t, arrived)
	}
	os.MkdirAll(filepath.Join(k.dir, ".fetch-123"), 0o700) // a fetch under way
	removed, err := k.Collect([]string{cur, "not a ref"})
	r, _ := ParseRef(old)
	if err != nil || len(removed) != 1 || removed[0] != r.Digest {
		t.Fatalf("removed %v, %v; want only %s", removed, err, r.Digest)
	}
	if _, err := os.Stat(k.path(r.Digest)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the unused module is still kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(k.dir, ".fetch-123")); err != nil {
		t.Fatal("a fetch's temporary directory was removed")
	}
	before := reg.count()
	if _, err := k.Get(cur); err != nil || reg.count() != before {
		t.Fatalf("the module in use: %v, %d requests", err, reg.count()-before)
	}
}
