// Package faultpoint lets the fault-injection suite kill the process at a
// named point, deterministically: with PULLWISE_FAULTPOINT=NAME in the
// environment, Hit(NAME) sends the process SIGKILL. Unset (always, outside
// that suite) Hit is one comparison.
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
