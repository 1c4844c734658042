package plugins_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/wattest"
)

// TestEveryCallHasADeadline: a module that loops in its start section, in
// _initialize or in the ABI handshake is stopped, and the error names the
// phase and the limit that applied there.
func TestEveryCallHasADeadline(t *testing.T) {
	loop := "(loop $l (br $l))"
	tests := []struct {
		name, extra, abi string
		want             []string
	}{
		{"start section loops", `(func $s ` + loop + `) (start $s)`, "", []string{"instantiate (start section)", "exceeded the 1s time limit"}},
		{"_initialize loops", `(func (export "_initialize") ` + loop + `)`, "", []string{"initialize", "exceeded the 1s time limit"}},
		{"handshake loops", "", loop + " (i32.const 1)", []string{"abi-version handshake", "exceeded the 100ms time limit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wasm := wattest.Build(t, wattest.Module(tc.extra, tc.abi), wattest.Metadata("h"))
			rt, _ := newRuntime(t)
			start := time.Now()
			_, err := rt.Load(context.Background(), "h", wasm)
			took := time.Since(start)
			if err == nil {
				t.Fatal("a looping module loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
			t.Logf("stopped after %s: %v", took.Round(time.Millisecond), err)
		})
	}
	// A well-behaved module in WAT loads and decides.
	rt, _ := newRuntime(t)
	m, err := rt.Load(context.Background(), "good", wattest.Build(t, wattest.Module("", ""), wattest.Metadata("good")))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := m.Decide(context.Background(), input("web")); err != nil || d.Reason != "wat" {
		t.Fatalf("%+v %v", d, err)
	}
}
