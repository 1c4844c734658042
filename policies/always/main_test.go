package main

import (
	"testing"

	"github.com/pullwise/pullwise/sdk"
	"github.com/pullwise/pullwise/sdk/policytest"
)

func TestDecide(t *testing.T) {
	policytest.RunNative(t, sdk.Policy{Decide: sdk.Budgeted(decide)}, "testdata/cases.yaml")
}
