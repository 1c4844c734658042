package app

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// BenchmarkCreateVsCtr creates one app from a cold cache (resolve, pull,
// unpack, create, start) with pullwise, and does the same with `ctr image
// pull` plus `ctr run -d`, alternating, same image (the test app plus four
// 20 MiB layers), same registry, same containerd. It reports the medians and
// their ratio (target ≤ 1.0).
//
//	go test -run '^$' -bench CreateVsCtr -benchtime 5x ./host/app/
func BenchmarkCreateVsCtr(b *testing.B) {
	ctrdtest.Need(b, "ctr")
	w := newBenchWorld(b)
	img := regtest.AppImage(b, "bench", false)
	for i := 0; i < 4; i++ {
		l, err := random.Layer(20<<20, types.DockerLayer)
		if err != nil {
			b.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			b.Fatal(err)
		}
	}
	ref := w.proxy.Host + "/bench/app:latest"
	regtest.PushImage(b, ref, img)
	cfg := w.config(appOpts{uuid: "bench", ref: "bench/app:latest"})
	empty := &config.Config{}
	clean := func() {
		imgs, _ := w.d.Client.ImageService().List(w.ctx)
		for _, i := range imgs {
			w.d.Client.ImageService().Delete(w.ctx, i.Name, images.SynchronousDelete())
		}
	}
	var ours, theirs []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clean()
		start := time.Now()
		if err := w.apply(cfg); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		if err := w.apply(empty); err != nil {
			b.Fatal(err)
		}
		clean()

		start = time.Now()
		ctr := func(args ...string) {
			out, err := exec.Command("ctr", append([]string{"--address", w.d.Socket, "--namespace", w.d.Namespace}, args...)...).CombinedOutput()
			if err != nil {
				b.Fatalf("ctr %v: %v\n%s", args, err, out)
			}
		}
		ctr("image", "pull", "--plain-http", ref)
		ctr("run", "-d", "--net-host", ref, "ctr-bench")
		theirs = append(theirs, time.Since(start))
		ctr("task", "kill", "-s", "SIGKILL", "ctr-bench")
		time.Sleep(100 * time.Millisecond)
		ctr("task", "rm", "-f", "ctr-bench")
		ctr("container", "rm", "ctr-bench")
	}
	b.StopTimer()
	b.ReportMetric(float64(regtest.Median(ours).Milliseconds()), "pullwise-ms")
	b.ReportMetric(float64(regtest.Median(theirs).Milliseconds()), "ctr-ms")
	b.ReportMetric(float64(regtest.Median(ours))/float64(regtest.Median(theirs)), "ratio")
}

// BenchmarkRefreshRound refreshes 50 apps on 5 tags of which 2 moved, in one
// configuration change, and reports the registry requests (manifests and
// blobs), the blob bytes, the wall time and the apps restarted. Targets: one
// manifest request per tag, each new blob downloaded once, only the 20 apps
// on moved tags restarted.
//
//	go test -run '^$' -bench RefreshRound -benchtime 3x ./host/app/
func BenchmarkRefreshRound(b *testing.B) {
	w := newBenchWorld(b)
	const apps, tags = 50, 5
	var opts []appOpts
	for i := 0; i < tags; i++ {
		w.push(fmt.Sprintf("fleet/t%d:latest", i), fmt.Sprintf("t%d-v0", i), false)
	}
	for i := 0; i < apps; i++ {
		opts = append(opts, appOpts{uuid: fmt.Sprintf("app-%02d", i), ref: fmt.Sprintf("fleet/t%d:latest", i%tags)})
	}
	if err := w.apply(w.config(opts...)); err != nil {
		b.Fatal(err)
	}
	var walls []time.Duration
	var manifests, blobs, bytes, restarted []float64
	b.ResetTimer()
	for round := 1; round <= b.N; round++ {
		b.StopTimer()
		for _, moved := range []int{0, 1} {
			w.push(fmt.Sprintf("fleet/t%d:latest", moved), fmt.Sprintf("t%d-v%d", moved, round), false)
		}
		before := map[string]int{}
		info, _ := w.host.Info(w.ctx)
		for _, a := range info.Apps {
			before[a.UUID] = a.Restarts
		}
		for i := range opts {
			opts[i].refresh = int64(round)
		}
		cfg := w.config(opts...)
		w.proxy.Reset()
		b.StartTimer()
		start := time.Now()
		if err := w.apply(cfg); err != nil {
			b.Fatal(err)
		}
		walls = append(walls, time.Since(start))
		b.StopTimer()
		var m, bl float64
		for _, r := range w.proxy.Requests() {
			switch {
			case strings.Contains(r, "/manifests/"):
				m++
			case strings.Contains(r, "/blobs/"):
				bl++
			}
		}
		info, _ = w.host.Info(w.ctx)
		var n float64
		for _, a := range info.Apps {
			if a.Restarts > before[a.UUID] {
				n++
				if i := appIndex(a.DisplayName); i%tags > 1 {
					b.Fatalf("%s on an unmoved tag was restarted", a.UUID)
				}
			}
		}
		manifests, blobs, bytes, restarted = append(manifests, m), append(blobs, bl), append(bytes, float64(w.proxy.BlobBytes())), append(restarted, n)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(regtest.Median(manifests), "manifest-requests")
	b.ReportMetric(regtest.Median(blobs), "blob-requests")
	b.ReportMetric(regtest.Median(bytes), "blob-bytes")
	b.ReportMetric(regtest.Median(restarted), "apps-restarted")
	b.ReportMetric(float64(regtest.Median(walls).Milliseconds()), "wall-ms")
}

func appIndex(name string) int {
	var i int
	fmt.Sscanf(name, "app-%d", &i)
	return i
}

// BenchmarkPeriodicShared runs 20 apps (20 ImageObjectIDs) on one tag under
// `periodic` with a 1-minute interval, on a clock moved forward one
// interval per iteration, and reports the manifest requests per interval
// (target: 1, however many apps use the reference).
//
//	go test -run '^$' -bench PeriodicShared -benchtime 5x ./host/app/
func BenchmarkPeriodicShared(b *testing.B) {
	w := newBenchWorld(b)
	clock := w.periodicApps(20)
	var perInterval []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.proxy.Reset()
		clock.advance(61 * time.Second)
		if err := w.host.Tick(w.ctx); err != nil {
			b.Fatal(err)
		}
		perInterval = append(perInterval, float64(manifestRequests(w.proxy.Requests())))
	}
	b.StopTimer()
	b.ReportMetric(regtest.Median(perInterval), "manifest-requests/interval")
}
