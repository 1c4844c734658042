package policytest

import (
	"context"
	"os"
	"testing"

	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/sdk"
)

// RunNative runs the case file at path against p natively, one subtest per
// case. Use it from a policy's own package: `go test` needs no Wasm.
func RunNative(t *testing.T, p sdk.Policy, path string) {
	t.Helper()
	run(t, Native(p), path)
}

// RunModule loads the module file wasmPath into a real plugin runtime
// (sandbox, ABI handshake and all) and runs the case file at path against
// it, one subtest per case.
func RunModule(t *testing.T, wasmPath, path string, opts ...plugins.Option) {
	t.Helper()
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		t.Fatal(err)
	}
	RunModuleBytes(t, wasmPath, wasm, path, opts...)
}

// RunModuleBytes is RunModule for a module already in memory (an embedded
// built-in, say).
func RunModuleBytes(t *testing.T, name string, wasm []byte, path string, opts ...plugins.Option) {
	t.Helper()
	ctx := context.Background()
	rt, err := plugins.NewRuntime(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(ctx) })
	m, err := rt.Load(ctx, name, wasm)
	if err != nil {
		t.Fatal(err)
	}
	run(t, m.Decide, path)
}

func run(t *testing.T, decide DecideFunc, path string) {
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
