package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/internal/testing/testcache"
	"github.com/pullwise/pullwise/internal/testing/wattest"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/sdk"
)

// run executes the CLI in-process, as a user would from a shell.
func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newRoot()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cache := testcache.ModuleDir()
	if len(args) > 1 && args[0] == "policy" && (args[1] == "run" || args[1] == "test") {
		args = append(args, "--cache-dir", cache)
	}
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestPolicyRun(t *testing.T) {
	out, err := run(t, `{"event":"create","now":"2026-11-27T12:00:00Z","image":{"ref":"r/a:latest","localDigest":"sha256:aa"}}`,
		"policy", "run", "always", "--input", "-")
	if err != nil {
		t.Fatal(err, out)
	}
	var d sdk.Decision
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.Action != sdk.ActionCheckRemote {
		t.Fatalf("output %q: %+v, %v", out, d, err)
	}
	// Settings are validated by the module before the decision.
	_, err = run(t, `{"event":"tick","image":{"ref":"r/a:latest"}}`, "policy", "run", "periodic", "--input", "-", "--settings", `{"interval":"1s"}`)
	if err == nil || !strings.Contains(err.Error(), "rejects its settings") {
		t.Fatalf("bad settings: %v", err)
	}
	_, err = run(t, "", "policy", "run", "sometimes", "--input", "-")
	if err == nil || !strings.Contains(err.Error(), "neither a module file nor a built-in policy") {
		t.Fatalf("unknown module: %v", err)
	}
}

func TestPolicyTest(t *testing.T) {
	out, err := run(t, "", "policy", "test", "always", "--cases", "../../policies/always/testdata/cases.yaml")
	if err != nil || !strings.Contains(out, "always: 19 passed, 0 failed") {
		t.Fatalf("passing cases: %v\n%s", err, out)
	}
	// The cases of `always` run against `never` must fail, with a non-zero exit.
	out, err = run(t, "", "policy", "test", "never", "--cases", "../../policies/always/testdata/cases.yaml")
	var ee *exitError
	if !errors.As(err, &ee) || !strings.Contains(out, "FAIL  create, absent image is pulled") || !strings.Contains(out, " failed\n") {
		t.Fatalf("failing cases: %v\n%s", err, out)
	}
}

func TestPolicyInspect(t *testing.T) {
	out, err := run(t, "", "policy", "inspect", "periodic", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var info plugins.Info
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Metadata.Name != "periodic" || info.Metadata.ABIVersion != 1 || len(info.SHA256) != 64 || info.Size < 1000 || len(info.Metadata.SettingsSchema) == 0 {
		t.Fatalf("info = %+v", info)
	}
	bad := filepath.Join(t.TempDir(), "bad.wasm")
	os.WriteFile(bad, []byte("MZ not wasm"), 0o644)
	if _, err := run(t, "", "policy", "inspect", bad); err == nil || !strings.Contains(err.Error(), "not a WebAssembly binary") {
		t.Fatalf("inspect of a non-module: %v", err)
	}
}

func TestPolicyAnnotate(t *testing.T) {
	dir := t.TempDir()
	meta := filepath.Join(dir, "metadata.json")
	os.WriteFile(meta, []byte(`{"name":"renamed","version":"9.9.9","description":"d"}`), 0o644)
	src := filepath.Join(dir, "m.wasm")
	wasm, _ := readBuiltin(t, "never")
	os.WriteFile(src, wasm, 0o644)
	if _, err := run(t, "", "policy", "annotate", src, "--metadata", meta); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "", "policy", "inspect", src)
	if err != nil || !strings.Contains(out, "renamed") || !strings.Contains(out, "9.9.9") {
		t.Fatalf("after annotate: %v\n%s", err, out)
	}
}

func readBuiltin(t *testing.T, name string) ([]byte, error) {
	t.Helper()
	_, b, err := readModule(name)
	if err != nil {
		t.Fatal(err)
	}
	return b, nil
}

// TestPolicyRunStopsALoopingModule: `policy run` of a module whose start
// section loops returns an error naming the phase and its limit instead of
// hanging.
func TestPolicyRunStopsALoopingModule(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spin.wasm")
	wasm := wattest.Build(t, wattest.Module("(func $s (loop $l (br $l))) (start $s)", ""), wattest.Metadata("spin"))
	if err := os.WriteFile(path, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, `{"event":"create","now":"2026-11-27T12:00:00Z","image":{"ref":"r/a:latest"}}`, "policy", "run", path, "--input", "-")
	if err == nil || !strings.Contains(err.Error(), "instantiate (start section)") || !strings.Contains(err.Error(), "1s time limit") {
		t.Fatalf("policy run of a looping module: %v", err)
	}
}

// TestPolicyRunValidatesItsInput: an unknown event, a missing image or a
// misspelt field is refused, not decided upon.
func TestPolicyRunValidatesItsInput(t *testing.T) {
	for input, want := range map[string]string{
		`{"event":"reboot","image":{"ref":"r/a:1"}}`:                 `event: "reboot" is not an event`,
		`{"event":"create"}`:                                         "image.ref: required",
		`{"event":"create","image":{"ref":"r/a:1","locaDigest":""}}`: `unknown field "locaDigest"`,
	} {
		_, err := run(t, input, "policy", "run", "always", "--input", "-")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("input %s: %v, want %q", input, err, want)
		}
	}
}

// TestPolicyReplayAndRecordCases: the agent records its decisions; replay
// through the recording module finds no difference, through `never` it
// finds them (exit 1, as a table and as JSON); record-cases writes a case
// file that the recording module passes and `never` fails.
func TestPolicyReplayAndRecordCases(t *testing.T) {
	e, _ := startWeb(t)
	if out, err := e.cli("refresh", "web"); err != nil {
		t.Fatalf("refresh: %v\n%s", err, out)
	}
	e.stopAgent()
	out, err := e.cli("policy", "replay", "--module", "always")
	if err != nil || !strings.Contains(out, ": 0 differ") {
		t.Fatalf("replay through the recording module: %v\n%s", err, out)
	}
	t.Logf("replay through always: %s", strings.TrimSpace(out))
	out, err = e.cli("policy", "replay", "--module", "never", "--app", "web")
	if exitCode(err) != 1 || !strings.Contains(out, "REPLAYED (never)") || !strings.Contains(out, "always: pull") || !strings.Contains(out, "use-local") {
		t.Fatalf("replay through never: exit %d\n%s", exitCode(err), out)
	}
	t.Logf("replay through never:\n%s", out)
	out, _ = e.cli("policy", "replay", "--module", "never", "-o", "json")
	var rep struct {
		Replayed, Differ int
		Differences      []struct{ Event, Recorded, Replayed string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Differ == 0 || rep.Differ > rep.Replayed {
		t.Fatalf("replay -o json: %v\n%s", err, out)
	}
	if out, err := e.cli("policy", "replay", "--module", "never", "--since", "2999-01-01"); err != nil || !strings.Contains(out, "0 recorded decisions") {
		t.Fatalf("replay --since the future: %v\n%s", err, out)
	}

	cases := filepath.Join(t.TempDir(), "recorded.yaml")
	if out, err := e.cli("policy", "record-cases", "-f", cases); err != nil || !strings.Contains(out, "wrote ") {
		t.Fatalf("record-cases: %v\n%s", err, out)
	}
	if out, err := e.cli("policy", "test", "always", "--cases", cases); err != nil || !strings.Contains(out, " 0 failed") {
		t.Fatalf("the recorded cases under the recording module: %v\n%s", err, out)
	}
	if out, err := e.cli("policy", "test", "never", "--cases", cases); err == nil || !strings.Contains(out, "FAIL") {
		t.Fatalf("the recorded cases under never must fail: %v\n%s", err, out)
	}
	if out, err := e.cli("policy", "replay", "--module", "never", "--since", "yesterday"); exitCode(err) != 2 || !strings.Contains(out, "--since") {
		t.Fatalf("a bad --since is a usage error: exit %d\n%s", exitCode(err), out)
	}
}

// TestPolicyNewBuildsWithTheSDKAlone: a project from `policy new` has the
// SDK's module graph alone (none of the host's containerd, gRPC, wazero or
// registry code), its native tests pass, and the module it builds passes the
// same case file through the real runtime.
func TestPolicyNewBuildsWithTheSDKAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go mod tidy, go test and a Wasm build")
	}
	// No checkout: the project gets the SDK this binary was built with.
	dir := filepath.Join(t.TempDir(), "night-window")
	if out, err := run(t, "", "policy", "new", "night-window", "--dir", dir); err != nil {
		t.Fatal(err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "third_party", "pullwise-sdk", "abi.go")); err != nil {
		t.Fatalf("the SDK was not written into the project: %v", err)
	}
	gocmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	graph := gocmd("list", "-m", "all")
	if !strings.Contains(graph, "github.com/pullwise/pullwise/sdk v0.0.0-00010101000000-000000000000 => ./third_party/pullwise-sdk") {
		t.Fatalf("the project does not use the SDK module:\n%s", graph)
	}
	for _, host := range []string{"containerd", "google.golang.org/grpc", "tetratelabs/wazero", "go-containerregistry", "github.com/pullwise/pullwise "} {
		if strings.Contains(graph, host) {
			t.Errorf("the policy's module graph has %s:\n%s", host, graph)
		}
	}
	if out := gocmd("test", "./..."); !strings.Contains(out, "ok") {
		t.Fatalf("go test: %s", out)
	}
	wasm := filepath.Join(dir, "night-window.wasm")
	if out, err := run(t, "", "policy", "build", dir, "-o", wasm); err != nil {
		t.Fatal(err, out)
	}
	out, err := run(t, "", "policy", "test", wasm, "--cases", filepath.Join(dir, "testdata", "cases.yaml"))
	if err != nil || !strings.Contains(out, "4 passed, 0 failed") {
		t.Fatalf("policy test of the built module: %v\n%s", err, out)
	}
	// The directory is not overwritten, and a name that cannot name a
	// module is refused.
	if _, err := run(t, "", "policy", "new", "night-window", "--dir", dir); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("an existing project was written over: %v", err)
	}
	if _, err := run(t, "", "policy", "new", "Night Window", "--dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "lower-case") {
		t.Errorf("a bad name: %v", err)
	}
	// --sdk uses a checkout instead of a copy.
	other := filepath.Join(t.TempDir(), "other")
	if out, err := run(t, "", "policy", "new", "other", "--dir", other, "--sdk", "../../sdk"); err != nil {
		t.Fatal(err, out)
	}
	abs, _ := filepath.Abs("../../sdk")
	if b, _ := os.ReadFile(filepath.Join(other, "go.mod")); !strings.Contains(string(b), "=> "+abs) {
		t.Errorf("--sdk: go.mod does not replace the SDK with the checkout:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(other, "third_party")); err == nil {
		t.Error("--sdk: the SDK was copied anyway")
	}
}
