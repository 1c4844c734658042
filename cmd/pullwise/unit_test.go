package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// mountNamespaceOptions are the systemd.exec options that give a service a
// mount namespace of its own (systemd 252's exec_needs_mount_namespace and
// the options that imply them). Mounts made in such a namespace do not
// propagate to the host: the agent's network-namespace pins would be empty
// files to containerd and runc.
var mountNamespaceOptions = []string{"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
	"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectHostname",
	"ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
	"TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "RootDirectory", "RootImage", "MountImages",
	"MountAPIVFS", "MountFlags", "LogNamespace", "PrivateUsers", "DynamicUser", "PrivateIPC", "PrivateNetwork", "NetworkNamespacePath"}

// TestUnitKeepsTheHostMountNamespace: the shipped unit asks for readiness
// notification and sets no option that would give the agent a mount
// namespace of its own (RATIONALE: "The unit runs in the host's mount
// namespace").
func TestUnitKeepsTheHostMountNamespace(t *testing.T) {
	f, err := os.Open("../../packaging/systemd/pullwise.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			opts[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	for _, o := range mountNamespaceOptions {
		if v, ok := opts[o]; ok && v != "no" && v != "false" {
			t.Errorf("the unit sets %s=%s, which gives the agent a private mount namespace: its network-namespace pins would not reach containerd", o, v)
		}
	}
	if opts["Type"] != "notify" || opts["KillMode"] != "process" {
		t.Errorf("Type=%s KillMode=%s, want notify and process", opts["Type"], opts["KillMode"])
	}
}

// TestAgentTellsSystemdWhenReady: with NOTIFY_SOCKET set (as systemd sets
// it for Type=notify), the agent sends READY=1 once its API serves and the
// configuration was applied, and STOPPING=1 when it stops.
func TestAgentTellsSystemdWhenReady(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	sock := filepath.Join(t.TempDir(), "notify.sock")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e.env = []string{"NOTIFY_SOCKET=" + sock}
	e.startAgent()
	read := func() string {
		t.Helper()
		l.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 256)
		n, err := l.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v\nagent log:\n%s", err, e.agentLog)
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	if out, err := e.cli("status"); err != nil {
		t.Fatalf("ready, but the API does not answer: %v\n%s", err, out)
	}
	e.stopAgent()
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("notification on stop %q, want STOPPING=1", got)
	}
}
