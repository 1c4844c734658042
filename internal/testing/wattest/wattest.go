// Package wattest builds policy modules from WebAssembly text for tests:
// hostile modules Go cannot produce (a looping start section, a handshake
// that never returns) and modules written from sdk/ABI.md alone. It runs
// wabt's wat2wasm (scripts/setup.sh installs it); under CI=true a missing
// wat2wasm fails the test, elsewhere it skips.
package wattest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/internal/testing/testbin"
)

// Build assembles src and appends the pullwise.metadata custom section
// holding metadata (JSON), as `pullwise policy annotate` would.
func Build(t testing.TB, src, metadata string) []byte {
	t.Helper()
	testbin.Need(t, "wat2wasm", "apt-get install wabt")
	dir := t.TempDir()
	in, out := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("wat2wasm", in, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	wasm, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if metadata == "" {
		return wasm
	}
	return append(wasm, customSection("pullwise.metadata", []byte(metadata))...)
}

// customSection encodes a Wasm custom section (id 0): its size, its name
// and its payload.
func customSection(name string, payload []byte) []byte {
	body := append(uleb(uint32(len(name))), name...)
	body = append(body, payload...)
	return append(append([]byte{0}, uleb(uint32(len(body)))...), body...)
}

func uleb(v uint32) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b |= 0x80
		}
		out = append(out, b)
		if v == 0 {
			return out
		}
	}
}

// Metadata is valid metadata for a module called name.
func Metadata(name string) string {
	return `{"name":"` + name + `","version":"0.0.1","abiVersion":1,"description":"test module"}`
}

// Module is a minimal ABI v1 module answering use-local to every decision
// and valid to every settings check, with parts replaced: extra is added
// to the module (a start function, an _initialize export), abi replaces
// the body of pullwise_abi_version (default: 1).
func Module(extra, abi string) string {
	if abi == "" {
		abi = "(i32.const 1)"
	}
	return strings.NewReplacer("{{extra}}", extra, "{{abi}}", abi).Replace(skeleton)
}

// ModuleAnswering is Module answering every decision with decision (JSON).
func ModuleAnswering(decision string) string {
	quote := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return strings.NewReplacer(
		quote.Replace(`{"action":"use-local","restartOnChange":false,"reason":"wat"}`), quote.Replace(decision),
		"(i64.const 61)", fmt.Sprintf("(i64.const %d)", len(decision)),
	).Replace(Module("", ""))
}

const skeleton = `(module
  (memory (export "memory") 2)
  (data (i32.const 1024) "{\"action\":\"use-local\",\"restartOnChange\":false,\"reason\":\"wat\"}")
  (data (i32.const 2048) "{\"valid\":true}")
  {{extra}}
  (func (export "pullwise_abi_version") (result i32) {{abi}})
  (func (export "pullwise_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "pullwise_decide") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 61)))
  (func (export "pullwise_validate_settings") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const 14)))
)`
