// Package moduletest runs policy case files (the SDK's policytest format)
// against compiled modules through the real plugin runtime: sandbox, ABI
// handshake and all. It lives with the host, not in the SDK, because it needs
// wazero: a vendor's policy module imports only the SDK, and its native tests
// use sdk/policytest alone.
package moduletest

import (
	"context"
	"os"
	"testing"

	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/sdk/policytest"
)

// RunModule loads the module file wasmPath into a real plugin runtime and
// runs the case file at path against it, one subtest per case.
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
	policytest.Run(t, m.Decide, path)
}
