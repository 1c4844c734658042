//go:build !wasip1

package sdk

import "log"

// Log writes to the standard logger when a policy runs natively (its unit
// tests); inside a module it goes to the host's log.
func Log(level Level, msg string) { log.Printf("policy log (level %d): %s", level, msg) }
