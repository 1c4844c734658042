package app

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// These tests prove the per-app reconciler against a real containerd and
// registry: presence decided by what containerd holds, edits merged into
// one action, no app waiting for another, per-app reports of what runs,
// pins verified before a container changes, shared checks, and exits
// supervised.

// manifestRequests counts the manifest requests among reqs.
func manifestRequests(reqs []string) int {
	n := 0
	for _, r := range reqs {
		if strings.Contains(r, "/manifests/") {
			n++
		}
	}
	return n
}

// bigApp is the test app at version with a random layer of size bytes, so
// a throttled proxy makes its download take a while.
func bigApp(t *testing.T, version string, size int64) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(regtest.AppImage(t, version, false), randomLayer(t, size))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// waitState waits until the app reports state.
func (w *world) waitState(uuid, state string) AppInfo {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, _ := w.app(uuid)
		if info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("app %s: state %s, waited for %s", uuid, info.State, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPresenceIsWhatContainerdHolds: an image on disk counts as present for
// every ImageObjectID and app, by the design note's "exists": the tag's
// image, a digest reference, a pin that names it.
func TestPresenceIsWhatContainerdHolds(t *testing.T) {
	w := newWorld(t)
	v1 := w.push("web:latest", "v1", false)
	first := appOpts{uuid: "first", imageID: "id-first", ref: "web:latest"}
	if err := w.apply(w.config(first)); err != nil {
		t.Fatal(err)
	}
	w.starts("first", 1)

	// The registry is unreachable: every app below must start from disk.
	w.proxy.Down(true)
	existing := appOpts{uuid: "existing", imageID: "id-existing", ref: "web:latest", policy: "use-existing"}
	never := appOpts{uuid: "never", imageID: "id-never", ref: "web:latest", policy: "never"}
	byDigest := appOpts{uuid: "bydigest", imageID: "id-bydigest", ref: "web@" + v1}
	if err := w.apply(w.config(first, existing, never, byDigest)); err != nil {
		t.Fatalf("apps whose image is on disk through another ImageObjectID: %v", err)
	}
	for _, id := range []string{"existing", "never", "bydigest"} {
		if got := w.starts(id, 1); got[0] != "start version=v1 freshrootfs=true ro=" {
			t.Fatalf("%s: %q", id, got)
		}
		if _, img := w.app(id); img.SHA256.String() != v1 {
			t.Fatalf("%s runs %s, want %s", id, img.SHA256, v1)
		}
	}

	// The tag moves; an app pinned to the old digest, which is on disk,
	// costs no request under always, at create and at refresh.
	w.proxy.Down(false)
	w.push("web:latest", "v2", false)
	w.proxy.Reset()
	pinned := w.config(first, existing, never, byDigest, appOpts{uuid: "pinned", imageID: "id-pinned", ref: "web:latest"})
	pinned.Apps[4].Drives[0].Image.SHA256 = v1
	if err := w.apply(pinned); err != nil {
		t.Fatalf("a pin that is on disk: %v", err)
	}
	w.starts("pinned", 1)
	pinned.Apps[4].RefreshImage.Counter = 1
	pinned.Apps[3].RefreshImage.Counter = 1 // the digest reference too
	if err := w.apply(pinned); err != nil {
		t.Fatal(err)
	}
	if reqs := w.proxy.Requests(); len(reqs) != 0 {
		t.Fatalf("pinned digests on disk cost %s", w.proxy)
	}
}

// TestEditsDuringADownloadAreMerged: whatever arrives while a refresh
// downloads is carried out with it, in one stop and one start on the new
// image with the latest configuration.
func TestEditsDuringADownloadAreMerged(t *testing.T) {
	w := newWorld(t)
	w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest"}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)

	slowRefresh := func(version string) {
		t.Helper()
		regtest.PushImage(t, w.proxy.Host+"/web:latest", bigApp(t, version, 6<<20))
		w.proxy.Throttle(3 << 20)
		a.refresh++
		if _, err := w.host.Submit(w.ctx, w.config(a)); err != nil {
			t.Fatal(err)
		}
		w.waitState("web", StateDownloading)
	}

	t.Run("restart and an env change", func(t *testing.T) {
		slowRefresh("v2")
		a.restart++
		c := w.config(a)
		c.Apps[0].Env = []string{"MODE=merged"}
		tk, err := w.host.Submit(w.ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if info, _ := w.app("web"); info.State != StateDownloading {
			t.Fatalf("the edit did not arrive during the download: %s", info.State)
		}
		if err := tk.Wait(w.ctx, id("web")); err != nil {
			t.Fatal(err)
		}
		w.proxy.Throttle(0)
		settle()
		got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1"))
		if len(got) != 2 || got[1] != "start version=v2 freshrootfs=true ro= mode=merged" {
			t.Fatalf("want one more start, on v2 with the new env: %q", got)
		}
		info, _ := w.app("web")
		if info.Restarts != 1 || info.Counters.Restart != 1 || info.Counters.RefreshImage != 1 {
			t.Fatalf("%+v", info)
		}
	})

	t.Run("purge", func(t *testing.T) {
		slowRefresh("v3")
		a.purge++
		c := w.config(a)
		c.Apps[0].Env = []string{"MODE=merged"}
		tk, err := w.host.Submit(w.ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Wait(w.ctx, id("web")); err != nil {
			t.Fatal(err)
		}
		w.proxy.Throttle(0)
		settle()
		// The volume was emptied: one start in it, on v3.
		if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 1 || got[0] != "start version=v3 freshrootfs=true ro= mode=merged" {
			t.Fatalf("after the merged purge: %q", got)
		}
		log, _ := os.ReadFile(w.cm.LogPath(id("web")))
		if n := strings.Count(string(log), "testapp v3 started"); n != 1 {
			t.Fatalf("v3 started %d times, want once:\n%s", n, log)
		}
		if info, _ := w.app("web"); info.Restarts != 2 || info.Counters.Purge != 1 {
			t.Fatalf("%+v", info)
		}
	})
}

// TestNoAppWaitsForAnother: app b's restart completes while app a's refresh
// is still downloading.
func TestNoAppWaitsForAnother(t *testing.T) {
	w := newWorld(t)
	w.push("a:latest", "a1", false)
	w.push("b:latest", "b1", false)
	a, b := appOpts{uuid: "a", ref: "a:latest"}, appOpts{uuid: "b", ref: "b:latest"}
	if err := w.apply(w.config(a, b)); err != nil {
		t.Fatal(err)
	}
	w.starts("b", 1)
	regtest.PushImage(t, w.proxy.Host+"/a:latest", bigApp(t, "a2", 16<<20))
	w.proxy.Throttle(2 << 20)
	a.refresh = 1
	if _, err := w.host.Submit(w.ctx, w.config(a, b)); err != nil {
		t.Fatal(err)
	}
	w.waitState("a", StateDownloading)
	b.restart = 1
	tk, err := w.host.Submit(w.ctx, w.config(a, b))
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Wait(w.ctx, id("b")); err != nil {
		t.Fatal(err)
	}
	if info, _ := w.app("a"); info.State != StateDownloading {
		t.Fatalf("b's restart waited for a's download: a is %s", info.State)
	}
	// The restarted process writes its line a moment after it starts.
	w.starts("b", 2)
	w.proxy.Throttle(0)
	if err := tk.Wait(w.ctx, id("a")); err != nil {
		t.Fatal(err)
	}
}

// TestSharedImageObjectIDReportsWhatEachAppRuns: refreshing one of two apps
// on one ImageObjectID moves the latch; the other app keeps running its
// image, says so, and names the latched SHA it will move to at its own
// refresh (which then downloads nothing).
func TestSharedImageObjectIDReportsWhatEachAppRuns(t *testing.T) {
	w := newWorld(t)
	v1 := w.push("web:latest", "v1", false)
	a, b := appOpts{uuid: "a", imageID: "shared", ref: "web:latest"}, appOpts{uuid: "b", imageID: "shared", ref: "web:latest"}
	if err := w.apply(w.config(a, b)); err != nil {
		t.Fatal(err)
	}
	w.starts("b", 1)
	v2 := w.push("web:latest", "v2", false)
	a.refresh = 1
	if err := w.apply(w.config(a, b)); err != nil {
		t.Fatal(err)
	}
	if _, img := w.app("a"); img.SHA256.String() != v2 || img.Latched != "" {
		t.Fatalf("a: %+v", img)
	}
	if _, img := w.app("b"); img.SHA256.String() != v1 || img.Latched.String() != v2 {
		t.Fatalf("b must report what it runs (%s) and the latch (%s): %+v", v1[:19], v2[:19], img)
	}
	if st, _ := w.cm.Status(w.ctx, id("b")); !strings.Contains(st.Image, v1) {
		t.Fatalf("b's container runs %s", st.Image)
	}
	w.proxy.Reset()
	b.refresh = 1
	if err := w.apply(w.config(a, b)); err != nil {
		t.Fatal(err)
	}
	if got := w.starts("b", 2); got[1] != "start version=v2 freshrootfs=true ro=" || w.proxy.BlobBytes() != 0 {
		t.Fatalf("b's refresh: %q, %s", got, w.proxy)
	}
	if _, img := w.app("b"); img.SHA256.String() != v2 || img.Latched != "" {
		t.Fatalf("b after its refresh: %+v", img)
	}
}

// TestPinAddedToARunningAppIsVerified: a wrong pin added to a running app
// is reported with its field, and the app keeps running as it was.
func TestPinAddedToARunningAppIsVerified(t *testing.T) {
	w := newWorld(t)
	v1 := w.push("web:latest", "v1", false)
	if err := w.apply(w.config(appOpts{uuid: "web", ref: "web:latest"})); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	wrong := w.push("other:1", "o1", false)
	c := w.config(appOpts{uuid: "web", ref: "web:latest"})
	c.Apps[0].Drives[0].Image.SHA256 = wrong
	err := w.apply(c)
	if err == nil || !strings.Contains(err.Error(), "drives[0].image") || !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), v1) {
		t.Fatalf("a wrong pin: %v; want the field and both digests", err)
	}
	settle()
	if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 1 {
		t.Fatalf("the app was restarted on a rejected pin: %q", got)
	}
	info, img := w.app("web")
	if info.State != StateRunning || !strings.Contains(info.LastError, wrong) || img.SHA256.String() != v1 {
		t.Fatalf("%+v %+v", info, img)
	}
	// The right pin is accepted without a restart (the app runs it already).
	c.Apps[0].Drives[0].Image.SHA256 = v1
	if err := w.apply(c); err != nil {
		t.Fatal(err)
	}
	if info, _ := w.app("web"); info.LastError != "" {
		t.Fatalf("%+v", info)
	}
}

// TestPeriodicChecksAReferenceOncePerInterval: three apps (three
// ImageObjectIDs) on one tag under periodic cost one manifest request per
// interval between them.
func TestPeriodicChecksAReferenceOncePerInterval(t *testing.T) {
	w := newWorld(t)
	clock := w.periodicApps(3)
	w.proxy.Reset()
	for i := 1; i <= 3; i++ {
		clock.advance(61 * time.Second)
		if err := w.host.Tick(w.ctx); err != nil {
			t.Fatal(err)
		}
		if n := manifestRequests(w.proxy.Requests()); n != i {
			t.Fatalf("after %d intervals: %d manifest requests (%s), want %d", i, n, w.proxy, i)
		}
	}
}

// periodicApps runs n apps (n ImageObjectIDs) on one tag under periodic
// with a 1-minute interval, on a clock the caller moves.
func (w *world) periodicApps(n int) *shiftedClock {
	w.t.Helper()
	clock := &shiftedClock{}
	w.opts = append(w.opts, WithClock(clock.now))
	w.start()
	w.push("web:latest", "v1", false)
	var apps []appOpts
	for i := 0; i < n; i++ {
		apps = append(apps, appOpts{uuid: fmt.Sprintf("app-%02d", i), ref: "web:latest"})
	}
	c := w.config(apps...)
	for i := range c.Apps {
		c.Apps[i].PullPolicy = &config.PolicyRef{Name: "periodic", Settings: json.RawMessage(`{"interval":"1m"}`)}
	}
	if err := w.apply(c); err != nil {
		w.t.Fatal(err)
	}
	return clock
}

// TestExitedAppIsRestartedWithBackoff: a process that dies after its grace
// period is reported with its exit code and started again.
func TestExitedAppIsRestartedWithBackoff(t *testing.T) {
	w := newWorld(t)
	w.opts = append(w.opts, WithCrashBackoff(500*time.Millisecond))
	w.start()
	w.push("web:latest", "v1", false)
	if err := w.apply(w.config(appOpts{uuid: "web", ref: "web:latest"})); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	c, err := w.d.Client.LoadContainer(w.ctx, id("web"))
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(w.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(w.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	info, _ := w.app("web")
	for info.LastExit == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		info, _ = w.app("web")
	}
	if info.State != StateHalted || info.LastExit == nil || *info.LastExit != 137 || !strings.Contains(info.LastError, "exited with code 137") {
		t.Fatalf("the exit is not reported: %+v", info)
	}
	if got := w.starts("web", 2); got[1] != "start version=v1 freshrootfs=false ro=" {
		t.Fatalf("starts %q", got)
	}
	w.waitState("web", StateRunning)
}

// TestContainerdRestartIsSurvived: containerd restarts under the host; the
// app keeps running and is not acted upon again, the host's next actions
// work, and an exit after the restart is still noticed and supervised.
func TestContainerdRestartIsSurvived(t *testing.T) {
	w := newWorld(t)
	w.opts = append(w.opts, WithCrashBackoff(500*time.Millisecond))
	w.start()
	w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest"}
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 1)
	w.d.Restart(t)
	settle()
	if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 1 {
		t.Fatalf("a containerd restart started the app again: %q", got)
	}
	// The exit watch broke with containerd; the worker watches anew. Kill
	// the process: it must be noticed and started again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := w.d.Client.LoadContainer(w.ctx, id("web"))
		if err == nil {
			if task, err := c.Task(w.ctx, nil); err == nil && task.Kill(w.ctx, syscall.SIGKILL) == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot reach the app's task after the containerd restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := w.starts("web", 2); got[1] != "start version=v1 freshrootfs=false ro=" {
		t.Fatalf("starts %q", got)
	}
	// And the next action is carried out once.
	a.restart = 1
	if err := w.apply(w.config(a)); err != nil {
		t.Fatal(err)
	}
	w.starts("web", 3)
	settle()
	if got := regtest.StartLines(w.cm.VolumeDir(id("web"), "drive1")); len(got) != 3 {
		t.Fatalf("starts %q", got)
	}
}

// TestMonitorOnlyReportsAndKeeps: periodic with monitorOnly checks on its
// schedule and, when the tag moved, keeps the app on its image and tells
// image.update-available once per new digest; a refresh applies the update.
func TestMonitorOnlyReportsAndKeeps(t *testing.T) {
	w := newWorld(t)
	told := w.recordEvents()
	available := func() []events.Event { return told(events.UpdateAvailable) }
	clock := &shiftedClock{}
	w.opts = append(w.opts, WithClock(clock.now))
	w.start()
	d1 := w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest"}
	cfg := func() *config.Config {
		c := w.config(a)
		c.Apps[0].PullPolicy = &config.PolicyRef{Name: "periodic", Settings: json.RawMessage(`{"interval":"1m","monitorOnly":true}`)}
		return c
	}
	if err := w.apply(cfg()); err != nil {
		t.Fatal(err)
	}
	d2 := w.push("web:latest", "v2", false)
	for range 2 {
		clock.advance(61 * time.Second)
		if err := w.host.Tick(w.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, img := w.app("web"); img.SHA256.String() != d1 {
		t.Fatalf("monitor only pulled: runs %s, want %s", img.SHA256, d1)
	}
	if got := available(); len(got) != 1 || got[0].From.String() != d1 || got[0].Digest.String() != d2 || !strings.Contains(got[0].Reason, "monitor only") {
		t.Fatalf("update-available events %+v, want one from v1 to v2", got)
	}
	a.refresh = 1
	if err := w.apply(cfg()); err != nil {
		t.Fatal(err)
	}
	if _, img := w.app("web"); img.SHA256.String() != d2 {
		t.Fatalf("a refresh under monitor only runs %s, want %s", img.SHA256, d2)
	}
}

// recordEvents has the host (started after it) keep the events it tells;
// the function returned gives those of one kind.
func (w *world) recordEvents() func(events.Kind) []events.Event {
	var mu sync.Mutex
	var told []events.Event
	w.opts = append(w.opts, WithEvents(func(e events.Event) {
		mu.Lock()
		told = append(told, e)
		mu.Unlock()
	}))
	return func(k events.Kind) []events.Event {
		mu.Lock()
		defer mu.Unlock()
		var out []events.Event
		for _, e := range told {
			if e.Kind == k {
				out = append(out, e)
			}
		}
		return out
	}
}

// TestRolledBackDigestWaitsForTheTagToMove: after a rollback the digest the
// app failed on is marked, and a periodic policy's checks leave it alone
// while the tag still names it (no pull, no restart, no second rollback);
// a refresh retries it, and a tag that moves on is taken.
func TestRolledBackDigestWaitsForTheTagToMove(t *testing.T) {
	w := newWorld(t)
	told := w.recordEvents()
	count := func(k events.Kind) int { return len(told(k)) }
	clock := &shiftedClock{}
	w.opts = append(w.opts, WithClock(clock.now))
	w.start()
	d1 := w.push("web:latest", "v1", false)
	a := appOpts{uuid: "web", ref: "web:latest"}
	cfg := func() *config.Config {
		c := w.config(a)
		c.Apps[0].PullPolicy = &config.PolicyRef{Name: "periodic", Settings: json.RawMessage(`{"interval":"1m"}`)}
		return c
	}
	if err := w.apply(cfg()); err != nil {
		t.Fatal(err)
	}
	tick := func() {
		t.Helper()
		clock.advance(61 * time.Second)
		w.host.Tick(w.ctx) // a rollback is an error for the waiter; the state says the rest
	}
	d2 := w.push("web:latest", "v2", true) // exits at once
	tick()
	st, img := w.app("web")
	if img.SHA256.String() != d1 || st.State != StateRolledBack || img.RolledBackFrom.String() != d2 || count(events.RolledBack) != 1 {
		t.Fatalf("after a failed update: runs %s in state %s, rolled back from %q, %d rollbacks; want %s, ROLLED_BACK, %s, 1",
			img.SHA256, st.State, img.RolledBackFrom, count(events.RolledBack), d1, d2)
	}
	restarts := st.Restarts
	for range 2 {
		tick()
	}
	st, img = w.app("web")
	if img.SHA256.String() != d1 || st.Restarts != restarts || count(events.RolledBack) != 1 || count(events.ImageChanged) != 2 {
		t.Fatalf("checks while the tag names the bad image: runs %s, %d restarts (want %d), %d rollbacks, %d image changes",
			img.SHA256, st.Restarts, restarts, count(events.RolledBack), count(events.ImageChanged))
	}
	if !strings.Contains(img.Decision.Reason, "rolled back from") {
		t.Fatalf("the decision does not say why it keeps the image: %+v", img.Decision)
	}

	// A refresh is the operator asking to try again.
	a.refresh = 1
	w.apply(cfg())
	if _, img = w.app("web"); img.SHA256.String() != d1 || count(events.RolledBack) != 2 {
		t.Fatalf("a refresh onto the bad image: runs %s, %d rollbacks; want %s, 2", img.SHA256, count(events.RolledBack), d1)
	}

	// The tag moves on: taken at the next check, and the mark is gone.
	d3 := w.push("web:latest", "v3", false)
	tick()
	if st, img = w.app("web"); img.SHA256.String() != d3 || st.State != StateRunning || img.RolledBackFrom != "" {
		t.Fatalf("after the tag moved: runs %s in state %s, rolled back from %q; want %s, RUNNING, none", img.SHA256, st.State, img.RolledBackFrom, d3)
	}
}
