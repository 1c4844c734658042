package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	hostapp "github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/trust"
	"github.com/pullwise/pullwise/internal/printable"
	"github.com/pullwise/pullwise/plugins"
)

func newConfigCmd(state *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with configuration files",
	}
	cmd.AddCommand(newConfigValidateCmd(state))
	return cmd
}

// problem is one thing wrong with a configuration file, where it is.
type problem struct {
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
}

func newConfigValidateCmd(state *string) *cobra.Command {
	var policyDir string
	var output *output
	cmd := &cobra.Command{
		Use:   "validate FILE [--policy-dir DIR] [-o text|json]",
		Short: "Check a configuration file as the agent would, without an agent",
		Long: `Check FILE with the agent's own validation, offline: the syntax, every field,
the policies it names (the built-ins and the modules in the policy
directory) and their settings (each module's own check). Every problem is
printed as FILE:LINE:COLUMN: FIELD: PROBLEM. Exits 0 when the file is
valid, 1 when it is not.

What needs the running agent is not checked: counters going backwards
against what the agent has acted upon.`,
		Example: `  pullwise config validate /etc/pullwise/config.yaml
  pullwise config validate new.yaml --policy-dir ./policies -o json`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := output.check(); err != nil {
				return err
			}
			file := args[0]
			src, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			problems, apps, err := validateConfig(cmd.Context(), src, policyDir, *state)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output.structured() {
				if problems == nil {
					problems = []problem{}
				}
				if err := output.print(out, problems); err != nil {
					return err
				}
			} else {
				for _, p := range problems {
					fe := config.FieldError{File: file, Line: p.Line, Column: p.Column, Field: p.Field, Message: printable.String(p.Message)}
					fmt.Fprintln(out, fe.Error())
				}
				if len(problems) == 0 {
					fmt.Fprintf(out, "%s: valid (%d apps)\n", file, apps)
				}
			}
			if len(problems) > 0 {
				return &exitError{fmt.Sprintf("%d problem(s)", len(problems))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&policyDir, "policy-dir", "", "the drop-in policy module directory (default: the file's device.policyDir, else STATE/policies)")
	output = addOutput(cmd, "text", "json", "yaml")
	return cmd
}

// validateConfig runs the agent's validation on src. The error is for the
// check itself (a module directory that cannot be read); problems are the
// file's.
func validateConfig(ctx context.Context, src []byte, policyDir, state string) ([]problem, int, error) {
	c, err := config.Parse(src)
	if err != nil {
		var problems []problem
		for _, fe := range config.FieldErrors(err) {
			problems = append(problems, problem{Field: fe.Field, Message: fe.Message, Line: fe.Line, Column: fe.Column})
		}
		if len(problems) == 0 {
			problems = []problem{{Message: err.Error()}}
		}
		return problems, 0, nil
	}
	if policyDir == "" {
		policyDir = c.Device.PolicyDir
	}
	if policyDir == "" {
		policyDir = filepath.Join(state, "policies")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	rt, err := plugins.NewRuntime(ctx, plugins.WithCacheDir(filepath.Join(cache, "pullwise", "modules")))
	if err != nil {
		return nil, 0, err
	}
	defer rt.Close(ctx)
	dir, err := plugins.OpenDir(ctx, rt, policyDir)
	if err != nil {
		return nil, 0, err
	}
	defer dir.Close(ctx)
	catalog, err := hostapp.NewCatalog(rt, hostapp.WithDropIns(dir))
	if err != nil {
		return nil, 0, err
	}
	dev, appErrs := c.Check(nil, catalog.Known)
	errs := config.FieldErrors(dev)
	// The trusted keys, as the agent reads them: a key file that is missing
	// or not a public key makes the device run no signed module at all.
	for i, k := range c.Device.TrustKeys() {
		if _, err := trust.LoadKeys([]string{k}); err != nil && filepath.IsAbs(k) {
			errs = append(errs, &config.FieldError{Field: fmt.Sprintf("device.policyTrust.keys[%d]", i), Message: err.Error()})
		}
	}
	for _, a := range c.Apps {
		errs = append(errs, config.FieldErrors(appErrs[a.UUID])...)
	}
	// Settings, as the agent checks them: by the module itself.
	check := func(field string, ref *config.PolicyRef) {
		if ref == nil || !catalog.Known(ref.Name) {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		m, err := catalog.Module(cctx, *ref)
		if err == nil {
			err = m.ValidateSettings(cctx, ref.Settings)
		}
		if err != nil {
			errs = append(errs, &config.FieldError{Field: field, Message: err.Error()})
		}
	}
	check("device.pullPolicy", c.Device.PullPolicy)
	for i, a := range c.Apps {
		check(fmt.Sprintf("apps[%d].pullPolicy", i), a.PullPolicy)
	}
	var problems []problem
	for _, e := range errs {
		p := problem{Field: e.Field, Message: e.Message, Line: e.Line, Column: e.Column}
		if pos, ok := config.Locate(src, e.Field); ok && p.Line == 0 {
			p.Line, p.Column = pos.Line, pos.Column
		}
		problems = append(problems, p)
	}
	return problems, len(c.Apps), nil
}
