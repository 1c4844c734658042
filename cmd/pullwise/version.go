package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/internal/version"
)

func newVersionCmd() *cobra.Command {
	var output *output
	cmd := &cobra.Command{
		Use:   "version [-o text|json]",
		Short: "Print pullwise's version, commit and library versions",
		Long: `Print the version of this pullwise binary: its release (or "devel"), the
commit it was built from, the Go toolchain, and the versions of the
containerd client, wazero and go-containerregistry it contains. The running
agent's version is in "pullwise status -o json" (agent.version).`,
		Example: `  pullwise version
  pullwise version -o json
  pullwise --version`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := output.check(); err != nil {
				return err
			}
			v := version.Get()
			switch {
			case output.structured():
				return output.print(cmd.OutOrStdout(), v)
			default:
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "version:              %s\n", v.Version)
				if v.Commit != "" {
					mod := ""
					if v.Modified {
						mod = " (with uncommitted changes)"
					}
					fmt.Fprintf(out, "commit:               %s%s\n", v.Commit, mod)
					fmt.Fprintf(out, "commit time:          %s\n", v.CommitTime)
				}
				fmt.Fprintf(out, "go:                   %s %s\n", v.Go, v.Platform)
				fmt.Fprintf(out, "containerd client:    %s\n", v.Containerd)
				fmt.Fprintf(out, "wazero:               %s\n", v.Wazero)
				fmt.Fprintf(out, "go-containerregistry: %s\n", v.ContainerRegis)
				return nil
			}
		},
	}
	output = addOutput(cmd, "text", "json", "yaml")
	return cmd
}
