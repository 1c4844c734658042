package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/containers"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/host/statedb"
	"github.com/pullwise/pullwise/internal/testing/testcache"
	"github.com/pullwise/pullwise/internal/testing/wattest"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/sdk"
)

// The counter and deferral rules, against fakes of the registry, the
// puller and the containers (real policies, real state file): fast, no
// root. The same behaviours are proved against a real containerd and
// registry in app_test.go and reconcile_test.go.

// versions names the fakes' digests in action logs.
var versions = map[imagedigest.Digest]string{}

func fakeDigest(version string) imagedigest.Digest {
	d := imagedigest.Digest("sha256:" + strings.Repeat(fmt.Sprintf("%x", len(versions)+1), 64)[:64])
	for k, v := range versions {
		if v == version {
			return k
		}
	}
	versions[d] = version
	return d
}

type fakeRegistry struct {
	mu        sync.Mutex
	tags      map[string]imagedigest.Digest // reference -> digest
	fail      error
	resolves  int
	gate      chan struct{} // when set, a resolve waits for it
	resolving chan struct{} // a resolve has started (with gate)
}

func (f *fakeRegistry) Resolve(_ context.Context, ref string, _ *registry.Resolution) (registry.Resolution, error) {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		f.resolving <- struct{}{}
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolves++
	if f.fail != nil {
		return registry.Resolution{}, f.fail
	}
	if _, d, ok := strings.Cut(ref, "@"); ok {
		return registry.Resolution{Ref: ref, Pair: imagedigest.Pair{Digest: imagedigest.Digest(d)}, ResolvedAt: time.Now()}, nil
	}
	d, ok := f.tags[ref]
	if !ok {
		return registry.Resolution{}, &registry.Error{Ref: ref, Op: "resolve", Kind: registry.ErrNotFound, Err: errors.New("no such tag")}
	}
	return registry.Resolution{Ref: ref, Pair: imagedigest.Pair{Digest: d}, ResolvedAt: time.Now()}, nil
}

func (f *fakePuller) Manifest(context.Context, registry.Resolution) (*v1.Manifest, error) {
	return &v1.Manifest{}, nil
}

func (f *fakeRegistry) ParseReference(ref string) (name.Reference, error) {
	return name.ParseReference(ref, name.Insecure)
}

func (f *fakeRegistry) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.resolves }

type fakePuller struct {
	mu      sync.Mutex
	images  map[string]pull.Result // containerd name -> image
	pulls   int
	gate    chan struct{} // when set, a pull waits for it (a slow download)
	pulling chan struct{} // a pull has started
	need    pull.Need     // what every pull needs
	free    int64         // containerd's free disk; < 0: unknown
}

func (f *fakePuller) Local(_ context.Context, n string) (pull.Result, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.images[n]
	return r, ok
}

func (f *fakePuller) Named(ctx context.Context, n string) (pull.Result, bool) { return f.Local(ctx, n) }

func (f *fakePuller) Pull(ctx context.Context, res registry.Resolution, want imagedigest.Digest, _ func(pull.Progress)) (pull.Result, error) {
	if err := registry.Verify(res, want); err != nil {
		return pull.Result{}, err
	}
	f.mu.Lock()
	f.pulls++
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		f.pulling <- struct{}{}
		<-gate
	}
	n, _ := f.Name(res.Ref, res.Pair)
	r := pull.Result{Name: n, Pair: res.Pair, Size: 1}
	f.mu.Lock()
	f.images[n] = r
	f.mu.Unlock()
	return r, nil
}

func (f *fakePuller) Name(ref string, d imagedigest.Pair) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	return r.Context().Name() + "@" + d.Top().String(), nil
}

func (f *fakePuller) Tag(_ context.Context, ref string, res pull.Result) error {
	if n := f.TagName(ref); n != "" {
		f.mu.Lock()
		f.images[n] = res
		f.mu.Unlock()
	}
	return nil
}

func (f *fakePuller) TagName(ref string) string {
	if t, err := name.NewTag(ref, name.Insecure); err == nil && !strings.Contains(ref, "@") {
		return t.Context().Name() + ":" + t.TagStr()
	}
	return ""
}

func (f *fakePuller) Alias(_ context.Context, from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[to] = f.images[from]
	return nil
}

func (f *fakePuller) Has(context.Context, imagedigest.Digest) bool { return false }
func (f *fakePuller) Need(context.Context, *v1.Manifest) pull.Need {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.need
}

func (f *fakePuller) FreeDisk(context.Context) (int64, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.free < 0 {
		return 0, "", errors.New("no disk")
	}
	return f.free, "/fake/root", nil
}
func (f *fakePuller) Size(context.Context, string) (int64, error)                  { return 1, nil }
func (f *fakePuller) Collect(context.Context, *imagestore.Store) ([]string, error) { return nil, nil }

type fakeContainer struct {
	running bool
	gen     int
	pid     uint32
	images  []string
}

type fakeContainers struct {
	mu   sync.Mutex
	apps map[string]*fakeContainer
	log  []string // "create web v1", "restart web", "replace web v2 MODE=x", ...
	pid  uint32
}

func (f *fakeContainers) StopTimeout() time.Duration { return time.Second }

func (f *fakeContainers) Probe(context.Context, string, config.Probe) error { return nil }
func (f *fakeContainers) ImageHealthcheck(context.Context, string) (*config.Healthcheck, error) {
	return nil, nil
}

func (f *fakeContainers) note(op string, s containers.Spec) {
	v := versions[imagedigest.Digest(s.Image[strings.LastIndex(s.Image, "@")+1:])]
	f.log = append(f.log, strings.TrimSpace(strings.Join(append([]string{op, nameOf(s.ID), v}, s.Env...), " ")))
}

// nameOf is the short name of the rules tests' app whose UUID is uuid.
func nameOf(uuid string) string {
	for _, n := range []string{"web", "a", "b", "first", "existing", "never", "pinned", "plain", "good", "bad"} {
		if id(n) == uuid {
			return n
		}
	}
	return uuid
}

func (f *fakeContainers) Status(_ context.Context, id string) (containers.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.apps[id]
	if !ok {
		return containers.Status{}, nil
	}
	return containers.Status{Exists: true, Running: c.running, Image: c.images[0], Images: slices.Clone(c.images), Generation: c.gen, Pid: c.pid}, nil
}

func (f *fakeContainers) Create(_ context.Context, s containers.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apps[s.ID] = &fakeContainer{gen: 1, images: s.Images()}
	f.note("create", s)
	return nil
}

func (f *fakeContainers) Start(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pid++
	f.apps[id].running, f.apps[id].pid = true, f.pid
	return nil
}

func (f *fakeContainers) Restart(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pid++
	f.apps[id].running, f.apps[id].pid = true, f.pid
	f.log = append(f.log, "restart "+nameOf(id))
	return nil
}

func (f *fakeContainers) rebuild(op string, s containers.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pid++
	gen := 1
	if c, ok := f.apps[s.ID]; ok {
		gen = c.gen + 1
	}
	f.apps[s.ID] = &fakeContainer{running: true, gen: gen, pid: f.pid, images: s.Images()}
	f.note(op, s)
	return nil
}

func (f *fakeContainers) Replace(_ context.Context, s containers.Spec) error {
	return f.rebuild("replace", s)
}
func (f *fakeContainers) Purge(_ context.Context, s containers.Spec) error {
	return f.rebuild("purge", s)
}

func (f *fakeContainers) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.apps, id)
	f.log = append(f.log, "remove "+nameOf(id))
	return nil
}

func (f *fakeContainers) Wait(ctx context.Context, _ string) (<-chan uint32, error) {
	return make(chan uint32), nil // the fakes' processes never exit on their own
}

func (f *fakeContainers) actions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

// rig is a Host over the fakes.
type rig struct {
	t     *testing.T
	ctx   context.Context
	clock shiftedClock
	h     *Host
	reg   *fakeRegistry
	pl    *fakePuller
	ct    *fakeContainers
	db    *bolt.DB
	opts  []Option // what h was made with, for a restarted host

	devMu sync.Mutex
	dev   sdk.Device // what policies are told about the device
}

func (r *rig) device() sdk.Device {
	r.devMu.Lock()
	defer r.devMu.Unlock()
	return r.dev
}

func (r *rig) setDevice(d sdk.Device) {
	r.devMu.Lock()
	defer r.devMu.Unlock()
	r.dev = d
}

const fakeRepo = "registry.test/web"

func newRig(t *testing.T) *rig { return newRigWith(t, nil) }

// newRigWith runs prepare on the state file before the Host opens it.
func newRigWith(t *testing.T, prepare func(*bolt.DB, *imagestore.Store)) (r *rig) {
	t.Helper()
	return newRigOpts(t, prepare, nil)
}

// newRigOpts is newRigWith with the policy catalog's drop-in directory.
func newRigOpts(t *testing.T, prepare func(*bolt.DB, *imagestore.Store), dropin func(*plugins.Runtime) *plugins.Dir, rtOpts ...plugins.Option) (r *rig) {
	t.Helper()
	db, err := statedb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	images, err := imagestore.New(db)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := plugins.NewRuntime(context.Background(), append([]plugins.Option{plugins.WithCacheDir(testcache.ModuleDir())}, rtOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	r = &rig{t: t, ctx: context.Background(),
		reg: &fakeRegistry{tags: map[string]imagedigest.Digest{fakeRepo + ":latest": fakeDigest("v1")}},
		pl:  &fakePuller{images: map[string]pull.Result{}, pulling: make(chan struct{}, 8), free: -1},
		ct:  &fakeContainers{apps: map[string]*fakeContainer{}}, dev: sdk.Device{Link: sdk.Link{Online: true}}}
	if prepare != nil {
		prepare(db, images)
	}
	var catalogOpts []CatalogOption
	if dropin != nil {
		catalogOpts = append(catalogOpts, WithDropIns(dropin(rt)))
	}
	r.db = db
	r.opts = []Option{WithRegistry(r.reg), WithPuller(r.pl), WithImages(images), WithContainers(r.ct),
		WithPolicies(newCatalog(t, rt, catalogOpts...)), WithGracePeriod(time.Millisecond), WithClock(r.clock.now), WithDevice(r.device)}
	r.h, err = New(context.Background(), r.db, r.opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.h.Close() })
	return r
}

func fakeApp(uuid, ref string) config.App {
	return config.App{UUID: id(uuid), DisplayName: uuid, Drives: []config.Drive{
		{Kind: config.DriveContainer, Image: &config.Image{UUID: id("img-" + uuid), Name: ref}},
		{Kind: config.DriveVolume, MountPath: "/data"},
	}}
}

func (r *rig) apply(apps ...config.App) error {
	r.t.Helper()
	return r.h.Apply(r.ctx, &config.Config{Apps: apps})
}

// TestCounterRules: each change to a running app (created on v1) and the
// container actions it must cause, exactly.
func TestCounterRules(t *testing.T) {
	refresh := func(a *config.App) { a.RefreshImage.Counter++ }
	restart := func(a *config.App) { a.Restart.Counter++ }
	purge := func(a *config.App) { a.Purge.Counter++ }
	tests := []struct {
		name         string
		moved, down  bool // the tag moved to v2; the registry is unreachable
		change       []func(*config.App)
		want         []string
		wantResolves int
		wantErr      string
	}{
		{"refresh, nothing new: no action, one check", false, false, []func(*config.App){refresh}, nil, 1, ""},
		{"refresh, tag moved: one replace on v2", true, false, []func(*config.App){refresh}, []string{"replace web v2"}, 1, ""},
		{"refresh and restart, nothing new: one restart", false, false, []func(*config.App){refresh, restart}, []string{"restart web"}, 1, ""},
		{"refresh and restart, tag moved: one replace on v2", true, false, []func(*config.App){refresh, restart}, []string{"replace web v2"}, 1, ""},
		{"refresh and purge, tag moved: one purge on v2", true, false, []func(*config.App){refresh, purge}, []string{"purge web v2"}, 1, ""},
		{"restart increased by three: one restart", false, false, []func(*config.App){restart, restart, restart}, []string{"restart web"}, 0, ""},
		{"restart, tag moved: restart, no check under always", true, false, []func(*config.App){restart}, []string{"restart web"}, 0, ""},
		{"purge, tag moved: purge on the image it runs", true, false, []func(*config.App){purge}, []string{"purge web v1"}, 0, ""},
		{"env change: replace on the same image", false, false, []func(*config.App){func(a *config.App) { a.Env = []string{"MODE=x"} }}, []string{"replace web v1 MODE=x"}, 0, ""},
		{"policy change: nothing", false, false, []func(*config.App){func(a *config.App) { a.PullPolicy = &config.PolicyRef{Name: "never"} }}, nil, 0, ""},
		{"failed refresh with restart: restart on v1 after the attempt", true, true, []func(*config.App){refresh, restart}, []string{"restart web"}, 1, "unreachable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			a := fakeApp("web", fakeRepo+":latest")
			if err := r.apply(a); err != nil {
				t.Fatal(err)
			}
			if got := r.ct.actions(); !slices.Equal(got, []string{"create web v1"}) {
				t.Fatalf("create: %q", got)
			}
			r.ct.log, r.reg.resolves = nil, 0
			if tc.moved {
				r.reg.tags[fakeRepo+":latest"] = fakeDigest("v2")
			}
			if tc.down {
				r.reg.fail = &registry.Error{Ref: fakeRepo, Op: "resolve", Kind: registry.ErrUnreachable, Err: errors.New("down")}
			}
			for _, c := range tc.change {
				c(&a)
			}
			err := r.apply(a)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if got := r.ct.actions(); !slices.Equal(got, tc.want) {
				t.Fatalf("actions %q, want %q", got, tc.want)
			}
			if got := r.reg.count(); got != tc.wantResolves {
				t.Fatalf("%d registry checks, want %d", got, tc.wantResolves)
			}
			info, _ := r.h.App(id("web"))
			if info.Counters != (Counters{Restart: a.Restart.Counter, Purge: a.Purge.Counter, RefreshImage: a.RefreshImage.Counter}) {
				t.Fatalf("counters acted upon: %+v", info.Counters)
			}
		})
	}
}

// TestEditsMergedIntoOneAction: a restart, a purge and an env change that
// arrive while a refresh downloads are one purge on the new image with the
// latest env.
func TestEditsMergedIntoOneAction(t *testing.T) {
	r := newRig(t)
	a := fakeApp("web", fakeRepo+":latest")
	if err := r.apply(a); err != nil {
		t.Fatal(err)
	}
	r.ct.log = nil
	r.reg.tags[fakeRepo+":latest"] = fakeDigest("v2")
	r.pl.gate = make(chan struct{})
	a.RefreshImage.Counter++
	if _, err := r.h.Submit(r.ctx, &config.Config{Apps: []config.App{a}}); err != nil {
		t.Fatal(err)
	}
	<-r.pl.pulling
	a.Restart.Counter++
	a.Purge.Counter++
	a.Env = []string{"MODE=latest"}
	tk, err := r.h.Submit(r.ctx, &config.Config{Apps: []config.App{a}})
	if err != nil {
		t.Fatal(err)
	}
	close(r.pl.gate)
	if err := tk.WaitAll(r.ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.ct.actions(); !slices.Equal(got, []string{"purge web v2 MODE=latest"}) {
		t.Fatalf("actions %q", got)
	}
}

// TestOneAppNeverWaitsForAnother: b's restart is carried out while a's
// download is held.
func TestOneAppNeverWaitsForAnother(t *testing.T) {
	r := newRig(t)
	r.reg.tags["registry.test/b:latest"] = fakeDigest("b1")
	a, b := fakeApp("a", fakeRepo+":latest"), fakeApp("b", "registry.test/b:latest")
	if err := r.apply(a, b); err != nil {
		t.Fatal(err)
	}
	r.ct.log = nil
	r.reg.tags[fakeRepo+":latest"] = fakeDigest("v2")
	r.pl.gate = make(chan struct{})
	defer close(r.pl.gate)
	a.RefreshImage.Counter++
	if _, err := r.h.Submit(r.ctx, &config.Config{Apps: []config.App{a, b}}); err != nil {
		t.Fatal(err)
	}
	<-r.pl.pulling
	b.Restart.Counter++
	tk, err := r.h.Submit(r.ctx, &config.Config{Apps: []config.App{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	if err := tk.Wait(ctx, id("b")); err != nil {
		t.Fatalf("b waited for a's download: %v", err)
	}
	if got := r.ct.actions(); !slices.Equal(got, []string{"restart b"}) {
		t.Fatalf("actions %q", got)
	}
}

// TestPresenceWithoutTheRegistry: an image another ImageObjectID brought
// and a pinned digest on disk start apps with the registry unreachable.
func TestPresenceWithoutTheRegistry(t *testing.T) {
	r := newRig(t)
	first := fakeApp("first", fakeRepo+":latest")
	if err := r.apply(first); err != nil {
		t.Fatal(err)
	}
	r.reg.fail, r.reg.resolves = errors.New("unreachable"), 0
	existing := fakeApp("existing", fakeRepo+":latest")
	existing.PullPolicy = &config.PolicyRef{Name: "use-existing"}
	never := fakeApp("never", fakeRepo+":latest")
	never.PullPolicy = &config.PolicyRef{Name: "never"}
	pinned := fakeApp("pinned", fakeRepo+"@"+fakeDigest("v1").String())
	if err := r.apply(first, existing, never, pinned); err != nil {
		t.Fatal(err)
	}
	if got := r.reg.count(); got != 0 {
		t.Fatalf("%d registry checks for images on disk", got)
	}
	for _, id := range []string{"existing", "never", "pinned"} {
		if info, _ := r.h.App(appID(id)); info.State != StateRunning {
			t.Fatalf("%s: %+v", id, info)
		}
	}
}

// TestActionOnOneAppReportsThatApp: another app's failure is not this
// app's outcome.
func TestActionOnOneAppReportsThatApp(t *testing.T) {
	r := newRig(t)
	good, bad := fakeApp("good", fakeRepo+":latest"), fakeApp("bad", "registry.test/missing:latest")
	tk, _ := r.h.Submit(r.ctx, &config.Config{Apps: []config.App{good, bad}})
	if err := tk.Wait(r.ctx, id("good")); err != nil {
		t.Fatalf("good: %v", err)
	}
	if err := tk.Wait(r.ctx, id("bad")); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("bad: %v", err)
	}
}

// TestStateOfTheEarlierAgent: records written by the agent before per-app
// images (no running images, a journal entry with only the operation and
// the container's generation and pid) are adopted: nothing is repeated,
// and the next actions work.
func TestStateOfTheEarlierAgent(t *testing.T) {
	a := fakeApp("web", fakeRepo+":latest")
	v1 := fakeDigest("v1")
	asked := a
	asked.Restart.Counter = 1 // the restart the earlier agent was doing when it died
	r := newRigWith(t, func(db *bolt.DB, images *imagestore.Store) {
		if err := images.Latch(imagestore.Record{ID: id("img-web"), Ref: a.Drives[0].Image.Name, Pair: imagedigest.Pair{Digest: v1}, Reason: imagestore.LatchCreate}); err != nil {
			t.Fatal(err)
		}
		st, err := openState(db)
		if err != nil {
			t.Fatal(err)
		}
		// The earlier agent's JSON: no "running"; "pending" without target or app.
		legacy := AppInfo{UUID: id("web"), DisplayName: "web", State: StateRestarting, Policy: "always", Pending: &Pending{Op: opRestart, Generation: 1, Pid: 1}}
		if err := st.save(legacy, &a); err != nil {
			t.Fatal(err)
		}
	})
	name, _ := r.pl.Name(fakeRepo+":latest", imagedigest.Pair{Digest: v1})
	r.pl.images[name] = pull.Result{Name: name, Pair: imagedigest.Pair{Digest: v1}}
	// The restart had taken effect: another process in the same generation.
	r.ct.apps[id("web")] = &fakeContainer{running: true, gen: 1, pid: 2, images: []string{name}}
	r.h.Close()
	var err error
	if r.h, err = New(context.Background(), r.db, r.opts...); err != nil {
		t.Fatal(err)
	}
	if err := r.apply(asked); err != nil {
		t.Fatal(err)
	}
	if got := r.ct.actions(); len(got) != 0 {
		t.Fatalf("the completed restart was repeated: %q", got)
	}
	info, _ := r.h.App(id("web"))
	if info.Counters.Restart != 1 || info.State != StateRunning || info.Running[id("img-web")].Digest != v1 {
		t.Fatalf("%+v", info)
	}
	r.reg.tags[fakeRepo+":latest"] = fakeDigest("v2")
	asked.RefreshImage.Counter++
	if err := r.apply(asked); err != nil {
		t.Fatal(err)
	}
	if got := r.ct.actions(); !slices.Equal(got, []string{"replace web v2"}) {
		t.Fatalf("refresh after the upgrade: %q", got)
	}
}

// TestNextCheckFloor: a module that always asks to be consulted again at
// a past time is asked again no sooner than MinNextCheck, and later and
// later while it keeps asking.
func TestNextCheckFloor(t *testing.T) {
	wat := wattest.ModuleAnswering(`{"action":"use-local","restartOnChange":false,"reason":"wat","nextCheck":"2000-01-01T00:00:00Z"}`)
	wasm := wattest.Build(t, wat, wattest.Metadata("eager"))
	r := newRigOpts(t, nil, func(rt *plugins.Runtime) *plugins.Dir {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "eager.wasm"), wasm, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := plugins.OpenDir(context.Background(), rt, dir)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
	// The image is on disk, pulled as its tag: the module's use-local holds.
	v1 := fakeDigest("v1")
	name, _ := r.pl.Name(fakeRepo+":latest", imagedigest.Pair{Digest: v1})
	r.pl.images[name] = pull.Result{Name: name, Pair: imagedigest.Pair{Digest: v1}}
	r.pl.images[r.pl.TagName(fakeRepo+":latest")] = pull.Result{Name: name, Pair: imagedigest.Pair{Digest: v1}}
	a := fakeApp("web", fakeRepo+":latest")
	a.PullPolicy = &config.PolicyRef{Name: "eager"}
	if err := r.apply(a); err != nil {
		t.Fatal(err)
	}
	var waits []time.Duration
	for i := 0; i < 4; i++ {
		info, _ := r.h.App(id("web"))
		if info.NextCheck == nil {
			t.Fatalf("no next check: %+v", info)
		}
		waits = append(waits, info.NextCheck.Sub(r.clock.now()).Round(time.Second))
		r.clock.set(time.Until(*info.NextCheck) + time.Second)
		if err := r.h.Tick(r.ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
}

// TestModuleThatCannotLoadIsTriedAgain: when an app's policy module cannot
// be had (here every load's handshake times out, as one did under fifty
// creates at once on two cores), there is no policy to ask when to try
// again: the host tries with back-off, 10 s doubling, instead of leaving
// the app failed until its configuration changes.
func TestModuleThatCannotLoadIsTriedAgain(t *testing.T) {
	r := newRigOpts(t, nil, nil, plugins.WithTimeout(time.Nanosecond))
	err := r.apply(fakeApp("web", fakeRepo+":latest"))
	if err == nil || !strings.Contains(err.Error(), "handshake") {
		t.Fatalf("%v; want the handshake's failure", err)
	}
	var waits []time.Duration
	for i := 0; i < 3; i++ {
		info, _ := r.h.App(id("web"))
		if info.NextCheck == nil || info.State != StateError {
			t.Fatalf("no retry scheduled: %+v", info)
		}
		waits = append(waits, info.NextCheck.Sub(r.clock.now()).Round(time.Second))
		r.clock.set(time.Until(*info.NextCheck) + time.Second)
		if err := r.h.Tick(r.ctx); err == nil {
			t.Fatal("the load succeeded with a 1 ns limit")
		}
	}
	if want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second}; !slices.Equal(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
}

// TestDropInNeverShadowsABuiltinUnpinned: always.wasm dropped into the
// policy directory is not the default policy; an app that pins its sha256
// uses it, and the report says which module decided.
func TestDropInNeverShadowsABuiltinUnpinned(t *testing.T) {
	wasm := wattest.Build(t, wattest.Module("", ""), wattest.Metadata("always"))
	info, err := plugins.Inspect(wasm)
	if err != nil {
		t.Fatal(err)
	}
	r := newRigOpts(t, nil, func(rt *plugins.Runtime) *plugins.Dir {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "always.wasm"), wasm, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := plugins.OpenDir(context.Background(), rt, dir)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
	plain, pinned := fakeApp("plain", fakeRepo+":latest"), fakeApp("pinned", fakeRepo+":latest")
	pinned.PullPolicy = &config.PolicyRef{Name: "always", SHA256: info.SHA256}
	if err := r.apply(plain); err != nil {
		t.Fatal(err)
	}
	if err := r.apply(plain, pinned); err != nil {
		t.Fatal(err)
	}
	p, _ := r.h.App(id("plain"))
	q, _ := r.h.App(id("pinned"))
	if p.PolicyModule == nil || p.PolicyModule.Source != "built-in" || p.Decisions[id("img-plain")].Reason == "wat" {
		t.Fatalf("the unpinned app used the drop-in: %+v %+v", p.PolicyModule, p.Decisions)
	}
	if q.PolicyModule == nil || q.PolicyModule.Source != "drop-in" || q.PolicyModule.SHA256 != info.SHA256 || q.Decisions[id("img-pinned")].Reason != "wat" {
		t.Fatalf("the pinned app did not use the drop-in: %+v %+v", q.PolicyModule, q.Decisions)
	}
}

// TestRefreshDuringAnotherEventIsNotLost: a refresh asked while an adopted
// app's boot decision checks the registry is carried out after it, with a
// check of its own, not counted as done by the boot.
func TestRefreshDuringAnotherEventIsNotLost(t *testing.T) {
	r := newRig(t)
	a := fakeApp("web", fakeRepo+":latest")
	a.PullPolicy = &config.PolicyRef{Name: "check-on-start"}
	if err := r.apply(a); err != nil {
		t.Fatal(err)
	}
	// The agent restarts: the boot decision checks (check-on-start), and
	// the registry holds that check while a refresh is asked.
	r.h.Close()
	var err error
	if r.h, err = New(context.Background(), r.db, r.opts...); err != nil {
		t.Fatal(err)
	}
	r.reg.mu.Lock()
	r.reg.resolves, r.reg.gate, r.reg.resolving = 0, make(chan struct{}), make(chan struct{}, 4)
	r.reg.mu.Unlock()
	if _, err := r.h.Submit(r.ctx, &config.Config{Apps: []config.App{a}}); err != nil {
		t.Fatal(err)
	}
	<-r.reg.resolving
	r.reg.tags[fakeRepo+":latest"] = fakeDigest("v2")
	a.RefreshImage.Counter++
	tk, err := r.h.Submit(r.ctx, &config.Config{Apps: []config.App{a}})
	if err != nil {
		t.Fatal(err)
	}
	r.reg.mu.Lock()
	gate := r.reg.gate
	r.reg.gate = nil
	r.reg.mu.Unlock()
	close(gate)
	if err := tk.Wait(r.ctx, id("web")); err != nil {
		t.Fatal(err)
	}
	if got := r.reg.count(); got != 2 {
		t.Fatalf("%d registry checks: the refresh was counted as done by the boot's check", got)
	}
	if got := r.ct.actions(); !slices.Equal(got, []string{"create web v1", "replace web v2"}) {
		t.Fatalf("actions %q", got)
	}
}

// TestDeferredRefreshIsStillARefresh: a refresh whose download the data
// budget defers until the reset is asked about as a refresh when its time
// comes, not as a tick (which `always` answers from the disk): the new
// image arrives then, without another refreshImage increase.
func TestDeferredRefreshIsStillARefresh(t *testing.T) {
	r := newRig(t)
	a := fakeApp("web", fakeRepo+":latest")
	if err := r.apply(a); err != nil {
		t.Fatal(err)
	}
	r.ct.log = nil
	resets := r.clock.now().Add(time.Hour).UTC()
	r.setDevice(sdk.Device{Link: sdk.Link{Online: true},
		Budget: &sdk.Budget{LimitBytes: 1 << 20, SpentBytes: 1 << 20, RemainingBytes: 0, Resets: resets}})
	r.reg.tags[fakeRepo+":latest"] = fakeDigest("v2")
	a.RefreshImage.Counter++
	if err := r.apply(a); err != nil {
		t.Fatal(err)
	}
	info, _ := r.h.App(id("web"))
	if got := r.ct.actions(); len(got) != 0 || r.pl.pulls != 1 {
		t.Fatalf("the exhausted budget let the refresh through: actions %q, %d pulls", got, r.pl.pulls)
	}
	if info.NextCheck == nil || !info.NextCheck.Equal(resets) || !info.RefreshDeferred {
		t.Fatalf("deferred refresh: next check %v, refreshDeferred %v; want %s, true", info.NextCheck, info.RefreshDeferred, resets)
	}
	if d := info.Decisions[id("img-web")]; d.Action != "defer" || !strings.Contains(d.Reason, "data budget") {
		t.Fatalf("last decision %+v", d)
	}
	// The budget resets; the policy's time comes.
	r.setDevice(sdk.Device{Link: sdk.Link{Online: true},
		Budget: &sdk.Budget{LimitBytes: 1 << 20, RemainingBytes: 1 << 20, Resets: resets.Add(24 * time.Hour)}})
	r.clock.set(time.Until(resets) + time.Second)
	if err := r.h.Tick(r.ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.ct.actions(); !slices.Equal(got, []string{"replace web v2"}) {
		t.Fatalf("after the reset: actions %q, want the refresh's replace on v2", got)
	}
	if info, _ := r.h.App(id("web")); info.RefreshDeferred {
		t.Fatal("still marked deferred after the refresh went through")
	}
}

// TestDiskPreflightRules: a pull that does not fit in containerd's free
// space, less what the downloads under way reserve, is refused naming the
// sizes; one that fits reserves its need until it ends; an unknown disk
// lets the pull go ahead unchecked.
func TestDiskPreflightRules(t *testing.T) {
	img := config.Image{UUID: id("img-web"), Name: fakeRepo + ":latest"}
	res := registry.Resolution{Ref: img.Name, Pair: imagedigest.Pair{Digest: fakeDigest("v1")}}
	for _, tc := range []struct {
		name           string
		need, free     int64
		reserved       int64
		wantErr        bool
		wantReservedIn int64
	}{
		{"fits", 100, 1000, 0, false, 100},
		{"exactly fits", 1000, 1000, 0, false, 1000},
		{"does not fit", 1001, 1000, 0, true, 0},
		{"does not fit beside a download under way", 600, 1000, 500, true, 500},
		{"unknown disk", 1 << 40, -1, 0, false, 0},
		{"unknown need", 0, 1000, 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.pl.need, r.pl.free = pull.Need{Download: tc.need / 3, Disk: tc.need}, tc.free
			r.h.reserved = tc.reserved
			release, err := r.h.preflight(r.ctx, img, res)
			var ns *pull.NoSpaceError
			if tc.wantErr != errors.As(err, &ns) {
				t.Fatalf("error %v, want a NoSpaceError: %v", err, tc.wantErr)
			}
			if ns != nil && (ns.Need.Disk != tc.need || ns.Free != tc.free-tc.reserved || ns.Root != "/fake/root") {
				t.Fatalf("refusal %+v", ns)
			}
			if got := r.h.reservedBytes(); got != tc.wantReservedIn {
				t.Fatalf("reserved %d while the pull runs, want %d", got, tc.wantReservedIn)
			}
			release()
			if got := r.h.reservedBytes(); got != tc.reserved {
				t.Fatalf("reserved %d after the pull, want %d", got, tc.reserved)
			}
		})
	}
}
