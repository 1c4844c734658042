// Package policytest runs table cases against a policy: natively through the
// SDK's JSON layer (plain `go test`), or as a compiled module through the
// real plugin runtime. Both read the same case files, so a policy's
// expectations are written once and checked on both sides of the ABI.
//
// A case file (YAML or JSON):
//
//	defaults:              # merged into every case's input (objects deeply)
//	  now: 2026-11-27T12:00:00Z
//	  image: {ref: "registry.example/app:latest"}
//	cases:
//	  - name: absent image is pulled
//	    input: {event: create}
//	    expect: {action: pull, onPullFailure: fail}
//	  - name: bad settings are refused
//	    input: {event: tick, settings: {interval: "1s"}}
//	    expectError: "below the minimum"
//
// expect lists only the decision fields the case cares about.
package policytest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/pullwise/pullwise/sdk"
)

// Suite is a parsed case file.
type Suite struct {
	Defaults map[string]any `json:"defaults,omitempty"`
	Cases    []Case         `json:"cases"`
}

// Case is one input and what its decision must contain.
type Case struct {
	Name  string         `json:"name"`
	Input map[string]any `json:"input"`
	// Expect holds decision fields (JSON names) and their required values.
	Expect map[string]any `json:"expect,omitempty"`
	// ExpectError, when set, requires the decision to fail with an error
	// containing it.
	ExpectError string `json:"expectError,omitempty"`
}

// Result is the outcome of one case.
type Result struct {
	Name string `json:"name"`
	Pass bool   `json:"pass"`
	// Problem says why a failing case failed.
	Problem string `json:"problem,omitempty"`
	// Got is the decision as JSON, or the error text.
	Got string `json:"got,omitempty"`
}

// DecideFunc is anything that decides: a loaded module's Decide, or Native.
type DecideFunc func(context.Context, sdk.Input) (sdk.Decision, error)

// Load reads a case file.
func Load(path string) (Suite, error) {
	var s Suite
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	if len(s.Cases) == 0 {
		return s, fmt.Errorf("%s: no cases", path)
	}
	for i, c := range s.Cases {
		if c.Name == "" {
			return s, fmt.Errorf("%s: case %d has no name", path, i+1)
		}
		if len(c.Expect) == 0 && c.ExpectError == "" {
			return s, fmt.Errorf("%s: case %q expects nothing: give expect or expectError", path, c.Name)
		}
	}
	return s, nil
}

// Input returns case c's input with the suite's defaults merged in.
func (s Suite) Input(c Case) (sdk.Input, error) {
	merged := merge(s.Defaults, c.Input)
	b, err := json.Marshal(merged)
	if err != nil {
		return sdk.Input{}, err
	}
	var in sdk.Input
	if err := json.Unmarshal(b, &in); err != nil {
		return in, fmt.Errorf("case %q: input: %w", c.Name, err)
	}
	return in, nil
}

// Run checks every case with decide.
func (s Suite) Run(ctx context.Context, decide DecideFunc) []Result {
	results := make([]Result, 0, len(s.Cases))
	for _, c := range s.Cases {
		results = append(results, s.check(ctx, decide, c))
	}
	return results
}

func (s Suite) check(ctx context.Context, decide DecideFunc, c Case) Result {
	r := Result{Name: c.Name}
	in, err := s.Input(c)
	if err != nil {
		r.Problem = err.Error()
		return r
	}
	d, err := decide(ctx, in)
	if err != nil {
		r.Got = err.Error()
		switch {
		case c.ExpectError == "":
			r.Problem = "unexpected error: " + err.Error()
		case !strings.Contains(err.Error(), c.ExpectError):
			r.Problem = fmt.Sprintf("error %q does not contain %q", err.Error(), c.ExpectError)
		default:
			r.Pass = true
		}
		return r
	}
	b, _ := json.Marshal(d)
	r.Got = string(b)
	if c.ExpectError != "" {
		r.Problem = fmt.Sprintf("expected an error containing %q, got a decision", c.ExpectError)
		return r
	}
	var got map[string]any
	_ = json.Unmarshal(b, &got)
	var diffs []string
	for _, k := range sortedKeys(c.Expect) {
		want := normalize(c.Expect[k])
		have, ok := got[k]
		if !ok {
			have = zeroLike(want)
		}
		if !equal(normalize(have), want) {
			diffs = append(diffs, fmt.Sprintf("%s: got %v, want %v", k, jsonText(have), jsonText(want)))
		}
	}
	if len(diffs) > 0 {
		r.Problem = strings.Join(diffs, "; ")
		return r
	}
	r.Pass = true
	return r
}

// Native decides with p in-process, through the same JSON encoding and strict
// decoding a module's answer goes through.
func Native(p sdk.Policy) DecideFunc {
	return func(_ context.Context, in sdk.Input) (sdk.Decision, error) {
		in.ABIVersion = sdk.ABIVersion
		b, err := json.Marshal(in)
		if err != nil {
			return sdk.Decision{}, err
		}
		return sdk.DecodeDecision(p.Evaluate(b))
	}
}

// merge returns base overlaid with over; nested objects merge key by key.
func merge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		bm, ok1 := out[k].(map[string]any)
		om, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			out[k] = merge(bm, om)
			continue
		}
		out[k] = v
	}
	return out
}

// normalize makes YAML- and JSON-decoded values comparable (numbers as
// float64, as encoding/json gives them).
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// equal compares decoded JSON values; two RFC 3339 times are equal when they
// name the same instant, whatever their zones.
func equal(have, want any) bool {
	hs, ok1 := have.(string)
	ws, ok2 := want.(string)
	if ok1 && ok2 {
		ht, err1 := time.Parse(time.RFC3339Nano, hs)
		wt, err2 := time.Parse(time.RFC3339Nano, ws)
		if err1 == nil && err2 == nil {
			return ht.Equal(wt)
		}
	}
	return reflect.DeepEqual(have, want)
}

// zeroLike is the value an omitted field stands for, so `expect:
// {onPullFailure: ""}` or `restartOnChange: false` can be written.
func zeroLike(want any) any {
	switch want.(type) {
	case string:
		return ""
	case bool:
		return false
	case float64:
		return 0.0
	}
	return nil
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
