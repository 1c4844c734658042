package policytest

import (
	"context"
	"testing"

	"github.com/pullwise/pullwise/sdk"
)

// RunNative runs the case file at path against p natively, one subtest per
// case. Use it from a policy's own package: `go test` needs no Wasm and no
// pullwise host code.
func RunNative(t *testing.T, p sdk.Policy, path string) {
	t.Helper()
	Run(t, Native(p), path)
}

// Run runs the case file at path against decide, one subtest per case. The
// host's module runner (github.com/pullwise/pullwise/plugins/moduletest)
// runs the same files through the real plugin runtime with it.
func Run(t *testing.T, decide DecideFunc, path string) {
	t.Helper()
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Cases {
		t.Run(c.Name, func(t *testing.T) {
			r := s.check(context.Background(), decide, c)
			if !r.Pass {
				t.Errorf("%s\n  got: %s", r.Problem, r.Got)
			}
		})
	}
}
