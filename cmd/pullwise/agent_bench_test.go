package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/regtest"
)

// BenchmarkAgent measures the agent as an operator runs it: resident memory
// while idle with the default policy and 10 apps (target ≤ 64 MiB), and the
// time from starting the binary to a served API with the policy cache warm
// (apps already running and adopted).
//
//	go test -run '^$' -bench Agent -benchtime 5x ./cmd/pullwise/
func BenchmarkAgent(b *testing.B) {
	e := newE2E(b)
	regtest.PushImage(b, e.registry+"/demo/web:latest", regtest.AppImage(b, "v1", false))
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "device:\n  insecureRegistries: [%q]\napps:\n", e.registry)
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&cfg, `  - uuid: app-%02d
    displayName: app-%02d
    drives:
      - kind: container
        image: {uuid: img-%02d, name: "%s/demo/web:latest"}
      - kind: volume
        mountPath: /data
`, i, i, i, e.registry)
	}
	e.writeConfig(cfg.String())
	e.startAgent()
	e.status("10 apps running", func(st agent.Status) bool {
		n := 0
		for _, a := range st.Info.Apps {
			if a.State == "RUNNING" {
				n++
			}
		}
		return n == 10
	})
	time.Sleep(3 * time.Second) // idle
	rss, err := regtest.RSS(e.agent.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	e.stopAgent()

	var startups []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		e.startAgent()
		c := agent.NewClient(e.state)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := c.Status(ctx)
			cancel()
			if err == nil {
				break
			}
			if time.Since(start) > time.Minute {
				b.Fatalf("the agent did not serve its API: %v\n%s", err, e.agentLog)
			}
			time.Sleep(5 * time.Millisecond)
		}
		startups = append(startups, time.Since(start))
		e.stopAgent()
	}
	b.StopTimer()
	slices.Sort(startups)
	b.ReportMetric(float64(rss)/(1<<20), "idle-rss-MiB")
	b.ReportMetric(float64(startups[len(startups)/2].Milliseconds()), "startup-ms")
}
