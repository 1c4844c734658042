package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/testing/nmtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
	"github.com/pullwise/pullwise/plugins/policybuild"
)

// Tests of the edge settings against the real binary, containerd and
// docker-registry: the data budget, the disk pre-flight, the link.

// budgetConfig is the web app under a data budget of bytes a month.
func (e *e2e) budgetConfig(bytes string) {
	e.writeConfig(fmt.Sprintf("device:\n  insecureRegistries: [%q]\n  download: {budget: {bytes: %s}}\napps:\n%s", e.registry, bytes, e.web()))
}

// spent is the budget's spent bytes as the API reports them (0 without
// a budget).
func spent(st agent.Status) int64 {
	if st.Agent.Device == nil || st.Agent.Device.Budget == nil {
		return 0
	}
	return st.Agent.Device.Budget.SpentBytes
}

// TestDataBudget: under a 16 MiB budget a refresh to a 20 MiB image is
// deferred until the budget resets, before a blob byte is fetched, with a
// reason naming the sizes; what was spent survives an agent restart;
// under a larger budget the same refresh goes through.
func TestDataBudget(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	e.budgetConfig("16Mi")
	e.startAgent()
	st := e.status("web running, its download spent", func(st agent.Status) bool { return running(st) && spent(st) > 0 })
	first := spent(st)
	t.Logf("creating web spent %d bytes of the budget", first)

	v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", bigImage(t, "v2", 1, 20<<20)).String()
	e.proxy.Reset()
	// A refresh put off says so, until when, and exits 11 for scripts.
	if out, err := e.cli("refresh", "web", "--detailed-exitcode"); exitCode(err) != exitDeferred || !strings.Contains(out, "refresh deferred until ") {
		t.Fatalf("a deferred refresh: exit %d, want %d\n%s", exitCode(err), exitDeferred, out)
	}
	st = e.status("the refresh deferred by the budget", func(st agent.Status) bool {
		d := st.Info.Apps[0].Decisions
		for _, v := range d {
			return v.Action == "defer" && strings.Contains(v.Reason, "data budget")
		}
		return false
	})
	if got := e.proxy.BlobBytes(); got != 0 {
		t.Fatalf("the deferred refresh fetched %d blob bytes", got)
	}
	for _, d := range st.Info.Apps[0].Decisions {
		t.Logf("decision: %s", d.Reason)
		if !strings.Contains(d.Reason, "20.0 MiB") || !strings.Contains(d.Reason, "of 16.0 MiB are left") {
			t.Fatalf("the reason must name what the pull needs and what is left: %q", d.Reason)
		}
	}
	if imageOf(st, webUUID) == v2 || st.Info.Apps[0].NextCheck == nil || !st.Info.Apps[0].NextCheck.Equal(st.Agent.Device.Budget.Resets) {
		t.Fatalf("web must stay on v1 and be asked again at the reset %s: %+v", st.Agent.Device.Budget.Resets, st.Info.Apps[0])
	}
	out, err := e.cli("status")
	if err != nil || !strings.Contains(out, "data budget: ") || !strings.Contains(out, "of 16.0 MiB spent") {
		t.Fatalf("status must show the budget: %v\n%s", err, out)
	}
	t.Logf("status shows: %s", out[strings.Index(out, "data budget"):])

	before := spent(st)
	e.stopAgent()
	e.startAgent()
	st = e.status("adopted", running)
	if got := spent(st); got < before {
		t.Fatalf("spent %d after a restart, %d before", got, before)
	}

	e.budgetConfig("64Mi")
	e.status("the larger budget in force", func(st agent.Status) bool {
		return st.Agent.Device.Budget != nil && st.Agent.Device.Budget.LimitBytes == 64<<20
	})
	if out, err := e.cli("refresh", "web"); err != nil {
		t.Fatalf("refresh under the larger budget: %v\n%s", err, out)
	}
	st = e.status("web on v2", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v2 })
	if spent(st) < before+20<<20 {
		t.Fatalf("spent %d after a 20 MiB download, %d before it", spent(st), before)
	}
}

// newBlobBytes is what pulling img fetches on a device that has base: the
// config and the layers base lacks.
func newBlobBytes(t *testing.T, img, base v1.Image) int64 {
	t.Helper()
	have := map[v1.Hash]bool{}
	bl, _ := base.Layers()
	for _, l := range bl {
		d, _ := l.Digest()
		have[d] = true
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		if !have[l.Digest] {
			n += l.Size
		}
	}
	return n
}

// TestDownloadPausedOnADearUplink: NetworkManager (a stand-in on a real
// dbus-daemon) moves the device from eth0 to wwan0 while a refresh
// downloads; wwan0 costs 200 by the configuration and the app's policy
// (metered-link, maxCost 100) no longer downloads over it: the download
// stops, its partial blobs kept. Back on eth0 it resumes, and the whole
// refresh fetches little more than the new layers once.
func TestDownloadPausedOnADearUplink(t *testing.T) {
	nm := nmtest.Start(t, "eth0", nmtest.MeteredNo)
	e := newE2E(t)
	e.env = []string{"DBUS_SYSTEM_BUS_ADDRESS=" + nm.Address}
	e.agentArgs = []string{"--link-check-interval", "500ms"}
	if err := os.MkdirAll(filepath.Join(e.state, "policies"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := policybuild.Build(context.Background(), "../../examples/policies/metered-link", filepath.Join(e.state, "policies", "metered-link.wasm")); err != nil {
		t.Fatal(err)
	}
	base := regtest.AppImage(t, "v1", false)
	regtest.PushImage(t, e.registry+"/demo/web:latest", base)
	web := app(webUUID, "web", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest",
		"{name: metered-link, settings: {maxCost: 100}}")
	e.writeConfig(fmt.Sprintf(`device:
  insecureRegistries: [%q]
  link:
    uplinks: [{interface: wwan0, cost: 200}]
apps:
%s`, e.registry, web))
	e.startAgent()
	st := e.status("web running on eth0", func(st agent.Status) bool {
		return running(st) && st.Agent.Device != nil && st.Agent.Device.Link.Interface == "eth0"
	})
	if l := st.Agent.Device.Link; l.Metered || l.Cost != 0 {
		t.Fatalf("eth0: %+v, want unmetered, cost 0", l)
	}

	img := bigImage(t, "v2", 2, 8<<20)
	v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", img).String()
	want := newBlobBytes(t, img, base)
	// A slow link, slowed at the registry's end: bytes it counts as sent
	// then reach the agent (a cap on the agent's side would leave megabytes
	// in the sockets' buffers, counted as sent and never received).
	e.proxy.Throttle(2 << 20)
	e.proxy.Reset()
	refreshed := make(chan string, 1)
	go func() { out, _ := e.cli("refresh", "web"); refreshed <- out }()
	waitFor(t, "the download under way", func() bool { return e.proxy.BlobBytes() > 3<<20 })
	nm.Set("wwan0", nmtest.MeteredYes)
	t.Logf("broke: NetworkManager moved the primary connection to wwan0 (metered, cost 200 by the configuration) after %d bytes", e.proxy.BlobBytes())
	st = e.status("the download paused", func(st agent.Status) bool {
		for _, d := range st.Info.Apps[0].Decisions {
			return d.Action == "defer" && strings.Contains(d.Reason, "over maxCost 100")
		}
		return false
	})
	if l := st.Agent.Device.Link; l.Interface != "wwan0" || !l.Metered || l.Cost != 200 {
		t.Fatalf("wwan0: %+v, want metered, cost 200", l)
	}
	<-refreshed
	paused := e.proxy.BlobBytes()
	time.Sleep(3 * time.Second)
	if got := e.proxy.BlobBytes(); got > paused+256<<10 || got >= want {
		t.Fatalf("paused at %d blob bytes, %d three seconds later (the image needs %d)", paused, got, want)
	}
	if imageOf(st, webUUID) == v2 {
		t.Fatal("web moved to v2 over the dear uplink")
	}
	t.Logf("checked: paused with %d of %d bytes fetched; nothing more over wwan0", paused, want)

	nm.Set("eth0", nmtest.MeteredNo)
	e.status("web on v2 after eth0 came back", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v2 })
	got := e.proxy.BlobBytes()
	t.Logf("checked: resumed on eth0 and moved to v2 with %d blob bytes in all for %d bytes of new blobs (%d more)", got, want, got-want)
	if got > want+2*256<<10 {
		t.Fatalf("%d blob bytes for %d bytes of new blobs: the resume fetched more than 256 KiB per interrupted blob again", got, want)
	}
}

// waitFor polls cond for up to a minute.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
