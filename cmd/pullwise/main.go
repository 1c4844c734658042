// Command pullwise keeps container images on edge devices as fresh as their
// pull policies say, with every decision made by a sandboxed Wasm policy
// module. This binary is a thin CLI over the packages in host/ and plugins/.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/version"
)

func main() {
	os.Exit(execute(newRoot(), os.Stderr))
}

// Exit codes, documented in the README.
const (
	exitOK          = 0
	exitFailed      = 1 // the action failed
	exitUsage       = 2 // the command line is wrong
	exitNotRunning  = 3 // no agent answers on the state directory's socket
	exitPermission  = 4 // the agent's socket (or a file) may not be opened by this user
	exitCouldNotChk = 5 // a --dry-run could not check every image
	exitQueued      = 6 // containerd is unreachable: the action is queued, the agent carries it out when containerd answers

	// With refresh --detailed-exitcode (0 then means nothing new).
	exitUpdated    = 10 // the app runs a new image (with --dry-run: a change is pending)
	exitDeferred   = 11 // the refresh was deferred by its policy, or failed and waits to be tried again
	exitRolledBack = 12 // the new image failed to start and the app was rolled back
)

// execute runs the command line and says how the process should exit.
func execute(root *cobra.Command, stderr io.Writer) int {
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	var quiet *exitError
	var detailed *outcomeError
	if !errors.As(err, &quiet) && !errors.As(err, &detailed) {
		fmt.Fprintln(stderr, "pullwise:", err)
	}
	var usage *usageError
	var unchecked *couldNotCheckError
	switch {
	case errors.As(err, &usage) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") ||
		strings.HasPrefix(err.Error(), "unknown shorthand flag"):
		fmt.Fprintln(stderr)
		fmt.Fprint(stderr, cmd.UsageString())
		return exitUsage
	case errors.Is(err, agent.ErrNotRunning):
		return exitNotRunning
	case errors.Is(err, agent.ErrPermission):
		return exitPermission
	case errors.As(err, &unchecked):
		return exitCouldNotChk
	case errors.As(err, new(*agent.QueuedError)):
		return exitQueued
	case detailed != nil:
		return detailed.code
	}
	return exitFailed
}

// exitError fails a command whose output has already said why (a test run
// with failing cases, say).
type exitError struct{ msg string }

func (e *exitError) Error() string { return e.msg }

// usageError is a wrong command line: the usage is printed with it.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// usageArgs makes a cobra argument check's error a usage error.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// couldNotCheckError is a dry run that could not ask the registry about
// every image: its answer is incomplete.
type couldNotCheckError struct{ n int }

func (e *couldNotCheckError) Error() string {
	return fmt.Sprintf("%d image(s) could not be checked", e.n)
}

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
		Version:       version.Get().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	state := root.PersistentFlags().String("state", agent.DefaultStateDir, "the agent's state directory (its API socket is DIR/pullwise.sock)")
	root.AddCommand(newVersionCmd(state), newConfigCmd(state), newPolicyCmd(state), newResolveCmd(), newAgentCmd(state), newStatusCmd(state), newLogsCmd(state), newEventsCmd(state), newManCmd(),
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
