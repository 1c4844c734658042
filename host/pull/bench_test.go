package pull

import (
	"io"
	"net/http"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"

	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// BenchmarkPullVsCtr pulls a 5-layer image of 100 MiB from the Debian
// docker-registry into a private containerd, with pullwise and with
// `ctr image pull` (which also unpacks), alternating, from a cold cache each
// time. It reports the median of each and their ratio (target ≤ 1.0).
//
//	go test -run '^$' -bench PullVsCtr -benchtime 5x ./host/pull/
func BenchmarkPullVsCtr(b *testing.B) {
	ctrdtest.Need(b, "ctr")
	d := ctrdtest.Start(b)
	host := regtest.NewDistribution(b)
	ref := host + "/bench/app:latest"
	rawImage := regtest.RandomImage(b, 20<<20, 5)
	regtest.PushImage(b, ref, rawImage)
	ctx := d.Context()
	reg, err := registry.New(registry.WithInsecure(host))
	if err != nil {
		b.Fatal(err)
	}
	p := newPuller(b, d.Client, reg)
	// clean removes every image (synchronously garbage-collecting content and
	// snapshots), so each pull starts cold.
	clean := func() {
		imgs, err := d.Client.ImageService().List(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for i, img := range imgs {
			var opts []images.DeleteOpt
			if i == len(imgs)-1 {
				opts = append(opts, images.SynchronousDelete())
			}
			if err := d.Client.ImageService().Delete(ctx, img.Name, opts...); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The limit: the same blobs copied over loopback by a plain HTTP client,
	// three at a time like the pulls, straight from the registry.
	rawCopy := func() time.Duration {
		img := rawImage
		layers, _ := img.Layers()
		start := time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 3)
		for _, l := range layers {
			dg, _ := l.Digest()
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				resp, err := http.Get("http://" + host + "/v2/bench/app/blobs/" + dg.String())
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	var ours, theirs, raw []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clean()
		start := time.Now()
		res, err := reg.Resolve(ctx, ref, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Pull(ctx, res, "", nil); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))

		clean()
		start = time.Now()
		out, err := exec.Command("ctr", "--address", d.Socket, "--namespace", d.Namespace,
			"image", "pull", "--plain-http", ref).CombinedOutput()
		if err != nil {
			b.Fatalf("ctr image pull: %v\n%s", err, out)
		}
		theirs = append(theirs, time.Since(start))
		raw = append(raw, rawCopy())
	}
	b.StopTimer()
	b.ReportMetric(float64(regtest.Median(ours).Milliseconds()), "pullwise-ms")
	b.ReportMetric(float64(regtest.Median(theirs).Milliseconds()), "ctr-ms")
	b.ReportMetric(float64(regtest.Median(ours))/float64(regtest.Median(theirs)), "ratio")
	b.ReportMetric(float64(regtest.Median(raw).Milliseconds()), "raw-copy-ms")
	b.ReportMetric(float64(regtest.Median(ours))/float64(regtest.Median(raw)), "vs-raw-ratio")
}

// BenchmarkPullRateCap pulls a 3-layer 16 MiB image from the Debian
// docker-registry under a 4 MiB/s download cap (device.download.rateLimit:
// one token bucket shared by the concurrent layer downloads) and reports
// the throughput measured at the registry against the cap (target: within
// 10 %, a ratio of 0.9 to 1.1), median of the runs.
//
//	go test -run '^$' -bench PullRateCap -benchtime 3x ./host/pull/
func BenchmarkPullRateCap(b *testing.B) {
	d := ctrdtest.Start(b)
	p := regtest.NewProxy(b, regtest.NewDistribution(b))
	ref := p.Host + "/bench/capped:latest"
	regtest.PushImage(b, ref, regtest.RandomImage(b, 16<<20/3, 3))
	ctx := d.Context()
	const capBps = 4 << 20
	reg, err := registry.New(registry.WithInsecure(p.Host), registry.WithDownloads(registry.Downloads{RateLimit: capBps}))
	if err != nil {
		b.Fatal(err)
	}
	puller := newPuller(b, d.Client, reg)
	var ratios []float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		imgs, _ := d.Client.ImageService().List(ctx)
		for j, img := range imgs {
			var opts []images.DeleteOpt
			if j == len(imgs)-1 {
				opts = append(opts, images.SynchronousDelete())
			}
			d.Client.ImageService().Delete(ctx, img.Name, opts...)
		}
		res, err := reg.Resolve(ctx, ref, nil)
		if err != nil {
			b.Fatal(err)
		}
		p.Reset()
		b.StartTimer()
		start := time.Now()
		if _, err := puller.Pull(ctx, res, "", nil); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		ratios = append(ratios, float64(p.BlobBytes())/elapsed.Seconds()/capBps)
	}
	b.ReportMetric(regtest.Median(ratios), "throughput/cap")
}
