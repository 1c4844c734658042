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
	// sdk/) that the project's go.mod replaces the SDK with. Empty: the
	// SDK this binary was built with is written into the project
	// (third_party/pullwise-sdk) and used from there, so the module is
	// built against exactly the ABI of the host that will run it.
	SDK string
}

// VendoredSDK is where New writes the binary's own SDK in a project.
const VendoredSDK = "third_party/pullwise-sdk"

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
	if p.SDK == "" {
		src := sdkSource()
		if src == nil {
			return fmt.Errorf("this build carries no SDK sources: give the SDK's directory (--sdk)")
		}
		if err := copyFS(src, ".", filepath.Join(dir, filepath.FromSlash(VendoredSDK)), nil); err != nil {
			return fmt.Errorf("writing the SDK into the project: %w", err)
		}
		p.SDK = "./" + VendoredSDK
	}
	return copyFS(templates, "template", dir, func(path string, text []byte) ([]byte, string, error) {
		t, err := template.New(path).Parse(string(text))
		if err != nil {
			return nil, "", err
		}
		var out bytes.Buffer
		if err := t.Execute(&out, p); err != nil {
			return nil, "", err
		}
		return out.Bytes(), strings.TrimSuffix(path, ".tmpl"), nil
	})
}

// copyFS writes the files under root of fsys into dir, each through
// transform (nil: as they are), which may also rename it.
func copyFS(fsys fs.FS, root, dir string, transform func(path string, b []byte) ([]byte, string, error)) error {
	return fs.WalkDir(fsys, root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		name := path
		if transform != nil {
			if b, name, err = transform(path, b); err != nil {
				return err
			}
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(name, root), "/")
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}
