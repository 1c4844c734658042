//go:build wasip1

package sdk

import "runtime/debug"

// The Go garbage collector is turned off inside policy modules. Under the
// host's time limit every Wasm loop iteration pays for a termination check,
// and a collection walks the whole heap in loops: one took 25-75 ms of a
// 100 ms decision budget (see docs/RATIONALE.md). Decisions allocate a few
// kilobytes, so instead of collecting, the host replaces an instance whose
// memory has grown past half the cap; a fresh instance costs about 7 ms.
func init() { debug.SetGCPercent(-1) }
