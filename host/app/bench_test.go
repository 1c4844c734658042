package app

import (
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/internal/ctrdtest"
	"github.com/pullwise/pullwise/internal/regtest"
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
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b.ReportMetric(float64(med(ours).Milliseconds()), "pullwise-ms")
	b.ReportMetric(float64(med(theirs).Milliseconds()), "ctr-ms")
	b.ReportMetric(float64(med(ours))/float64(med(theirs)), "ratio")
}
