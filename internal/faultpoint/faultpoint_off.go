//go:build !faultpoints

// Package faultpoint lets the fault-injection suite kill the process at a
// named point. This is the release build: Hit does nothing, and no
// environment variable can make a device's agent kill itself. Build with
// -tags faultpoints for the fault suite (faultpoint.go).
package faultpoint

// Hit does nothing in a build without the faultpoints tag.
func Hit(string) {}
