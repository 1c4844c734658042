package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	hostapp "github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/internal/testing/regtest"
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
	// The status file has the refresh when the command returns.
	var file agent.Status
	if b, err := os.ReadFile(filepath.Join(e.state, agent.StatusName)); err != nil || json.Unmarshal(b, &file) != nil {
		t.Fatalf("status file: %v", err)
	}
	for _, a := range file.Info.Apps {
		if a.UUID == webUUID && a.Counters.RefreshImage != 1 {
			t.Fatalf("the status file read as the refresh returned: web's refreshImage %d, want 1", a.Counters.RefreshImage)
		}
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

// TestCLIForEveryAppAndAsJSON: status of one app, -o json on actions and
// dry runs, refresh --all and refresh --all --dry-run.
func TestCLIForEveryAppAndAsJSON(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	e.configure(e.web(), app("0a7c3b1e-0000-4000-8000-0000000000c9", "other", "img-other", e.registry+"/demo/web:latest", ""))
	e.startAgent()
	e.waitRunning(2)

	out, err := e.cli("status", "web", "-o", "json")
	var one struct {
		App    hostapp.AppInfo     `json:"app"`
		Images []hostapp.ImageInfo `json:"images"`
	}
	if err != nil || json.Unmarshal([]byte(out), &one) != nil || one.App.DisplayName != "web" || len(one.Images) != 1 {
		t.Fatalf("status web -o json: %v\n%s", err, out)
	}
	if out, err := e.cli("status", "web"); err != nil || strings.Contains(out, "other") {
		t.Fatalf("status web shows another app: %v\n%s", err, out)
	}
	if out, err := e.cli("status", "nosuch"); err == nil || !strings.Contains(out, `no app "nosuch"`) {
		t.Fatalf("status of an unknown app: %v\n%s", err, out)
	}

	out, err = e.cli("refresh", "--all", "--dry-run")
	if err != nil || !strings.Contains(out, "web: ") || !strings.Contains(out, "other: ") || strings.Count(out, "up to date") != 2 {
		t.Fatalf("refresh --all --dry-run: %v\n%s", err, out)
	}
	out, err = e.cli("refresh", "web", "-o", "json")
	var r struct {
		App    string          `json:"app"`
		Op     string          `json:"op"`
		Result hostapp.AppInfo `json:"result"`
	}
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Op != "refresh" || r.Result.State != "RUNNING" || r.Result.Counters.RefreshImage != 1 {
		t.Fatalf("refresh web -o json: %v\n%s", err, out)
	}
	out, err = e.cli("refresh", "--all")
	if err != nil || !strings.Contains(out, "web: RUNNING, 0 restart(s)") || !strings.Contains(out, "other: RUNNING, 0 restart(s)") {
		t.Fatalf("refresh --all: %v\n%s", err, out)
	}
	if out, err := e.cli("refresh", "web", "--all"); err == nil || !strings.Contains(out, "Usage:") {
		t.Fatalf("an app and --all: %v\n%s", err, out)
	}
}

// TestAgentStartsOnARefusedDevicePart: a file whose device part holds a
// value the registry client refuses (an empty registry name) does not keep
// the agent down: it starts, reports the error, and the app runs on; the
// mended file is applied.
func TestAgentStartsOnARefusedDevicePart(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	e.configure(e.web())
	e.startAgent()
	e.status("web running", func(st agent.Status) bool { s, _ := appState(st, "web"); return s == "RUNNING" })
	e.stopAgent()
	e.writeConfig(fmt.Sprintf("device:\n  insecureRegistries: [%q, \"\"]\napps:\n%s", e.registry, e.web()))
	e.startAgent()
	e.status("the device part rejected, web running", func(st agent.Status) bool {
		s, _ := appState(st, "web")
		return s == "RUNNING" && strings.Contains(st.Agent.ConfigError, "insecureRegistries[1]")
	})
	e.configure(e.web())
	e.status("the mended file applied", func(st agent.Status) bool {
		s, _ := appState(st, "web")
		return s == "RUNNING" && st.Agent.ConfigError == ""
	})
	if got := e.starts(); len(got) != 1 {
		t.Fatalf("web was restarted: %q", got)
	}
}
