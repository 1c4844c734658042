// Command pullwise keeps container images on edge devices as fresh as their
// pull policies say, with every decision made by a sandboxed Wasm policy
// module. This binary is a thin CLI over the packages in host/ and plugins/.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		var quiet *exitError
		if !errors.As(err, &quiet) {
			fmt.Fprintln(os.Stderr, "pullwise:", err)
		}
		os.Exit(1)
	}
}

// exitError fails a command whose output has already said why (a test run
// with failing cases, say).
type exitError struct{ msg string }

func (e *exitError) Error() string { return e.msg }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "pullwise",
		Short: "Keep edge container images fresh, decided by sandboxed Wasm pull policies",
		Long: `pullwise decides when an edge device fetches a container image again, and does
it safely: tags are resolved once and latched, refreshed on request or by
policy, digests are verified, and nothing is downloaded twice.

Every decision (pull? check? restart? fall back? when to look again?) is made
by a WebAssembly policy module running in a sandbox; the built-in default is
"always" (check the manifest digest, pull only if it changed).`,
		Example: `  pullwise agent --config /etc/pullwise/config.yaml
  pullwise status
  pullwise refresh web
  pullwise policy test ./vendor.wasm --cases cases.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	state := root.PersistentFlags().String("state", agent.DefaultStateDir, "the agent's state directory (its API socket is DIR/pullwise.sock)")
	root.AddCommand(newPolicyCmd(), newResolveCmd(), newAgentCmd(state), newStatusCmd(state),
		newOpCmd(state, "refresh", "Check an app's images and apply what changed (refreshImage)",
			`Increase the app's refreshImage counter through the agent, as a controller
would: every container drive is checked, new images download while the app
keeps running, and the app restarts only if an image changed. Waits for the
outcome (with download progress) unless --no-wait. --dry-run shows which
images would change and downloads nothing.`,
			"  pullwise refresh web\n  pullwise refresh web --dry-run"),
		newOpCmd(state, "restart", "Restart an app (its writable layer and volumes are kept)",
			`Increase the app's restart counter through the agent. A restart asked during
a refresh waits for the refresh's downloads.`, "  pullwise restart web"),
		newOpCmd(state, "purge", "Restart an app with its writable layer and volumes discarded",
			`Increase the app's purge counter through the agent: the app is rebuilt from
its images with its state discarded.`, "  pullwise purge web --no-wait"),
	)
	return root
}
