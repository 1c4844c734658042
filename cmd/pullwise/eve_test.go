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
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// eveConfig is an EdgeDevConfig in the JSON form Adam's `admin device
// config set` takes (encoding/json of eve-api's structs: enums and int64 as
// numbers; protojson reads it too): the web app on one ContentTree of a
// plain-HTTP registry datastore (dType 5: DsContainerRegistry; iformat 8:
// CONTAINER), with a blank volume (origin type 1: BLANK; 2: DOWNLOAD).
func (e *e2e) eveConfig(gen int64, restart, purge uint32) string {
	return fmt.Sprintf(`{
  "datastores": [{"id": "ds1", "dType": 5, "fqdn": "http://%s"}],
  "contentInfo": [{"uuid": "6f1e0c1e-0000-4000-8000-00000000e2e1", "dsId": "ds1", "URL": "demo/web:latest", "iformat": 8, "generation_count": %d}],
  "volumes": [
    {"uuid": "9b1e0c1e-0000-4000-8000-0000000000a1", "origin": {"type": 2, "downloadContentTreeID": "6f1e0c1e-0000-4000-8000-00000000e2e1"}},
    {"uuid": "9b1e0c1e-0000-4000-8000-0000000000a2", "origin": {"type": 1}}
  ],
  "apps": [{"uuidandversion": {"uuid": "%s", "version": "1"}, "displayname": "web", "activate": true,
    "restart": {"counter": %d}, "purge": {"counter": %d},
    "volumeRefList": [{"uuid": "9b1e0c1e-0000-4000-8000-0000000000a1"}, {"uuid": "9b1e0c1e-0000-4000-8000-0000000000a2", "mount_dir": "/data"}]}]
}`, e.registry, gen, webUUID, restart, purge)
}

// TestEVEConfigDrivesTheDevice: the agent runs the apps of an EVE
// EdgeDevConfig (Adam's JSON form) on real containerd and a real
// registry. A ContentTree generation_count change after the tag moved is
// one pull and one restart; one with nothing new is a check and no
// restart; the restart counter restarts; `status -o eve` reports the
// resolved sha256 as EVE's ZInfoContentTree; a malformed EdgeDevConfig
// changes nothing.
func TestEVEConfigDrivesTheDevice(t *testing.T) {
	e := newE2E(t)
	v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
	evePath := filepath.Join(t.TempDir(), "edgedevconfig.json")
	writeEVE := func(s string) {
		t.Helper()
		tmp := evePath + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, evePath); err != nil {
			t.Fatal(err)
		}
	}
	writeEVE(e.eveConfig(0, 0, 0))
	e.writeConfig("device: {}\n")
	e.agentArgs = []string{"--eve-config", evePath}
	e.startAgent()
	e.status("web running from the EVE configuration", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v1 })
	vol := filepath.Join(e.state, "volumes", webUUID, "drive1")
	regtest.Starts(t, vol, 1, "")

	// The report as EVE's info: the ContentTree's sha256 is the resolved
	// manifest digest.
	out, err := e.cli("status", "-o", "eve")
	if err != nil {
		t.Fatalf("status -o eve: %v\n%s", err, out)
	}
	var sawApp, sawTree bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a protojson line: %q", line)
		}
		if a, ok := m["ainfo"].(map[string]any); ok && a["AppID"] == webUUID && a["state"] == "RUNNING" {
			sawApp = true
		}
		if c, ok := m["cinfo"].(map[string]any); ok && c["uuid"] == "6f1e0c1e-0000-4000-8000-00000000e2e1" &&
			c["sha256"] == strings.TrimPrefix(v1, "sha256:") && c["state"] == "LOADED" {
			sawTree = true
		}
	}
	if !sawApp || !sawTree {
		t.Fatalf("status -o eve lacks the running app or the tree's sha256:\n%s", out)
	}

	// The tag moves; the controller bumps the tree's generation_count.
	v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false)).String()
	e.proxy.Reset()
	writeEVE(e.eveConfig(1, 0, 0))
	e.status("v2 after the generation bump", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v2 })
	if got := regtest.Starts(t, vol, 2, ""); !strings.Contains(got[1], "version=v2") {
		t.Fatalf("starts %q", got)
	}
	// The tree's info says which generation the device acted on.
	if out, _ := e.cli("status", "-o", "eve"); !strings.Contains(out, `"generationCount":"1"`) || !strings.Contains(out, strings.TrimPrefix(v2, "sha256:")) {
		t.Fatalf("status -o eve after the bump lacks generation 1 and v2's sha256:\n%s", out)
	}
	if n := manifestGets(e.proxy.Requests()); n > 3 {
		t.Fatalf("the refresh made %d manifest requests: %v", n, e.proxy.Requests())
	}

	// A bump with nothing new: checked, not restarted.
	e.proxy.Reset()
	writeEVE(e.eveConfig(2, 0, 0))
	e.status("the check", func(st agent.Status) bool { return len(e.proxy.Requests()) > 0 })
	time.Sleep(time.Second)
	if got := e.starts(); len(got) != 2 {
		t.Fatalf("a bump with nothing new restarted the app: %q", got)
	}

	// The restart counter.
	writeEVE(e.eveConfig(2, 1, 0))
	regtest.Starts(t, vol, 3, "")

	// A malformed EdgeDevConfig: rejected, the app untouched.
	writeEVE(`{"apps": [{"uuidandversion": 7}]}`)
	st := e.status("the rejection", func(st agent.Status) bool { return st.Agent.ConfigError != "" })
	if !running(st) || !strings.Contains(st.Agent.ConfigError, "EdgeDevConfig") {
		t.Fatalf("after a malformed EVE configuration: %+v", st.Agent)
	}
	time.Sleep(time.Second)
	if got := e.starts(); len(got) != 3 {
		t.Fatalf("a malformed EVE configuration restarted the app: %q", got)
	}
}

func manifestGets(reqs []string) int {
	n := 0
	for _, r := range reqs {
		if strings.Contains(r, "/manifests/") {
			n++
		}
	}
	return n
}

// TestEVEDatastoreCredentials: a datastore's apiKey and password are the
// registry's credentials (the registry refuses every request without
// them), and they are never logged.
func TestEVEDatastoreCredentials(t *testing.T) {
	e := newE2E(t)
	v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
	e.proxy.RequireBasic("device-7", "s3cret")
	evePath := filepath.Join(t.TempDir(), "edgedevconfig.json")
	withCreds := strings.Replace(e.eveConfig(0, 0, 0), `"dType": 5,`, `"dType": 5, "apiKey": "device-7", "password": "s3cret",`, 1)
	os.WriteFile(evePath, []byte(withCreds), 0o644)
	e.writeConfig("device: {}\n")
	e.agentArgs = []string{"--eve-config", evePath}
	e.startAgent()
	e.status("web running with the datastore's credentials", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v1 })
	if strings.Contains(e.agentLog.String(), "s3cret") {
		t.Fatal("the agent logged the datastore's password")
	}
}
