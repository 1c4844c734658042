// Package policies holds the built-in pull policies. Each subdirectory is a
// policy's source, written with the SDK; wasm/ holds their builds, embedded
// here so the pullwise binary needs no files beside it. `make policies`
// rebuilds them and CI checks they match the sources.
package policies

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed wasm/*.wasm
var modules embed.FS

// Default is the policy used when neither the app nor the device names one.
const Default = "always"

// Names lists the built-in policies, sorted.
func Names() []string {
	entries, _ := fs.ReadDir(modules, "wasm") // embedded: cannot fail
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".wasm"))
	}
	sort.Strings(names)
	return names
}

// Module returns the built-in policy called name.
func Module(name string) ([]byte, error) {
	b, err := modules.ReadFile("wasm/" + name + ".wasm")
	if err != nil {
		return nil, fmt.Errorf("no built-in policy %q (built-ins: %s)", name, strings.Join(Names(), ", "))
	}
	return b, nil
}
