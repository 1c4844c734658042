//go:build wasip1

// Command hostile is a policy module that misbehaves on request, to prove
// the sandbox. It implements ABI v1 by hand (no SDK) so it can also break
// the protocol. The input's app name picks the misbehaviour.
package main

import (
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"
)

func main() {}

var in, out []byte

//go:wasmexport pullwise_abi_version
func abiVersion() uint32 { return 1 }

//go:wasmexport pullwise_alloc
func alloc(n uint32) uint32 {
	in = make([]byte, n+1)
	return uint32(uintptr(unsafe.Pointer(&in[0])))
}

var hoard [][]byte

//go:wasmexport pullwise_decide
func decide(_, n uint32) uint64 {
	input := string(in[:n])
	mode := func(m string) bool { return strings.Contains(input, `"name":"`+m+`"`) }
	answer := `{"action":"use-local","restartOnChange":false,"reason":"ok"}`
	if !strings.Contains(input, `"localDigest"`) {
		answer = `{"action":"pull","restartOnChange":true,"onPullFailure":"fail","reason":"absent"}`
	}
	switch {
	case mode("loop-on-refresh") && strings.Contains(input, `"event":"refresh"`):
		for {
		}
	case mode("loop-on-refresh"):
	case mode("trap"):
		panic("hostile module panics on purpose")
	case mode("loop"):
		for {
		}
	case mode("grow"):
		hoard = append(hoard, make([]byte, 48<<20))
	case mode("flood"):
		line := strings.Repeat("x", 1000)
		for i := 0; i < 10000; i++ {
			fmt.Println(line)
		}
	case mode("stderr"):
		fmt.Fprintln(os.Stderr, "hostile: about to exit")
		os.Exit(3)
	case mode("garbage"):
		answer = "this is not json"
	case mode("unknownfield"):
		answer = `{"action":"use-local","restartOnChange":false,"reason":"ok","extra":true}`
	case mode("missingreason"):
		answer = `{"action":"use-local","restartOnChange":false}`
	case mode("badaction"):
		answer = `{"action":"reboot","restartOnChange":false,"reason":"why not"}`
	case mode("clock"):
		// What a Go policy gets from time.Now: the decision's now.
		answer = `{"action":"use-local","restartOnChange":false,"reason":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`
	case mode("outofbounds"):
		return 0xFFFFFF00<<32 | 4096
	}
	out = []byte(answer)
	return uint64(uintptr(unsafe.Pointer(&out[0])))<<32 | uint64(len(out))
}

//go:wasmexport pullwise_validate_settings
func validateSettings(_, n uint32) uint64 {
	out = []byte(`{"valid":true}`)
	return uint64(uintptr(unsafe.Pointer(&out[0])))<<32 | uint64(len(out))
}
