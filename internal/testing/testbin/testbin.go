// Package testbin finds the programs the integration tests run (containerd,
// docker-registry, wat2wasm, mosquitto, prometheus, Adam, ...). A missing
// one fails the test under CI (CI=true: scripts/setup.sh must have
// installed it) and skips it elsewhere, saying how to install it.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Need returns the path of the program name, looked up on PATH, then at
// each of also; install says how scripts/setup.sh gets it ("apt-get
// install wabt").
func Need(t testing.TB, name, install string, also ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range also {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed (scripts/setup.sh installs it: %s)", name, install)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
