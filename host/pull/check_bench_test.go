package pull

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// BenchmarkNoChangeCheck counts what checking an up-to-date tag costs, in
// registry requests and blob bytes through a counting proxy in front of the
// Debian docker-registry: pullwise's check (a long-lived client, as in the
// agent), `crane digest` (a new process each time), and `ctr image pull` of
// an image containerd already has. Target for pullwise: 1 request, 0 bytes.
//
//	go test -run '^$' -bench NoChangeCheck -benchtime 3x ./host/pull/
func BenchmarkNoChangeCheck(b *testing.B) {
	ctrdtest.Need(b, "ctr")
	d := ctrdtest.Start(b)
	p := regtest.NewProxy(b, regtest.NewDistribution(b))
	ref := p.Host + "/bench/app:latest"
	regtest.PushImage(b, ref, regtest.RandomImage(b, 1<<20, 5))
	crane := filepath.Join(b.TempDir(), "crane")
	if out, err := exec.Command("go", "build", "-o", crane, "github.com/google/go-containerregistry/cmd/crane").CombinedOutput(); err != nil {
		b.Fatalf("building crane: %v\n%s", err, out)
	}
	ctx := d.Context()
	reg, err := registry.New(registry.WithInsecure(p.Host))
	if err != nil {
		b.Fatal(err)
	}
	prev, err := reg.Resolve(ctx, ref, nil) // first contact: ping and token, once per agent
	if err != nil {
		b.Fatal(err)
	}
	ctr := func() {
		out, err := exec.Command("ctr", "--address", d.Socket, "--namespace", d.Namespace, "image", "pull", "--plain-http", ref).CombinedOutput()
		if err != nil {
			b.Fatalf("ctr: %v\n%s", err, out)
		}
	}
	ctr() // the image is now up to date in containerd
	var ours, craneReq, ctrReq, ourBytes, craneBytes, ctrBytes float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Reset()
		if _, err := reg.Resolve(ctx, ref, &prev); err != nil {
			b.Fatal(err)
		}
		ours, ourBytes = float64(len(p.Requests())), float64(p.BlobBytes())

		p.Reset()
		cmd := exec.Command(crane, "digest", "--insecure", ref)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+b.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("crane: %v\n%s", err, out)
		}
		craneReq, craneBytes = float64(len(p.Requests())), float64(p.BlobBytes())

		p.Reset()
		ctr()
		ctrReq, ctrBytes = float64(len(p.Requests())), float64(p.BlobBytes())
	}
	b.StopTimer()
	b.ReportMetric(ours, "pullwise-requests")
	b.ReportMetric(ourBytes, "pullwise-blob-bytes")
	b.ReportMetric(craneReq, "crane-requests")
	b.ReportMetric(craneBytes, "crane-blob-bytes")
	b.ReportMetric(ctrReq, "ctr-requests")
	b.ReportMetric(ctrBytes, "ctr-blob-bytes")
}
