package policybuild

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

//go:embed template
var templates embed.FS

// SDKModule is the SDK's Go module path: all a policy's module graph needs.
const SDKModule = "github.com/pullwise/pullwise/sdk"

// validPolicyName is what a module's metadata name may be: it names the
// drop-in file (NAME.wasm) and the configuration's pullPolicy.
var validPolicyName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Project says what New writes.
type Project struct {
	// Name is the policy's name (metadata.json, the module file).
	Name string
	// Module is the Go module path of the new project; default
	// example.com/NAME.
	Module string
	// SDK is a directory holding the SDK module (a pullwise checkout's
	// sdk/). The SDK is not published at a version yet, so the project's
	// go.mod replaces it with this directory; empty writes no replace.
	SDK string
}

// New writes a policy project into dir (which must not exist or be empty):
// go.mod, main.go, main_test.go, metadata.json and testdata/cases.yaml. It
// builds with `pullwise policy build` and tests with `go test` against the
// SDK alone. The caller runs `go mod tidy` (it needs the module proxy or a
// module cache).
func New(dir string, p Project) error {
	if !validPolicyName.MatchString(p.Name) {
		return fmt.Errorf("policy name %q: use lower-case letters, digits, '.', '_' and '-' (it names the module file and the configuration's pullPolicy)", p.Name)
	}
	if p.Module == "" {
		p.Module = "example.com/" + p.Name
	}
	if p.SDK != "" {
		abs, err := filepath.Abs(p.SDK)
		if err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
			return fmt.Errorf("--sdk %s: not the SDK module (no go.mod): give a pullwise checkout's sdk/ directory", p.SDK)
		}
		p.SDK = abs
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s exists and is not empty: choose a new directory", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fs.WalkDir(templates, "template", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		text, err := templates.ReadFile(path)
		if err != nil {
			return err
		}
		t, err := template.New(path).Parse(string(text))
		if err != nil {
			return err
		}
		var out bytes.Buffer
		if err := t.Execute(&out, p); err != nil {
			return err
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(path, "template/"), ".tmpl")
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, out.Bytes(), 0o644)
	})
}
