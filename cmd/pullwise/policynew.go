package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/plugins/policybuild"
)

func newPolicyNewCmd() *cobra.Command {
	var p policybuild.Project
	var dir string
	cmd := &cobra.Command{
		Use:   "new NAME [--dir DIR] [--sdk DIR]",
		Short: "Write a new Go policy project that builds and tests with the SDK alone",
		Long: `Write a policy project into DIR (default ./NAME): go.mod, main.go (a working
policy to change), main_test.go, metadata.json and testdata/cases.yaml, then
run "go mod tidy" in it. Its module graph is the SDK's alone (no containerd,
gRPC, wazero or registry code): "go test ./..." runs the cases natively,
"pullwise policy build" makes the module, "pullwise policy test" runs the
same cases against it.

The SDK module (github.com/pullwise/pullwise/sdk) is written into the
project (third_party/pullwise-sdk): the SDK this binary was built with, so
the module speaks exactly the ABI of the agent that will run it, and no
checkout or published version is needed. --sdk uses a pullwise checkout's
sdk/ directory instead.`,
		Example: `  pullwise policy new night-window
  cd night-window && go test ./... && pullwise policy build . -o night-window.wasm
  pullwise policy test night-window.wasm --cases testdata/cases.yaml`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			if dir == "" {
				dir = p.Name
			}
			if err := policybuild.New(dir, p); err != nil {
				return err
			}
			tidy := exec.CommandContext(cmd.Context(), "go", "mod", "tidy")
			tidy.Dir = dir
			var stderr bytes.Buffer
			tidy.Stderr = &stderr
			if err := tidy.Run(); err != nil {
				return fmt.Errorf("wrote %s, but `go mod tidy` in it failed (it needs the Go module proxy or a module cache): %w\n%s", dir, err, stderr.String())
			}
			abs, _ := filepath.Abs(dir)
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\nnext: cd %s && go test ./... && pullwise policy build . -o %s.wasm && pullwise policy test %s.wasm --cases testdata/cases.yaml\n",
				abs, dir, p.Name, p.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write (default ./NAME; must not exist or be empty)")
	cmd.Flags().StringVar(&p.SDK, "sdk", "", "use the SDK module in this directory (a pullwise checkout's sdk/) instead of writing this binary's SDK into the project")
	cmd.Flags().StringVar(&p.Module, "module", "", "the new project's Go module path (default example.com/NAME)")
	return cmd
}
