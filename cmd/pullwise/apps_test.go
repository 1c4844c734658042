package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/regtest"
)

// TestActionsTouchOneApp: a CLI action on one app acts on that app alone,
// reports its outcome and exit code alone, and works on an app in any
// state (one whose create failed included); one app's bad configuration
// never holds the others back.
func TestActionsTouchOneApp(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	broken := app("0a7c3b1e-0000-4000-8000-0000000000c1", "broken", "img-broken", e.registry+"/demo/missing:latest", "")
	e.configure(e.web(), broken)
	e.startAgent()
	st := e.status("web running and broken failed", func(st agent.Status) bool {
		s1, _ := appState(st, "web")
		s2, _ := appState(st, "broken")
		return s1 == "RUNNING" && s2 == "ERROR"
	})
	if _, why := appState(st, "broken"); !strings.Contains(why, "not found") {
		t.Fatalf("broken: %q", why)
	}
	// The fix travels with the error, into the report and the table.
	for _, a := range st.Info.Apps {
		if a.DisplayName == "broken" && !strings.Contains(a.Hint, "check the repository and tag names") {
			t.Fatalf("broken's hint: %q", a.Hint)
		}
	}
	if out, _ := e.cli("status"); !strings.Contains(out, "hint: check the repository and tag names") {
		t.Fatalf("status table:\n%s", out)
	}

	out, err := e.cli("refresh", "web")
	if err != nil || strings.Contains(out, "broken") || strings.Contains(out, "missing") {
		t.Fatalf("refresh web must report web alone and succeed: %v\n%s", err, out)
	}
	out, err = e.cli("restart", "broken")
	if err == nil || strings.Contains(out, "no app") || !strings.Contains(out, "not found") {
		t.Fatalf("an action on the app whose create failed must act on it and report its own error: %v\n%s", err, out)
	}

	// Two apps of one display name: the second is rejected, named; web runs on.
	e.configure(e.web(), app("0a7c3b1e-0000-4000-8000-0000000000c2", "web", "img-twin", e.registry+"/demo/web:latest", ""))
	st = e.status("the duplicate rejected", func(st agent.Status) bool { return st.Agent.ConfigError != "" })
	webState, twinError := "", ""
	for _, a := range st.Info.Apps {
		switch a.UUID {
		case webUUID:
			webState = a.State
		case "0a7c3b1e-0000-4000-8000-0000000000c2":
			twinError = a.ConfigError
		}
	}
	if webState != "RUNNING" || !strings.Contains(twinError, `duplicate display name "web"`) {
		t.Fatalf("duplicate display name: web %s, twin %q", webState, twinError)
	}
	time.Sleep(500 * time.Millisecond)
	if got := e.starts(); len(got) != 1 {
		t.Fatalf("web was restarted (its refresh found nothing new): %q", got)
	}
}
