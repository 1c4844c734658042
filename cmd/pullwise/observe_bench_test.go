package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/mqtttest"
	"github.com/pullwise/pullwise/internal/testing/promtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// BenchmarkAgentIdleObserved measures what watching a device costs while
// nothing happens: the agent with 10 apps, first as installed (no metrics,
// no notifications), then with the metrics endpoint and textfile, a webhook
// and an MQTT broker on, each idle for the same window after its modules
// were released. Reported for both: resident memory (target ≤ 48 MiB),
// CPU time per idle minute, file writes in the window (strace; target 0)
// and requests the agent sent to the registry or the webhook (target 0).
//
//	go test -run '^$' -bench AgentIdleObserved -benchtime 1x ./cmd/pullwise/
func BenchmarkAgentIdleObserved(b *testing.B) {
	ctrdtest.Need(b, "strace")
	const window = 20 * time.Second
	e := newE2E(b)
	regtest.PushImage(b, e.registry+"/demo/web:latest", regtest.AppImage(b, "v1", false))
	var hooks atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hooks.Add(1) }))
	b.Cleanup(hook.Close)
	broker := mqtttest.Start(b)
	port := promtest.FreePort(b)
	observed := fmt.Sprintf(`  metrics: {listen: "127.0.0.1:%s", textfile: %s}
  notify:
    webhooks: [{url: %q}]
    mqtt: {broker: %q}
`, port, filepath.Join(b.TempDir(), "pullwise.prom"), hook.URL, broker.URL)
	plain := e.fleetConfig(10, e.registry+"/demo/web:latest")
	measure := func(cfg string) (rssMiB, cpuPerMin, writes, requests float64) {
		f := e.idleFigures(b, cfg, 10, window, hooks.Load)
		return f.rssMiB, f.cpuMs * float64(time.Minute) / float64(window), float64(f.writes), float64(f.requests)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rss0, cpu0, w0, r0 := measure(plain)
		withObs := strings.Replace(plain, "apps:\n", observed+"apps:\n", 1)
		rss1, cpu1, w1, r1 := measure(withObs)
		b.ReportMetric(rss0, "plain-rss-MiB")
		b.ReportMetric(rss1, "observed-rss-MiB")
		b.ReportMetric(cpu0, "plain-cpu-ms/min")
		b.ReportMetric(cpu1, "observed-cpu-ms/min")
		b.ReportMetric(w0, "plain-file-writes")
		b.ReportMetric(w1, "observed-file-writes")
		b.ReportMetric(r0+r1, "idle-requests")
	}
}

// idle is what the agent did in an idle window.
type idle struct {
	rssMiB   float64
	cpuMs    float64 // agent CPU time in the window
	writes   int     // file writes and renames (strace)
	requests int     // requests to the registry (and to sent, if given)
}

// idleFigures starts the agent on cfg (n apps), waits until they run, the
// creation's events are delivered and the modules released, and watches
// it for window. sent, if not nil, counts requests to another server.
func (e *e2e) idleFigures(b *testing.B, cfg string, n int, window time.Duration, sent func() int64) idle {
	if sent == nil {
		sent = func() int64 { return 0 }
	}
	e.writeConfig(cfg)
	e.agentArgs = []string{"--release-modules-after", "5s"}
	e.startAgent()
	defer func() { e.stopAgent(); e.agentArgs = nil }()
	e.waitRunning(n)
	time.Sleep(8 * time.Second) // the creation's events delivered, the module released
	pid := e.agent.Process.Pid
	trace := filepath.Join(b.TempDir(), "strace.out")
	st := exec.Command("strace", "-f", "-qq", "-y", "-e", "trace=write,pwrite64,writev,fsync,fdatasync,rename,renameat,renameat2", "-o", trace, "-p", fmt.Sprint(pid))
	if err := st.Start(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // attached
	e.proxy.Reset()
	sent0 := sent()
	cpu0, _ := regtest.CPUTime(pid)
	time.Sleep(window)
	cpu1, _ := regtest.CPUTime(pid)
	rss, err := regtest.RSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	st.Process.Signal(syscall.SIGINT)
	st.Wait()
	out, _ := os.ReadFile(trace)
	return idle{rssMiB: float64(rss) / (1 << 20), cpuMs: float64(cpu1-cpu0) / 1e6, writes: fileWrites(string(out)),
		requests: len(e.proxy.Requests()) + int(sent()-sent0)}
}

// BenchmarkHealthProbe measures what a healthy app's healthcheck costs
// the agent: one app probed every second for 20 s, by TCP (dialled inside
// its network namespace) and by exec (a process in its container, which
// containerd and runc start: their CPU is not the agent's), against the
// same app without one. Reported: agent CPU per probe (the difference
// from the plain app, divided by the probes) and file writes in the
// window (target 0: a healthy app's probes write nothing).
//
//	go test -run '^$' -bench HealthProbe -benchtime 1x ./cmd/pullwise/
func BenchmarkHealthProbe(b *testing.B) {
	ctrdtest.Need(b, "strace")
	const window = 20 * time.Second
	e := newE2E(b)
	regtest.PushImage(b, e.registry+"/demo/web:latest", regtest.AppImage(b, "v1", false))
	plain := e.fleetConfig(1, e.registry+"/demo/web:latest") + "    env: [\"LISTEN=:8080\"]\n"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base := e.idleFigures(b, plain, 1, window, nil)
		for _, probe := range []struct{ name, check string }{
			{"tcp", `{tcp: 8080, interval: 1s}`},
			{"exec", `{exec: ["/app", "health"], interval: 1s}`},
		} {
			f := e.idleFigures(b, plain+"    healthcheck: "+probe.check+"\n", 1, window, nil)
			b.ReportMetric((f.cpuMs-base.cpuMs)/window.Seconds(), probe.name+"-cpu-ms/probe")
			b.ReportMetric(float64(f.writes), probe.name+"-file-writes")
		}
		b.ReportMetric(float64(base.writes), "plain-file-writes")
	}
}

// fileWrites counts the traced write and rename calls on regular files
// (strace -y names each descriptor's path; sockets and pipes are not
// files).
func fileWrites(trace string) int {
	n := 0
	for _, line := range strings.Split(trace, "\n") {
		if m := writeCall.FindStringSubmatch(line); m != nil && !strings.HasPrefix(m[1], "socket:") && !strings.HasPrefix(m[1], "pipe:") &&
			!strings.HasPrefix(m[1], "anon_inode:") && !strings.HasPrefix(m[1], "/dev/") {
			n++
		}
		if strings.Contains(line, "rename") {
			n++
		}
	}
	return n
}

var writeCall = regexp.MustCompile(`(?:write|pwrite64|writev|fsync|fdatasync)\(\d+<([^>]*)>`)
