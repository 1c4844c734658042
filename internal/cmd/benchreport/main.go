// Command benchreport turns `go test -bench` output files into one table of
// medians (Markdown on stdout) and a JSON file: what `make bench` prints and
// what BENCHMARKS.md quotes.
//
//	go run ./internal/cmd/benchreport -json bench-results/results.json bench-results/*.txt
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// Metric is one benchmark metric's median over its runs.
type Metric struct {
	Benchmark string    `json:"benchmark"`
	Unit      string    `json:"unit"`
	Median    float64   `json:"median"`
	Runs      int       `json:"runs"`
	Values    []float64 `json:"values"`
}

func main() {
	jsonOut := flag.String("json", "", "also write the metrics as JSON to this file")
	flag.Parse()
	if err := run(flag.Args(), *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(files []string, jsonOut string) error {
	values := map[[2]string][]float64{}
	var order [][2]string
	var machine string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		r := benchfmt.NewReader(fh, f)
		for r.Scan() {
			res, ok := r.Result().(*benchfmt.Result)
			if !ok {
				continue
			}
			if cpu := res.GetConfig("cpu"); cpu != "" {
				machine = cpu
			}
			name := string(res.Name.Full())
			for _, v := range res.Values {
				switch {
				case v.Unit == "B/op", v.Unit == "allocs/op":
					continue
				case v.Unit == "sec/op" && len(res.Values) > 3:
					continue // the custom metrics say more than the loop's time
				}
				k := [2]string{name, v.Unit}
				if _, seen := values[k]; !seen {
					order = append(order, k)
				}
				values[k] = append(values[k], v.Value)
			}
		}
		fh.Close()
		if err := r.Err(); err != nil {
			return err
		}
	}
	var metrics []Metric
	for _, k := range order {
		v := slices.Clone(values[k])
		sort.Float64s(v)
		metrics = append(metrics, Metric{Benchmark: k[0], Unit: k[1], Median: v[len(v)/2], Runs: len(v), Values: values[k]})
	}
	fmt.Printf("Machine: %s\n\n| benchmark | metric | median | runs |\n|---|---|---|---|\n", strings.TrimSpace(machine))
	for _, m := range metrics {
		fmt.Printf("| %s | %s | %s | %d |\n", m.Benchmark, m.Unit, format(m.Median), m.Runs)
	}
	if jsonOut == "" {
		return nil
	}
	b, err := json.MarshalIndent(map[string]any{"machine": machine, "metrics": metrics}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(jsonOut, b, 0o644)
}

func format(v float64) string {
	switch {
	case v == float64(int64(v)):
		return fmt.Sprintf("%d", int64(v))
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
