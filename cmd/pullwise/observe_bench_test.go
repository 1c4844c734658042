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
		e.writeConfig(cfg)
		e.agentArgs = []string{"--release-modules-after", "5s"}
		e.startAgent()
		defer func() { e.stopAgent(); e.agentArgs = nil }()
		e.waitRunning(10)
		time.Sleep(8 * time.Second) // the creation's events delivered, the module released
		pid := e.agent.Process.Pid
		trace := filepath.Join(b.TempDir(), "strace.out")
		st := exec.Command("strace", "-f", "-qq", "-y", "-e", "trace=write,pwrite64,writev,fsync,fdatasync,rename,renameat,renameat2", "-o", trace, "-p", fmt.Sprint(pid))
		if err := st.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // attached
		e.proxy.Reset()
		hooksBefore := hooks.Load()
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
		return float64(rss) / (1 << 20), float64(cpu1-cpu0) / 1e6 * float64(time.Minute) / float64(window),
			float64(fileWrites(string(out))), float64(len(e.proxy.Requests()) + int(hooks.Load()-hooksBefore))
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
