package plugins_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/internal/testing/wattest"
	"github.com/pullwise/pullwise/plugins"
)

// statusOf finds name in the directory's status.
func statusOf(d *plugins.Dir, name string) (plugins.ModuleStatus, bool) {
	for _, s := range d.Status() {
		if s.Name == name {
			return s, true
		}
	}
	return plugins.ModuleStatus{}, false
}

// TestDropInTrust: the directory and its files must be writable by their
// owner only and owned by root (or the agent's user); other entries are
// refused, with the reason in the status.
func TestDropInTrust(t *testing.T) {
	ctx := context.Background()
	good := wattest.Build(t, wattest.Module("", ""), wattest.Metadata("vendor"))
	t.Run("a directory writable by others is refused whole", func(t *testing.T) {
		rt, _ := newRuntime(t)
		dir := t.TempDir()
		write(t, filepath.Join(dir, "vendor.wasm"), good)
		os.Chmod(dir, 0o777)
		d, err := plugins.OpenDir(ctx, rt, dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Module("vendor"); ok {
			t.Fatal("a module in a world-writable directory was loaded")
		}
		if s, ok := statusOf(d, dir); !ok || !strings.Contains(s.Error, "writable by users other than its owner") || !strings.Contains(s.Error, "chmod go-w") {
			t.Fatalf("status %+v", d.Status())
		}
		// Fixed: the module loads.
		os.Chmod(dir, 0o755)
		if _, err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Module("vendor"); !ok {
			t.Fatalf("not loaded once the directory was fixed: %+v", d.Status())
		}
	})
	t.Run("files writable by others or owned by another user are refused", func(t *testing.T) {
		rt, _ := newRuntime(t)
		dir := t.TempDir()
		write(t, filepath.Join(dir, "open.wasm"), good)
		os.Chmod(filepath.Join(dir, "open.wasm"), 0o666)
		write(t, filepath.Join(dir, "nobody.wasm"), good)
		if os.Geteuid() == 0 {
			os.Chown(filepath.Join(dir, "nobody.wasm"), 65534, 65534)
		}
		d, err := plugins.OpenDir(ctx, rt, dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Module("open"); ok {
			t.Fatal("a world-writable module was loaded")
		}
		if s, _ := statusOf(d, "open.wasm"); !strings.Contains(s.Error, "writable by users other than its owner") {
			t.Fatalf("open.wasm: %+v", s)
		}
		if os.Geteuid() == 0 {
			if _, ok := d.Module("nobody"); ok {
				t.Fatal("a module owned by nobody was loaded")
			}
			if s, _ := statusOf(d, "nobody.wasm"); !strings.Contains(s.Error, "owned by uid 65534") {
				t.Fatalf("nobody.wasm: %+v", s)
			}
		}
	})
	t.Run("file names must be policy names", func(t *testing.T) {
		rt, _ := newRuntime(t)
		dir := t.TempDir()
		for _, n := range []string{".wasm", "UPPER.WASM", "Mixed.wasm", "new\nline.wasm", "-dash.wasm"} {
			write(t, filepath.Join(dir, n), good)
		}
		os.Mkdir(filepath.Join(dir, "adir.wasm"), 0o755)
		write(t, filepath.Join(dir, "ok-name_1.2.wasm"), good)
		d, err := plugins.OpenDir(ctx, rt, dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Module("ok-name_1.2"); !ok {
			t.Fatalf("a valid name was not loaded: %+v", d.Status())
		}
		for _, n := range []string{".wasm", "UPPER.WASM", "Mixed.wasm", "new\nline.wasm", "-dash.wasm", "adir.wasm"} {
			if s, ok := statusOf(d, n); !ok || !strings.HasPrefix(s.Error, "ignored: ") {
				t.Errorf("%q: %+v", n, s)
			}
		}
		if _, ok := d.Module(""); ok {
			t.Fatal(`".wasm" loaded as the policy ""`)
		}
	})
	t.Run("a metadata name other than the file name is reported", func(t *testing.T) {
		rt, _ := newRuntime(t)
		dir := t.TempDir()
		write(t, filepath.Join(dir, "vendor.wasm"), wattest.Build(t, wattest.Module("", ""), wattest.Metadata("something-else")))
		d, err := plugins.OpenDir(ctx, rt, dir)
		if err != nil {
			t.Fatal(err)
		}
		if s, _ := statusOf(d, "vendor"); s.Active == nil || !strings.Contains(s.Warning, `"something-else"`) {
			t.Fatalf("%+v", s)
		}
	})
}

// TestPinsFollowTheConfiguration: a pin added after a file loaded is
// enforced on the next file; a rotation works with the new file first or
// the new pin first; a removed pin stops refusing.
func TestPinsFollowTheConfiguration(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	v1 := wattest.Build(t, wattest.Module("", ""), wattest.Metadata("vendor"))
	v2 := wattest.Build(t, wattest.Module("", "(i32.const 1) (drop) (i32.const 1)"), wattest.Metadata("vendor"))
	sum := func(b []byte) string { info, _ := plugins.Inspect(b); return info.SHA256 }
	dir := t.TempDir()
	path := filepath.Join(dir, "vendor.wasm")
	write(t, path, v1)
	d, err := plugins.OpenDir(ctx, rt, dir)
	if err != nil {
		t.Fatal(err)
	}
	active := func() string {
		m, ok := d.Module("vendor")
		if !ok {
			return ""
		}
		return m.Info.SHA256
	}
	// A pin added later (v1's) refuses a different file.
	d.SetPins(ctx, map[string]string{"vendor": sum(v1)})
	write(t, path, v2)
	d.Sync(ctx)
	if active() != sum(v1) {
		t.Fatal("a file not matching a pin added later replaced the module")
	}
	// Rotation, new file first (v2 is there, refused): the new pin loads it.
	d.SetPins(ctx, map[string]string{"vendor": "sha256:" + sum(v2)})
	if active() != sum(v2) {
		t.Fatalf("rotation with the file first: active %s, status %+v", active(), d.Status())
	}
	// Rotation, new pin first: v1's pin, then v1's file.
	d.SetPins(ctx, map[string]string{"vendor": sum(v1)})
	if active() != sum(v2) {
		t.Fatal("a pin alone changed the active module")
	}
	write(t, path, v1)
	d.Sync(ctx)
	if active() != sum(v1) {
		t.Fatalf("rotation with the pin first: %+v", d.Status())
	}
	// The pin removed: any file loads again.
	write(t, path, v2)
	d.Sync(ctx)
	d.SetPins(ctx, nil)
	if active() != sum(v2) {
		t.Fatalf("a removed pin still refuses: %+v", d.Status())
	}
}

// TestSizeLimits: a module over the size limit and metadata over its limit
// are refused before anything is compiled.
func TestSizeLimits(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t, plugins.WithMaxModuleSize(64<<10))
	big := wattest.Build(t, wattest.Module("(data (i32.const 8192) \""+strings.Repeat("x", 70<<10)+"\")", ""), wattest.Metadata("big"))
	if _, err := rt.Load(ctx, "big", big); err == nil || !strings.Contains(err.Error(), "over the 65536 byte limit") {
		t.Fatalf("a module over the limit: %v", err)
	}
	huge := `{"name":"m","version":"1","abiVersion":1,"description":"` + strings.Repeat("d", 20<<10) + `"}`
	if _, err := rt.Load(ctx, "m", wattest.Build(t, wattest.Module("", ""), huge)); err == nil || !strings.Contains(err.Error(), "over the 16384 byte limit") {
		t.Fatalf("metadata over the limit: %v", err)
	}
}
