package policytest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/sdk"
)

func pullAlways(in sdk.Input) (sdk.Decision, error) {
	return sdk.Pull(sdk.PullFailureFail, "always pull "+in.Image.Ref), nil
}

// TestChecksCanFail proves the harness reports wrong decisions, wrong errors
// and missing errors: a harness that cannot fail proves nothing.
func TestChecksCanFail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cases.yaml")
	os.WriteFile(path, []byte(`
defaults: {image: {ref: "r/a:1"}}
cases:
  - {name: right, input: {event: create}, expect: {action: pull, onPullFailure: fail, restartOnChange: true}}
  - {name: wrong action, input: {event: create}, expect: {action: use-local}}
  - {name: wrong field, input: {event: create}, expect: {restartOnChange: false}}
  - {name: missing error, input: {event: create}, expectError: "boom"}
  - {name: omitted field compares as zero, input: {event: create}, expect: {nextCheck: null}}
`), 0o644)
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	res := s.Run(context.Background(), Native(sdk.Policy{Decide: pullAlways}))
	want := map[string]string{
		"right":                          "",
		"wrong action":                   `action: got "pull", want "use-local"`,
		"wrong field":                    "restartOnChange: got true, want false",
		"missing error":                  `expected an error containing "boom"`,
		"omitted field compares as zero": "",
	}
	for _, r := range res {
		w := want[r.Name]
		if (w == "") != r.Pass || !strings.Contains(r.Problem, w) {
			t.Errorf("%s: pass=%v problem=%q, want problem %q", r.Name, r.Pass, r.Problem, w)
		}
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	for body, want := range map[string]string{
		`cases: []`:                               "no cases",
		`cases: [{input: {event: create}}]`:       "has no name",
		`cases: [{name: x, input: {}}]`:           "expects nothing",
		`cases: [{name: x, expect: {}, typo: 1}]`: "unknown field",
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", body, err, want)
		}
	}
}

func TestDefaultsMergeDeeply(t *testing.T) {
	s := Suite{Defaults: map[string]any{"image": map[string]any{"ref": "r/a:1", "tag": "1"}, "attempt": 2}}
	in, err := s.Input(Case{Name: "x", Input: map[string]any{"image": map[string]any{"localDigest": "sha256:a"}}})
	if err != nil {
		t.Fatal(err)
	}
	if in.Image.Ref != "r/a:1" || in.Image.Tag != "1" || in.Image.LocalDigest != "sha256:a" || in.Attempt != 2 {
		t.Fatalf("merged input = %+v", in)
	}
}
