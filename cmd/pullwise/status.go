package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
	hostapp "github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/internal/printable"
)

func newStatusCmd(state *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [-o table|json]",
		Short: "Show the apps, their images and the last policy decisions",
		Long: `Show what the agent reports: per app its state, image, resolved sha256, last
registry check and the policy's last decision. -o json prints the whole info
report (documented in docs/info.md) with the agent's own status.`,
		Example: `  pullwise status
  pullwise status -o json | jq '.info.images[].sha256'`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := clientContext(cmd)
			defer cancel()
			st, err := agent.NewClient(*state).Status(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				return printJSON(out, st)
			case "table", "":
				printTable(out, st)
				return nil
			default:
				return usagef("-o %q: want table or json", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printTable(out io.Writer, st agent.Status) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tSTATE\tIMAGE\tSHA256\tLAST CHECK\tDECISION")
	for _, a := range st.Info.Apps {
		first := true
		for _, img := range st.Info.Images {
			if img.App != a.UUID {
				continue
			}
			name, state := "", ""
			if first {
				name, state = a.DisplayName, a.State
			}
			first = false
			check := "never"
			if img.LastCheck != nil {
				check = img.LastCheck.Local().Format(time.DateTime) + " " + img.LastCheckResult
			}
			decision := ""
			if img.Decision != nil {
				// A policy's reason is a module's text: escaped, so it cannot
				// move the cursor or forge a row.
				decision = printable.String(img.Decision.Action + ": " + img.Decision.Reason)
			}
			sha := shortDigest(img.SHA256)
			if img.Latched != "" {
				// Another app on this ImageObjectID moved its latch; this app
				// moves at its own refresh or purge.
				sha += " (latched " + shortDigest(img.Latched) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printable.String(name), state, printable.String(img.Ref), sha, check, decision)
		}
	}
	tw.Flush()
	for _, a := range st.Info.Apps {
		if a.LastError != "" {
			fmt.Fprintf(out, "\n%s: last error: %s\n", printable.String(a.DisplayName), printable.String(a.LastError))
			if a.Hint != "" {
				fmt.Fprintf(out, "  hint: %s\n", a.Hint)
			}
		}
		if a.ConfigError != "" {
			fmt.Fprintf(out, "\n%s: its configuration is rejected (it runs as before): %s\n", printable.String(a.DisplayName), printable.String(a.ConfigError))
		}
	}
	if st.Agent.ConfigError != "" {
		fmt.Fprintf(out, "\nconfiguration %s has problems; what they concern runs as the last accepted configuration said:\n", st.Agent.ConfigPath)
		for _, line := range strings.Split(st.Agent.ConfigError, "\n") {
			fmt.Fprintf(out, "  %s\n", printable.String(line))
		}
	}
	for _, p := range st.Agent.Policies {
		if p.Error != "" {
			fmt.Fprintf(out, "\npolicy module %s: %s\n", printable.String(p.Name), printable.String(p.Error))
		}
		if p.Warning != "" {
			fmt.Fprintf(out, "\npolicy module %s: %s\n", printable.String(p.Name), printable.String(p.Warning))
		}
	}
}

// shortDigest is a digest's first 12 hex digits.
func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func newOpCmd(state *string, op, short, long, example string) *cobra.Command {
	var noWait, dryRun bool
	cmd := &cobra.Command{
		Use:     op + " APP",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := agent.NewClient(*state)
			out := cmd.OutOrStdout()
			if dryRun {
				ctx, cancel := clientContext(cmd)
				defer cancel()
				checks, err := c.DryRun(ctx, args[0])
				if err != nil {
					return err
				}
				unchecked := 0
				for _, ch := range checks {
					switch {
					case ch.Error != "":
						unchecked++
						fmt.Fprintf(out, "%s: cannot check: %s\n", ch.Ref, printable.String(ch.Error))
					case ch.WouldChange:
						fmt.Fprintf(out, "%s: would change %s -> %s\n", ch.Ref, shortDigest(ch.Current), shortDigest(ch.Remote))
					default:
						fmt.Fprintf(out, "%s: up to date (%s)\n", ch.Ref, shortDigest(ch.Current))
					}
				}
				if unchecked > 0 {
					return &couldNotCheckError{unchecked}
				}
				return nil
			}
			var before hostapp.AppInfo
			if !noWait {
				before, _ = c.App(cmd.Context(), args[0])
			}
			info, err := c.Op(cmd.Context(), args[0], op, !noWait, progressPrinter(out))
			if noWait {
				if err == nil {
					fmt.Fprintf(out, "%s requested for %s\n", op, args[0])
				}
				return err
			}
			if info != nil {
				restarts := info.Restarts - before.Restarts
				fmt.Fprintf(out, "%s: %s, %d restart(s)", info.DisplayName, info.State, restarts)
				if info.LastError != "" {
					fmt.Fprintf(out, ", last error: %s", info.LastError)
				}
				fmt.Fprintln(out)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the agent has the request, without waiting for the outcome")
	if op == "refresh" {
		cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only show which images would change; download nothing")
	}
	return cmd
}

// progressPrinter shows downloads as progress bars on a terminal and as
// plain lines otherwise.
func progressPrinter(out io.Writer) func(pull.Progress) {
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = isatty.IsTerminal(f.Fd())
	}
	bars := map[string]*progressbar.ProgressBar{}
	printed := map[string]bool{}
	return func(p pull.Progress) {
		if p.Total <= 0 {
			return
		}
		if tty {
			b := bars[p.Digest]
			if b == nil {
				b = progressbar.DefaultBytes(p.Total, shortDigest(p.Digest))
				bars[p.Digest] = b
			}
			b.Set64(p.Done)
			return
		}
		switch {
		case p.Complete && !printed[p.Digest]:
			printed[p.Digest] = true
			fmt.Fprintf(out, "downloaded %s (%s)\n", shortDigest(p.Digest), bytesText(p.Total))
		case !p.Complete && p.Done > 0:
			fmt.Fprintf(out, "downloading %s: %s of %s\n", shortDigest(p.Digest), bytesText(p.Done), bytesText(p.Total))
		}
	}
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
