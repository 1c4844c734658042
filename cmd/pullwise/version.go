package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/version"
)

// versions is `version -o json`: this binary's build, as before, and the
// running agent's beside it when one answers (kubectl's client and server).
type versions struct {
	version.Info
	Agent *version.Info `json:"agent,omitempty"`
}

func newVersionCmd(state *string) *cobra.Command {
	var output *output
	cmd := &cobra.Command{
		Use:   "version [-o text|json]",
		Short: "Print pullwise's version, commit and library versions",
		Long: `Print the version of this pullwise binary: its release (or "devel"), the
commit it was built from, the Go toolchain, and the versions of the
containerd client, wazero and go-containerregistry it contains, and the
version of the agent running on the state directory, when one answers (an
agent older or newer than its CLI is worth knowing of).`,
		Example: `  pullwise version
  pullwise version -o json
  pullwise --version`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := output.check(); err != nil {
				return err
			}
			v := versions{Info: version.Get()}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
			defer cancel()
			st, agentErr := agent.NewClient(*state).Status(ctx)
			if agentErr == nil {
				v.Agent = &st.Agent.Version
			}
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
				switch {
				case v.Agent != nil:
					fmt.Fprintf(out, "agent:                %s (%s)\n", v.Agent.Version, agentBuild(*v.Agent))
				default:
					fmt.Fprintf(out, "agent:                none answers on %s\n", *state)
				}
				return nil
			}
		},
	}
	output = addOutput(cmd, "text", "json", "yaml")
	return cmd
}

// agentBuild says briefly what build an agent is: its commit, else its Go.
func agentBuild(v version.Info) string {
	if v.Commit != "" {
		c := v.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		return "commit " + c
	}
	return v.Go
}
