package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// What to say when no agent answers on a state directory's socket: an
// agent may run on another state directory (a mistyped or missing
// --state), or be a systemd service that is stopped.

// agentProc is a running `pullwise agent` found in /proc.
type agentProc struct {
	pid   int
	state string // its --state, absolute
}

// findAgents lists the `pullwise agent` processes under procRoot (/proc).
func findAgents(procRoot string) []agentProc {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var out []agentProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if len(args) < 2 || filepath.Base(args[0]) != "pullwise" || args[1] != "agent" {
			continue
		}
		state := DefaultStateDir
		for i, a := range args {
			switch {
			case a == "--state" && i+1 < len(args):
				state = args[i+1]
			case strings.HasPrefix(a, "--state="):
				state = strings.TrimPrefix(a, "--state=")
			}
		}
		if !filepath.IsAbs(state) {
			// Relative to the agent's working directory.
			if cwd, err := os.Readlink(filepath.Join(procRoot, e.Name(), "cwd")); err == nil {
				state = filepath.Join(cwd, state)
			}
		}
		out = append(out, agentProc{pid: pid, state: filepath.Clean(state)})
	}
	return out
}

// unitPaths are where a systemd unit for pullwise is installed.
func unitPaths() []string {
	return []string{"/etc/systemd/system/pullwise.service", "/lib/systemd/system/pullwise.service", "/usr/lib/systemd/system/pullwise.service"}
}

// notRunningHint says how to reach an agent when none answers on the
// socket of stateDir.
func notRunningHint(procRoot, stateDir string, units []string) string {
	dir, _ := filepath.Abs(stateDir)
	var elsewhere []string
	for _, p := range findAgents(procRoot) {
		if p.state != dir {
			elsewhere = append(elsewhere, fmt.Sprintf("--state %s (pid %d)", p.state, p.pid))
		}
	}
	if len(elsewhere) > 0 {
		return fmt.Sprintf("an agent runs with %s: pass that --state to the command; or start one with `pullwise agent --config FILE --state %s`",
			strings.Join(elsewhere, ", and one with "), stateDir)
	}
	for _, u := range units {
		if _, err := os.Stat(u); err == nil {
			return fmt.Sprintf("start it with `systemctl start pullwise` (`journalctl -u pullwise` says why it stopped), or run `pullwise agent --config FILE --state %s`", stateDir)
		}
	}
	return fmt.Sprintf("start it with `pullwise agent --config FILE --state %s`", stateDir)
}
