package main

import (
	"bufio"
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

	"sigs.k8s.io/yaml"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// TestOutputFormatsCompletionAndWatch drives the operator's CLI against a
// real agent: -o yaml and -o json wherever a command prints, shell
// completion of app names, uuids, modules and -o values, and status
// --watch seeing a restart.
func TestOutputFormatsCompletionAndWatch(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	e.startAgent()
	e.waitRunning(1)

	// Every structured output parses, and YAML says what JSON says.
	for _, args := range [][]string{
		{"status"}, {"status", "web"}, {"version"}, {"policy", "list"}, {"policy", "inspect", "always"},
		{"policy", "test", "always", "--cases", "../../policies/always/testdata/cases.yaml"},
		{"resolve", "--insecure", e.registry + "/demo/web:latest"},
		{"refresh", "web", "--dry-run"},
	} {
		j, err := e.cli(append(args, "-o", "json")...)
		if err != nil {
			t.Fatalf("%v -o json: %v\n%s", args, err, j)
		}
		y, err := e.cli(append(args, "-o", "yaml")...)
		if err != nil {
			t.Fatalf("%v -o yaml: %v\n%s", args, err, y)
		}
		var fromJSON, fromYAML any
		if err := json.Unmarshal([]byte(j), &fromJSON); err != nil {
			t.Fatalf("%v -o json is not JSON: %v\n%s", args, err, j)
		}
		if err := yaml.Unmarshal([]byte(y), &fromYAML); err != nil {
			t.Fatalf("%v -o yaml is not YAML: %v\n%s", args, err, y)
		}
		if len(y) < 10 || strings.HasPrefix(strings.TrimSpace(y), "{") {
			t.Fatalf("%v -o yaml printed %q", args, y)
		}
	}
	input := filepath.Join(t.TempDir(), "in.yaml")
	os.WriteFile(input, []byte("event: create\nimage: {ref: \"registry.local/app:latest\"}\n"), 0o600)
	out, err := e.cli("policy", "run", "always", "--input", input, "-o", "yaml")
	if err != nil || !strings.Contains(out, "action:") {
		t.Fatalf("policy run -o yaml: %v\n%s", err, out)
	}
	if out, err := e.cli("status", "-o", "xml"); exitCode(err) != exitUsage || !strings.Contains(out, "want table, json, yaml") {
		t.Fatalf("-o xml: exit %d\n%s", exitCode(err), out)
	}

	// Completion: app names and uuids from the agent, modules, -o values.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "status", ""}, []string{"web\tRUNNING", webUUID + "\tweb, RUNNING"}},
		{[]string{"__complete", "restart", "w"}, []string{"web"}},
		{[]string{"__complete", "policy", "run", ""}, []string{"always\tbuilt-in policy", "periodic"}},
		{[]string{"__complete", "status", "-o", ""}, []string{"table", "json", "yaml"}},
	} {
		// The word being completed is the last one: --state goes first.
		b, err := exec.Command(e.bin, append([]string{"__complete", "--state", e.state}, tc.args[1:]...)...).CombinedOutput()
		out := string(b)
		if err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: %q missing from\n%s", tc.args, w, out)
			}
		}
	}

	// status --watch: a restart shows up without asking again.
	watch := exec.Command(e.bin, "status", "web", "--watch", "--interval", "1s", "-o", "json", "--state", e.state)
	stdout, _ := watch.StdoutPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer watch.Process.Kill()
	docs := make(chan map[string]any)
	go func() {
		dec := json.NewDecoder(bufio.NewReader(stdout))
		for {
			var d map[string]any
			if dec.Decode(&d) != nil {
				close(docs)
				return
			}
			docs <- d
		}
	}()
	restarts := func(d map[string]any) float64 {
		app, _ := d["app"].(map[string]any)
		n, _ := app["restarts"].(float64)
		return n
	}
	if d := <-docs; restarts(d) != 0 {
		t.Fatalf("first document: %v", d)
	}
	if out, err := e.cli("restart", "web"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	deadline := time.After(30 * time.Second)
	for seen := false; !seen; {
		select {
		case d, ok := <-docs:
			if !ok {
				t.Fatal("status --watch ended")
			}
			seen = restarts(d) == 1
		case <-deadline:
			t.Fatal("status --watch did not show the restart")
		}
	}
	watch.Process.Signal(syscall.SIGINT)
	if err := watch.Wait(); err != nil {
		t.Fatalf("status --watch after SIGINT: %v", err)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// TestProgressLines: blobs downloading at once each keep a line of their
// own on a terminal (redrawn in place, with rate and time left); plain
// output gets a line per quarter and one at completion.
func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	p := &progressLines{out: &buf, tty: true, now: func() time.Time { return clock }, blobs: map[imagedigest.Digest]*blobLine{}}
	a, b := imagedigest.Digest("sha256:aaaaaaaaaaaa0000"), imagedigest.Digest("sha256:bbbbbbbbbbbb0000")
	p.update(pull.Progress{Digest: a, Total: 4 << 20})
	p.update(pull.Progress{Digest: b, Total: 8 << 20})
	clock = clock.Add(2 * time.Second)
	p.update(pull.Progress{Digest: a, Done: 2 << 20, Total: 4 << 20})
	clock = clock.Add(time.Second)
	p.update(pull.Progress{Digest: b, Done: 3 << 20, Total: 8 << 20})
	out := buf.String()
	last := out[strings.LastIndex(out, "\x1b[2A"):]
	for _, want := range []string{"aaaaaaaaaaaa  2.0 MiB / 4.0 MiB  682.7 KiB/s  ETA 3s", "bbbbbbbbbbbb  3.0 MiB / 8.0 MiB  1.0 MiB/s  ETA 5s"} {
		if !strings.Contains(last, want) {
			t.Errorf("terminal: %q missing from the last redraw %q", want, last)
		}
	}
	if strings.Count(last, "\n") != 2 {
		t.Errorf("two blobs, want two lines: %q", last)
	}

	buf.Reset()
	plain := &progressLines{out: &buf, now: func() time.Time { return clock }, blobs: map[imagedigest.Digest]*blobLine{}}
	for _, done := range []int64{0, 1 << 20, 2 << 20, 2<<20 + 1, 3 << 20} {
		plain.update(pull.Progress{Digest: a, Done: done, Total: 4 << 20})
	}
	plain.update(pull.Progress{Digest: a, Done: 4 << 20, Total: 4 << 20, Complete: true})
	if got := strings.Count(buf.String(), "\n"); got != 4 || !strings.Contains(buf.String(), "downloaded aaaaaaaaaaaa (4.0 MiB)") {
		t.Errorf("plain output: %d lines\n%s", got, buf.String())
	}
}

// TestMakeInstall stages `make install` and checks what a device gets:
// the binary, the unit pointing at it, a default configuration that
// validates, the state directory 0700; an existing configuration is kept.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is needed (scripts/setup.sh installs it)")
	}
	dest := t.TempDir()
	run := func() {
		cmd := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	run()
	bin := filepath.Join(dest, "usr/bin/pullwise")
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/pullwise.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart=/usr/bin/pullwise agent --config /etc/pullwise/config.yaml") ||
		!strings.Contains(string(unit), "KillMode=process") {
		t.Fatalf("unit: %v\n%s", err, unit)
	}
	for path, mode := range map[string]os.FileMode{bin: 0o755, filepath.Join(dest, "etc/pullwise/config.yaml"): 0o600, filepath.Join(dest, "var/lib/pullwise"): 0o700} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, want %#o", path, err, mode)
		}
	}
	cfg := filepath.Join(dest, "etc/pullwise/config.yaml")
	if out, err := exec.Command(bin, "config", "validate", cfg).CombinedOutput(); err != nil {
		t.Fatalf("the default configuration does not validate: %v\n%s", err, out)
	}
	os.WriteFile(cfg, []byte("apps: []\n# mine\n"), 0o600)
	run()
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "# mine") {
		t.Fatal("make install replaced an existing configuration")
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "pullwise ") {
		t.Fatalf("installed binary: %v\n%s", err, out)
	}
}

// TestAppLogsRotatedAndShown: an app's log is capped (device.logs) with
// rotated copies, readable by root only, and `pullwise logs` prints it
// (--tail, -f across a restart).
func TestAppLogsRotatedAndShown(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	e.writeConfig(fmt.Sprintf("device:\n  insecureRegistries: [%q]\n  logs: {maxSize: 64Ki, maxFiles: 2}\napps:\n%s    env: [SPAM=3000]\n", e.registry, e.web()))
	e.agentArgs = []string{"--log-check-interval", "200ms"}
	e.startAgent()
	e.waitRunning(1)
	live := filepath.Join(e.state, "logs", webUUID+".log")
	deadline := time.Now().Add(30 * time.Second)
	for {
		fi, err := os.Stat(live + ".1")
		if err == nil && fi.Size() > 64<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log was not rotated: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, f := range []string{live, live + ".1"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", f, fi.Mode().Perm(), err)
		}
	}
	if _, err := os.Stat(live + ".3"); err == nil {
		t.Error("more rotated copies than maxFiles")
	}
	out, err := e.cli("logs", "web", "--tail", "2")
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, "line 3000 of 3000") {
		t.Fatalf("logs --tail 2: %v\n%q", err, out)
	}

	follow := exec.Command(e.bin, "logs", "web", "-f", "--tail", "0", "--state", e.state)
	var buf, errs syncBuffer
	follow.Stdout, follow.Stderr = &buf, &errs
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer follow.Process.Kill()
	time.Sleep(500 * time.Millisecond)
	if out, err := e.cli("restart", "web"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(buf.String(), "line 3000 of 3000") {
		if time.Now().After(deadline) {
			t.Fatalf("logs -f did not show the restarted app's output:\n%s\nstderr: %s\nlog files: %v", buf.String(), errs.String(), logSizes(live))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Count(buf.String(), "started (fresh root filesystem") != 1 {
		t.Fatalf("logs -f printed the restart's output %d times (rotations in between must not repeat or lose it)", strings.Count(buf.String(), "started (fresh"))
	}
	follow.Process.Signal(syscall.SIGINT)
	if err := follow.Wait(); err != nil {
		t.Fatalf("logs -f after SIGINT: %v", err)
	}
	// --since: the app has been quiet for a while, so the last second
	// holds nothing; an hour reaches back before the agent's first mark,
	// so all that is kept is printed, and it says so.
	time.Sleep(1500 * time.Millisecond)
	if out, err := e.cli("logs", "web", "--since", "1s"); err != nil || strings.Contains(out, "line") {
		t.Fatalf("logs --since 1s of a quiet app: %v\n%s", err, out)
	}
	out, err = e.cli("logs", "web", "--since", "1h")
	if err != nil || !strings.Contains(out, "no log mark 1h0m0s old") || !strings.Contains(out, "line 3000 of 3000") {
		t.Fatalf("logs --since 1h: %v\n%s", err, out)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func logSizes(live string) []string {
	var out []string
	for _, f := range []string{live, live + ".1", live + ".2"} {
		if fi, err := os.Stat(f); err == nil {
			out = append(out, fmt.Sprintf("%s: %d", filepath.Base(f), fi.Size()))
		}
	}
	return out
}

// TestPeriodicChecksOnTheDevicePhase: the agent gives policies the
// device's phase from device.id, and periodic schedules its next check at
// that point of the interval.
func TestPeriodicChecksOnTheDevicePhase(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	const id = "5d0767ee-0000-4000-8000-00000000f1ee"
	e.writeConfig(fmt.Sprintf("device:\n  id: %s\n  insecureRegistries: [%q]\n  pullPolicy: {name: periodic, settings: {interval: 1h}}\napps:\n%s", id, e.registry, e.web()))
	e.startAgent()
	st := e.status("web running with a next check", func(st agent.Status) bool {
		return running(st) && st.Info.Apps[0].NextCheck != nil
	})
	next := *st.Info.Apps[0].NextCheck
	phase := time.Duration(config.Device{ID: id}.Splay("") * float64(time.Hour))
	if got := next.Sub(next.Truncate(time.Hour)); got < phase-time.Second || got > phase+time.Second {
		t.Fatalf("next check %s is %s into its hour; the device's phase is %s", next, got, phase)
	}
}

// TestPoliciesSeeTheRealLink: the agent tells policies (and the API) the
// link as configured (metered, cost) and as measured (online, bandwidth
// from the app's own download).
func TestPoliciesSeeTheRealLink(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	e.writeConfig(fmt.Sprintf("device:\n  insecureRegistries: [%q]\n  link: {metered: true, cost: 10}\napps:\n%s", e.registry, e.web()))
	e.startAgent()
	e.waitRunning(1)
	st := e.status("the device as policies see it", func(st agent.Status) bool { return st.Agent.Device != nil })
	l := st.Agent.Device.Link
	if !l.Online || !l.Metered || l.Cost != 10 || l.BandwidthBps <= 0 || st.Agent.Device.Splay <= 0 {
		t.Fatalf("device %+v: want online, metered, cost 10, a measured bandwidth and a phase", *st.Agent.Device)
	}
	if b, err := os.ReadFile(filepath.Join(e.state, "status.json")); err != nil || strings.Contains(string(b), "bandwidthBps") {
		t.Fatalf("the status file carries the ever-changing device part (flash): %v", err)
	}
}
