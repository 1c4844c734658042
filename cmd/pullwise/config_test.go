package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/plugins/policybuild"
)

// TestConfigValidate: the agent's validation, offline, every problem with
// its field and its place in the file.
func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	valid := write("valid.yaml", `apps:
  - uuid: 0a7c3b1e-0000-4000-8000-000000000001
    displayName: web
    pullPolicy: {name: periodic, settings: {interval: 6h}}
    drives:
      - kind: container
        image: {uuid: 6f1e0c1e-0000-4000-8000-00000000b001, name: "registry.local/web:latest"}
`)
	out, err := run(t, "", "config", "validate", valid, "--policy-dir", filepath.Join(dir, "none"))
	if err != nil || !strings.Contains(out, "valid (1 apps)") {
		t.Fatalf("a valid file: %v\n%s", err, out)
	}
	tests := []struct {
		name, text, want string
	}{
		{"unknown field", "apps:\n  - uuid: 0a7c3b1e-0000-4000-8000-00000000000a\n    nmae: web\n", `:3:5: apps[0].nmae: unknown field "nmae"`},
		{"bad pin", `apps:
  - uuid: 0a7c3b1e-0000-4000-8000-00000000000a
    displayName: web
    drives:
      - kind: container
        image:
          uuid: 6f1e0c1e-0000-4000-8000-00000000000e
          name: "r/a:1"
          sha256: abc
`, `:9:11: apps[0].drives[0].image.sha256: "abc" is not a sha256`},
		{"settings the module rejects", `apps:
  - uuid: 0a7c3b1e-0000-4000-8000-00000000000a
    displayName: web
    pullPolicy: {name: periodic, settings: {interval: 1s}}
    drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-00000000000e, name: "r/a:1"}}]
`, `:4:5: apps[0].pullPolicy: policy module periodic rejects its settings`},
		{"json", `{"apps": [{"uuid": "0a7c3b1e-0000-4000-8000-00000000000a", "displayName": "", "drives": [{"kind": "container", "image": {"uuid": "6f1e0c1e-0000-4000-8000-00000000000e", "name": "r/a:1"}}]}]}`, `:1:60: apps[0].displayName: required`},
		{"not yaml", "apps: [{uuid: 0a7c3b1e-0000-4000-8000-00000000000a\n", "did not find expected"},
		{"a trusted key that is not there", "device:\n  policyTrust: {keys: [/nonexistent/vendor.pub]}\napps: []\n",
			`device.policyTrust.keys[0]: trusted key: open /nonexistent/vendor.pub: no such file`},
		{"a module by tag", `apps:
  - uuid: 0a7c3b1e-0000-4000-8000-00000000000a
    displayName: web
    pullPolicy: {module: "registry.local/policies/night:1.0"}
    drives: [{kind: container, image: {uuid: 6f1e0c1e-0000-4000-8000-00000000000e, name: "r/a:1"}}]
`, `:4:18: apps[0].pullPolicy.module: "registry.local/policies/night:1.0" names no digest`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.text)
			out, err := run(t, "", "config", "validate", p, "--policy-dir", filepath.Join(dir, "none"))
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("want a failure mentioning %q: %v\n%s", tc.want, err, out)
			}
		})
	}
	// -o json
	bad := write("bad.yaml", "apps:\n  - uuid: 0a7c3b1e-0000-4000-8000-00000000000a\n    nmae: web\n")
	out, _ = run(t, "", "config", "validate", bad, "-o", "json", "--policy-dir", filepath.Join(dir, "none"))
	var problems []problem
	if err := json.Unmarshal([]byte(out), &problems); err != nil || len(problems) != 1 || problems[0].Line != 3 || problems[0].Field != "apps[0].nmae" {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
}

// TestExampleConfigWithItsModules: the complete example configuration is
// valid with the example modules built from their sources, so its sha256
// pin of maintenance-window is the build of the source beside it (a
// change to the module, the SDK or the toolchain moves the pin: the
// failure names the new one).
func TestExampleConfigWithItsModules(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"maintenance-window", "metered-link"} {
		if err := policybuild.Build(t.Context(), filepath.Join("../../examples/policies", name), filepath.Join(dir, name+".wasm")); err != nil {
			t.Fatal(err)
		}
	}
	out, err := run(t, "", "config", "validate", "../../examples/config/device.yaml", "--policy-dir", dir)
	if err != nil || !strings.Contains(out, "valid (2 apps)") {
		t.Fatalf("examples/config/device.yaml with the example modules: %v\n%s", err, out)
	}
}
