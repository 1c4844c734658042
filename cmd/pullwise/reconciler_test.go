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
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// The per-app reconciler, proved against the real binary: presence by what
// containerd holds, edits merged into one action, no app waiting for
// another, per-app reports, pins verified before the container changes,
// exits supervised, shared periodic checks (one real minute: the policy's
// shortest interval; host/app proves several intervals on a moved clock).

func appInfo(st agent.Status, name string) (uuid string, restarts int, lastExit *uint32) {
	for _, a := range st.Info.Apps {
		if a.DisplayName == name {
			return a.UUID, a.Restarts, a.LastExit
		}
	}
	return "", 0, nil
}

func imageInfo(st agent.Status, uuid string) (sha, latched string) {
	for _, i := range st.Info.Images {
		if i.App == uuid {
			return i.SHA256.String(), i.Latched.String()
		}
	}
	return "", ""
}

const (
	uuidA = "0a7c3b1e-0000-4000-8000-0000000000d1"
	uuidB = "0a7c3b1e-0000-4000-8000-0000000000d2"
	uuidC = "0a7c3b1e-0000-4000-8000-0000000000d3"
	uuidD = "0a7c3b1e-0000-4000-8000-0000000000d4"
)

func TestReconcilerBlackBox(t *testing.T) {
	t.Run("images on disk through another ImageObjectID are present", func(t *testing.T) {
		e, v1 := startWeb(t)
		e.proxy.Down(true)
		e.proxy.Reset()
		pinned := strings.Replace(app(uuidD, "pinned", "img-pinned", e.registry+"/demo/web:latest", ""), "name: ", "sha256: "+strings.TrimPrefix(v1, "sha256:")+", name: ", 1)
		e.configure(e.web(),
			app(uuidA, "existing", "img-existing", e.registry+"/demo/web:latest", "use-existing"),
			app(uuidB, "never", "img-never", e.registry+"/demo/web:latest", "never"),
			app(uuidC, "bydigest", "img-bydigest", e.registry+"/demo/web@"+v1, ""),
			pinned)
		e.waitRunning(5)
		st := e.status("the report", func(agent.Status) bool { return true })
		for _, id := range []string{uuidA, uuidB, uuidC, uuidD} {
			if sha, _ := imageInfo(st, id); sha != v1 {
				t.Fatalf("%s runs %s", id, sha)
			}
		}
		if e.proxy.BlobBytes() != 0 {
			t.Fatalf("blobs fetched: %s", e.proxy)
		}
	})

	t.Run("a purge and an env change during a download are one start", func(t *testing.T) {
		e, _ := startWeb(t)
		v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", bigImage(t, "v2", 1, 12<<20)).String()
		e.proxy.Throttle(3 << 20)
		e.proxy.Reset()
		if out, err := e.cli("refresh", "web", "--no-wait"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for e.proxy.BlobBytes() < 1<<20 {
			time.Sleep(10 * time.Millisecond)
		}
		if out, err := e.cli("purge", "web", "--no-wait"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		b, _ := os.ReadFile(e.config)
		e.writeConfig(strings.Replace(string(b), "displayName: web\n", "displayName: web\n    env: [MODE=merged]\n", 1))
		time.Sleep(500 * time.Millisecond) // the edit is picked up during the download
		if e.proxy.BlobBytes() >= 12<<20 {
			t.Fatal("the download ended before the edits arrived: the test proves nothing")
		}
		e.proxy.Throttle(0)
		st := e.status("v2 purged", func(st agent.Status) bool {
			sha, _ := imageInfo(st, webUUID)
			return running(st) && sha == v2 && st.Info.Apps[0].Counters.Purge == 1
		})
		time.Sleep(time.Second)
		if got := e.starts(); len(got) != 1 || got[0] != "start version=v2 freshrootfs=true ro= mode=merged" {
			t.Fatalf("want one start, on v2, purged, with the new env: %q", got)
		}
		if _, restarts, _ := appInfo(st, "web"); restarts != 1 {
			t.Fatalf("%d restarts, want 1", restarts)
		}
	})

	t.Run("a restart is not delayed by another app's download", func(t *testing.T) {
		e := newE2E(t)
		regtest.PushImage(t, e.registry+"/demo/a:latest", regtest.AppImage(t, "a1", false))
		regtest.PushImage(t, e.registry+"/demo/b:latest", regtest.AppImage(t, "b1", false))
		e.configure(app(uuidA, "a", "img-a", e.registry+"/demo/a:latest", ""), app(uuidB, "b", "img-b", e.registry+"/demo/b:latest", ""))
		e.startAgent()
		e.status("both running", func(st agent.Status) bool {
			s1, _ := appState(st, "a")
			s2, _ := appState(st, "b")
			return s1 == "RUNNING" && s2 == "RUNNING"
		})
		regtest.PushImage(t, e.registry+"/demo/a:latest", bigImage(t, "a2", 1, 24<<20))
		e.proxy.Throttle(2 << 20)
		e.proxy.Reset()
		e.cli("refresh", "a", "--no-wait")
		for e.proxy.BlobBytes() < 1<<20 {
			time.Sleep(10 * time.Millisecond)
		}
		start := time.Now()
		out, err := e.cli("restart", "b")
		took := time.Since(start)
		if err != nil || !strings.Contains(out, "b: RUNNING, 1 restart(s)") {
			t.Fatalf("restart b: %v\n%s", err, out)
		}
		if e.proxy.BlobBytes() >= 24<<20 {
			t.Fatalf("b's restart returned after a's download ended (%s)", took)
		}
		e.proxy.Throttle(0)
	})

	t.Run("a shared ImageObjectID: each app reports what it runs", func(t *testing.T) {
		e, v1 := startWeb(t)
		e.configure(e.web(), app(uuidA, "twin", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", ""))
		e.status("twin running", func(st agent.Status) bool { s, _ := appState(st, "twin"); return s == "RUNNING" })
		v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false)).String()
		if out, err := e.cli("refresh", "web"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		st := e.status("web on v2", func(st agent.Status) bool { sha, _ := imageInfo(st, webUUID); return sha == v2 })
		if sha, latched := imageInfo(st, uuidA); sha != v1 || latched != v2 {
			t.Fatalf("twin reports %s (latched %s); it runs %s", sha, latched, v1)
		}
		if out, err := e.cli("status"); err != nil || !strings.Contains(out, shortDigest(imagedigest.Digest(v1))) {
			t.Fatalf("status table: %v\n%s", err, out)
		}
	})

	t.Run("a wrong pin added to a running app is refused, the app untouched", func(t *testing.T) {
		e, v1 := startWeb(t)
		wrong := regtest.PushImage(t, e.registry+"/demo/other:1", regtest.AppImage(t, "o1", false)).String()
		b, _ := os.ReadFile(e.config)
		e.writeConfig(strings.Replace(string(b), "name: ", "sha256: "+strings.TrimPrefix(wrong, "sha256:")+", name: ", 1))
		st := e.status("the refusal", func(st agent.Status) bool { _, why := appState(st, "web"); return why != "" })
		state, why := appState(st, "web")
		if state != "RUNNING" || !strings.Contains(why, "drives[0].image") || !strings.Contains(why, wrong) {
			t.Fatalf("%s: %q", state, why)
		}
		time.Sleep(time.Second)
		if sha, _ := imageInfo(st, webUUID); sha != v1 || len(e.starts()) != 1 {
			t.Fatalf("the app was touched: %s, %q", sha, e.starts())
		}
	})

	t.Run("switching an app's policy restarts nothing", func(t *testing.T) {
		e, _ := startWeb(t)
		b, _ := os.ReadFile(e.config)
		e.writeConfig(strings.Replace(string(b), "displayName: web\n", "displayName: web\n    pullPolicy: use-existing\n", 1))
		e.status("the new policy", func(st agent.Status) bool { return running(st) && st.Info.Apps[0].Policy == "use-existing" })
		time.Sleep(time.Second)
		if got := e.starts(); len(got) != 1 {
			t.Fatalf("a policy change restarted the app: %q", got)
		}
	})

	t.Run("a process that dies later is reported and started again", func(t *testing.T) {
		e, _ := startWeb(t)
		e.killApp(webUUID)
		st := e.status("the exit reported", func(st agent.Status) bool { _, _, code := appInfo(st, "web"); return code != nil })
		if _, _, code := appInfo(st, "web"); *code != 137 {
			t.Fatalf("exit code %d", *code)
		}
		// The first back-off is 10 s.
		e.status("started again", func(st agent.Status) bool { _, n, _ := appInfo(st, "web"); return running(st) && n == 1 })
		// The status can say running before the process wrote its line.
		if got := regtest.Starts(t, e.volume(), 2, ""); len(got) != 2 || !strings.Contains(got[1], "freshrootfs=false") {
			t.Fatalf("starts %q", got)
		}
	})
}

// TestPeriodicSharesChecksBlackBox: three apps (three ImageObjectIDs) on one
// tag under periodic with the shortest interval (1m) cost one manifest
// request when their checks fall due. One real minute of wall clock.
func TestPeriodicSharesChecksBlackBox(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	var apps []string
	for i, id := range []string{uuidA, uuidB, uuidC} {
		apps = append(apps, app(id, fmt.Sprintf("p%d", i), fmt.Sprintf("img-p%d", i), e.registry+"/demo/web:latest", "{name: periodic, settings: {interval: 1m}}"))
	}
	e.configure(apps...)
	e.startAgent()
	e.waitRunning(3)
	e.proxy.Reset()
	deadline := time.Now().Add(100 * time.Second)
	for {
		out, err := e.cli("status", "-o", "json")
		var st agent.Status
		if err == nil && json.Unmarshal([]byte(out), &st) == nil {
			ticked := 0
			for _, i := range st.Info.Images {
				if i.Decision != nil && i.Decision.Event == "tick" {
					ticked++
				}
			}
			if ticked == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the three apps were not consulted at their interval: %s", out)
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	n := 0
	for _, r := range e.proxy.Requests() {
		if strings.Contains(r, "/manifests/") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d manifest requests for three apps' due checks of one tag, want 1: %s", n, e.proxy)
	}
}

// TestEditDuringStartIsApplied: an edit made the moment the agent's API
// appears (while it starts: before its watcher was armed, in earlier
// versions) is applied.
func TestEditDuringStartIsApplied(t *testing.T) {
	e, _ := startWeb(t)
	e.stopAgent()
	os.Remove(filepath.Join(e.state, agent.SocketName))
	b, _ := os.ReadFile(e.config)
	e.startAgent()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(filepath.Join(e.state, agent.SocketName)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not serve:\n%s", e.agentLog)
		}
		time.Sleep(time.Millisecond)
	}
	e.writeConfig(strings.Replace(string(b), "displayName: web\n", "displayName: web\n    restart: {counter: 1}\n", 1))
	e.status("the restart applied", func(st agent.Status) bool { return running(st) && st.Info.Apps[0].Counters.Restart == 1 })
	regtest.Starts(t, e.volume(), 2, "")
}
