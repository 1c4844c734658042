package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// output is a command's -o flag: a human format first (the default), then
// the machine-readable ones it supports, as kubectl does.
type output struct {
	format  string
	formats []string
}

// addOutput registers -o/--output on cmd with the given formats, the first
// the default, and completes its values.
func addOutput(cmd *cobra.Command, formats ...string) *output {
	o := &output{formats: formats}
	cmd.Flags().StringVarP(&o.format, "output", "o", formats[0], "output format: "+strings.Join(formats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
	return o
}

// check refuses a format the command does not have (a usage error).
func (o *output) check() error {
	if !slices.Contains(o.formats, o.format) {
		return usagef("-o %q: want %s", o.format, strings.Join(o.formats, ", "))
	}
	return nil
}

// structured reports whether the format is a machine-readable one.
func (o *output) structured() bool { return o.format == "json" || o.format == "yaml" }

// print writes v as JSON or YAML (the same document: YAML is converted from
// the JSON encoding, so field names agree).
func (o *output) print(w io.Writer, v any) error {
	if o.format == "yaml" {
		return printYAML(w, v)
	}
	return printJSON(w, v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding YAML: %w", err)
	}
	_, err = w.Write(b)
	return err
}
