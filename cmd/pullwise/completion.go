package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/policies"
)

// completeApps completes an APP argument with the apps the agent reports:
// display names and uuids, each described by its state. Without an agent
// there is nothing to offer (and no error: a shell completion never
// prints one).
func completeApps(state *string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		defer cancel()
		st, err := agent.NewClient(*state).Status(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, a := range st.Info.Apps {
			desc := string(a.State)
			out = append(out, cobra.CompletionWithDesc(a.DisplayName, desc),
				cobra.CompletionWithDesc(a.UUID, fmt.Sprintf("%s, %s", a.DisplayName, desc)))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeModules completes a MODULE argument: the built-in policy names,
// and files (a module is also a path to a .wasm file).
func completeModules(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, n := range policies.Names() {
		out = append(out, cobra.CompletionWithDesc(n, "built-in policy"))
	}
	return out, cobra.ShellCompDirectiveDefault
}
