//go:build wasip1

package sdk

import "unsafe"

// The Wasm exports of ABI v1. Buffers handed to the host are kept reachable
// in these variables so the Go garbage collector does not move or free them
// while the host reads or writes them; each call replaces the previous one,
// which the host no longer uses (see ABI.md, "Memory").
var (
	inBuf  []byte
	outBuf []byte
)

//go:wasmexport pullwise_abi_version
func abiVersion() uint32 { return ABIVersion }

//go:wasmexport pullwise_alloc
func alloc(size uint32) uint32 {
	// Reuse the buffer: inputs are about the same size every time, and an
	// allocation per call costs more than the copy it saves.
	if uint32(cap(inBuf)) >= size {
		inBuf = inBuf[:size]
	} else {
		inBuf = make([]byte, size)
	}
	if size == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&inBuf[0])))
}

//go:wasmexport pullwise_decide
func decide(ptr, size uint32) uint64 {
	in, err := input(ptr, size)
	if err != nil {
		return answer(errorJSON(err))
	}
	return answer(policy().Evaluate(in))
}

//go:wasmexport pullwise_validate_settings
func validateSettings(ptr, size uint32) uint64 {
	in, err := input(ptr, size)
	if err != nil {
		return answer(SettingsResult{Valid: false, Message: err.Error()}.json())
	}
	return answer(policy().CheckSettings(in))
}

func policy() Policy {
	if registered == nil {
		return Policy{Decide: func(Input) (Decision, error) {
			return Decision{}, errNotRegistered
		}}
	}
	return *registered
}

type sdkError string

func (e sdkError) Error() string { return string(e) }

const errNotRegistered = sdkError("module has no policy: call sdk.Register from an init function")

// input returns the buffer the host filled. It must be the one the last
// pullwise_alloc handed out: the module never reads memory the host names by
// address alone.
func input(ptr, size uint32) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	if len(inBuf) == 0 || ptr != uint32(uintptr(unsafe.Pointer(&inBuf[0]))) || int(size) > len(inBuf) {
		return nil, sdkError("input was not written to the buffer returned by pullwise_alloc")
	}
	return inBuf[:size], nil
}

// answer packs the output's address and length into one i64: address in the
// high 32 bits, length in the low 32 bits.
func answer(out []byte) uint64 {
	outBuf = out
	if len(out) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&outBuf[0])))<<32 | uint64(len(outBuf))
}

//go:wasmimport pullwise log
func hostLog(level, ptr, size uint32)

// Log sends a message to the host's log under the module's name. Level is
// one of LevelDebug, LevelInfo, LevelWarn, LevelError.
func Log(level Level, msg string) {
	if len(msg) == 0 {
		return
	}
	b := []byte(msg)
	hostLog(uint32(level), uint32(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b)))
}
