package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	imgv1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/decisions"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/internal/testing/regtest"
	"github.com/pullwise/pullwise/sdk"
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

	// No healthcheck of its own: the image's HEALTHCHECK guards the
	// change (Docker's CMD form, as docker build writes it).
	e.configure(e.web() + "    env: [\"LISTEN=:8080\", \"UNHEALTHY_VERSION=v2\"]\n")
	time.Sleep(2 * time.Second)
	withCheck := func(version string) string {
		img := regtest.WithConfig(t, regtest.AppImage(t, version, false), func(c *imgv1.Config) {
			c.Healthcheck = &imgv1.HealthConfig{Test: []string{"CMD", "/app", "health"}, Interval: 200 * time.Millisecond, Timeout: time.Second}
		})
		return regtest.PushImage(t, e.registry+"/demo/web:latest", img).String()
	}
	v5 := withCheck("v5")
	if out, err := e.cli("refresh", "web", "--detailed-exitcode"); exitCode(err) != exitUpdated {
		t.Fatalf("a refresh onto a healthy image with its own HEALTHCHECK: exit %d\n%s\nagent log:\n%s", exitCode(err), out, e.agentLog)
	}
	st := e.status("healthy by the image's healthcheck", func(st agent.Status) bool {
		h := st.Info.Apps[0].Health
		return imageOf(st, webUUID) == v5 && h != nil && h.Source == "image" && h.Status == sdk.HealthHealthy
	})
	if n := healthy(); n != 3 {
		t.Fatalf("%d app.healthy events, want 3", n)
	}
	if out, _ := e.cli("status"); !strings.Contains(out, "RUNNING (healthy)") {
		t.Fatalf("status does not show the health:\n%s", out)
	}
	withCheck("v2") // its process does not listen: the image's own check fails
	if out, err := e.cli("refresh", "web", "--detailed-exitcode"); exitCode(err) != exitRolledBack {
		t.Fatalf("a refresh onto an image failing its own HEALTHCHECK: exit %d, want %d\n%s", exitCode(err), exitRolledBack, out)
	}
	st = e.status("back on v5", func(st agent.Status) bool { return imageOf(st, webUUID) == v5 })

	// A running app that turns unhealthy is reported (status, event,
	// the policy's input) and keeps running: Docker's semantics.
	restarts := st.Info.Apps[0].Restarts
	e.configure(app(`{tcp: 8081, interval: 200ms, retries: 2}`)) // nothing listens there
	st = e.status("unhealthy", func(st agent.Status) bool {
		h := st.Info.Apps[0].Health
		return h != nil && h.Status == sdk.HealthUnhealthy && h.Source == "app" && h.FailingStreak >= 2
	})
	if findEvent(e.events("web"), events.Unhealthy) == nil {
		t.Fatal("no app.unhealthy event")
	}
	if !running(st) || imageOf(st, webUUID) != v5 || st.Info.Apps[0].Restarts > restarts+1 {
		t.Fatalf("an unhealthy app must keep running on its image (at most one restart, for the edit): %+v", st.Info.Apps[0])
	}
	if out, err := e.cli("refresh", "web"); err != nil {
		t.Fatalf("refresh: %v\n%s", err, out)
	}
	es, err := decisions.ReadDir(e.state, decisions.Filter{})
	if err != nil || len(es) == 0 {
		t.Fatalf("decision record: %v", err)
	}
	if h := es[len(es)-1].Input.App.Health; h == nil || h.Status != sdk.HealthUnhealthy {
		t.Fatalf("the policy was not told the app is unhealthy: %+v", h)
	}
}
