// Package policybuild compiles a policy written with the Go SDK into a
// pullwise module: the standard Go toolchain for GOOS=wasip1 GOARCH=wasm as
// a reactor (-buildmode=c-shared), then the metadata from the source
// directory's metadata.json added as the module's custom section.
package policybuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/sdk"
)

// MetadataFile is the file beside a policy's sources that holds its metadata.
const MetadataFile = "metadata.json"

// Build compiles the Go package in dir into the module file out. The build is
// reproducible (-trimpath, no VCS stamping, stripped symbols), so the same
// sources and Go version give the same bytes: CI relies on that to prove
// that embedded modules are the build of their sources.
func Build(ctx context.Context, dir, out string, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	md, err := ReadMetadata(dir)
	if err != nil {
		return err
	}
	out, err = filepath.Abs(out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w", "-o", tmp, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if o.toolchain != "" {
		cmd.Env = append(cmd.Env, "GOTOOLCHAIN="+o.toolchain)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("go build of %s for wasip1/wasm: %w\n%s", dir, err, stderr.String())
	}
	defer os.Remove(tmp)
	wasm, err := os.ReadFile(tmp)
	if err != nil {
		return err
	}
	return Annotate(wasm, md, out)
}

// Option changes how Build builds.
type Option func(*options)

type options struct{ toolchain string }

// WithToolchain builds with the Go release named (GOTOOLCHAIN, e.g.
// "go1.26.8"): the go command fetches it from the module proxy when the
// installed one differs. Modules are reproducible only for one release, so
// the built-ins pin theirs (policies/wasm/TOOLCHAIN) and their check does
// not go stale on a machine with another patch release.
func WithToolchain(version string) Option { return func(o *options) { o.toolchain = version } }

// Annotate writes wasm with md as its metadata section to out, replacing any
// earlier metadata section. It works for modules from any language.
func Annotate(wasm []byte, md sdk.Metadata, out string) error {
	payload, err := json.Marshal(md)
	if err != nil {
		return err
	}
	annotated, err := plugins.AppendCustomSection(wasm, sdk.MetadataSection, payload)
	if err != nil {
		return err
	}
	if _, err := plugins.Inspect(annotated); err != nil {
		return fmt.Errorf("annotated module does not inspect cleanly: %w", err)
	}
	tmp := out + ".new"
	if err := os.WriteFile(tmp, annotated, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// ReadMetadata reads and checks dir/metadata.json. A missing abiVersion is
// taken as the SDK's; any other value is an error.
func ReadMetadata(dir string) (sdk.Metadata, error) {
	return ReadMetadataFile(filepath.Join(dir, MetadataFile))
}

// ReadMetadataFile reads and checks a metadata JSON file.
func ReadMetadataFile(path string) (sdk.Metadata, error) {
	var md sdk.Metadata
	b, err := os.ReadFile(path)
	if err != nil {
		return md, fmt.Errorf("reading policy metadata: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&md); err != nil {
		return md, fmt.Errorf("%s: %w", path, err)
	}
	if md.ABIVersion == 0 {
		md.ABIVersion = sdk.ABIVersion
	}
	switch {
	case md.Name == "":
		return md, fmt.Errorf("%s: \"name\" is required", path)
	case md.Version == "":
		return md, fmt.Errorf("%s: \"version\" is required", path)
	case md.ABIVersion != sdk.ABIVersion:
		return md, fmt.Errorf("%s: abiVersion %d, but this SDK builds ABI version %d", path, md.ABIVersion, sdk.ABIVersion)
	case len(md.SettingsSchema) > 0 && !json.Valid(md.SettingsSchema):
		return md, errors.New(path + ": settingsSchema is not valid JSON")
	}
	return md, nil
}
