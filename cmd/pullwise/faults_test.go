package main

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/testing/regtest"
	"github.com/pullwise/pullwise/internal/testing/wattest"
	"github.com/pullwise/pullwise/plugins/policybuild"
)

// The fault suite: each case breaks something real (the registry, the
// network, the disk, the agent process, a policy module) under the real
// binary, then checks what must hold afterwards, and logs both.

const webUUID = "0a7c3b1e-0000-4000-8000-00000000e2e1"

// app is one app entry of a config. A short imageID ("img-web") stands for
// a UUID made from it: the configuration accepts UUIDs only.
func app(uuid, name, imageID, ref, policy string) string {
	if len(imageID) != 36 {
		h := fnv.New64a()
		h.Write([]byte(imageID))
		imageID = fmt.Sprintf("6f1e0c1e-0000-4000-8000-%012x", h.Sum64()&0xffffffffffff)
	}
	s := fmt.Sprintf("  - uuid: %s\n    displayName: %s\n", uuid, name)
	if policy != "" {
		s += "    pullPolicy: " + policy + "\n"
	}
	return s + fmt.Sprintf("    drives:\n      - kind: container\n        image: {uuid: %s, name: %q}\n      - kind: volume\n        mountPath: /data\n", imageID, ref)
}

func (e *e2e) configure(apps ...string) {
	e.t.Helper()
	e.writeConfig(fmt.Sprintf("device:\n  insecureRegistries: [%q]\napps:\n%s", e.registry, strings.Join(apps, "")))
}

func (e *e2e) web() string {
	return app(webUUID, "web", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", "")
}

func appState(st agent.Status, name string) (string, string) {
	for _, a := range st.Info.Apps {
		if a.DisplayName == name {
			return a.State, a.LastError
		}
	}
	return "", ""
}

func imageOf(st agent.Status, uuid string) string {
	for _, i := range st.Info.Images {
		if i.App == uuid {
			return i.SHA256.String()
		}
	}
	return ""
}

// bigImage is the test app at version plus random layers.
func bigImage(t testing.TB, version string, layers int, size int64) v1.Image {
	t.Helper()
	img := regtest.AppImage(t, version, false)
	for i := 0; i < layers; i++ {
		l, err := random.Layer(size, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// waitModule waits until the agent has loaded the drop-in module name.
func (e *e2e) waitModule(name string) {
	e.t.Helper()
	e.status(name+" loaded", func(st agent.Status) bool {
		for _, p := range st.Agent.Policies {
			if p.Name == name && p.Active != nil {
				return true
			}
		}
		return false
	})
}

// killAt restarts the agent with the fault point armed, runs the CLI
// command that reaches it, waits for the agent to kill itself there, and
// starts it again unarmed.
func (e *e2e) killAt(point string, cli ...string) {
	e.t.Helper()
	e.stopAgent()
	e.env = []string{"PULLWISE_FAULTPOINT=" + point}
	e.startAgent()
	e.status("adopted", running)
	e.cli(cli...)
	died := make(chan struct{})
	go func() { e.agent.Wait(); close(died) }()
	select {
	case <-died:
	case <-time.After(60 * time.Second):
		e.t.Fatalf("the agent never reached the fault point %s; log:\n%s", point, e.agentLog)
	}
	e.agent = nil
	e.t.Logf("broke: the agent killed itself with SIGKILL at %s", point)
	e.env = nil
	e.startAgent()
}

// startWeb pushes v1 and runs the web app.
func startWeb(t *testing.T) (*e2e, string) {
	e := newE2E(t)
	v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
	e.configure(e.web())
	e.startAgent()
	e.status("web running", running)
	regtest.Starts(t, e.volume(), 1, "")
	return e, v1
}

func TestFaults(t *testing.T) {
	t.Run("registry answers 500, then 429 with Retry-After, then recovers", func(t *testing.T) {
		e, _ := startWeb(t)
		v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false)).String()
		e.proxy.Fail(regtest.Fault{Status: 500}, regtest.Fault{Status: 429, RetryAfter: "2"})
		t.Log("broke: the registry answers 500, then 429 with Retry-After: 2, then works")
		start := time.Now()
		out, err := e.cli("refresh", "web")
		took := time.Since(start)
		if err != nil || !strings.Contains(out, "1 restart(s)") {
			t.Fatalf("refresh: %v\n%s", err, out)
		}
		if took < 2*time.Second {
			t.Fatalf("the refresh took %s: the 2 s Retry-After was not honoured", took)
		}
		st := e.status("v2", func(st agent.Status) bool { return imageOf(st, webUUID) == v2 })
		t.Logf("checked: the refresh waited %s (≥ the Retry-After), completed on %s, state %s", took.Round(time.Millisecond), v2[:19], st.Info.Apps[0].State)
	})

	t.Run("registry unreachable at create", func(t *testing.T) {
		e, _ := startWeb(t)
		e.proxy.Down(true)
		t.Log("broke: every connection to the registry is dropped")
		strict := app("0a7c3b1e-0000-4000-8000-0000000000a2", "strict", "img-strict", e.registry+"/demo/web:latest", "")
		lenient := app("0a7c3b1e-0000-4000-8000-0000000000a3", "lenient", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", "use-existing")
		e.configure(e.web(), strict, lenient)
		st := e.status("strict failed, lenient running", func(st agent.Status) bool {
			s1, _ := appState(st, "strict")
			s2, _ := appState(st, "lenient")
			return s1 == "ERROR" && s2 == "RUNNING"
		})
		_, why := appState(st, "strict")
		if !strings.Contains(why, "registry unreachable") {
			t.Fatalf("strict's error should say the registry is unreachable: %q", why)
		}
		if s, _ := appState(st, "web"); s != "RUNNING" {
			t.Fatalf("web: %s", s)
		}
		t.Logf("checked: under always the new app fails (%.80s…); under use-existing, with the image on disk, it runs; web untouched", why)
	})

	t.Run("connection cut mid-blob", func(t *testing.T) {
		e, _ := startWeb(t)
		img := bigImage(t, "v2", 1, 8<<20)
		v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", img).String()
		layers, _ := img.Layers()
		ld, _ := layers[len(layers)-1].Digest()
		e.proxy.Reset()
		e.proxy.CutBlob(ld.String(), 4<<20)
		t.Log("broke: the 8 MiB layer's connection is cut after 4 MiB")
		if out, err := e.cli("refresh", "web"); err != nil {
			t.Fatalf("refresh: %v\n%s", err, out)
		}
		e.status("v2", func(st agent.Status) bool { return imageOf(st, webUUID) == v2 })
		if got := e.proxy.BlobBytes(); got > 8<<20+1<<20+64<<10 {
			t.Fatalf("%d blob bytes for an 8 MiB layer cut in half", got)
		}
		t.Logf("checked: the refresh completed on the new image with %d blob bytes in all (≤ 8 MiB + 1 MiB)", e.proxy.BlobBytes())
	})

	t.Run("corrupted blob", func(t *testing.T) {
		e, v1 := startWeb(t)
		img := regtest.AppImage(t, "v2", false)
		regtest.PushImage(t, e.registry+"/demo/web:latest", img)
		layers, _ := img.Layers()
		ld, _ := layers[len(layers)-1].Digest()
		e.proxy.Corrupt(ld.String(), true)
		t.Log("broke: the registry serves the new image's layer with a flipped byte")
		out, _ := e.cli("refresh", "web")
		st := e.status("the error", func(st agent.Status) bool { _, why := appState(st, "web"); return why != "" })
		state, why := appState(st, "web")
		if state != "RUNNING" || imageOf(st, webUUID) != v1 || !strings.Contains(why, "digest") {
			t.Fatalf("after a corrupt blob: %s, %s, %q\n%s", state, imageOf(st, webUUID), why, out)
		}
		t.Logf("checked: rejected (%.90s…); the app still runs on %s", why, v1[:19])
		e.proxy.Corrupt(ld.String(), false)
		e.proxy.Reset()
		t.Log("mended: the registry serves the layer's right bytes again")
		if out, err := e.cli("refresh", "web"); err != nil {
			t.Fatalf("the refresh after the registry mended the layer: %v\n%s", err, out)
		}
		st = e.status("the new image", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) != v1 })
		gets := 0
		for _, r := range e.proxy.Requests() {
			if r == "GET /v2/demo/web/blobs/"+ld.String() {
				gets++
			}
		}
		if gets != 1 {
			t.Fatalf("%d GETs of the layer that failed verification (requests %q); want 1", gets, e.proxy.Requests())
		}
		t.Logf("checked: the next refresh fetched the layer anew (1 GET) and the app runs %s", imageOf(st, webUUID)[:19])
	})

	t.Run("rejected edit with an unidentifiable app", func(t *testing.T) {
		e, v1 := startWeb(t)
		b, _ := os.ReadFile(e.config)
		good := string(b)
		// Unquoted, 12345 is a number: the file does not decode, and is
		// refused whole.
		e.writeConfig(strings.Replace(good, webUUID, "12345", 1))
		st := e.status("the file refused", func(st agent.Status) bool { return strings.Contains(st.Agent.ConfigError, "want a string") })
		t.Logf("broke: the app's uuid is edited into 12345; refused whole (%s)", st.Agent.ConfigError)
		// Quoted, it decodes: only the app's part is refused, and the app
		// the file no longer lists is kept.
		e.writeConfig(strings.Replace(good, webUUID, `"12345"`, 1))
		t.Log(`broke: the app's uuid is edited into "12345"`)
		st = e.status("the rejection", func(st agent.Status) bool { return strings.Contains(st.Agent.ConfigError, "is not a UUID") })
		time.Sleep(time.Second)
		st = e.status("status", func(agent.Status) bool { return true })
		kept := false
		for _, a := range st.Info.Apps {
			kept = kept || a.UUID == webUUID && a.State == "RUNNING" && strings.Contains(a.ConfigError, "not removed")
		}
		if !kept || imageOf(st, webUUID) != v1 || len(regtest.StartLines(e.volume())) != 1 {
			t.Fatalf("the app left out by the rejected file was touched, or its report does not say why: %+v", st.Info.Apps)
		}
		t.Logf("checked: rejected (%.80s…); the app kept and says why", st.Agent.ConfigError)
		e.writeConfig(good)
		e.status("the good file", func(st agent.Status) bool { return st.Agent.ConfigError == "" && running(st) })
		time.Sleep(time.Second)
		if starts := regtest.StartLines(e.volume()); len(starts) != 1 {
			t.Fatalf("restoring the file restarted or emptied the app: %q", starts)
		}
		t.Log("checked: the restored file finds the app as it was: 1 start in its volume, never emptied")
	})

	// Mid-download crashes: the agent killed, containerd restarted under a
	// running agent, and both (as a power cut does to the two processes).
	// Each interrupted layer must continue from what containerd's ingest
	// holds: at most 256 KiB behind what had arrived.
	for _, crash := range []struct {
		name              string
		agent, containerd bool
	}{
		{"agent SIGKILLed mid-download", true, false},
		{"containerd restarted mid-download", false, true},
		{"agent SIGKILLed and containerd restarted mid-download", true, true},
	} {
		t.Run(crash.name, func(t *testing.T) {
			e, _ := startWeb(t)
			big := bigImage(t, "v2", 2, 8<<20)
			v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", big).String()
			var bigBytes int64 // the two 8 MiB layers as served (compressed)
			layers, _ := big.Layers()
			for _, l := range layers[len(layers)-2:] {
				n, _ := l.Size()
				bigBytes += n
			}
			e.proxy.Reset()
			e.proxy.Throttle(4 << 20)
			if out, err := e.cli("refresh", "web", "--no-wait"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			deadline := time.Now().Add(30 * time.Second)
			for e.proxy.BlobBytes() < 2<<20 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if crash.agent {
				e.agent.Process.Signal(syscall.SIGKILL)
				e.agent.Wait()
				e.agent = nil
			}
			if crash.containerd {
				e.d.Restart(t)
			}
			t.Logf("broke: %s after %d of 16 MiB downloaded", crash.name, e.proxy.BlobBytes())
			e.proxy.Throttle(0)
			if crash.agent {
				e.startAgent()
			} else {
				// The interrupted pull fails (its refresh is over; a refresh
				// asked before that would merge into it), then an operator
				// asks again: the quick way to the retry.
				e.status("the interrupted pull reported", func(st agent.Status) bool { _, why := appState(st, "web"); return why != "" })
				if out, err := e.cli("refresh", "web", "--no-wait"); err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
			}
			st := e.status("v2", func(st agent.Status) bool { return imageOf(st, webUUID) == v2 && running(st) })
			regtest.Starts(t, e.volume(), 2, "")
			time.Sleep(time.Second)
			if starts := regtest.StartLines(e.volume()); len(starts) != 2 {
				t.Fatalf("starts %q, counters %+v", starts, st.Info.Apps[0].Counters)
			}
			refetched := e.proxy.BlobBytes() - bigBytes
			if refetched > 2*256<<10+64<<10 {
				t.Fatalf("%d bytes fetched beyond the two layers' %d: the interrupted downloads were not resumed from where they stopped", refetched, bigBytes)
			}
			t.Logf("checked: the refresh finished once (2 starts in the volume, the first kept), %d blob bytes in all, %d beyond the layers' size (what was re-fetched, the config and small layer included)", e.proxy.BlobBytes(), refetched)
		})
	}

	for _, point := range []string{"restart:begun", "restart:done"} {
		t.Run("agent SIGKILLed mid-restart at "+point, func(t *testing.T) {
			e, _ := startWeb(t)
			e.killAt(point, "restart", "web", "--no-wait")
			e.status("restart recorded", func(st agent.Status) bool { return running(st) && st.Info.Apps[0].Counters.Restart == 1 })
			time.Sleep(time.Second)
			if starts := regtest.StartLines(e.volume()); len(starts) != 2 || !strings.Contains(starts[1], "freshrootfs=false") {
				t.Fatalf("starts %q: want exactly one restart, writable layer kept", starts)
			}
			t.Log("checked: exactly one restart happened, volume and writable layer kept")
		})
	}

	// An image change, killed at each of its steps: the restarted agent
	// compares what the container runs with the journal and converges, on
	// the new image, with exactly one start on it.
	for _, point := range []string{"replace:journalled", "replace:latched", "rebuild:stopped", "rebuild:created", "replace:done"} {
		t.Run("agent SIGKILLed mid-image-change at "+point, func(t *testing.T) {
			e, _ := startWeb(t)
			v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false)).String()
			e.killAt(point, "refresh", "web", "--no-wait")
			st := e.status("the refresh recorded", func(st agent.Status) bool {
				return running(st) && st.Info.Apps[0].Counters.RefreshImage == 1 && st.Info.Apps[0].Pending == nil
			})
			time.Sleep(time.Second)
			starts := regtest.StartLines(e.volume())
			if len(starts) != 2 || starts[1] != "start version=v2 freshrootfs=true ro=" {
				t.Fatalf("starts %q: want exactly one start on v2", starts)
			}
			if got := imageOf(st, webUUID); got != v2 {
				t.Fatalf("the report says %s, the app runs v2 (%s)", got, v2)
			}
			c, err := e.d.Client.LoadContainer(e.d.Context(), webUUID)
			if err != nil {
				t.Fatal(err)
			}
			if info, _ := c.Info(e.d.Context()); !strings.HasSuffix(info.Image, v2) {
				t.Fatalf("the container runs %s, want %s", info.Image, v2)
			}
			t.Logf("checked: one start on v2, the report and the container agree (%s)", v2[:19])
		})
	}

	for _, point := range []string{"purge:begun", "purge:done"} {
		t.Run("agent SIGKILLed mid-purge at "+point, func(t *testing.T) {
			e, _ := startWeb(t)
			e.cli("restart", "web") // two starts in the volume before the purge
			regtest.Starts(t, e.volume(), 2, "")
			e.killAt(point, "purge", "web", "--no-wait")
			e.status("purge recorded", func(st agent.Status) bool { return running(st) && st.Info.Apps[0].Counters.Purge == 1 })
			time.Sleep(time.Second)
			if starts := regtest.StartLines(e.volume()); len(starts) != 1 || !strings.Contains(starts[0], "freshrootfs=true") {
				t.Fatalf("starts %q: want exactly one purge (one start in an emptied volume)", starts)
			}
			t.Log("checked: exactly one purge happened (the volume was emptied once and holds one start)")
		})
	}

	t.Run("malformed config edit", func(t *testing.T) {
		e, v1 := startWeb(t)
		b, _ := os.ReadFile(e.config)
		e.writeConfig(strings.Replace(string(b), "displayName: web", "displayName: web\n    drives: oops", 1))
		t.Log("broke: the configuration file is edited into something that does not parse")
		st := e.status("the rejection", func(st agent.Status) bool { return st.Agent.ConfigError != "" })
		time.Sleep(time.Second)
		if !running(st) || imageOf(st, webUUID) != v1 || len(regtest.StartLines(e.volume())) != 1 {
			t.Fatal("the app was touched by a rejected configuration")
		}
		t.Logf("checked: rejected (%.100s…), the app untouched", st.Agent.ConfigError)
		// The agent restarts with the file still broken: it serves and says so.
		e.stopAgent()
		e.startAgent()
		st = e.status("the agent to serve with a broken file", func(st agent.Status) bool { return st.Agent.ConfigError != "" && running(st) })
		if got := regtest.StartLines(e.volume()); len(got) != 1 {
			t.Fatalf("restarting the agent on a broken file touched the app: %q", got)
		}
		t.Log("checked: an agent started on the broken file serves, reports it, and leaves the app running")
	})

	t.Run("policy module loops during a refresh", func(t *testing.T) {
		e := newE2E(t)
		dir := filepath.Join(e.state, "policies")
		os.MkdirAll(dir, 0o755)
		if err := policybuild.Build(t.Context(), "../../plugins/testdata/hostile", filepath.Join(dir, "hostile.wasm")); err != nil {
			t.Fatal(err)
		}
		v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
		e.configure(app(webUUID, "loop-on-refresh", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", "hostile"))
		e.startAgent()
		e.status("running", running)
		t.Log("broke: the app's policy module loops forever when asked about a refresh")
		out, err := e.cli("refresh", "loop-on-refresh")
		if err == nil || !strings.Contains(out, "time limit") {
			t.Fatalf("refresh with a looping policy: %v\n%s", err, out)
		}
		st := e.status("state", func(st agent.Status) bool { return true })
		if !running(st) || imageOf(st, webUUID) != v1 || len(regtest.StartLines(e.volume())) != 1 {
			t.Fatalf("the app was touched: %+v", st.Info.Apps)
		}
		// The next decision works: a second app on the same module is created.
		e.configure(app(webUUID, "loop-on-refresh", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", "hostile"),
			app("0a7c3b1e-0000-4000-8000-0000000000b2", "second", "img-second", e.registry+"/demo/web:latest", "hostile"))
		e.status("second running", func(st agent.Status) bool { s, _ := appState(st, "second"); return s == "RUNNING" })
		t.Logf("checked: the refresh reported the time limit, the app was untouched, and the module's next decision created another app")
	})

	t.Run("a module whose start section loops is dropped in", func(t *testing.T) {
		e, _ := startWeb(t)
		dir := filepath.Join(e.state, "policies")
		loop := wattest.Build(t, wattest.Module("(func $s (loop $l (br $l))) (start $s)", ""), wattest.Metadata("spin"))
		if err := os.WriteFile(filepath.Join(dir, "spin.wasm"), loop, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("broke: a module whose Wasm start section never returns is dropped into the policy directory")
		st := e.status("the refusal", func(st agent.Status) bool {
			for _, p := range st.Agent.Policies {
				if p.Name == "spin" && p.Error != "" {
					return true
				}
			}
			return false
		})
		var why string
		for _, p := range st.Agent.Policies {
			if p.Name == "spin" {
				why = p.Error
			}
		}
		if !strings.Contains(why, "start section") || !strings.Contains(why, "time limit") {
			t.Fatalf("refusal: %q", why)
		}
		before, _ := regtest.CPUTime(e.agent.Process.Pid)
		time.Sleep(time.Second)
		after, _ := regtest.CPUTime(e.agent.Process.Pid)
		if cpu := after - before; cpu > 200*time.Millisecond {
			t.Fatalf("the agent used %s of CPU in the second after the refusal", cpu)
		}
		// The watcher is alive: a good module dropped in now loads.
		if err := os.WriteFile(filepath.Join(dir, "fine.wasm"), wattest.Build(t, wattest.Module("", ""), wattest.Metadata("fine")), 0o644); err != nil {
			t.Fatal(err)
		}
		e.waitModule("fine")
		t.Logf("checked: refused (%.90s…), the agent idle after it, its API answering and its watcher loading the next module", why)
	})

	t.Run("a module keeps asking to be consulted now", func(t *testing.T) {
		e, _ := startWeb(t) // the image on disk, for the module's use-local
		dir := filepath.Join(e.state, "policies")
		wat := wattest.ModuleAnswering(`{"action":"use-local","restartOnChange":false,"reason":"wat","nextCheck":"2000-01-01T00:00:00Z"}`)
		if err := os.WriteFile(filepath.Join(dir, "eager.wasm"), wattest.Build(t, wat, wattest.Metadata("eager")), 0o644); err != nil {
			t.Fatal(err)
		}
		e.waitModule("eager")
		e.configure(e.web(), app("0a7c3b1e-0000-4000-8000-0000000000e1", "eager", "img-eager", e.registry+"/demo/web:latest", "eager"))
		t.Log("broke: a module answers every decision with a nextCheck in the past")
		e.status("eager running", func(st agent.Status) bool { s, _ := appState(st, "eager"); return s == "RUNNING" })
		mark := e.agentLog.Len()
		time.Sleep(25 * time.Second)
		ticks := strings.Count(e.agentLog.String()[mark:], "event=tick")
		if ticks > 3 {
			t.Fatalf("%d tick decisions in 25 s", ticks)
		}
		t.Logf("checked: %d tick decisions in 25 s (a floor of 10 s, doubling)", ticks)
	})

	t.Run("modules fail; only their apps are affected", func(t *testing.T) {
		e, _ := startWeb(t)
		dir := filepath.Join(e.state, "policies")
		vendor := wattest.Build(t, wattest.Module("", ""), wattest.Metadata("vendor"))
		looping := strings.Replace(wattest.Module("", ""), `(func (export "pullwise_validate_settings") (param i32 i32) (result i64)`,
			`(func (export "pullwise_validate_settings") (param i32 i32) (result i64) (loop $l (br $l))`, 1)
		os.WriteFile(filepath.Join(dir, "vendor.wasm"), vendor, 0o644)
		os.WriteFile(filepath.Join(dir, "stuck.wasm"), wattest.Build(t, looping, wattest.Metadata("stuck")), 0o644)
		uv, us, up := "0a7c3b1e-0000-4000-8000-0000000000f1", "0a7c3b1e-0000-4000-8000-0000000000f2", "0a7c3b1e-0000-4000-8000-0000000000f3"
		withVendor := app(uv, "onvendor", "img-onvendor", e.registry+"/demo/web:latest", "vendor")
		e.configure(e.web(), withVendor)
		e.status("onvendor running", func(st agent.Status) bool { s, _ := appState(st, "onvendor"); return s == "RUNNING" })
		os.Remove(filepath.Join(dir, "vendor.wasm"))
		t.Log("broke: a module in use is deleted; another's validate_settings loops; a third app pins a sha256 no module has")
		b, _ := os.ReadFile(e.config)
		refreshed := strings.Replace(string(b), "displayName: web\n", "displayName: web\n    refreshImage: {counter: 1}\n", 1)
		e.writeConfig(refreshed + app(us, "onstuck", "img-onstuck", e.registry+"/demo/web:latest", "{name: stuck, settings: {a: 1}}") +
			app(up, "pinned", "img-pinned", e.registry+"/demo/web:latest", "{name: always, sha256: "+strings.Repeat("ab", 32)+"}"))
		st := e.status("web's refresh applied", func(st agent.Status) bool {
			for _, a := range st.Info.Apps {
				if a.DisplayName == "web" && a.Counters.RefreshImage == 1 {
					return true
				}
			}
			return false
		})
		reasons := map[string]string{}
		for _, a := range st.Info.Apps {
			reasons[a.DisplayName] = a.ConfigError
		}
		if s, _ := appState(st, "onvendor"); s != "RUNNING" || !strings.Contains(reasons["onvendor"], `unknown policy "vendor"`) {
			t.Fatalf("onvendor: %s, %q", s, reasons["onvendor"])
		}
		if !strings.Contains(reasons["onstuck"], "stuck") || !strings.Contains(reasons["onstuck"], "time limit") {
			t.Fatalf("onstuck: %q", reasons["onstuck"])
		}
		if !strings.Contains(reasons["pinned"], "does not match the pinned") {
			t.Fatalf("pinned: %q", reasons["pinned"])
		}
		t.Logf("checked: web's refresh applied; onvendor keeps running (%s), onstuck and pinned are reported with their module and cause", reasons["onvendor"])
	})

	t.Run("an image that cannot fit is refused before a byte is downloaded", func(t *testing.T) {
		e := newE2EWithRoot(t, 48<<20)
		v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
		e.configure(e.web())
		e.startAgent()
		e.status("web running", running)
		regtest.PushImage(t, e.registry+"/demo/web:latest", bigImage(t, "v2", 4, 16<<20))
		t.Log("broke: containerd's disk (a 48 MiB tmpfs) is smaller than the new image (64 MiB)")
		e.proxy.Reset()
		out, _ := e.cli("refresh", "web")
		st := e.status("the error", func(st agent.Status) bool { _, why := appState(st, "web"); return why != "" })
		state, why := appState(st, "web")
		if state != "RUNNING" || imageOf(st, webUUID) != v1 || !strings.Contains(why, "not enough disk") || !strings.Contains(why, "refused before downloading") {
			t.Fatalf("disk too small: %s, %s, %q\n%s", state, imageOf(st, webUUID), why, out)
		}
		if got := e.proxy.BlobBytes(); got != 0 {
			t.Fatalf("the refused pull fetched %d blob bytes", got)
		}
		e.cli("restart", "web")
		if starts := regtest.Starts(t, e.volume(), 2, ""); !strings.Contains(starts[1], "version=v1") {
			t.Fatalf("the previous image does not start: %q", starts)
		}
		t.Logf("checked: refused with 0 blob bytes fetched (%.160s…); the previous image is intact and restarts", why)
	})

	t.Run("images no app uses are collected to make room", func(t *testing.T) {
		e := newE2EWithRoot(t, 80<<20)
		v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
		e.configure(e.web())
		e.startAgent()
		e.status("web running", running)
		spare := e.registry + "/demo/spare:1"
		regtest.PushImage(t, spare, bigImage(t, "spare", 1, 28<<20))
		if out, err := exec.Command("ctr", "--address", e.d.Socket, "-n", e.d.Namespace, "images", "pull", "--plain-http", spare).CombinedOutput(); err != nil {
			t.Fatalf("ctr pull: %v\n%s", err, out)
		}
		v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", bigImage(t, "v2", 1, 8<<20)).String()
		t.Log("broke: an image no app uses (28 MiB, unpacked) leaves too little of containerd's 80 MiB disk for the new image")
		if out, err := e.cli("refresh", "web"); err != nil {
			t.Fatalf("refresh: %v\n%s", err, out)
		}
		e.status("web on v2", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v2 })
		out, err := exec.Command("ctr", "--address", e.d.Socket, "-n", e.d.Namespace, "images", "ls", "-q").CombinedOutput()
		if err != nil {
			t.Fatalf("ctr images ls: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "spare") || !strings.Contains(string(out), v1) {
			t.Fatalf("the unused image must be gone and web's previous image (%s) kept for a rollback:\n%s", v1, out)
		}
		e.stopAgent()
		if !strings.Contains(e.agentLog.String(), "not enough disk for a pull; removing images no app uses") {
			t.Fatalf("the pull fitted without collecting: the case proves nothing; log:\n%s", e.agentLog)
		}
		t.Logf("checked: the pull did not fit, the unused image was removed, web moved to v2, v1 kept for a rollback")
	})
}

// TestActionWhileContainerdIsDown: an action asked while containerd does not
// answer is reported as queued, with its own exit code, and the agent
// carries it out once containerd is back.
func TestActionWhileContainerdIsDown(t *testing.T) {
	e, v1 := startWeb(t)
	v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false)).String()
	e.d.Stop(t)
	out, err := e.cli("refresh", "web")
	var exit *exec.ExitError
	code := -1
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	}
	t.Logf("refresh with containerd down: exit %d\n%s", code, out)
	if code != exitQueued || !strings.Contains(out, "containerd is unreachable") || !strings.Contains(out, "queued") || strings.Contains(out, "transport:") {
		t.Fatalf("exit %d, want %d and a plain word that the refresh is queued:\n%s", code, exitQueued, out)
	}
	e.d.Start(t)
	st := e.status("the refresh carried out", func(st agent.Status) bool { return running(st) && imageOf(st, webUUID) == v2 })
	if imageOf(st, webUUID) == v1 {
		t.Fatal("still on v1")
	}
	regtest.Starts(t, e.volume(), 2, "")
}
