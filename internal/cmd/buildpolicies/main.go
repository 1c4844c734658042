// Command buildpolicies builds the built-in policy modules from
// policies/NAME/ into policies/wasm/NAME.wasm, which the pullwise binary
// embeds. With -check it builds into a temporary directory instead and fails
// if any embedded module differs from the build of its current sources: CI
// runs it so the committed modules can never drift from their code. Both
// build with the Go release in policies/wasm/TOOLCHAIN (the same sources give
// the same bytes only with the same release).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pullwise/pullwise/plugins/policybuild"
)

func main() {
	check := flag.Bool("check", false, "verify policies/wasm/*.wasm are the build of their sources; write nothing")
	root := flag.String("root", "policies", "directory holding one directory per built-in policy")
	flag.Parse()
	if err := run(context.Background(), *root, *check); err != nil {
		fmt.Fprintln(os.Stderr, "buildpolicies:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, root string, check bool) error {
	dirs, err := filepath.Glob(filepath.Join(root, "*", policybuild.MetadataFile))
	if err != nil {
		return err
	}
	if len(dirs) == 0 {
		return fmt.Errorf("no policies under %s", root)
	}
	outDir := filepath.Join(root, "wasm")
	pin, err := os.ReadFile(filepath.Join(outDir, "TOOLCHAIN"))
	if err != nil {
		return fmt.Errorf("the built-ins' Go release: %w", err)
	}
	toolchain := policybuild.WithToolchain(strings.TrimSpace(string(pin)))
	if check {
		if outDir, err = os.MkdirTemp("", "pullwise-policies-"); err != nil {
			return err
		}
		defer os.RemoveAll(outDir)
	}
	var stale []string
	for _, meta := range dirs {
		dir := filepath.Dir(meta)
		name := filepath.Base(dir)
		out := filepath.Join(outDir, name+".wasm")
		if err := policybuild.Build(ctx, dir, out, toolchain); err != nil {
			return err
		}
		if !check {
			fmt.Println("built", out)
			continue
		}
		built, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		embedded, err := os.ReadFile(filepath.Join(root, "wasm", name+".wasm"))
		if err != nil || !bytes.Equal(built, embedded) {
			stale = append(stale, name)
			continue
		}
		fmt.Println("up to date", name)
	}
	if len(stale) > 0 {
		return fmt.Errorf("embedded modules are not the build of their sources: %v (run `make policies` and commit)", stale)
	}
	return nil
}
