package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/pullwise/pullwise/sdk"
	"github.com/pullwise/pullwise/sdk/policybuild"
	"github.com/pullwise/pullwise/sdk/policytest"
)

// TestDecide checks the policy's logic natively: plain `go test`, no Wasm.
func TestDecide(t *testing.T) {
	policytest.RunNative(t, sdk.Policy{Decide: decide, Validate: validate}, "testdata/cases.yaml")
}

// TestModule builds the policy into a module as a vendor would and runs the
// same cases through the real plugin runtime, in isolation from any device.
func TestModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Wasm module; run without -short")
	}
	wasm := filepath.Join(t.TempDir(), "policy.wasm")
	if err := policybuild.Build(context.Background(), ".", wasm); err != nil {
		t.Fatal(err)
	}
	policytest.RunModule(t, wasm, "testdata/cases.yaml")
}
