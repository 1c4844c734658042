package containers

import (
	"syscall"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
)

// BenchmarkProbe measures one health probe of a running bridge-network app
// as the agent pays for it: wall time and this process's CPU time per
// probe (getrusage), for a TCP connect inside the app's network namespace
// and for an exec in its container (whose runc and shim work is
// containerd's, not counted here).
//
//	go test -run '^$' -bench Probe -benchtime 50x ./host/containers/
func BenchmarkProbe(b *testing.B) {
	d := ctrdtest.Start(b)
	ctx := d.Context()
	img := appImages(b, d, "app:v1")[0]
	m := New(d.Client, b.TempDir())
	if err := m.Create(ctx, Spec{ID: "probed", Image: img, Env: []string{"LISTEN=:8080"}}); err != nil {
		b.Fatal(err)
	}
	if err := m.Start(ctx, "probed"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Remove(ctx, "probed") })
	for _, tc := range []struct {
		name  string
		probe config.Probe
	}{
		{"tcp", config.Probe{TCPPort: 8080, Timeout: 2 * time.Second}},
		{"exec", config.Probe{Exec: []string{"/app", "health"}, Timeout: 2 * time.Second}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for deadline := time.Now().Add(10 * time.Second); m.Probe(ctx, "probed", tc.probe) != nil; {
				if time.Now().After(deadline) {
					b.Fatal("the app never became healthy")
				}
				time.Sleep(100 * time.Millisecond)
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				if err := m.Probe(ctx, "probed", tc.probe); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/1e6/float64(b.N), "cpu-ms/probe")
		})
	}
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
