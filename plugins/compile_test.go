package plugins

import (
	"context"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/testing/wattest"
	"github.com/pullwise/pullwise/policies"
)

// TestCompilesDoNotWaitForEachOther: while one module compiles cold (a
// second or more), another module loads: one app's new module never holds
// up another app's.
func TestCompilesDoNotWaitForEachOther(t *testing.T) {
	ctx := context.Background()
	rt, err := NewRuntime(ctx, WithCacheDir(t.TempDir())) // empty: a cold compile
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(ctx) })
	big, err := policies.Module("periodic")
	if err != nil {
		t.Fatal(err)
	}
	loaded := make(chan error, 1)
	go func() {
		_, err := rt.Load(ctx, "periodic", big)
		loaded <- err
	}()
	var cold *compiledEntry
	for deadline := time.Now().Add(30 * time.Second); cold == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cold compile never started")
		}
		rt.mu.Lock()
		for _, e := range rt.compiled {
			cold = e
		}
		rt.mu.Unlock()
	}
	small := wattest.Build(t, wattest.Module("", ""), wattest.Metadata("small"))
	if _, err := rt.Load(ctx, "small", small); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cold.ready:
		t.Error("the small module loaded only after the cold compile ended: it waited for it")
	default:
	}
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
}
