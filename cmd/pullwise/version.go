package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/internal/version"
)

func newVersionCmd() *cobra.Command {
	var output string
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
			v := version.Get()
			switch output {
			case "json":
				return printJSON(cmd.OutOrStdout(), v)
			case "text", "":
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
			default:
				return usagef("-o %q: want text or json", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
