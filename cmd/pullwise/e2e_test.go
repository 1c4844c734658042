package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// e2e drives the real pullwise binary: an agent on a private containerd and
// the Debian docker-registry server, and the CLI talking to it.
type e2e struct {
	t         testing.TB
	bin       string
	state     string
	config    string
	d         *ctrdtest.Daemon
	registry  string // the proxy in front of docker-registry
	proxy     *regtest.Proxy
	env       []string // extra environment for the agent
	agentArgs []string // extra agent flags
	agent     *exec.Cmd
	agentLog  *bytes.Buffer
}

func newE2E(t testing.TB) *e2e { return newE2EWithRoot(t, 0) }

// newE2EWithRoot gives containerd a root filesystem of rootBytes (0: no
// limit), so a test can fill the disk.
func newE2EWithRoot(t testing.TB, rootBytes int64) *e2e {
	t.Helper()
	e := &e2e{t: t, state: t.TempDir(), d: ctrdtest.StartWithRoot(t, rootBytes)}
	e.proxy = regtest.NewProxy(t, regtest.NewDistribution(t))
	e.registry = e.proxy.Host
	e.bin = binary(t)
	e.config = filepath.Join(t.TempDir(), "config.yaml")
	e.writeConfig(fmt.Sprintf(`device:
  insecureRegistries: [%q]
apps:
  - uuid: 0a7c3b1e-0000-4000-8000-00000000e2e1
    displayName: web
    drives:
      - kind: container
        image: {uuid: 6f1e0c1e-0000-4000-8000-00000000e2e1, name: "%s/demo/web:latest"}
      - kind: volume
        mountPath: /data
`, e.registry, e.registry))
	t.Cleanup(e.stopAgent)
	return e
}

var built struct {
	sync.Once
	path string
	err  error
}

// TestMain removes the binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.path != "" {
		os.RemoveAll(filepath.Dir(built.path))
	}
	os.Exit(code)
}

// binary builds the pullwise binary once per test run, with the fault
// points the fault suite kills the agent at (release builds have none).
func binary(t testing.TB) string {
	t.Helper()
	built.Do(func() {
		dir, err := os.MkdirTemp("", "pullwise-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "pullwise")
		if out, err := exec.Command("go", "build", "-tags", "faultpoints", "-o", built.path, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("building pullwise: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func (e *e2e) writeConfig(s string) {
	e.t.Helper()
	if err := os.WriteFile(e.config, []byte(s), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *e2e) startAgent() {
	e.t.Helper()
	e.agentLog = &bytes.Buffer{}
	e.agent = exec.Command(e.bin, append([]string{"agent", "--config", e.config, "--state", e.state,
		"--containerd", e.d.Socket, "--namespace", e.d.Namespace, "--grace-period", "1s", "--log-level", "debug"}, e.agentArgs...)...)
	e.agent.Stdout, e.agent.Stderr = e.agentLog, e.agentLog
	e.agent.Env = append(os.Environ(), e.env...)
	if err := e.agent.Start(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *e2e) stopAgent() {
	if e.agent == nil || e.agent.Process == nil {
		return
	}
	e.agent.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { e.agent.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		e.agent.Process.Kill()
		<-done
		e.t.Errorf("the agent did not stop on SIGTERM; log:\n%s", e.agentLog)
	}
	e.agent = nil
}

func (e *e2e) cli(args ...string) (string, error) {
	e.t.Helper()
	cmd := exec.Command(e.bin, append(args, "--state", e.state)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// status waits until cond holds for `pullwise status -o json`.
func (e *e2e) status(what string, cond func(agent.Status) bool) agent.Status {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := e.cli("status", "-o", "json")
		var st agent.Status
		if err == nil && json.Unmarshal([]byte(out), &st) == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("waiting for %s: last status %s (%v)\nagent log:\n%s", what, out, err, e.agentLog)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// killApp kills the app's process behind the agent's back (a crash).
func (e *e2e) killApp(uuid string) {
	e.t.Helper()
	c, err := e.d.Client.LoadContainer(e.d.Context(), uuid)
	if err != nil {
		e.t.Fatal(err)
	}
	task, err := c.Task(e.d.Context(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := task.Kill(e.d.Context(), syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
}

func (e *e2e) starts() []string { return regtest.StartLines(e.volume()) }

// volume is the web app's volume directory, where the test app logs starts.
func (e *e2e) volume() string {
	return filepath.Join(e.state, "volumes", webUUID, "drive1")
}

// waitRunning waits until n apps run.
func (e *e2e) waitRunning(n int) {
	e.t.Helper()
	e.status(fmt.Sprintf("%d apps running", n), func(st agent.Status) bool {
		k := 0
		for _, a := range st.Info.Apps {
			if a.State == "RUNNING" {
				k++
			}
		}
		return k == n
	})
}

func running(st agent.Status) bool {
	return len(st.Info.Apps) == 1 && st.Info.Apps[0].State == "RUNNING"
}

func TestEndToEnd(t *testing.T) {
	e := newE2E(t)
	v1 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false)).String()
	e.startAgent()
	st := e.status("the app to run", running)
	if st.Info.Images[0].SHA256.String() != v1 {
		t.Fatalf("resolved %s, want %s", st.Info.Images[0].SHA256, v1)
	}
	if out, err := e.cli("status"); err != nil || !strings.Contains(out, "web") || !strings.Contains(out, shortDigest(imagedigest.Digest(v1))) {
		t.Fatalf("status table: %v\n%s", err, out)
	}
	// The running agent's version beside the client's, as kubectl shows them.
	var v versions
	if out, err := e.cli("version", "-o", "json"); err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Agent == nil || v.Agent.Go != v.Go {
		t.Fatalf("version with an agent running: %v\n%s", err, out)
	}
	if out, _ := e.cli("version"); !strings.Contains(out, "agent:                devel") {
		t.Fatalf("version's text with an agent running:\n%s", out)
	}

	// Nothing new: a dry run says so.
	if out, err := e.cli("refresh", "web", "--dry-run"); err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	// Move the tag, refresh: the new digest and exactly one restart.
	v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false)).String()
	if out, err := e.cli("refresh", "web", "--dry-run"); err != nil || !strings.Contains(out, "would change") {
		t.Fatalf("dry run after the move: %v\n%s", err, out)
	}
	// For scripts: a change pending, then a refresh that updated the app,
	// then one that found nothing new, each with its own exit code.
	if out, err := e.cli("refresh", "web", "--dry-run", "--detailed-exitcode"); exitCode(err) != exitUpdated {
		t.Fatalf("dry run with a change pending: exit %d, want %d\n%s", exitCode(err), exitUpdated, out)
	}
	out, err := e.cli("refresh", "web", "--detailed-exitcode")
	if exitCode(err) != exitUpdated || !strings.Contains(out, "web: RUNNING, 1 restart(s)") || !strings.Contains(out, "web: stopping (up to 10s, then SIGKILL)") {
		t.Fatalf("refresh: exit %d, want %d\n%s\nagent log:\n%s", exitCode(err), exitUpdated, out, e.agentLog)
	}
	if out, err := e.cli("refresh", "web", "--detailed-exitcode"); err != nil || !strings.Contains(out, "0 restart(s)") {
		t.Fatalf("a refresh with nothing new: %v, want exit 0\n%s", err, out)
	}
	st = e.status("the new digest", func(st agent.Status) bool { return running(st) && st.Info.Images[0].SHA256.String() == v2 })
	if st.Info.Apps[0].Restarts != 1 || st.Info.Apps[0].Counters.RefreshImage != 2 {
		t.Fatalf("after refresh: %+v", st.Info.Apps[0])
	}
	if got := regtest.Starts(t, e.volume(), 2, ""); len(got) != 2 || !strings.Contains(got[1], "version=v2") {
		t.Fatalf("starts %q", got)
	}
	// The log tells the story, by the app's name: the download, the image
	// change from which digest to which, the new root filesystem.
	log := e.agentLog.String()
	for _, want := range []string{"image downloaded: app=web uuid=" + webUUID, "bytes=", "took=",
		"image changed: app=web uuid=" + webUUID + " image=" + e.registry + "/demo/web:latest from=" + v1 + " to=" + v2,
		"app started on a new root filesystem (volumes kept): app=web"} {
		if !strings.Contains(log, want) {
			t.Fatalf("the agent's log lacks %q:\n%s", want, log)
		}
	}
	// The same story as events, for scripts and notifiers.
	evs := e.events("web")
	changed := findEvent(evs, events.ImageChanged)
	if changed == nil || changed.From.String() != v1 || changed.Digest.String() != v2 || changed.AppName != "web" || changed.App != webUUID || changed.Image == "" {
		t.Fatalf("no image.changed event from v1 to v2: %+v", evs)
	}
	if d := findEvent(evs, events.DownloadFinished); d == nil || d.Bytes <= 0 || d.Took <= 0 || d.Digest.String() != v2 {
		t.Fatalf("no download.finished event with bytes and time: %+v", evs)
	}
	if findEvent(evs, events.Started) == nil || findEvent(evs, events.Checked) == nil {
		t.Fatalf("no app.started or image.checked event: %+v", evs)
	}
	if out, err := e.cli("events", "web"); err != nil || !strings.Contains(out, "image.changed") || !strings.Contains(out, "from="+v1[:len("sha256:")+12]) {
		t.Fatalf("events as text: %v\n%s", err, out)
	}
	lastSeq := evs[len(evs)-1].Seq

	// The agent stops, the app keeps running; a new agent adopts it without
	// a restart.
	e.stopAgent()
	if _, err := e.cli("status"); err == nil {
		t.Fatal("status answered with the agent stopped")
	} else if out, _ := e.cli("status"); !strings.Contains(out, "not running") || !strings.Contains(out, "pullwise agent --config") {
		t.Fatalf("status without an agent should say how to start it: %s", out)
	}
	e.startAgent()
	e.status("the app to be adopted", running)
	time.Sleep(time.Second)
	if got := e.starts(); len(got) != 2 {
		t.Fatalf("adoption restarted the app: %q", got)
	}

	// Events survive the agent's restart, their numbering goes on, and a
	// follower sees a rejected edit as it happens.
	if evs := e.events(""); len(evs) == 0 || evs[0].Seq != 1 || evs[len(evs)-1].Seq <= lastSeq {
		t.Fatalf("events after the agent's restart: %+v (before: up to %d)", evs, lastSeq)
	}
	follow := exec.Command(e.bin, "events", "-f", "-o", "json", "--kind", "config.*", "--state", e.state)
	var followed syncBuffer
	follow.Stdout = &followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	time.Sleep(500 * time.Millisecond) // its request is in

	// A malformed edit is rejected, with the field named; the app is untouched.
	b, _ := os.ReadFile(e.config)
	e.writeConfig(strings.Replace(string(b), "displayName: web", "displayName: web\n    restart: {counter: -1}", 1))
	st = e.status("the rejection", func(st agent.Status) bool { return st.Agent.ConfigError != "" })
	if !strings.Contains(st.Agent.ConfigError, "apps[0].restart.counter") || !running(st) {
		t.Fatalf("rejection: %+v", st.Agent)
	}
	time.Sleep(time.Second)
	if got := e.starts(); len(got) != 2 {
		t.Fatalf("a rejected edit restarted the app: %q", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(followed.String(), `"kind":"config.rejected"`) || !strings.Contains(followed.String(), `"field":"apps[0].restart.counter"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not see the rejection with its field:\n%s", followed.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// events is `pullwise events [APP] -o json`.
func (e *e2e) events(app string) []events.Event {
	e.t.Helper()
	args := []string{"events", "-o", "json"}
	if app != "" {
		args = append(args, app)
	}
	out, err := e.cli(args...)
	if err != nil {
		e.t.Fatalf("events: %v\n%s", err, out)
	}
	var es []events.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev events.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			e.t.Fatalf("events -o json: a line that is not an event: %q", line)
		}
		es = append(es, ev)
	}
	return es
}

// findEvent is the last event of the kind, or nil.
func findEvent(es []events.Event, k events.Kind) *events.Event {
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Kind == k {
			return &es[i]
		}
	}
	return nil
}

// TestRefreshRolledBackExitCode: a refresh onto an image that exits at once
// is rolled back, and says so to a script (refresh --detailed-exitcode: 12).
func TestRefreshRolledBackExitCode(t *testing.T) {
	e, v1 := startWeb(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "broken", true))
	out, err := e.cli("refresh", "web", "--detailed-exitcode")
	if exitCode(err) != exitRolledBack || !strings.Contains(out, "ROLLED_BACK") {
		t.Fatalf("a refresh rolled back: exit %d, want %d\n%s\nagent log:\n%s", exitCode(err), exitRolledBack, out, e.agentLog)
	}
	st := e.status("back on v1", func(st agent.Status) bool { return imageOf(st, webUUID) == v1 })
	if log := e.agentLog.String(); !strings.Contains(log, "[WARN]  pullwise.apps: rolled back to the previous images: app=web") {
		t.Fatalf("the rollback is not a warning in the log:\n%s", log)
	}
	if rb := findEvent(e.events("web"), events.RolledBack); rb == nil || !strings.Contains(rb.Reason, "exited with code") {
		t.Fatalf("no app.rolled-back event with its reason")
	}
	t.Logf("rolled back: %s (%s)", st.Info.Apps[0].State, st.Info.Apps[0].LastError)
}

// TestOneAgentPerNamespace: a second agent on the same state directory, or
// on another state directory but the same containerd namespace (a wrong
// --state), refuses to start and names the first; the first's app is not
// touched. Once the first stops, its namespace may be taken over.
func TestOneAgentPerNamespace(t *testing.T) {
	e, _ := startWeb(t)
	second := func(state string) (string, error) {
		cmd := exec.Command(e.bin, "agent", "--config", e.config, "--state", state,
			"--containerd", e.d.Socket, "--namespace", e.d.Namespace)
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
			return string(out), err
		case <-time.After(20 * time.Second):
			cmd.Process.Signal(syscall.SIGTERM)
			<-done
			return string(out), errors.New("the second agent kept running")
		}
	}
	pid := fmt.Sprint(e.agent.Process.Pid)
	out, err := second(e.state)
	if err == nil || !strings.Contains(out, "another pullwise agent (pid "+pid+") runs on the state directory") {
		t.Fatalf("a second agent on the same state directory: %v\n%s", err, out)
	}
	other := t.TempDir()
	out, err = second(other)
	if err == nil || !strings.Contains(out, "is run by the pullwise agent (pid "+pid+") on the state directory "+e.state) {
		t.Fatalf("a second agent on the same namespace: %v\n%s", err, out)
	}
	time.Sleep(time.Second)
	if starts := e.starts(); len(starts) != 1 {
		t.Fatalf("the refused agents touched the app: %q", starts)
	}
	// The CLI pointed at the wrong state directory says where the agent is.
	if out, err := exec.Command(e.bin, "status", "--state", other).CombinedOutput(); exitCode(err) != exitNotRunning ||
		!strings.Contains(string(out), "an agent runs with --state "+e.state+" (pid "+pid+")") {
		t.Fatalf("status on the wrong state directory: exit %d\n%s", exitCode(err), out)
	}
	// The first stops: its claim is stale, and another agent may take the
	// namespace over (here for a moment: it adopts the app, then stops).
	e.stopAgent()
	e.state = other
	e.startAgent()
	e.status("the app adopted by the new agent", running)
}
