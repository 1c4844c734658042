package moduletest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/plugins/policybuild"
)

// RunSource builds the Go policy in dir into a module, as `pullwise policy
// build` would, and runs the case file at path against it through the real
// plugin runtime: the policy tested in isolation, exactly as a device would
// run it. Skipped under -short (a build takes seconds).
func RunSource(t *testing.T, dir, path string, opts ...plugins.Option) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a Wasm module; run without -short")
	}
	wasm := filepath.Join(t.TempDir(), "policy.wasm")
	if err := policybuild.Build(context.Background(), dir, wasm); err != nil {
		t.Fatal(err)
	}
	RunModule(t, wasm, path, opts...)
}
