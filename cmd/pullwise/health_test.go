package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// TestHealthcheckRollsBackAnUnhealthyImage: an app whose new image runs
// but never becomes healthy (its port never answers, probed from inside
// its network namespace) is rolled back like one that exits; a healthy
// new image passes (TCP, HTTP and exec probes) and stays.
func TestHealthcheckRollsBackAnUnhealthyImage(t *testing.T) {
	e := newE2E(t)
	v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
	app := func(check string) string {
		return e.web() + "    env: [\"LISTEN=:8080\", \"UNHEALTHY_VERSION=v2\"]\n    healthcheck: " + check + "\n"
	}
	e.configure(app(`{tcp: 8080, interval: 200ms, timeout: 1s, retries: 3}`))
	e.startAgent()
	e.status("web running", running)

	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false))
	out, err := e.cli("refresh", "web", "--detailed-exitcode")
	if exitCode(err) != exitRolledBack {
		t.Fatalf("a refresh onto an unhealthy image: exit %d, want %d\n%s\nagent log:\n%s", exitCode(err), exitRolledBack, out, e.agentLog)
	}
	e.status("back on v1", func(st agent.Status) bool {
		return imageOf(st, webUUID) == v1 && st.Info.Apps[0].State == "ROLLED_BACK"
	})
	if rb := findEvent(e.events("web"), events.RolledBack); rb == nil || !strings.Contains(rb.Reason, "unhealthy") {
		t.Fatalf("no rollback event saying the app was unhealthy: %+v", rb)
	}

	// An HTTP probe, then an exec probe, on healthy images.
	healthy := func() int {
		n := 0
		for _, ev := range e.events("web") {
			if ev.Kind == events.Healthy {
				n++
			}
		}
		return n
	}
	for i, check := range []string{`{http: "8080/healthz", interval: 200ms}`, `{exec: ["/app", "health"], interval: 200ms}`} {
		e.configure(app(check))
		time.Sleep(2 * time.Second) // the edit applied
		want := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, fmt.Sprintf("v%d", 3+i), false)).String()
		out, err := e.cli("refresh", "web", "--detailed-exitcode")
		if exitCode(err) != exitUpdated {
			t.Fatalf("%s: a refresh onto a healthy image: exit %d, want %d\n%s\nagent log:\n%s", check, exitCode(err), exitUpdated, out, e.agentLog)
		}
		e.status("the healthy image", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == want })
		if n := healthy(); n != i+1 {
			t.Fatalf("%s: %d app.healthy events, want %d", check, n, i+1)
		}
	}
}
