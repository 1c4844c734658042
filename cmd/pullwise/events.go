package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/imagedigest"
)

func newEventsCmd(state *string) *cobra.Command {
	var since time.Duration
	var follow bool
	var kinds []string
	var out *output
	cmd := &cobra.Command{
		Use:   "events [APP] [--since D] [-f] [--kind K]... [-o json]",
		Short: "Print what happened to the apps and images: checks, downloads, changes, rollbacks",
		Long: `Print the agent's events, oldest first: each configuration accepted or
rejected, each check of an image (debug-level in the log, an event here),
download started, finished (bytes, time) or failed, image changed (old and
new digest), app started, restarted, purged, exited, failed to start,
rolled back, refresh deferred (until when, why), policy module faults. Each
carries its time, the app's name and uuid, the ImageObjectID, the
reference, the digests and the policy's reason.

The agent keeps them in STATE/events.jsonl and one rotated copy (1 MiB
each): weeks of a busy device. Nothing is written while nothing happens.
-f keeps printing events as they come, download progress included, until
Ctrl-C. -o json prints one JSON document a line (NDJSON), for jq and log
shippers.

Kinds: ` + kindsHelp() + `
--kind takes a kind or a family ("app.*"); repeat it for several.`,
		Example: `  pullwise events
  pullwise events web --since 1h
  pullwise events -f --kind app.rolled-back --kind image.changed
  pullwise events -o json | jq 'select(.kind == "image.changed")'`,
		Args:              usageArgs(cobra.MaximumNArgs(1)),
		ValidArgsFunction: completeApps(state),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if err := events.CheckKinds(kinds); err != nil {
				return usagef("--kind: %v", err)
			}
			q := agent.EventQuery{Kinds: kinds, Follow: follow}
			if len(args) == 1 {
				q.App = args[0]
			}
			if since > 0 {
				q.Since = time.Now().Add(-since)
			}
			ctx, cancel := clientContext(cmd)
			if follow {
				ctx, cancel = signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			}
			defer cancel()
			err := agent.NewClient(*state).Events(ctx, q, eventPrinter(cmd.OutOrStdout(), out.structured()))
			if follow && ctx.Err() != nil {
				return nil // Ctrl-C
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&since, "since", 0, "only events of the last D (1h, 30m)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they come, until Ctrl-C")
	cmd.Flags().StringArrayVar(&kinds, "kind", nil, `only events of this kind or family ("app.*"); repeatable`)
	out = addOutput(cmd, "text", "json")
	return cmd
}

func kindsHelp() string { return events.KindList() + "." }

// eventPrinter prints each event as it comes (so -f shows it at once): a
// line of fixed-width columns, or one JSON document.
func eventPrinter(w io.Writer, asJSON bool) func(events.Event) error {
	enc := json.NewEncoder(w)
	return func(e events.Event) error {
		if asJSON {
			return enc.Encode(e)
		}
		app := e.AppName
		if app == "" {
			app = "-"
		}
		_, err := fmt.Fprintf(w, "%s  %-22s  %s  %s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Kind, app, eventText(e))
		return err
	}
}

// eventText is an event's message with the fields that make it useful:
// what changed, how much, until when, why.
func eventText(e events.Event) string {
	var b strings.Builder
	b.WriteString(e.Message)
	add := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	add("image", e.Ref)
	if e.From != "" {
		add("from", short(e.From))
		add("to", short(e.Digest))
	} else {
		add("digest", short(e.Digest))
	}
	if e.Bytes != 0 {
		add("bytes", fmt.Sprint(e.Bytes))
	}
	if e.Took != 0 {
		add("took", time.Duration(e.Took).String())
	}
	if e.Code != nil {
		add("code", fmt.Sprint(*e.Code))
	}
	if e.Until != nil {
		add("until", e.Until.Local().Format(time.RFC3339))
	}
	add("field", e.Field)
	if e.Reason != "" {
		add("reason", fmt.Sprintf("%q", e.Reason))
	}
	if e.Error != "" {
		add("error", fmt.Sprintf("%q", e.Error))
	}
	return b.String()
}

// short cuts a digest to its algorithm and 12 hex digits, as docker does.
func short(d imagedigest.Digest) string {
	s := d.String()
	if i := strings.IndexByte(s, ':'); i >= 0 && len(s) > i+13 {
		return s[:i+13]
	}
	return s
}
