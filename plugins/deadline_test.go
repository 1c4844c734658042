package plugins_test

import (
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/testing/regtest"
	"github.com/pullwise/pullwise/internal/testing/wattest"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/policies"
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

// TestDeepRecursionIsStoppedAndItsMemoryReturned: unbounded recursion traps
// with "stack overflow", and the memory its stack took (over 100 MiB) is
// handed back to the kernel once the instance is discarded.
func TestDeepRecursionIsStoppedAndItsMemoryReturned(t *testing.T) {
	wat := strings.Replace(wattest.Module(`(func $r (param i64) (result i64) (call $r (i64.add (local.get 0) (i64.const 1))))`, ""),
		"(i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 61)))", "(call $r (i64.const 0)))", 1)
	rt, _ := newRuntime(t)
	m, err := rt.Load(context.Background(), "deep", wattest.Build(t, wat, wattest.Metadata("deep")))
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	debug.FreeOSMemory()
	before, err := regtest.RSS(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Decide(context.Background(), input("web")); err == nil || !strings.Contains(err.Error(), "stack overflow") {
		t.Fatalf("deep recursion: %v", err)
	}
	if raceDetector {
		t.Log("resident memory is not measured under the race detector (its shadow memory keeps every page); make test runs this test without it too")
		return
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		after, _ := regtest.RSS(0)
		if after < before+32<<20 {
			t.Logf("resident %d MiB before, %d MiB after", before>>20, after>>20)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("resident memory %d MiB before the recursion, still %d MiB after", before>>20, after>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIdleModuleIsReleasedAndComesBack: a module no call used for
// WithReleaseAfter gives back its compiled code and instances; its next
// decision compiles it again from the cache and answers as before, and that
// call runs under the same time limit (a module looping in its decision is
// still stopped).
func TestIdleModuleIsReleasedAndComesBack(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t, plugins.WithReleaseAfter(50*time.Millisecond))
	wasm, err := policies.Module("always")
	if err != nil {
		t.Fatal(err)
	}
	m, err := rt.Load(ctx, "always", wasm)
	if err != nil {
		t.Fatal(err)
	}
	first, err := m.Decide(ctx, input("web"))
	if err != nil {
		t.Fatal(err)
	}
	waitReleased(t, m)
	start := time.Now()
	again, err := m.Decide(ctx, input("web"))
	if err != nil || again.Action != first.Action || again.Reason != first.Reason {
		t.Fatalf("after a release: %+v, %v; before: %+v", again, err, first)
	}
	t.Logf("the first decision after a release took %s", time.Since(start).Round(time.Millisecond))
	if m.Released() {
		t.Error("a module in use reads as released")
	}

	looping := strings.Replace(wattest.Module("", ""),
		`(i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 61)))`,
		`(loop $l (br $l)) (i64.const 0))`, 1)
	h, err := rt.Load(ctx, "h", wattest.Build(t, looping, wattest.Metadata("h")))
	if err != nil {
		t.Fatal(err)
	}
	waitReleased(t, h)
	if _, err := h.Decide(ctx, input("web")); err == nil || !strings.Contains(err.Error(), "exceeded the 100ms time limit") {
		t.Fatalf("a looping decision after a release: %v", err)
	}
}

func waitReleased(t *testing.T, m *plugins.Module) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !m.Released() {
		if time.Now().After(deadline) {
			t.Fatal("an idle module was never released")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
