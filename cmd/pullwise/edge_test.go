package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/regtest"
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
	e.cli("refresh", "web")
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
