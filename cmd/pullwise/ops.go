package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
	hostapp "github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/internal/printable"
)

// opResult is what `refresh`, `restart` and `purge` report for one app
// (the -o json form).
type opResult struct {
	App string `json:"app"`
	// Op is refresh, restart or purge; DryRun marks a refresh --dry-run.
	Op     string `json:"op"`
	DryRun bool   `json:"dryRun,omitempty"`
	// Accepted: --no-wait, the agent has the request.
	Accepted bool `json:"accepted,omitempty"`
	// Result is the app's state once the agent acted (not with --no-wait
	// or --dry-run); Restarts how many starts the action caused.
	Result   *hostapp.AppInfo `json:"result,omitempty"`
	Restarts int              `json:"restarts,omitempty"`
	// Checks are what a dry run found.
	Checks []hostapp.ImageCheck `json:"checks,omitempty"`
	Error  string               `json:"error,omitempty"`

	err    error
	before map[string]hostapp.RunImage // what the app ran before the action
}

func newOpCmd(state *string, op, short, long, example string) *cobra.Command {
	var noWait, dryRun, all, detailed bool
	var output *output
	use := op + " APP"
	if op == "refresh" {
		use = "refresh (APP | --all)"
	}
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args: func(cmd *cobra.Command, args []string) error {
			if all {
				return usageArgs(cobra.NoArgs)(cmd, args)
			}
			return usageArgs(cobra.ExactArgs(1))(cmd, args)
		},
		ValidArgsFunction: completeApps(state),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := output.check(); err != nil {
				return err
			}
			c := agent.NewClient(*state)
			out := cmd.OutOrStdout()
			apps := args
			if all {
				st, err := c.Status(cmd.Context())
				if err != nil {
					return err
				}
				apps = nil
				for _, a := range st.Info.Apps {
					apps = append(apps, a.DisplayName)
				}
				sort.Strings(apps)
			}
			var progress func(pull.Progress)
			var stopping func(string, events.Event)
			if !output.structured() {
				progress = progressPrinter(out)
				stopping = func(app string, e events.Event) {
					// While the app waits its grace period, say so: a
					// refresh that seems stuck for 10 s is an app ignoring
					// SIGTERM.
					wait := ""
					if e.Until != nil {
						wait = fmt.Sprintf(" (up to %s, then SIGKILL)", time.Until(*e.Until).Round(time.Second))
					}
					fmt.Fprintf(out, "%s: stopping%s\n", printable.String(app), wait)
				}
			}
			results := make([]opResult, len(apps))
			var wg sync.WaitGroup
			for i, name := range apps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = runOp(cmd.Context(), c, name, op, dryRun, noWait, progress, stopping)
				}()
			}
			wg.Wait()
			if output.structured() {
				if all {
					if err := output.print(out, results); err != nil {
						return err
					}
				} else if err := output.print(out, results[0]); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					printOp(out, r, all)
				}
			}
			if err := opError(results); err != nil || !detailed {
				return err
			}
			return outcome(results)
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the agent has the request, without waiting for the outcome")
	output = addOutput(cmd, "text", "json", "yaml")
	if op == "refresh" {
		cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only show which images would change; download nothing")
		cmd.Flags().BoolVar(&all, "all", false, "every app of the configuration (with --dry-run: what a refresh of each would change)")
		cmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 0 only when nothing changed: 10 when an app runs a new image (with --dry-run: a change is pending), 11 when the refresh was deferred or waits to be tried again, 12 when the app was rolled back")
	}
	return cmd
}

// runOp carries out (or, with dryRun, previews) op on one app.
func runOp(ctx context.Context, c *agent.Client, name, op string, dryRun, noWait bool, progress func(pull.Progress), stopping func(string, events.Event)) opResult {
	r := opResult{App: name, Op: op, DryRun: dryRun}
	switch {
	case dryRun:
		r.Checks, r.err = c.DryRun(ctx, name)
		unchecked := 0
		for _, ch := range r.Checks {
			if ch.Error != "" {
				unchecked++
			}
		}
		if r.err == nil && unchecked > 0 {
			r.err = &couldNotCheckError{unchecked}
		}
	case noWait:
		_, r.err = c.Op(ctx, name, op, false, agent.OpWatch{})
		r.Accepted = r.err == nil
	default:
		before, _ := c.App(ctx, name)
		r.before = before.Running
		r.Result, r.err = c.Op(ctx, name, op, true, agent.OpWatch{Progress: progress, Stopping: func(e events.Event) {
			if stopping != nil {
				stopping(name, e)
			}
		}})
		if r.Result != nil {
			r.Restarts = r.Result.Restarts - before.Restarts
		}
	}
	if r.err != nil {
		r.Error = r.err.Error()
	}
	return r
}

func printOp(out io.Writer, r opResult, prefix bool) {
	lead := ""
	if prefix {
		lead = printable.String(r.App) + ": "
	}
	switch {
	case r.DryRun:
		for _, ch := range r.Checks {
			switch {
			case ch.Error != "":
				fmt.Fprintf(out, "%s%s: cannot check: %s\n", lead, ch.Ref, printable.String(ch.Error))
			case ch.WouldChange:
				fmt.Fprintf(out, "%s%s: would change %s -> %s\n", lead, ch.Ref, shortDigest(ch.Current), shortDigest(ch.Remote))
			default:
				fmt.Fprintf(out, "%s%s: up to date (%s)\n", lead, ch.Ref, shortDigest(ch.Current))
			}
		}
		var unchecked *couldNotCheckError
		if r.err != nil && !errors.As(r.err, &unchecked) && prefix {
			fmt.Fprintf(out, "%s%s\n", lead, printable.String(r.Error))
		}
	case r.Accepted:
		fmt.Fprintf(out, "%s requested for %s\n", r.Op, printable.String(r.App))
	case r.Result != nil && errors.As(r.err, new(*agent.QueuedError)):
		// The queued action's own line (on stderr) says it all; the
		// gRPC text of the dial failure helps nobody.
		fmt.Fprintf(out, "%s: %s, %d restart(s), waiting for containerd\n", printable.String(r.Result.DisplayName), r.Result.State, r.Restarts)
	case r.Result != nil && r.Result.RefreshDeferred && r.Result.NextCheck != nil:
		// A refresh put off is not "nothing new": say so, and until when.
		fmt.Fprintf(out, "%s: refresh deferred until %s (%s), %d restart(s)", printable.String(r.Result.DisplayName),
			r.Result.NextCheck.UTC().Format(time.RFC3339), r.Result.State, r.Restarts)
		if r.Result.LastError != "" {
			fmt.Fprintf(out, ", last error: %s", printable.String(r.Result.LastError))
		}
		fmt.Fprintln(out)
	case r.Result != nil:
		fmt.Fprintf(out, "%s: %s, %d restart(s)", printable.String(r.Result.DisplayName), r.Result.State, r.Restarts)
		if r.Result.LastError != "" {
			fmt.Fprintf(out, ", last error: %s", printable.String(r.Result.LastError))
		}
		fmt.Fprintln(out)
	case r.err != nil && prefix:
		fmt.Fprintf(out, "%s%s\n", lead, printable.String(r.Error))
	}
}

// opError is the command's outcome over every app: the first error of the
// most serious kind (an agent that does not answer, then a failed action,
// then an action queued while containerd does not answer, then a dry run
// that could not check).
func opError(results []opResult) error {
	var failed, queued, unchecked error
	for _, r := range results {
		var u *couldNotCheckError
		switch {
		case r.err == nil:
		case errors.Is(r.err, agent.ErrNotRunning), errors.Is(r.err, agent.ErrPermission):
			return r.err
		case errors.As(r.err, new(*agent.QueuedError)):
			if queued == nil {
				queued = r.err
			}
		case errors.As(r.err, &u):
			if unchecked == nil {
				unchecked = r.err
			}
		default:
			if failed == nil {
				failed = r.err
			}
		}
	}
	if len(results) > 1 && failed != nil {
		return &exitError{"some apps' actions failed (above)"}
	}
	if failed != nil {
		return failed
	}
	if queued != nil {
		return queued
	}
	return unchecked
}

// outcomeError ends a refresh --detailed-exitcode that did something: the
// output already said what, the exit code says it to a script.
type outcomeError struct {
	code int
	msg  string
}

func (e *outcomeError) Error() string { return e.msg }

// outcome is the refresh's detailed exit: the most notable outcome over
// the apps (rolled back, then deferred, then updated), nil when nothing
// changed anywhere.
func outcome(results []opResult) error {
	var code int
	var msg string
	for _, r := range results {
		c, m := 0, ""
		switch {
		case r.DryRun:
			for _, ch := range r.Checks {
				if ch.WouldChange {
					c, m = exitUpdated, "changes pending"
				}
			}
		case r.Result == nil:
		case r.Result.State == hostapp.StateRolledBack:
			c, m = exitRolledBack, "rolled back"
		case r.Result.RefreshDeferred || r.Result.State == hostapp.StateDeferred:
			c, m = exitDeferred, "deferred"
		case r.Restarts > 0 || !sameRunning(r.before, r.Result.Running):
			c, m = exitUpdated, "updated"
		}
		if rank(c) > rank(code) {
			code, msg = c, m
		}
	}
	if code == 0 {
		return nil
	}
	return &outcomeError{code: code, msg: msg}
}

// rank orders the detailed outcomes by how much a script must hear of them.
func rank(code int) int {
	switch code {
	case exitRolledBack:
		return 3
	case exitDeferred:
		return 2
	case exitUpdated:
		return 1
	}
	return 0
}

// sameRunning reports whether an app runs the same images as before.
func sameRunning(a, b map[string]hostapp.RunImage) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
