package policies

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/pullwise/pullwise/internal/testing/testcache"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/plugins/moduletest"
	"github.com/pullwise/pullwise/sdk"
)

// testCache is shared with the other packages' tests: each module compiles
// once per machine.
var testCache = testcache.ModuleDir()

// TestEmbeddedModules runs every built-in module, as embedded in the binary,
// through the real plugin runtime against the same cases its native tests
// use: the Wasm build decides exactly as the Go source does.
func TestEmbeddedModules(t *testing.T) {
	names := Names()
	if len(names) != 5 {
		t.Fatalf("built-ins = %v, want always, check-on-start, never, periodic, use-existing", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			wasm, err := Module(name)
			if err != nil {
				t.Fatal(err)
			}
			moduletest.RunModuleBytes(t, name, wasm, filepath.Join(name, "testdata", "cases.yaml"), plugins.WithCacheDir(testCache))
		})
	}
}

// TestEveryEventAnswered asks every built-in about every event of the ABI,
// with the image absent and present, and requires a valid decision each time:
// no built-in may leave an event unanswered.
func TestEveryEventAnswered(t *testing.T) {
	ctx := context.Background()
	rt, err := plugins.NewRuntime(ctx, plugins.WithCacheDir(testCache))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	for _, name := range Names() {
		wasm, _ := Module(name)
		m, err := rt.Load(ctx, name, wasm)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range sdk.Events {
			for _, local := range []string{"", "sha256:aaaa"} {
				in := sdk.Input{Event: ev, Attempt: 1, LastError: "x",
					Image: sdk.Image{Ref: "r.local/a:latest", Tag: "latest", LocalDigest: local}}
				d, err := m.Decide(ctx, in)
				if err != nil {
					t.Errorf("%s, %s, local=%q: %v", name, ev, local, err)
					continue
				}
				if d.Reason == "" {
					t.Errorf("%s, %s: empty reason", name, ev)
				}
			}
		}
		if m.Info.Metadata.Name != name {
			t.Errorf("module %s: metadata name %q", name, m.Info.Metadata.Name)
		}
	}
}

func TestUnknownBuiltin(t *testing.T) {
	if _, err := Module("sometimes"); err == nil {
		t.Fatal("want an error for an unknown built-in")
	}
}
