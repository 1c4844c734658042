//go:build faultpoints

// Package faultpoint lets the fault-injection suite kill the process at a
// named point, deterministically: in a binary built with the faultpoints
// tag (the e2e tests build one), with PULLWISE_FAULTPOINT=NAME in the
// environment, Hit(NAME) sends the process SIGKILL. Release builds have no
// such hook at all (faultpoint_off.go).
package faultpoint

import (
	"os"
	"sync"
	"syscall"
)

var point = sync.OnceValue(func() string { return os.Getenv("PULLWISE_FAULTPOINT") })

// Hit kills the process with SIGKILL if name is the configured fault point.
func Hit(name string) {
	if p := point(); p != "" && p == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not delivered synchronously; never go on
	}
}
