package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/version"
)

// TestExitCodes: each kind of outcome has its documented exit code, and a
// usage error prints the usage.
func TestExitCodes(t *testing.T) {
	state := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"version", []string{"version"}, exitOK, "go-containerregistry:"},
		{"--version", []string{"--version"}, exitOK, "pullwise "},
		{"version -o xml", []string{"version", "-o", "xml"}, exitUsage, "Usage:"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "Usage:"},
		{"unknown flag", []string{"status", "--frob"}, exitUsage, "Usage:"},
		{"missing argument", []string{"refresh"}, exitUsage, "refresh (APP | --all)"},
		{"bad log level", []string{"agent", "--config", "x.yaml", "--log-level", "verbose"}, exitUsage, `--log-level "verbose"`},
		{"no agent", []string{"status", "--state", state}, exitNotRunning, "not running"},
		{"no agent for an action", []string{"restart", "web", "--state", state}, exitNotRunning, "pullwise agent --config"},
		{"failed action", []string{"policy", "run", "sometimes", "--input", "-"}, exitFailed, "neither a module file nor a built-in"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := newRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetIn(strings.NewReader(""))
			root.SetArgs(tc.args)
			code := execute(root, &out)
			if code != tc.code || !strings.Contains(out.String(), tc.out) {
				t.Fatalf("exit %d, want %d; output lacks %q:\n%s", code, tc.code, tc.out, out.String())
			}
		})
	}
	var v version.Info
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version", "-o", "json"})
	if execute(root, &out) != exitOK || json.Unmarshal(out.Bytes(), &v) != nil || v.Go == "" || v.Containerd == "" {
		t.Fatalf("version -o json: %s", out.String())
	}
}

// TestExitCodePermissionDenied: a user who may not open the agent's socket
// is told so (exit 4), not that the agent is not running.
func TestExitCodePermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the CLI as another user")
	}
	bin := binary(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	state := t.TempDir()
	os.Chmod(state, 0o755)
	l, err := net.Listen("unix", filepath.Join(state, "pullwise.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(filepath.Join(state, "pullwise.sock"), 0o600)
	cmd := exec.Command(bin, "status", "--state", state)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitPermission || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestExitCodeDryRunCouldNotCheck: a dry run whose registry is unreachable
// says so and exits 5, not 0.
func TestExitCodeDryRunCouldNotCheck(t *testing.T) {
	e, _ := startWeb(t)
	e.proxy.Down(true)
	out, err := e.cli("refresh", "web", "--dry-run")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitCouldNotChk || !strings.Contains(out, "cannot check") {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestAgentNotRootSaysSo: an agent started by a user who may not open
// containerd's socket says it needs root, not that containerd is down.
func TestAgentNotRootSaysSo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the agent as another user")
	}
	d := ctrdtest.Start(t)
	bin := binary(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // the test's own temporary directory
	state, config := filepath.Join(dir, "state"), filepath.Join(dir, "config.yaml")
	os.Mkdir(state, 0o700)
	os.Chown(state, 65534, 65534)
	os.WriteFile(config, []byte("apps: []\n"), 0o644)
	cmd := exec.Command(bin, "agent", "--config", config, "--state", state, "--containerd", d.Socket, "--namespace", d.Namespace)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs root (containerd's socket is root's)") {
		t.Fatalf("a non-root agent: %v\n%s", err, out)
	}
}

// TestVersionStampedByTheMakefile: `make build` stamps the version from
// git (or VERSION), whatever the Go toolchain's own VCS stamping says.
func TestVersionStampedByTheMakefile(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pullwise")
	if out, err := exec.Command("make", "-s", "-C", "../..", "build", "BIN="+bin, "VERSION=v9.9.9-test").CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	var v version.Info
	out, err := exec.Command(bin, "version", "-o", "json", "--state", t.TempDir()).Output()
	if err != nil || json.Unmarshal(out, &v) != nil || v.Version != "v9.9.9-test" {
		t.Fatalf("the stamped binary reports %q (%v)\n%s", v.Version, err, out)
	}
	if out, _ := exec.Command(bin, "--version").Output(); !strings.HasPrefix(string(out), "pullwise v9.9.9-test") {
		t.Fatalf("--version: %s", out)
	}
}
