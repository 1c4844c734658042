package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNotRunningHint: with no agent answering, the hint points at the
// agent that runs on another state directory, else at the systemd unit
// when one is installed, else at `pullwise agent`.
func TestNotRunningHint(t *testing.T) {
	proc := t.TempDir()
	addProc := func(pid string, args ...string) {
		dir := filepath.Join(proc, pid)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(args, "\x00")+"\x00"), 0o644)
	}
	addProc("1", "/sbin/init")
	addProc("77", "/usr/bin/pullwise", "status")
	addProc("abc", "/usr/bin/pullwise", "agent") // not a pid
	unit := filepath.Join(t.TempDir(), "pullwise.service")

	if h := notRunningHint(proc, "/srv/pw", []string{unit}); !strings.Contains(h, "pullwise agent --config FILE --state /srv/pw") || strings.Contains(h, "systemctl") {
		t.Fatalf("nothing running, no unit: %q", h)
	}
	os.WriteFile(unit, nil, 0o644)
	if h := notRunningHint(proc, "/srv/pw", []string{unit}); !strings.Contains(h, "systemctl start pullwise") || !strings.Contains(h, "journalctl -u pullwise") {
		t.Fatalf("a unit installed: %q", h)
	}
	addProc("4242", "/usr/local/bin/pullwise", "agent", "--config", "/etc/pullwise/config.yaml", "--state=/var/lib/pw")
	addProc("4343", "/usr/local/bin/pullwise", "agent", "--config", "c.yaml") // the default state directory
	h := notRunningHint(proc, "/srv/pw", []string{unit})
	if !strings.Contains(h, "--state /var/lib/pw (pid 4242)") || !strings.Contains(h, "--state "+DefaultStateDir+" (pid 4343)") {
		t.Fatalf("agents on other state directories: %q", h)
	}
	if h := notRunningHint(proc, "/var/lib/pw", []string{unit}); strings.Contains(h, "4242") {
		t.Fatalf("the agent on this very directory is not elsewhere: %q", h)
	}
}
