package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/pullwise/pullwise/host/decisions"
	"github.com/pullwise/pullwise/internal/printable"
	"github.com/pullwise/pullwise/sdk"
	"github.com/pullwise/pullwise/sdk/policytest"
)

// recordFlags select recorded decisions: from the agent's state directory
// or a copied file, since a time, of one app.
type recordFlags struct {
	state *string
	from  string
	since string
	app   string
}

func (f *recordFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.from, "from", "", "a record file (a device's "+decisions.Name+") instead of the state directory's record")
	cmd.Flags().StringVar(&f.since, "since", "", "only decisions at or after this time: RFC 3339 (2026-12-01T00:00:00Z), a date (2026-12-01) or a duration back from now (24h)")
	cmd.Flags().StringVar(&f.app, "app", "", "only this app's decisions (its uuid or display name)")
}

// read returns the selected entries, oldest first.
func (f *recordFlags) read() ([]decisions.Entry, error) {
	var filter decisions.Filter
	if f.since != "" {
		t, err := parseSince(f.since, time.Now())
		if err != nil {
			return nil, usagef("--since %q: %v", f.since, err)
		}
		filter.Since = t
	}
	var es []decisions.Entry
	var err error
	if f.from != "" {
		es, err = decisions.ReadFile(f.from, filter)
	} else {
		es, err = decisions.ReadDir(*f.state, filter)
	}
	if err != nil {
		return nil, err
	}
	if f.app == "" {
		return es, nil
	}
	kept := es[:0]
	for _, e := range es {
		if e.App == f.app || e.Input.App.Name == f.app {
			kept = append(kept, e)
		}
	}
	return kept, nil
}

// parseSince reads a time, a date or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("want RFC 3339, a date (YYYY-MM-DD) or a duration such as 24h")
}

// replayed is one recorded decision and what another module answers to
// its input.
type replayed struct {
	Time          time.Time `json:"time"`
	App           string    `json:"app"`
	Image         string    `json:"image,omitempty"`
	Event         string    `json:"event"`
	Recorded      string    `json:"recorded"`
	RecordedBy    string    `json:"recordedBy"`
	Replayed      string    `json:"replayed"`
	RecordedError string    `json:"recordedError,omitempty"`
	ReplayedError string    `json:"replayedError,omitempty"`
}

type replayReport struct {
	Module      string     `json:"module"`
	Replayed    int        `json:"replayed"`
	Differ      int        `json:"differ"`
	Differences []replayed `json:"differences"`
}

// summary is a decision in one line, as the replay table shows it.
func summary(d *sdk.Decision, errText string) string {
	if d == nil {
		return "error: " + errText
	}
	s := string(d.Action)
	if d.OnPullFailure != "" {
		s += " (on failure: " + string(d.OnPullFailure) + ")"
	}
	if d.RestartOnChange {
		s += " restart"
	}
	if d.NextCheck != nil {
		s += " next " + d.NextCheck.UTC().Format(time.RFC3339)
	}
	return s
}

func newPolicyReplayCmd(state *string) *cobra.Command {
	var f moduleFlags
	var rf = recordFlags{state: state}
	var module string
	var output *output
	cmd := &cobra.Command{
		Use:   "replay --module NEW [--since T] [--app APP] [--from FILE]",
		Short: "Re-run a device's recorded decisions through another module and show where it decides otherwise",
		Long: `The agent records every decision it asks for (its whole input, the module's
name and sha256, the answer) in STATE/` + decisions.Name + ` (two files of 2 MiB at
most). replay runs each recorded input through NEW and prints the decisions
it answers otherwise: another action, restart, onPullFailure or nextCheck
(reasons are not compared). This is how a new version of a module is checked
against a device's real history before it ships. Exits 1 when any decision
differs.`,
		Example: `  pullwise policy replay --module ./vendor-v2.wasm
  pullwise policy replay --module periodic --since 24h --app web
  pullwise policy replay --module ./vendor-v2.wasm --from device-17.jsonl -o json`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := output.check(); err != nil {
				return err
			}
			entries, err := rf.read()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			rt, m, err := f.load(ctx, module)
			if err != nil {
				return err
			}
			defer rt.Close(ctx)
			rep := replayReport{Module: m.Name, Differences: []replayed{}}
			for _, e := range entries {
				d, derr := m.Decide(ctx, e.Input)
				var got *sdk.Decision
				gotErr := ""
				if derr != nil {
					gotErr = derr.Error()
				} else {
					got = &d
				}
				rep.Replayed++
				same := (e.Decision == nil) == (got == nil) && (got == nil || !decisions.Differs(*e.Decision, *got))
				if same {
					continue
				}
				rep.Differ++
				app := e.Input.App.Name
				if app == "" {
					app = e.App
				}
				rep.Differences = append(rep.Differences, replayed{Time: e.Time, App: app, Image: e.Input.Image.Ref, Event: string(e.Input.Event),
					Recorded: summary(e.Decision, e.Error), RecordedBy: e.Module.Name, Replayed: summary(got, gotErr),
					RecordedError: e.Error, ReplayedError: gotErr})
			}
			out := cmd.OutOrStdout()
			if output.structured() {
				if err := output.print(out, rep); err != nil {
					return err
				}
			} else {
				printReplay(out, rep)
			}
			if rep.Differ > 0 {
				return &exitError{fmt.Sprintf("%s decides otherwise in %d of %d recorded decisions", m.Name, rep.Differ, rep.Replayed)}
			}
			return nil
		},
	}
	f.register(cmd)
	rf.register(cmd)
	cmd.Flags().StringVar(&module, "module", "", "the module to replay through: a .wasm file or a built-in name (required)")
	_ = cmd.MarkFlagRequired("module")
	_ = cmd.RegisterFlagCompletionFunc("module", completeModules)
	output = addOutput(cmd, "table", "json", "yaml")
	return cmd
}

func printReplay(out io.Writer, rep replayReport) {
	if len(rep.Differences) > 0 {
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "TIME\tAPP\tIMAGE\tEVENT\tRECORDED\t%s\n", "REPLAYED ("+printable.String(rep.Module)+")")
		for _, d := range rep.Differences {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s: %s\t%s\n", d.Time.Local().Format(time.DateTime), printable.String(d.App), printable.String(d.Image), d.Event,
				printable.String(d.RecordedBy), printable.String(d.Recorded), printable.String(d.Replayed))
		}
		tw.Flush()
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "%d recorded decisions replayed through %s: %d differ\n", rep.Replayed, printable.String(rep.Module), rep.Differ)
}

func newPolicyRecordCasesCmd(state *string) *cobra.Command {
	var rf = recordFlags{state: state}
	var file string
	cmd := &cobra.Command{
		Use:   "record-cases [--since T] [--app APP] [--from FILE] [-f FILE]",
		Short: "Turn recorded decisions into a case file for policy test",
		Long: `Write the recorded decisions (STATE/` + decisions.Name + `, or --from FILE) as a case
file: each case is a recorded input and expects what the recording module
answered (its action, restart, onPullFailure and nextCheck; an error as
expectError). ` + "`pullwise policy test NEW --cases FILE`" + ` then proves NEW keeps
the device's behaviour, and the file can join a module's own tests.`,
		Example: `  pullwise policy record-cases --since 168h -f recorded.yaml
  pullwise policy test ./vendor-v2.wasm --cases recorded.yaml`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			entries, err := rf.read()
			if err != nil {
				return err
			}
			suite, err := casesOf(entries)
			if err != nil {
				return err
			}
			b, err := yaml.Marshal(suite)
			if err != nil {
				return err
			}
			b = append([]byte(fmt.Sprintf("# %d decisions recorded on a device, as cases (pullwise policy record-cases)\n", len(suite.Cases))), b...)
			if file == "" || file == "-" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if err := os.WriteFile(file, b, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d cases to %s\n", len(suite.Cases), file)
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "-", "the case file to write (- for standard output)")
	return cmd
}

// casesOf makes a case of each recorded decision.
func casesOf(entries []decisions.Entry) (policytest.Suite, error) {
	suite := policytest.Suite{Cases: []policytest.Case{}}
	for _, e := range entries {
		b, err := json.Marshal(e.Input)
		if err != nil {
			return suite, err
		}
		var input map[string]any
		if err := json.Unmarshal(b, &input); err != nil {
			return suite, err
		}
		c := policytest.Case{Name: fmt.Sprintf("%s %s %s %s (recorded from %s)", e.Time.UTC().Format(time.RFC3339), e.Input.App.Name, e.Input.Image.Ref, e.Input.Event, e.Module.Name),
			Input: input}
		if d := e.Decision; d != nil {
			c.Expect = map[string]any{"action": string(d.Action), "restartOnChange": d.RestartOnChange}
			if d.OnPullFailure != "" {
				c.Expect["onPullFailure"] = string(d.OnPullFailure)
			}
			if d.NextCheck != nil {
				c.Expect["nextCheck"] = d.NextCheck.UTC().Format(time.RFC3339Nano)
			}
		} else {
			c.ExpectError = e.Error
		}
		suite.Cases = append(suite.Cases, c)
	}
	return suite, nil
}
