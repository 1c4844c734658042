package plugins

import (
	"context"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/testing/regtest"
	"github.com/pullwise/pullwise/internal/testing/testcache"
	"github.com/pullwise/pullwise/policies"
	"github.com/pullwise/pullwise/sdk"
)

// These benchmarks measure the targets of DESIGN.md: decision latency on a
// warm instance (p50 ≤ 100 µs) and on a fresh one, module load cold and from
// the compilation cache (≤ 100 ms), and memory per instance. Run them with
// `make bench`; quote medians over -count runs.

func benchInput() sdk.Input {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	return sdk.Input{
		Now: now, Event: sdk.EventRefresh, Attempt: 0,
		Image: sdk.Image{ID: "6f1e0c1e-0000-4000-8000-000000000001", Ref: "registry.local/app:latest", Tag: "latest",
			LocalDigest:  "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			RemoteDigest: "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752", LastCheck: &now},
		App:    sdk.App{UUID: "0a7c3b1e-0000-4000-8000-000000000002", Name: "web", Counters: sdk.Counters{RefreshImage: 3}},
		Device: sdk.Device{Link: sdk.Link{Online: true, BandwidthBps: 1 << 20}, FreeDiskBytes: 10 << 30},
	}
}

func benchModule(b *testing.B, opts ...Option) *Module {
	b.Helper()
	ctx := context.Background()
	wasm, err := policies.Module("always")
	if err != nil {
		b.Fatal(err)
	}
	opts = append([]Option{WithCacheDir(testcache.ModuleDir())}, opts...)
	rt, err := NewRuntime(ctx, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rt.Close(ctx) })
	m, err := rt.Load(ctx, "always", wasm)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// decideLoop runs b.N decisions and reports p50 and p99 latency.
func decideLoop(b *testing.B, m *Module) {
	ctx := context.Background()
	in := benchInput()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := time.Now()
		d, err := m.Decide(ctx, in)
		lat = append(lat, time.Since(t))
		if err != nil || d.Action != sdk.ActionPull {
			b.Fatalf("decision %+v, %v", d, err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkDecideWarm: the agent's normal path, an idle instance reused.
func BenchmarkDecideWarm(b *testing.B) { decideLoop(b, benchModule(b)) }

// BenchmarkDecideFresh: a new instance per decision (WithFreshInstances).
func BenchmarkDecideFresh(b *testing.B) { decideLoop(b, benchModule(b, WithFreshInstances())) }

// BenchmarkLoadCold compiles with an empty cache: a module seen for the
// first time.
func BenchmarkLoadCold(b *testing.B) {
	ctx := context.Background()
	wasm, _ := policies.Module("always")
	for i := 0; i < b.N; i++ {
		rt, err := NewRuntime(ctx, WithCacheDir(b.TempDir()))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rt.Load(ctx, "always", wasm); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rt.Close(ctx)
		b.StartTimer()
	}
}

// BenchmarkLoadFromCache is a host restart: a new runtime, the compiled code
// on disk. It includes instantiation and the ABI handshake.
func BenchmarkLoadFromCache(b *testing.B) {
	ctx := context.Background()
	wasm, _ := policies.Module("always")
	dir := b.TempDir()
	warm, err := NewRuntime(ctx, WithCacheDir(dir))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := warm.Load(ctx, "always", wasm); err != nil {
		b.Fatal(err)
	}
	warm.Close(ctx)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rt, err := NewRuntime(ctx, WithCacheDir(dir))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rt.Load(ctx, "always", wasm); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rt.Close(ctx)
		b.StartTimer()
	}
}

// BenchmarkReloadAfterRelease is the first decision of a module that was
// released while idle (WithReleaseAfter): compiling again from the cache,
// a new instance, the decision.
func BenchmarkReloadAfterRelease(b *testing.B) {
	ctx := context.Background()
	m := benchModule(b)
	in := benchInput()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if !m.releaseIfIdle(ctx, time.Now().Add(time.Hour)) {
			b.Fatal("the module was not released")
		}
		b.StartTimer()
		if _, err := m.Decide(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInstanceMemory reports what one more warm instance costs: the
// module's linear memory in use, the Go heap it adds (wazero's structures) and
// the process's resident memory it adds (Linux only; 0 elsewhere).
func BenchmarkInstanceMemory(b *testing.B) {
	ctx := context.Background()
	m := benchModule(b)
	const n = 16
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		rssBefore := rss(b, 0)
		insts := make([]*instance, 0, n)
		var linear uint64
		for j := 0; j < n; j++ {
			inst, err := m.instantiate(ctx, m.code)
			if err != nil {
				b.Fatal(err)
			}
			// Run a decision so the instance is as warm as a pooled one.
			if _, err := inst.exchange(ctx, "pullwise_decide", []byte(`{"event":"tick","image":{"ref":"a","localDigest":"sha256:a"}}`)); err != nil {
				b.Fatal(err)
			}
			linear += uint64(inst.mod.Memory().Size())
			insts = append(insts, inst)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(linear)/n/(1<<20), "linear-MiB/instance")
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n/(1<<20), "goheap-MiB/instance")
		b.ReportMetric(float64(rss(b, 0)-rssBefore)/n/(1<<20), "rss-MiB/instance")
		for _, inst := range insts {
			inst.close(ctx)
		}
	}
}

func rss(b *testing.B, pid int) int64 {
	n, err := regtest.RSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	return n
}
