package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pullwise/pullwise/host/agent"
	hostapp "github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/eve"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/internal/printable"
	"github.com/pullwise/pullwise/sdk"
)

func newStatusCmd(state *string) *cobra.Command {
	var output *output
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "status [APP] [-o table|json|yaml] [--watch]",
		Short: "Show the apps, their images and the last policy decisions",
		Long: `Show what the agent reports: per app its state, image, resolved sha256, last
registry check and the policy's last decision. With APP (a uuid or display
name), that app alone. -o json prints the whole info report (documented in
docs/info.md) with the agent's own status; with APP, {"app": ..., "images":
[...]} for that app. -o eve prints it as EVE's info messages (ZInfoApp per
app, ZInfoContentTree per image with the resolved sha256), one protojson
line each, as a controller receives them (docs/eve.md). --watch keeps
showing it: redrawn in place on a terminal, printed again (one document per
change with -o json) otherwise.`,
		Example: `  pullwise status
  pullwise status web
  pullwise status --watch
  pullwise status -o eve
  pullwise status web -o yaml
  pullwise status -o json | jq '.info.images[].sha256'
  pullwise status web -o json | jq .app.state`,
		Args:              usageArgs(cobra.MaximumNArgs(1)),
		ValidArgsFunction: completeApps(state),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := output.check(); err != nil {
				return err
			}
			if interval < time.Second {
				return usagef("--interval %s: want at least 1s", interval)
			}
			render := func(w io.Writer) error {
				ctx, cancel := clientContext(cmd)
				defer cancel()
				st, err := agent.NewClient(*state).Status(ctx)
				if err != nil {
					return err
				}
				return printStatus(w, output, st, args, *state)
			}
			if !watch {
				return render(cmd.OutOrStdout())
			}
			return watchStatus(cmd, interval, render)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep showing the status, redrawn (a terminal) or printed again (otherwise) when it changes; Ctrl-C stops")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "with --watch, how often to ask the agent")
	output = addOutput(cmd, "table", "json", "yaml", "eve")
	return cmd
}

// printStatus prints the status (or one app's part of it, args[0]) in the
// chosen format.
func printStatus(out io.Writer, output *output, st agent.Status, args []string, stateDir string) error {
	if output.format == "eve" {
		if len(args) == 1 {
			one, ok := onlyApp(st, args[0])
			if !ok {
				return fmt.Errorf("no app %q (give its uuid or display name; `pullwise status` lists them)", args[0])
			}
			st = one
		}
		// EVE's info messages, one protojson document a line: the form
		// Adam stores and `adam admin device info` prints.
		gens, _ := eve.LoadGenerations(stateDir)
		for _, m := range eve.Info(st.Info, st.Agent.DeviceID, gens) {
			b, err := protojson.Marshal(m)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s\n", b)
		}
		return nil
	}
	if len(args) == 1 {
		one, ok := onlyApp(st, args[0])
		if !ok {
			return fmt.Errorf("no app %q (give its uuid or display name; `pullwise status` lists them)", args[0])
		}
		if output.structured() {
			return output.print(out, struct {
				App    hostapp.AppInfo     `json:"app"`
				Images []hostapp.ImageInfo `json:"images"`
			}{one.Info.Apps[0], one.Info.Images})
		}
		printTable(out, one)
		return nil
	}
	if output.structured() {
		return output.print(out, st)
	}
	printTable(out, st)
	return nil
}

// watchStatus renders the status every interval and shows it when it
// changed: on a terminal the screen is redrawn, otherwise each change is
// printed after the last. It ends on SIGINT/SIGTERM; an agent that stops
// answering is shown as an error line and asked again.
func watchStatus(cmd *cobra.Command, interval time.Duration, render func(io.Writer) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := cmd.OutOrStdout()
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = isatty.IsTerminal(f.Fd())
	}
	var last string
	for {
		var buf bytes.Buffer
		if err := render(&buf); err != nil {
			buf.Reset()
			fmt.Fprintf(&buf, "pullwise: %v\n", err)
		}
		if now := buf.String(); now != last {
			if tty {
				fmt.Fprint(out, "\x1b[H\x1b[2J") // home, clear
			} else if last != "" {
				fmt.Fprintln(out)
			}
			fmt.Fprint(out, now)
			last = now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
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
				if a.Health != nil {
					state += " (" + string(a.Health.Status) + ")"
				}
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
	if d := st.Agent.Device; d != nil && d.Budget != nil {
		b := d.Budget
		fmt.Fprintf(out, "\ndata budget: %s of %s spent, %s left; resets %s\n", sdk.FormatBytes(b.SpentBytes),
			sdk.FormatBytes(b.LimitBytes), sdk.FormatBytes(b.RemainingBytes), b.Resets.Local().Format(time.DateTime))
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
func shortDigest(d imagedigest.Digest) string {
	h := strings.TrimPrefix(d.String(), "sha256:")
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// progressPrinter shows downloads: on a terminal one line per blob (size,
// rate, ETA), redrawn in place at most ten times a second; otherwise plain
// lines at each quarter and at completion. Safe for concurrent use (apps
// of `refresh --all` report through one printer; a blob two apps share is
// one line).
func progressPrinter(out io.Writer) func(pull.Progress) {
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = isatty.IsTerminal(f.Fd())
	}
	p := &progressLines{out: out, tty: tty, now: time.Now, blobs: map[imagedigest.Digest]*blobLine{}}
	return p.update
}

// progressLines is progressPrinter's state.
type progressLines struct {
	mu    sync.Mutex
	out   io.Writer
	tty   bool
	now   func() time.Time
	order []imagedigest.Digest
	blobs map[imagedigest.Digest]*blobLine
	drawn int // lines drawn last time (terminal)
	last  time.Time
}

type blobLine struct {
	done, total int64
	complete    bool
	start       time.Time
	startDone   int64
	quarter     int64 // plain output: the last quarter printed
}

func (p *progressLines) update(u pull.Progress) {
	if u.Total <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	b := p.blobs[u.Digest]
	if b == nil {
		b = &blobLine{start: now, startDone: u.Done}
		p.blobs[u.Digest] = b
		p.order = append(p.order, u.Digest)
	}
	if b.complete {
		return
	}
	b.done, b.total, b.complete = u.Done, u.Total, u.Complete
	if !p.tty {
		switch q := b.done * 4 / b.total; {
		case b.complete:
			fmt.Fprintf(p.out, "downloaded %s (%s)\n", shortDigest(u.Digest), sdk.FormatBytes(b.total))
		case q > b.quarter:
			b.quarter = q
			fmt.Fprintf(p.out, "downloading %s: %s\n", shortDigest(u.Digest), b.text(now))
		}
		return
	}
	if !u.Complete && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	if p.drawn > 0 {
		fmt.Fprintf(p.out, "\x1b[%dA", p.drawn) // back to the first line
	}
	for _, d := range p.order {
		fmt.Fprintf(p.out, "\r%s  %s\x1b[K\n", shortDigest(d), p.blobs[d].text(now))
	}
	p.drawn = len(p.order)
}

// text is a blob's line: bytes, rate and time left, or its size once done.
func (b *blobLine) text(now time.Time) string {
	if b.complete {
		return fmt.Sprintf("%s  done", sdk.FormatBytes(b.total))
	}
	s := fmt.Sprintf("%s / %s", sdk.FormatBytes(b.done), sdk.FormatBytes(b.total))
	if el := now.Sub(b.start).Seconds(); el >= 0.5 && b.done > b.startDone {
		rate := float64(b.done-b.startDone) / el
		eta := time.Duration(float64(b.total-b.done) / rate * float64(time.Second)).Round(time.Second)
		s += fmt.Sprintf("  %s/s  ETA %s", sdk.FormatBytes(int64(rate)), eta)
	}
	return s
}
