package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/host/agent"
	hostapp "github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/plugins"
)

// TestStatusTableEscapesUntrustedText: a policy's reason, a module's error
// or a name with escape sequences and newlines cannot recolour the
// terminal or forge a row.
func TestStatusTableEscapesUntrustedText(t *testing.T) {
	evil := "ok\x1b[2J\x1b[31m\nweb  RUNNING  forged-row"
	st := agent.Status{
		Agent: agent.AgentStatus{ConfigError: "bad\x1b]0;title\x07", Policies: []plugins.ModuleStatus{{Name: "m", Error: evil}}},
		Info: hostapp.Info{
			Apps:   []hostapp.AppInfo{{UUID: "a", DisplayName: "app\x1b[1m", State: "RUNNING", LastError: evil}},
			Images: []hostapp.ImageInfo{{App: "a", Ref: "r/x:1", Decision: &hostapp.DecisionInfo{Action: "use-local", Reason: evil}}},
		},
	}
	var out bytes.Buffer
	printTable(&out, st)
	got := out.String()
	if strings.ContainsAny(got, "\x1b\x07") {
		t.Fatalf("raw control characters in:\n%q", got)
	}
	for _, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(line, "web  RUNNING") {
			t.Fatalf("a forged row:\n%s", got)
		}
	}
	if !strings.Contains(got, `ok\x1b[2J\x1b[31m\nweb  RUNNING  forged-row`) {
		t.Fatalf("the text is not shown escaped:\n%s", got)
	}
}
