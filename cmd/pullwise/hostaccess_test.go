package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// TestDevicesAndBindsAllowlist: an app is given a host device and a host
// directory only when the device part allows them; then, on real
// containerd, it reads the device at its container path and the bound
// file (read-only).
func TestDevicesAndBindsAllowlist(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	shared := filepath.Join(t.TempDir(), "shared")
	os.MkdirAll(shared, 0o755)
	os.WriteFile(filepath.Join(shared, "hello.txt"), []byte("hello from the host\n"), 0o644)
	app := e.web() + "    devices: [\"/dev/zero:/dev/pwzero:r\"]\n    binds: [\"" + shared + ":/mnt/shared:ro\"]\n" +
		"    env: [\"READ=/dev/pwzero,/mnt/shared/hello.txt\"]\n"

	// Not allowed: refused, each field named.
	e.configure(app)
	out, err := e.cli("config", "validate", e.config)
	if err == nil || !strings.Contains(out, "apps[0].devices[0]: /dev/zero is not allowed") || !strings.Contains(out, "apps[0].binds[0]: "+shared+" is not allowed") {
		t.Fatalf("an app given what device.allow does not list: %v\n%s", err, out)
	}

	// Allowed: the app reads both.
	b, _ := os.ReadFile(e.config)
	cfg := strings.Replace(string(b), "device:\n", "device:\n  allow:\n    devices: [\"/dev/zero\", \"/dev/ttyUSB*\"]\n    binds: [\""+filepath.Dir(shared)+"\"]\n", 1)
	e.writeConfig(cfg)
	if out, err := e.cli("config", "validate", e.config); err != nil {
		t.Fatalf("allowed: %v\n%s", err, out)
	}
	e.startAgent()
	e.status("web running", running)
	read := filepath.Join(e.volume(), "read.log")
	waitFor(t, "the app's reads", func() bool { b, _ := os.ReadFile(read); return strings.Count(string(b), "\n") >= 2 })
	got, _ := os.ReadFile(read)
	if !strings.Contains(string(got), `read /dev/pwzero: ok "\x00\x00`) || !strings.Contains(string(got), `read /mnt/shared/hello.txt: ok "hello from the h"`) {
		t.Fatalf("what the app read:\n%s", got)
	}
}
