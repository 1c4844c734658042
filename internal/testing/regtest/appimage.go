package regtest

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var testapp = struct {
	sync.Once
	bin []byte
	err error
}{}

// AppImage is a runnable image of internal/testing/testapp (a static binary) plus a
// /version file holding version; with failFast the app exits 1 at once.
// Different versions share the binary's layer.
func AppImage(t testing.TB, version string, failFast bool) v1.Image {
	t.Helper()
	img, err := BuildAppImage(version, failFast)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// BuildAppImage is AppImage outside tests (the demo uses it).
func BuildAppImage(version string, failFast bool) (v1.Image, error) {
	testapp.Do(func() {
		dir, err := os.MkdirTemp("", "pullwise-testapp-")
		if err != nil {
			testapp.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "app")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "testapp")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if b, err := cmd.CombinedOutput(); err != nil {
			testapp.err = &buildError{err, string(b)}
			return
		}
		testapp.bin, testapp.err = os.ReadFile(out)
	})
	if testapp.err != nil {
		return nil, testapp.err
	}
	files := map[string][]byte{"version": []byte(version + "\n")}
	if failFast {
		files["fail-fast"] = []byte("1\n")
	}
	binLayer, err := tarLayer(map[string][]byte{"app": testapp.bin}, 0o755)
	if err != nil {
		return nil, err
	}
	dataLayer, err := tarLayer(files, 0o644)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, binLayer, dataLayer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint = []string{"/app"}
	return mutate.ConfigFile(img, cfg)
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "building testapp: " + e.err.Error() + "\n" + e.out }

func tarLayer(files map[string][]byte, mode int64) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names) // the same files give the same layer digest
	for _, name := range names {
		b := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		tw.Write(b)
	}
	tw.Close()
	return tarball.LayerFromReader(bytes.NewReader(buf.Bytes()))
}

// WithConfig gives img the config edit makes (a HEALTHCHECK, a
// STOPSIGNAL: what docker build writes).
func WithConfig(t testing.TB, img v1.Image, edit func(*v1.Config)) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	edit(&cfg.Config)
	out, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
