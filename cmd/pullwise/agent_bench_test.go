package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// BenchmarkAgent measures the agent as an operator runs it: resident memory
// while idle with the default policy and 10 apps, 3 s after the apps run
// and again once the idle module was released (target ≤ 48 MiB), and the
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
		fmt.Fprintf(&cfg, `  - uuid: 0a7c3b1e-0000-4000-8000-%012d
    displayName: app-%02d
    drives:
      - kind: container
        image: {uuid: 6f1e0c1e-0000-4000-8000-%012d, name: "%s/demo/web:latest"}
      - kind: volume
        mountPath: /data
`, i, i, i, e.registry)
	}
	e.writeConfig(cfg.String())
	// Modules are released after 5 s here instead of the default minute,
	// so the benchmark need not wait a minute for the same mechanism.
	e.agentArgs = []string{"--release-modules-after", "5s"}
	e.startAgent()
	e.waitRunning(10)
	time.Sleep(3 * time.Second) // idle, the module still loaded
	rss, err := regtest.RSS(e.agent.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(7 * time.Second) // idle past the release
	released, err := regtest.RSS(e.agent.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	e.stopAgent()
	e.agentArgs = nil

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
	b.ReportMetric(float64(released)/(1<<20), "released-rss-MiB")
	b.ReportMetric(float64(startups[len(startups)/2].Milliseconds()), "startup-ms")
}

// fleetConfig is a configuration of n apps on the demo image, each with an
// ImageObjectID of its own.
func (e *e2e) fleetConfig(n int, ref string) string {
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "device:\n  insecureRegistries: [%q]\napps:\n", e.registry)
	for i := 0; i < n; i++ {
		cfg.WriteString(app(fmt.Sprintf("0a7c3b1e-0000-4000-8000-%012d", i), fmt.Sprintf("app-%02d", i), fmt.Sprintf("img-%02d", i), ref, ""))
	}
	return cfg.String()
}

// BenchmarkAgentAction measures what one app's action costs the agent with
// 50 apps configured: agent CPU time and fsync calls for a `pullwise
// refresh APP` that finds nothing new (targets: ≤ 5 ms CPU, ≤ 1 fsync).
// CPU is read from /proc; fsyncs are counted by strace in separate runs
// (strace slows what it traces).
//
//	go test -run '^$' -bench AgentAction -benchtime 5x ./cmd/pullwise/
func BenchmarkAgentAction(b *testing.B) {
	ctrdtest.Need(b, "strace")
	e := newE2E(b)
	regtest.PushImage(b, e.registry+"/demo/web:latest", regtest.AppImage(b, "v1", false))
	e.writeConfig(e.fleetConfig(50, e.registry+"/demo/web:latest"))
	// As a device runs it: at the default log level.
	e.agentArgs = append(e.agentArgs, "--log-level", "info")
	e.startAgent()
	e.waitRunning(50)
	time.Sleep(2 * time.Second)
	pid := e.agent.Process.Pid
	var cpus, fsyncs []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before, err := regtest.CPUTime(pid)
		if err != nil {
			b.Fatal(err)
		}
		if out, err := e.cli("refresh", "app-07"); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		time.Sleep(300 * time.Millisecond) // the status file is written after the answer
		after, _ := regtest.CPUTime(pid)
		cpus = append(cpus, float64(after-before)/1e6)

		trace := filepath.Join(b.TempDir(), "strace.out")
		st := exec.Command("strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,sync_file_range", "-o", trace, "-p", fmt.Sprint(pid))
		if err := st.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // attached
		if out, err := e.cli("refresh", "app-07"); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		time.Sleep(300 * time.Millisecond)
		st.Process.Signal(syscall.SIGINT)
		st.Wait()
		out, _ := os.ReadFile(trace)
		fsyncs = append(fsyncs, float64(strings.Count(string(out), "sync(")+strings.Count(string(out), "sync_file_range(")))
	}
	b.StopTimer()
	b.ReportMetric(regtest.Median(cpus), "agent-cpu-ms")
	b.ReportMetric(regtest.Median(fsyncs), "fsyncs")
}

// BenchmarkIsolation measures how long app B's `pullwise restart` takes
// while app A downloads 200 MiB through a throttled proxy, against the same
// restart with nothing else going on (target: delayed ≤ 1 s).
//
//	go test -run '^$' -bench Isolation -benchtime 3x ./cmd/pullwise/
func BenchmarkIsolation(b *testing.B) {
	e := newE2E(b)
	regtest.PushImage(b, e.registry+"/demo/a:latest", regtest.AppImage(b, "a1", false))
	regtest.PushImage(b, e.registry+"/demo/b:latest", regtest.AppImage(b, "b1", false))
	e.writeConfig(fmt.Sprintf("device:\n  insecureRegistries: [%q]\napps:\n%s%s", e.registry,
		app("0a7c3b1e-0000-4000-8000-0000000000aa", "a", "img-a", e.registry+"/demo/a:latest", ""),
		app("0a7c3b1e-0000-4000-8000-0000000000bb", "b", "img-b", e.registry+"/demo/b:latest", "")))
	e.startAgent()
	e.waitRunning(2)
	restart := func() time.Duration {
		start := time.Now()
		if out, err := e.cli("restart", "b"); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		return time.Since(start)
	}
	var idle, busy []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idle = append(idle, restart())
		regtest.PushImage(b, e.registry+"/demo/a:latest", bigImage(b, fmt.Sprintf("a%d", i+2), 1, 200<<20))
		e.proxy.Throttle(20 << 20)
		e.proxy.Reset()
		if out, err := e.cli("refresh", "a", "--no-wait"); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		for e.proxy.BlobBytes() < 1<<20 {
			time.Sleep(10 * time.Millisecond)
		}
		busy = append(busy, restart())
		if e.proxy.BlobBytes() >= 200<<20 {
			b.Fatal("the download finished before b's restart did: the measurement proves nothing")
		}
		e.proxy.Throttle(0)
		e.status("a refreshed", func(st agent.Status) bool { s, _ := appState(st, "a"); return s == "RUNNING" })
	}
	b.StopTimer()
	b.ReportMetric(float64(regtest.Median(idle).Milliseconds()), "restart-idle-ms")
	b.ReportMetric(float64(regtest.Median(busy).Milliseconds()), "restart-during-download-ms")
	b.ReportMetric(float64((regtest.Median(busy) - regtest.Median(idle)).Milliseconds()), "delay-ms")
}
