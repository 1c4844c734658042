package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// TestStopSignalAndTimeout: an app's stopSignal is what stops its process,
// and its stopTimeout is how long one that ignores it has before SIGKILL;
// the CLI says how long it waits.
func TestStopSignalAndTimeout(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	web := e.web()
	e.configure(web + "    stopSignal: SIGUSR1\n")
	e.startAgent()
	e.status("web running", running)
	stops := func() []string {
		b, _ := os.ReadFile(filepath.Join(e.volume(), "stops.log"))
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	if out, err := e.cli("restart", "web"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	if got := stops(); len(got) != 1 || got[0] != "stop user defined signal 1" {
		t.Fatalf("stops %q, want one by SIGUSR1", got)
	}
	// An app that ignores SIGTERM, with a 1 s stop timeout: the restart
	// kills it after 1 s and says so while it waits.
	e.configure(web + "    env: [IGNORE_TERM=1]\n    stopTimeout: 1s\n")
	regtest.Starts(t, e.volume(), 3, "") // the edit rebuilt the app (stopped by its old container's SIGUSR1)
	before := len(stops())
	out, err := e.cli("restart", "web")
	if err != nil || !strings.Contains(out, "web: stopping (up to 1s, then SIGKILL)") {
		t.Fatalf("restart of an app that ignores SIGTERM: %v\n%s", err, out)
	}
	regtest.Starts(t, e.volume(), 4, "")
	if got := stops(); len(got) != before {
		t.Fatalf("stops %q: the app ignoring SIGTERM recorded a stop, want it killed", got)
	}

	// No stopSignal of its own: the image's STOPSIGNAL stops it.
	e.configure(web)
	regtest.Starts(t, e.volume(), 5, "")
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.WithConfig(t, regtest.AppImage(t, "v2", false), func(c *v1.Config) { c.StopSignal = "SIGQUIT" }))
	if out, err := e.cli("refresh", "web"); err != nil {
		t.Fatalf("refresh: %v\n%s", err, out)
	}
	regtest.Starts(t, e.volume(), 6, "")
	before = len(stops())
	if out, err := e.cli("restart", "web"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	if got := stops(); len(got) != before+1 || got[len(got)-1] != "stop quit" {
		t.Fatalf("stops %q, want the last by the image's SIGQUIT", got)
	}
}
