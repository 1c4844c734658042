package main

import (
	"testing"

	"github.com/pullwise/pullwise/plugins/moduletest"
	"github.com/pullwise/pullwise/sdk"
	"github.com/pullwise/pullwise/sdk/policytest"
)

// TestDecide checks the policy's logic natively: plain `go test`, no Wasm.
func TestDecide(t *testing.T) {
	policytest.RunNative(t, sdk.Policy{Decide: decide, Validate: validate}, "testdata/cases.yaml")
}

// TestModule builds the policy into a module as a vendor would and runs the
// same cases through the real plugin runtime, in isolation from any device.
func TestModule(t *testing.T) {
	moduletest.RunSource(t, ".", "testdata/cases.yaml")
}
