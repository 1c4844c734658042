package sdk

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeDecision(t *testing.T) {
	tests := []struct {
		name, out string
		want      string // error substring; "" for success
	}{
		{"use-local", `{"action":"use-local","restartOnChange":false,"reason":"ok"}`, ""},
		{"pull", `{"action":"pull","restartOnChange":true,"onPullFailure":"keep-existing","reason":"r"}`, ""},
		{"defer", `{"action":"defer","restartOnChange":false,"nextCheck":"2026-11-27T12:00:00Z","reason":"r"}`, ""},
		{"not json", `nope`, "malformed decision"},
		{"array", `[]`, "malformed decision"},
		{"missing action", `{"restartOnChange":false,"reason":"r"}`, `required field "action" is missing`},
		{"missing restartOnChange", `{"action":"use-local","reason":"r"}`, `required field "restartOnChange" is missing`},
		{"unknown field", `{"action":"use-local","restartOnChange":false,"reason":"r","x":1}`, `unknown field "x"`},
		{"unknown action", `{"action":"explode","restartOnChange":false,"reason":"r"}`, `unknown action "explode"`},
		{"empty reason", `{"action":"use-local","restartOnChange":false,"reason":""}`, "reason is empty"},
		{"pull without onPullFailure", `{"action":"pull","restartOnChange":true,"reason":"r"}`, "needs onPullFailure"},
		{"bad onPullFailure", `{"action":"pull","restartOnChange":true,"onPullFailure":"shrug","reason":"r"}`, "needs onPullFailure"},
		{"onPullFailure with use-local", `{"action":"use-local","restartOnChange":false,"onPullFailure":"fail","reason":"r"}`, "only meaningful with"},
		{"defer without nextCheck", `{"action":"defer","restartOnChange":false,"reason":"r"}`, "needs nextCheck"},
		{"wrong type", `{"action":"use-local","restartOnChange":"yes","reason":"r"}`, "malformed decision"},
		{"policy error", `{"error":"cannot decide"}`, "policy error: cannot decide"},
		{"error with extras", `{"error":"x","action":"pull"}`, "an error answer must be"},
		{"too long", `{"reason":"` + strings.Repeat("a", maxOutput) + `"}`, "exceeds"},
		{"null boolean", `{"action":"use-local","restartOnChange":null,"reason":"r"}`, `field "restartOnChange" is null`},
		{"null nextCheck", `{"action":"use-local","restartOnChange":false,"nextCheck":null,"reason":"r"}`, `field "nextCheck" is null`},
		{"duplicate key", `{"action":"use-local","restartOnChange":false,"reason":"r","action":"pull"}`, `field "action" is given twice`},
		{"empty error", `{"error":""}`, "an error answer must be"},
		{"trailing data", `{"action":"use-local","restartOnChange":false,"reason":"r"} {}`, "data after the JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeDecision([]byte(tc.out))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	var pe *PolicyError
	if _, err := DecodeDecision([]byte(`{"error":"x"}`)); !errors.As(err, &pe) {
		t.Fatalf("a module's error answer should be a *PolicyError, got %T", err)
	}
}

func TestDecodeSettingsResult(t *testing.T) {
	for out, want := range map[string]string{
		`{"valid":true}`:                 "",
		`{"valid":false,"message":"no"}`: "",
		`{"valid":false}`:                "need a message",
		`{}`:                             `"valid" is missing`,
		`{"valid":true,"x":1}`:           "unknown field",
		`{"valid":null}`:                 `field "valid" is null`,
		`{"valid":true,"valid":false}`:   "given twice",
	} {
		_, err := DecodeSettingsResult([]byte(out))
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: error %v, want %q", out, err, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	base, cap := 10*time.Second, 300*time.Second
	for attempt, want := range map[int]time.Duration{-1: 10 * time.Second, 0: 10 * time.Second, 1: 10 * time.Second,
		2: 20 * time.Second, 3: 40 * time.Second, 6: 300 * time.Second, 1000: 300 * time.Second} {
		if got := Backoff(attempt, base, cap); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", attempt, got, want)
		}
	}
}

func TestConverge(t *testing.T) {
	tests := []struct {
		name string
		img  Image
		want Action
	}{
		{"absent", Image{Ref: "a"}, ActionPull},
		{"present, unchecked", Image{LocalDigest: "sha256:a"}, ActionCheckRemote},
		{"present, same", Image{LocalDigest: "sha256:a", RemoteDigest: "sha256:a"}, ActionUseLocal},
		{"present, moved", Image{LocalDigest: "sha256:a", RemoteDigest: "sha256:b"}, ActionPull},
		{"moved to the digest rolled back from", Image{LocalDigest: "sha256:a", RemoteDigest: "sha256:b", RolledBackDigest: "sha256:b"}, ActionUseLocal},
		{"moved past the digest rolled back from", Image{LocalDigest: "sha256:a", RemoteDigest: "sha256:c", RolledBackDigest: "sha256:b"}, ActionPull},
		{"rolled back, pinned to it", Image{PinnedDigest: "sha256:b", LocalDigest: "sha256:a", RolledBackDigest: "sha256:b"}, ActionPull},
		{"pinned, on disk", Image{PinnedDigest: "sha256:a", LocalDigest: "sha256:a"}, ActionUseLocal},
		{"pinned, other on disk", Image{PinnedDigest: "sha256:b", LocalDigest: "sha256:a"}, ActionPull},
	}
	for _, tc := range tests {
		d := Converge(tc.img, PullFailureKeepExisting)
		if d.Action != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, d.Action, tc.want)
		}
		if err := d.Validate(); err != nil {
			t.Errorf("%s: invalid decision: %v", tc.name, err)
		}
	}
}

func TestEvaluateReportsErrors(t *testing.T) {
	p := Policy{Decide: func(in Input) (Decision, error) {
		if in.Event == EventTick {
			return Decision{}, errors.New("ticks are not for me")
		}
		return Decision{Action: ActionPull, Reason: "r"}, nil // invalid: no onPullFailure
	}}
	for in, want := range map[string]string{
		`{"event":"tick"}`:   "ticks are not for me",
		`{"event":"create"}`: "needs onPullFailure",
		`{"event":`:          "decoding input",
	} {
		_, err := DecodeDecision(p.Evaluate([]byte(in)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
	if got := string(p.CheckSettings([]byte(`{}`))); got != `{"valid":true}` {
		t.Errorf("no Validate func: %s", got)
	}
}
