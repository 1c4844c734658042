// Package presentorpull tests the present-or-pull policy, a module written
// in WebAssembly text (policy.wat) from sdk/ABI.md alone: it is assembled
// with wabt's wat2wasm, annotated with metadata.json, and run through the
// real plugin runtime against testdata/cases.yaml.
package presentorpull

import (
	"os"
	"testing"

	"github.com/pullwise/pullwise/internal/testing/wattest"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/plugins/moduletest"
)

func TestModule(t *testing.T) {
	src, err := os.ReadFile("policy.wat")
	if err != nil {
		t.Fatal(err)
	}
	meta, err := os.ReadFile("metadata.json")
	if err != nil {
		t.Fatal(err)
	}
	wasm := wattest.Build(t, string(src), string(meta))
	moduletest.RunModuleBytes(t, "present-or-pull", wasm, "testdata/cases.yaml")
}

// TestSettings: no settings, or {}, are accepted; anything else is not.
func TestSettings(t *testing.T) {
	src, _ := os.ReadFile("policy.wat")
	meta, _ := os.ReadFile("metadata.json")
	wasm := wattest.Build(t, string(src), string(meta))
	rt, err := plugins.NewRuntime(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(t.Context())
	m, err := rt.Load(t.Context(), "present-or-pull", wasm)
	if err != nil {
		t.Fatal(err)
	}
	for settings, ok := range map[string]bool{"": true, "{}": true, `{"interval":"1h"}`: false} {
		if err := m.ValidateSettings(t.Context(), []byte(settings)); (err == nil) != ok {
			t.Errorf("settings %q: %v", settings, err)
		}
	}
}
