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
		Use:   "status [APP] [-o table|json]",
		Short: "Show the apps, their images and the last policy decisions",
		Long: `Show what the agent reports: per app its state, image, resolved sha256, last
registry check and the policy's last decision. With APP (a uuid or display
name), that app alone. -o json prints the whole info report (documented in
docs/info.md) with the agent's own status; with APP, {"app": ..., "images":
[...]} for that app.`,
		Example: `  pullwise status
  pullwise status web
  pullwise status -o json | jq '.info.images[].sha256'
  pullwise status web -o json | jq .app.state`,
		Args: usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			ctx, cancel := clientContext(cmd)
			defer cancel()
			st, err := agent.NewClient(*state).Status(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(args) == 1 {
				one, ok := onlyApp(st, args[0])
				if !ok {
					return fmt.Errorf("no app %q (give its uuid or display name; `pullwise status` lists them)", args[0])
				}
				if output == "json" {
					return printJSON(out, struct {
						App    hostapp.AppInfo     `json:"app"`
						Images []hostapp.ImageInfo `json:"images"`
					}{one.Info.Apps[0], one.Info.Images})
				}
				printTable(out, one)
				return nil
			}
			if output == "json" {
				return printJSON(out, st)
			}
			printTable(out, st)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// onlyApp narrows a status to one app (by uuid or display name) and its
// images, keeping the agent's own status.
func onlyApp(st agent.Status, name string) (agent.Status, bool) {
	for _, a := range st.Info.Apps {
		if a.UUID != name && a.DisplayName != name {
			continue
		}
		one := st
		one.Info.Apps = []hostapp.AppInfo{a}
		one.Info.Images = nil
		for _, i := range st.Info.Images {
			if i.App == a.UUID {
				one.Info.Images = append(one.Info.Images, i)
			}
		}
		return one, true
	}
	return st, false
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
