package app

import (
	"context"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/containers"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/host/statedb"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
	"github.com/pullwise/pullwise/internal/testing/testcache"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/plugins/policybuild"
	"github.com/pullwise/pullwise/sdk"
)

// world is one device: a private containerd, a registry behind a counting
// proxy, and a Host with real stores, policies and containers.
type world struct {
	t      testing.TB
	ctx    context.Context
	proxy  *regtest.Proxy
	d      *ctrdtest.Daemon
	dir    string
	db     *bolt.DB
	images *imagestore.Store
	host   *Host
	cm     *containers.Manager
	opts   []Option
}

func newWorld(t *testing.T) *world { return newBenchWorld(t) }

// newBenchWorld is newWorld for tests and benchmarks alike.
func newBenchWorld(t testing.TB) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir()}
	w.d = ctrdtest.Start(t)
	w.ctx = w.d.Context()
	w.proxy = regtest.NewProxy(t, regtest.NewRegistry(t))
	reg, err := registry.New(registry.WithInsecure(w.proxy.Host), registry.WithRetry(2, time.Second, time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if w.db, err = statedb.Open(w.dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.db.Close() })
	if w.images, err = imagestore.New(w.db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.images.Close() })
	rt, err := plugins.NewRuntime(context.Background(), plugins.WithCacheDir(testcache.ModuleDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	w.cm = containers.New(w.d.Client, w.dir)
	puller, err := pull.New(w.d.Client, reg)
	if err != nil {
		t.Fatal(err)
	}
	w.opts = []Option{WithRegistry(reg), WithPuller(puller), WithImages(w.images), WithContainers(w.cm),
		WithPolicies(newCatalog(t, rt)), WithGracePeriod(1500 * time.Millisecond)}
	w.start()
	return w
}

// start (re)starts the host on the same state, as an agent restart would.
func (w *world) start() {
	w.t.Helper()
	if w.host != nil {
		w.host.Close()
	}
	h, err := New(w.ctx, w.db, w.opts...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.host = h
	w.t.Cleanup(func() { h.Close() })
}

// push builds the test app at version and pushes it to repo:tag.
func (w *world) push(repoTag, version string, failFast bool) string {
	w.t.Helper()
	return regtest.PushImage(w.t, w.proxy.Host+"/"+repoTag, regtest.AppImage(w.t, version, failFast)).String()
}

// newCatalog is NewCatalog for a test: its error fails the test.
func newCatalog(t testing.TB, rt *plugins.Runtime, opts ...CatalogOption) *Catalog {
	t.Helper()
	c, err := NewCatalog(rt, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// appID is id, for where a loop variable named id hides it.
func appID(name string) string { return id(name) }

// id is the UUID a test's short app or image name stands for (the
// configuration accepts UUIDs only); a UUID is returned as it is.
func id(name string) string {
	if len(name) == 36 && strings.Count(name, "-") == 4 {
		return name
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return fmt.Sprintf("0a7c3b1e-0000-4000-8000-%012x", h.Sum64()&0xffffffffffff)
}

type appOpts struct {
	uuid, imageID, ref, policy string
	restart, purge, refresh    int64
}

func (w *world) config(apps ...appOpts) *config.Config {
	w.t.Helper()
	var b strings.Builder
	b.WriteString("apps:\n")
	for _, a := range apps {
		if a.imageID == "" {
			a.imageID = "img-" + a.uuid
		}
		fmt.Fprintf(&b, `  - uuid: %s
    displayName: %s
    restart: {counter: %d}
    purge: {counter: %d}
    refreshImage: {counter: %d}
`, id(a.uuid), a.uuid, a.restart, a.purge, a.refresh)
		if a.policy != "" {
			fmt.Fprintf(&b, "    pullPolicy: %s\n", a.policy)
		}
		fmt.Fprintf(&b, `    drives:
      - kind: container
        image: {uuid: %s, name: "%s/%s"}
      - kind: volume
        mountPath: /data
`, id(a.imageID), w.proxy.Host, a.ref)
	}
	c, err := config.Parse([]byte(b.String()))
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) apply(c *config.Config) error {
	w.t.Helper()
	return w.host.Apply(w.ctx, c)
}

func (w *world) starts(uuid string, n int) []string {
	w.t.Helper()
	return regtest.Starts(w.t, w.cm.VolumeDir(id(uuid), "drive1"), n, w.cm.LogPath(id(uuid)))
}

func (w *world) app(uuid string) (AppInfo, ImageInfo) {
	w.t.Helper()
	info, err := w.host.Info(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	var a AppInfo
	var img ImageInfo
	for _, x := range info.Apps {
		if x.UUID == id(uuid) {
			a = x
		}
	}
	for _, x := range info.Images {
		if x.App == id(uuid) {
			img = x
		}
	}
	return a, img
}

// settle gives a process that should not have been restarted the time it
// would have taken to log a start.
func settle() { time.Sleep(700 * time.Millisecond) }

// TestRefreshSemantics walks one app through the design note's refreshImage
// rules under the default `always` policy.
func TestRefreshSemantics(t *testing.T) {
	w := newWorld(t)
	v1 := w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest"}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	if got := w.starts("web", 1); got[0] != "start version=v1 freshrootfs=true ro=" {
		t.Fatalf("create: %q", got)
	}
	info, img := w.app("web")
	if info.State != StateRunning || img.SHA256.String() != v1 || img.Decision == nil || img.Decision.Policy != "always" {
		t.Fatalf("after create: %+v %+v", info, img)
	}

	t.Run("refresh with nothing new: one request, no restart", func(t *testing.T) {
		w.proxy.Reset()
		a.refresh = 1
		if err := w.apply(w.config(a)); err != nil {
			t.Fatal(err)
		}
		settle()
		if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 1 {
			t.Fatalf("restarted without a change: %q", got)
		}
		if reqs := w.proxy.Requests(); len(reqs) != 1 || w.proxy.BlobBytes() != 0 {
			t.Fatalf("a no-change refresh made %s", w.proxy)
		}
		info, img := w.app("web")
		if info.Counters.RefreshImage != 1 || info.Restarts != 0 || img.LastCheckResult != "unchanged" {
			t.Fatalf("%+v %+v", info, img)
		}
	})

	t.Run("refresh after the tag moved: new image, one restart, volume kept", func(t *testing.T) {
		v2 := w.push("web:latest", "v2", false)
		a.refresh = 2
		if err := w.apply(w.config(a)); err != nil {
			t.Fatal(err)
		}
		got := w.starts("web", 2)
		if len(got) != 2 || got[1] != "start version=v2 freshrootfs=true ro=" {
			t.Fatalf("starts %q", got)
		}
		info, img := w.app("web")
		if img.SHA256.String() != v2 || info.Restarts != 1 || info.State != StateRunning {
			t.Fatalf("%+v %+v", info, img)
		}
	})

	t.Run("refresh and restart with nothing new: exactly one restart, writable layer kept", func(t *testing.T) {
		a.refresh, a.restart = 3, 1
		if err := w.apply(w.config(a)); err != nil {
			t.Fatal(err)
		}
		got := w.starts("web", 3)
		settle()
		if got = regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 3 || got[2] != "start version=v2 freshrootfs=false ro=" {
			t.Fatalf("starts %q", got)
		}
	})

	t.Run("several increases before acting are one action", func(t *testing.T) {
		a.restart = 5 // from 1: four steps, one restart
		if err := w.apply(w.config(a)); err != nil {
			t.Fatal(err)
		}
		w.starts("web", 4)
		settle()
		if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 4 {
			t.Fatalf("starts %q", got)
		}
	})

	t.Run("refresh with purge: latest image, state discarded", func(t *testing.T) {
		w.push("web:latest", "v3", false)
		a.refresh, a.purge = 4, 1
		if err := w.apply(w.config(a)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1"))
			if len(got) == 1 && got[0] == "start version=v3 freshrootfs=true ro=" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after purge: %q", got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestFailedRefreshKeepsAppRunningAndDeferredRestartProceeds(t *testing.T) {
	w := newWorld(t)
	v1 := w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest"}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	w.push("web:latest", "v2", false)
	for i := 0; i < 20; i++ {
		w.proxy.Fail(regtest.Fault{Status: 503})
	}
	a.refresh, a.restart = 1, 1
	err := w.apply(w.config(a))
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("failed refresh: %v", err)
	}
	// The restart waited for the failed download attempt, then ran on the
	// old image.
	got := w.starts("web", 2)
	if got[1] != "start version=v1 freshrootfs=false ro=" {
		t.Fatalf("starts %q", got)
	}
	info, img := w.app("web")
	if img.SHA256.String() != v1 || info.LastError == "" || info.State != StateRunning || info.Counters.Restart != 1 {
		t.Fatalf("%+v %+v", info, img)
	}
}

// TestCreateUnderAlwaysFailsEvenWithOldImage: a second app on the same
// ImageObjectID finds v1 on disk, the tag moved, and the pull fails: under
// `always` it fails; under `use-existing` it runs on v1.
func TestCreateUnderAlwaysFailsEvenWithOldImage(t *testing.T) {
	w := newWorld(t)
	w.push("web:latest", "v1", false)
	first := appOpts{uuid: "first", imageID: "shared", ref: "web:latest"}
	if err := w.apply(w.config(first)); err != nil {
		t.Fatal(err)
	}
	w.starts("first", 1)
	// Move the tag to an image whose layer the registry serves corrupted.
	img := regtest.AppImage(t, "v2", false)
	regtest.PushImage(t, w.proxy.Host+"/web:latest", img)
	layers, _ := img.Layers()
	ld, _ := layers[len(layers)-1].Digest()
	w.proxy.Corrupt(ld.String(), true)

	second := appOpts{uuid: "second", imageID: "shared", ref: "web:latest"}
	err := w.apply(w.config(first, second))
	if err == nil || !strings.Contains(err.Error(), "app "+id("second")) {
		t.Fatalf("want app second to fail: %v", err)
	}
	info, _ := w.app("second")
	if info.State != StateError || info.LastError == "" {
		t.Fatalf("second: %+v", info)
	}
	if st, _ := w.cm.Status(w.ctx, id("first")); !st.Running {
		t.Fatal("the first app was disturbed")
	}

	third := appOpts{uuid: "third", imageID: "shared", ref: "web:latest", policy: "use-existing"}
	if err := w.apply(w.config(first, third)); err != nil {
		t.Fatalf("use-existing with the image on disk: %v", err)
	}
	if got := w.starts("third", 1); got[0] != "start version=v1 freshrootfs=true ro=" {
		t.Fatalf("third: %q", got)
	}
}

func TestInvalidConfigRejectedAppsUntouched(t *testing.T) {
	w := newWorld(t)
	w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest", restart: 2}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	a.restart = 1
	err := w.apply(w.config(a))
	if err == nil || !strings.Contains(err.Error(), "apps[0].restart.counter: went backwards from 2 to 1") {
		t.Fatalf("%v", err)
	}
	bad := w.config(appOpts{uuid: "web", ref: "web:latest", restart: 3, policy: "sometimes"})
	if err := w.apply(bad); err == nil || !strings.Contains(err.Error(), `unknown policy "sometimes"`) {
		t.Fatalf("%v", err)
	}
	settle()
	if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 1 {
		t.Fatalf("a rejected config restarted the app: %q", got)
	}
}

// TestRejectedEditNeverRemovesAnApp: an edit that mangles an app's uuid
// leaves that app out of the valid part of the file; it must not count as
// removed (its volume would go with it) while any app part is rejected.
func TestRejectedEditNeverRemovesAnApp(t *testing.T) {
	w := newWorld(t)
	w.push("web:latest", "v1", false)
	web, db := appOpts{uuid: "web", ref: "web:latest"}, appOpts{uuid: "db", ref: "web:latest"}
	if err := w.apply(w.config(web, db)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	for _, mangled := range []string{"12345", strings.Repeat("a", 1<<20), "０a7c3b1e-0000-4000-8000-000000000001"} {
		bad := w.config(web, db)
		bad.Apps[0].UUID = mangled
		err := w.apply(bad)
		if err == nil || !strings.Contains(err.Error(), "is not a UUID") {
			t.Fatalf("a mangled uuid: %.200v", err)
		}
		settle()
		if st, _ := w.cm.Status(w.ctx, id("web")); !st.Running {
			t.Fatalf("uuid %.20q: the app left out by a rejected file was removed", mangled)
		}
		info, _ := w.app("web")
		if !strings.Contains(info.ConfigError, "not removed") {
			t.Fatalf("the kept app's report says nothing of it: %+v", info)
		}
	}
	// The good file again: nothing happens (the app was never touched).
	if err := w.apply(w.config(web, db)); err != nil {
		t.Fatal(err)
	}
	settle()
	if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 1 {
		t.Fatalf("the app was restarted or emptied: %q", got)
	}
	if info, _ := w.app("web"); info.ConfigError != "" {
		t.Fatalf("still reported: %q", info.ConfigError)
	}
	// A valid file without the app removes it.
	if err := w.apply(w.config(db)); err != nil {
		t.Fatal(err)
	}
	if st, err := w.cm.Status(w.ctx, id("web")); err != nil || st.Exists {
		t.Fatalf("a valid file without the app did not remove it: %+v %v", st, err)
	}
}

// TestHostRestartNeitherRepeatsNorLoses restarts the host between actions.
func TestHostRestartNeitherRepeatsNorLoses(t *testing.T) {
	w := newWorld(t)
	w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest", restart: 1}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	w.start() // the agent restarts: the app is adopted, nothing repeats
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	settle()
	if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 1 {
		t.Fatalf("restarting the host repeated an action: %q", got)
	}
	a.restart = 2 // asked while the host was down: done once on start
	w.start()
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 2)
	settle()
	if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 2 {
		t.Fatalf("starts %q", got)
	}
}

func TestRollbackWhenNewImageFailsToStart(t *testing.T) {
	w := newWorld(t)
	v1 := w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest"}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	w.push("web:latest", "broken", true)
	a.refresh = 1
	w.apply(w.config(a))
	info, img := w.app("web")
	if info.State != StateRolledBack || img.SHA256.String() != v1 || !strings.Contains(info.LastError, "rolled back") {
		t.Fatalf("%+v %+v", info, img)
	}
	got := w.starts("web", 3)
	if got[1] != "start version=broken freshrootfs=true ro=" || got[2] != "start version=v1 freshrootfs=true ro=" {
		t.Fatalf("starts %q", got)
	}
	if st, _ := w.cm.Status(w.ctx, id("web")); !st.Running {
		t.Fatal("not running after the rollback")
	}
}

func TestRemoveApp(t *testing.T) {
	w := newWorld(t)
	w.push("web:latest", "v1", false)
	w.push("db:latest", "d1", false)
	web, db := appOpts{uuid: "web", ref: "web:latest"}, appOpts{uuid: "db", ref: "db:latest"}
	if err := w.apply(w.config(web, db)); err != nil {
		t.Fatal(err)
	}
	w.starts("db", 1)
	if err := w.apply(w.config(web)); err != nil {
		t.Fatal(err)
	}
	if st, _ := w.cm.Status(w.ctx, id("db")); st.Exists {
		t.Fatal("removed app's container still exists")
	}
	if _, ok, _ := w.images.Get(id("img-db")); ok {
		t.Fatal("removed app's ImageObjectID still latched")
	}
	imgs, _ := w.d.Client.ImageService().List(w.ctx)
	for _, i := range imgs {
		if strings.Contains(i.Name, "/db@") {
			t.Fatalf("removed app's image still in containerd: %s", i.Name)
		}
	}
	if st, _ := w.cm.Status(w.ctx, id("web")); !st.Running {
		t.Fatal("the other app was disturbed")
	}
}

func TestPinnedDigestIsVerified(t *testing.T) {
	w := newWorld(t)
	v1 := w.push("web:1.0", "v1", false)
	c := w.config(appOpts{uuid: "web", ref: "web:1.0"})
	c.Apps[0].Drives[0].Image.SHA256 = strings.Repeat("ab", 32)
	err := w.apply(c)
	if err == nil || !strings.Contains(err.Error(), "sha256:"+strings.Repeat("ab", 32)) || !strings.Contains(err.Error(), v1) {
		t.Fatalf("a wrong pin: %v; want an error naming both digests", err)
	}
	if st, _ := w.cm.Status(w.ctx, id("web")); st.Exists {
		t.Fatal("an app was created on an image that does not match its pin")
	}
	c.Apps[0].Drives[0].Image.SHA256 = strings.ToUpper(strings.TrimPrefix(v1, "sha256:"))
	if err := w.apply(c); err != nil {
		t.Fatalf("the right pin (upper case): %v", err)
	}
	w.starts("web", 1)
}

// TestOtherChangeRebuilds: a change other than the counters (here the
// environment) rebuilds the container and keeps the volumes.
func TestOtherChangeRebuilds(t *testing.T) {
	w := newWorld(t)
	w.push("web:latest", "v1", false)
	c := w.config(appOpts{uuid: "web", ref: "web:latest"})
	if err := w.apply(c); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	c = w.config(appOpts{uuid: "web", ref: "web:latest"})
	c.Apps[0].Env = []string{"MODE=new"}
	if err := w.apply(c); err != nil {
		t.Fatal(err)
	}
	if got := w.starts("web", 2); got[1] != "start version=v1 freshrootfs=true ro= mode=new" {
		t.Fatalf("starts %q", got)
	}
}

// TestCheckOnStartAtRestartAndBoot: under check-on-start, a restart and a
// host start (boot) each check the tag; a moved tag is pulled and the app
// comes up on it, in exactly one start.
func TestCheckOnStartAtRestartAndBoot(t *testing.T) {
	w := newWorld(t)
	w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest", policy: "check-on-start"}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	v2 := w.push("web:latest", "v2", false)
	a.restart = 1
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	if got := w.starts("web", 2); got[1] != "start version=v2 freshrootfs=true ro=" {
		t.Fatalf("restart under check-on-start: %q", got)
	}
	if _, img := w.app("web"); img.SHA256.String() != v2 || img.Decision == nil || img.Decision.Event != "start" {
		t.Fatalf("image after restart: %+v", img)
	}
	// The host restarts while the tag moves again: boot checks.
	v3 := w.push("web:latest", "v3", false)
	w.start()
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	if got := w.starts("web", 3); got[2] != "start version=v3 freshrootfs=true ro=" {
		t.Fatalf("boot under check-on-start: %q", got)
	}
	if _, img := w.app("web"); img.SHA256.String() != v3 {
		t.Fatalf("image after boot: %+v", img)
	}
}

// TestMeteredLinkWeighsTheDownload runs the metered-link example policy as a
// drop-in module: after a check the host tells it how many bytes a pull
// would fetch, and it defers a download too long for the link.
func TestMeteredLinkWeighsTheDownload(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	if err := policybuild.Build(context.Background(), "../../examples/policies/metered-link", filepath.Join(dir, "metered-link.wasm")); err != nil {
		t.Fatal(err)
	}
	rt, err := plugins.NewRuntime(context.Background(), plugins.WithCacheDir(testcache.ModuleDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	drop, err := plugins.OpenDir(context.Background(), rt, dir)
	if err != nil {
		t.Fatal(err)
	}
	w.opts = append(w.opts, WithPolicies(newCatalog(t, rt, WithDropIns(drop))), WithDevice(func() sdk.Device {
		return sdk.Device{Link: sdk.Link{Online: true, Metered: true, BandwidthBps: 10_000}}
	}))
	w.start()
	w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest", policy: "metered-link"}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)

	// A small change (a new version file): a second's worth at 10 kB/s.
	v2 := w.push("web:latest", "v2", false)
	a.refresh = 1
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	if _, img := w.app("web"); img.SHA256.String() != v2 || img.Decision.Action != "pull" {
		t.Fatalf("small download: %+v %+v", img, img.Decision)
	}
	// A large one: a 20 MB layer is half an hour at 10 kB/s, over the 600 s limit.
	big, err := mutate.AppendLayers(regtest.AppImage(t, "v3", false), randomLayer(t, 20<<20))
	if err != nil {
		t.Fatal(err)
	}
	regtest.PushImage(t, w.proxy.Host+"/web:latest", big)
	a.refresh = 2
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	info, img := w.app("web")
	if img.SHA256.String() != v2 || img.Decision.Action != "defer" || !strings.Contains(img.Decision.Reason, "download of 2097") || info.NextCheck == nil {
		t.Fatalf("large download: %+v %+v %+v", info, img, img.Decision)
	}
}

func randomLayer(t *testing.T, size int64) v1.Layer {
	t.Helper()
	l, err := random.Layer(size, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestFailedCreateIsRetriedWhenThePolicySays: the registry is down at
// create; the policy (always) asks to retry with back-off; once the clock
// reaches that time and the registry is back, a tick creates the app.
func TestFailedCreateIsRetriedWhenThePolicySays(t *testing.T) {
	w := newWorld(t)
	var clock shiftedClock
	w.opts = append(w.opts, WithClock(clock.now))
	w.start()
	w.push("web:latest", "v1", false)
	w.proxy.Down(true)
	err := w.apply(w.config(appOpts{uuid: "web", ref: "web:latest"}))
	if err == nil || !strings.Contains(err.Error(), "registry unreachable") {
		t.Fatalf("create with the registry down: %v", err)
	}
	info, img := w.app("web")
	if info.State != StateError || info.NextCheck == nil || img.Decision == nil || img.Decision.Event != "pull-failed" {
		t.Fatalf("after the failure: %+v %+v", info, img.Decision)
	}
	due := *info.NextCheck
	if err := w.host.Tick(w.ctx); err != nil || regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")) != nil {
		t.Fatalf("a tick before the retry time did something: %v", err)
	}
	w.proxy.Down(false)
	clock.set(time.Until(due) + time.Second)
	if err := w.host.Tick(w.ctx); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	if info, _ := w.app("web"); info.State != StateRunning || info.LastError != "" {
		t.Fatalf("after the retry: %+v", info)
	}
}

// TestChangedImageReference: the configuration points a drive at another
// image; it is resolved and pulled like at create, and the app rebuilt on it.
func TestChangedImageReference(t *testing.T) {
	w := newWorld(t)
	w.push("web:1", "v1", false)
	other := w.push("other:1", "o1", false)
	if err := w.apply(w.config(appOpts{uuid: "web", ref: "web:1"})); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	if err := w.apply(w.config(appOpts{uuid: "web", imageID: "img-other", ref: "other:1"})); err != nil {
		t.Fatal(err)
	}
	if got := w.starts("web", 2); got[1] != "start version=o1 freshrootfs=true ro=" {
		t.Fatalf("starts %q", got)
	}
	if _, img := w.app("web"); img.SHA256.String() != other || img.ImageObjectID != id("img-other") {
		t.Fatalf("%+v", img)
	}
	if _, ok, _ := w.images.Get(id("img-web")); ok {
		t.Fatal("the ImageObjectID no app uses is still latched")
	}
	imgs, _ := w.d.Client.ImageService().List(w.ctx)
	for _, i := range imgs {
		if strings.Contains(i.Name, "/web@") {
			t.Fatalf("the image no app uses is still in containerd: %s", i.Name)
		}
	}
}

// shiftedClock is a clock ahead of the wall clock by an offset the test
// moves; the workers read it concurrently.
type shiftedClock struct{ offset atomic.Int64 }

func (c *shiftedClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *shiftedClock) advance(d time.Duration) { c.offset.Add(int64(d)) }
func (c *shiftedClock) set(d time.Duration)     { c.offset.Store(int64(d)) }
