package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/pullwise/pullwise/internal/printable"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/plugins/policybuild"
	"github.com/pullwise/pullwise/policies"
	"github.com/pullwise/pullwise/sdk"
	"github.com/pullwise/pullwise/sdk/policytest"
)

// moduleFlags are the flags every command that runs a module shares.
type moduleFlags struct {
	cacheDir    string
	timeout     time.Duration
	memoryLimit uint32
	logLevel    string
}

func (f *moduleFlags) register(cmd *cobra.Command) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	cmd.Flags().StringVar(&f.cacheDir, "cache-dir", filepath.Join(cache, "pullwise", "modules"), "where compiled modules are cached")
	cmd.Flags().DurationVar(&f.timeout, "timeout", plugins.DefaultTimeout, "time limit of one decision")
	cmd.Flags().Uint32Var(&f.memoryLimit, "memory-limit", plugins.DefaultMemoryLimit, "memory cap of a module instance, in bytes")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "warn", "level of the module's own log lines on stderr (trace, debug, info, warn, error)")
}

// load reads MODULE (a file path or a built-in name) and loads it into a new
// runtime. The caller closes the runtime.
func (f *moduleFlags) load(ctx context.Context, module string) (*plugins.Runtime, *plugins.Module, error) {
	name, wasm, err := readModule(module)
	if err != nil {
		return nil, nil, err
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "policy", Level: hclog.LevelFromString(f.logLevel), Output: os.Stderr})
	rt, err := plugins.NewRuntime(ctx, plugins.WithCacheDir(f.cacheDir), plugins.WithTimeout(f.timeout),
		plugins.WithMemoryLimit(f.memoryLimit), plugins.WithLogger(logger))
	if err != nil {
		return nil, nil, err
	}
	m, err := rt.Load(ctx, name, wasm)
	if err != nil {
		rt.Close(ctx)
		return nil, nil, err
	}
	return rt, m, nil
}

// readModule resolves MODULE: an existing file wins, else a built-in name.
func readModule(module string) (name string, wasm []byte, err error) {
	if b, err := os.ReadFile(module); err == nil {
		return strings.TrimSuffix(filepath.Base(module), ".wasm"), b, nil
	} else if strings.ContainsAny(module, `/\`) || strings.HasSuffix(module, ".wasm") {
		return "", nil, fmt.Errorf("reading module: %w", err)
	}
	b, err := policies.Module(module)
	if err != nil {
		return "", nil, fmt.Errorf("%q is neither a module file nor a built-in policy (built-ins: %s)", module, strings.Join(policies.Names(), ", "))
	}
	return module, b, nil
}

// inspectModule reads MODULE (see readModule) and its metadata, running
// nothing.
func inspectModule(module string) ([]byte, plugins.Info, error) {
	_, wasm, err := readModule(module)
	if err != nil {
		return nil, plugins.Info{}, err
	}
	info, err := plugins.Inspect(wasm)
	if err != nil {
		return nil, plugins.Info{}, fmt.Errorf("module %s: %w", module, err)
	}
	return wasm, info, nil
}

func newPolicyCmd(state *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Run, test, inspect and build policy modules in isolation",
		Long: `Policy modules decide; the host acts. These commands run a module outside any
device, exactly as the agent would run it (same sandbox, same ABI), so a
vendor can prove a module before it goes near a device.

MODULE is a path to a .wasm file or the name of a built-in policy:
` + "  " + strings.Join(policies.Names(), ", "),
		Example: `  pullwise policy inspect always
  pullwise policy test ./vendor.wasm --cases cases.yaml`,
	}
	cmd.AddCommand(newPolicyRunCmd(), newPolicyTestCmd(), newPolicyInspectCmd(), newPolicyBuildCmd(), newPolicyAnnotateCmd(), newPolicyListCmd(), newPolicyNewCmd(),
		newPolicyPushCmd(), newPolicyPullCmd(), newPolicySignCmd(), newPolicyVerifyCmd(),
		newPolicyReplayCmd(state), newPolicyRecordCasesCmd(state))
	return cmd
}

func newPolicyRunCmd() *cobra.Command {
	var f moduleFlags
	var inputPath, settings string
	var output *output
	cmd := &cobra.Command{
		Use:   "run MODULE --input FILE",
		Short: "Ask a module for one decision and print it as JSON",
		Long: `Run one decision. The input is a JSON or YAML document of ABI v1 (see
sdk/ABI.md); "now" defaults to the current time when the file has none.
--settings, if given, is checked by the module's validate-settings export
first and then passed in the input.`,
		Example: `  pullwise policy run always --input in.yaml -o yaml
  echo '{"event":"create","image":{"ref":"nginx:latest"}}' | pullwise policy run never --input -
  pullwise policy run ./periodic.wasm --input in.json --settings '{"interval":"6h"}'`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: completeModules,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := output.check(); err != nil {
				return err
			}
			ctx := cmd.Context()
			// The module first: "no such module" is the more basic error.
			rt, m, err := f.load(ctx, args[0])
			if err != nil {
				return err
			}
			defer rt.Close(ctx)
			in, err := readInput(inputPath, cmd.InOrStdin())
			if err != nil {
				return err
			}
			if settings != "" {
				if !json.Valid([]byte(settings)) {
					return fmt.Errorf("--settings is not valid JSON: %s", settings)
				}
				if err := m.ValidateSettings(ctx, json.RawMessage(settings)); err != nil {
					return err
				}
				in.Settings = json.RawMessage(settings)
			}
			d, err := m.Decide(ctx, in)
			if err != nil {
				return err
			}
			return output.print(cmd.OutOrStdout(), d)
		},
	}
	f.register(cmd)
	output = addOutput(cmd, "json", "yaml")
	cmd.Flags().StringVar(&inputPath, "input", "", "input document (JSON or YAML), - for stdin (required)")
	cmd.Flags().StringVar(&settings, "settings", "", "module settings as JSON")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

func readInput(path string, stdin io.Reader) (sdk.Input, error) {
	var in sdk.Input
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return in, fmt.Errorf("reading input: %w", err)
	}
	// Strict: a misspelt field would otherwise be dropped and the module
	// would decide on an input the user did not mean.
	if err := yaml.UnmarshalStrict(b, &in); err != nil {
		return in, fmt.Errorf("input %s: %w", path, err)
	}
	var problems []error
	if !slices.Contains(sdk.Events, in.Event) {
		problems = append(problems, fmt.Errorf("event: %q is not an event (want one of %v)", in.Event, sdk.Events))
	}
	if in.Image.Ref == "" {
		problems = append(problems, errors.New("image.ref: required (the reference the decision is about)"))
	}
	if err := errors.Join(problems...); err != nil {
		return in, fmt.Errorf("input %s: %w", path, err)
	}
	if in.Now.IsZero() {
		in.Now = time.Now().UTC()
	}
	return in, nil
}

func newPolicyTestCmd() *cobra.Command {
	var f moduleFlags
	var cases string
	var output *output
	cmd := &cobra.Command{
		Use:   "test MODULE --cases FILE",
		Short: "Run a module against table cases; non-zero exit if any fails",
		Long: `Run every case of a case file (YAML or JSON) through the module and compare
the decision with the case's expected fields. Prints a PASS or FAIL line per
case and a summary; exits non-zero if any case fails.

A case file:

  defaults:                 # merged into every case's input
    now: 2026-11-27T12:00:00Z
    image: {ref: "registry.local/app:latest"}
  cases:
    - name: absent image is pulled
      input: {event: create}
      expect: {action: pull, onPullFailure: fail}
    - name: bad settings are refused
      input: {event: tick, settings: {interval: 1s}}
      expectError: "below the minimum"`,
		Example: `  pullwise policy test always --cases policies/always/testdata/cases.yaml
  pullwise policy test ./maintenance-window.wasm --cases examples/policies/maintenance-window/testdata/cases.yaml`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: completeModules,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := output.check(); err != nil {
				return err
			}
			ctx := cmd.Context()
			suite, err := policytest.Load(cases)
			if err != nil {
				return err
			}
			rt, m, err := f.load(ctx, args[0])
			if err != nil {
				return err
			}
			defer rt.Close(ctx)
			out := cmd.OutOrStdout()
			var passed, failed int
			results := suite.Run(ctx, m.Decide)
			for _, r := range results {
				if r.Pass {
					passed++
					if !output.structured() {
						fmt.Fprintf(out, "PASS  %s\n", r.Name)
					}
					continue
				}
				failed++
				if !output.structured() {
					fmt.Fprintf(out, "FAIL  %s\n      %s\n      got: %s\n", r.Name, printable.String(r.Problem), printable.String(r.Got))
				}
			}
			if output.structured() {
				if err := output.print(out, testReport{Module: m.Name, Passed: passed, Failed: failed, Cases: results}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "%s: %d passed, %d failed\n", m.Name, passed, failed)
			}
			if failed > 0 {
				return &exitError{fmt.Sprintf("%d of %d cases failed", failed, passed+failed)}
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&cases, "cases", "", "case file, YAML or JSON (required)")
	output = addOutput(cmd, "text", "json", "yaml")
	_ = cmd.MarkFlagRequired("cases")
	return cmd
}

func newPolicyInspectCmd() *cobra.Command {
	var output *output
	cmd := &cobra.Command{
		Use:   "inspect MODULE",
		Short: "Show a module's metadata, ABI version, sha256 and size without running it",
		Example: `  pullwise policy inspect always
  pullwise policy inspect ./vendor.wasm -o json`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: completeModules,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, info, err := inspectModule(args[0])
			if err != nil {
				return err
			}
			if err := output.check(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case output.structured():
				return output.print(out, info)
			default:
				md := info.Metadata
				fmt.Fprintf(out, "name:         %s\nversion:      %s\nabi version:  %d\nsha256:       %s\nsize:         %d bytes\ndescription:  %s\n",
					printable.String(md.Name), printable.String(md.Version), md.ABIVersion, info.SHA256, info.Size, printable.String(md.Description))
				if len(md.SettingsSchema) > 0 {
					fmt.Fprintf(out, "settings:     %s\n", md.SettingsSchema)
				}
				return nil
			}
		},
	}
	output = addOutput(cmd, "text", "json", "yaml")
	return cmd
}

func newPolicyBuildCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "build DIR -o FILE",
		Short: "Build a Go policy (written with the SDK) into a module",
		Long: `Build the Go main package in DIR for GOOS=wasip1 GOARCH=wasm as a reactor
(-buildmode=c-shared) with the standard Go toolchain, and embed DIR/metadata.json
as the module's metadata section. The build is reproducible.

metadata.json: {"name": ..., "version": ..., "description": ..., "settingsSchema": {...}}`,
		Example: `  pullwise policy build ./examples/policies/maintenance-window -o maintenance-window.wasm`,
		Args:    usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				out = filepath.Base(filepath.Clean(args[0])) + ".wasm"
			}
			if err := policybuild.Build(cmd.Context(), args[0], out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "built", out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "module file to write (default DIR's name + .wasm)")
	return cmd
}

func newPolicyAnnotateCmd() *cobra.Command {
	var metadata, out string
	cmd := &cobra.Command{
		Use:   "annotate MODULE --metadata FILE",
		Short: "Add metadata to a module built with another toolchain",
		Long: `Write the metadata from FILE into MODULE's "pullwise.metadata" custom section,
replacing any earlier one. For modules not built with "pullwise policy build"
(Rust, C, Zig, AssemblyScript...).`,
		Example:           `  pullwise policy annotate target/wasm32-wasip1/release/policy.wasm --metadata metadata.json -o policy.wasm`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: completeModules,
		RunE: func(cmd *cobra.Command, args []string) error {
			md, err := policybuild.ReadMetadataFile(metadata)
			if err != nil {
				return err
			}
			wasm, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if out == "" {
				out = args[0]
			}
			return policybuild.Annotate(wasm, md, out)
		},
	}
	cmd.Flags().StringVar(&metadata, "metadata", "", "metadata JSON file (required)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (default: MODULE, in place)")
	_ = cmd.MarkFlagRequired("metadata")
	return cmd
}

func newPolicyListCmd() *cobra.Command {
	var output *output
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the built-in policies",
		Example: "  pullwise policy list\n  pullwise policy list -o json | jq -r '.[].name'",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := output.check(); err != nil {
				return err
			}
			type entry struct {
				Name    string       `json:"name"`
				Default bool         `json:"default"`
				Module  plugins.Info `json:"module"`
			}
			var list []entry
			for _, name := range policies.Names() {
				wasm, _ := policies.Module(name)
				info, err := plugins.Inspect(wasm)
				if err != nil {
					return err
				}
				list = append(list, entry{Name: name, Default: name == policies.Default, Module: info})
			}
			if output.structured() {
				return output.print(cmd.OutOrStdout(), list)
			}
			for _, e := range list {
				def := ""
				if e.Default {
					def = " (default)"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%-15s %s%s\n", e.Name, printable.String(e.Module.Metadata.Description), def)
			}
			return nil
		},
	}
	output = addOutput(cmd, "text", "json", "yaml")
	return cmd
}

// testReport is `policy test -o json`: the module's name, the counts and
// every case's result.
type testReport struct {
	Module string              `json:"module"`
	Passed int                 `json:"passed"`
	Failed int                 `json:"failed"`
	Cases  []policytest.Result `json:"cases"`
}
