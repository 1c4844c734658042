//go:build wasip1

// Command wrongabi declares ABI v1 in its metadata but answers 2 at the
// handshake: the host must refuse it.
package main

func main() {}

//go:wasmexport pullwise_abi_version
func abiVersion() uint32 { return 2 }

//go:wasmexport pullwise_alloc
func alloc(n uint32) uint32 { return 0 }

//go:wasmexport pullwise_decide
func decide(p, n uint32) uint64 { return 0 }

//go:wasmexport pullwise_validate_settings
func validateSettings(p, n uint32) uint64 { return 0 }
