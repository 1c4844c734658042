package plugins_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/sdk"
)

func decideAbsent(t *testing.T, d *plugins.Dir, name string) sdk.Action {
	t.Helper()
	m, ok := d.Module(name)
	if !ok {
		t.Fatalf("module %s is not active", name)
	}
	in := input("web")
	in.Image.LocalDigest = ""
	dec, err := m.Decide(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return dec.Action
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDropInReload adds a module, replaces it with a broken version (the old
// one stays active and the failure is reported), then with a good version.
func TestDropInReload(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	dir := t.TempDir()
	d, err := plugins.OpenDir(ctx, rt, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	if _, ok := d.Module("vendor"); ok {
		t.Fatal("empty directory has a module")
	}
	path := filepath.Join(dir, "vendor.wasm")

	// Add: `always` pulls an absent image.
	write(t, path, builtin(t, "always"))
	rep, err := d.Sync(ctx)
	if err != nil || len(rep.Loaded) != 1 || rep.Loaded[0] != "vendor" {
		t.Fatalf("add: report %+v, %v", rep, err)
	}
	if got := decideAbsent(t, d, "vendor"); got != sdk.ActionPull {
		t.Fatalf("add: action %s, want pull", got)
	}
	alwaysSHA := d.Status()[0].Active.SHA256

	// Replace with a broken file: reported, and the old version still decides.
	write(t, path, builtin(t, "always")[:4096])
	rep, _ = d.Sync(ctx)
	if rep.Changed() || rep.Failed["vendor"] == nil || !strings.Contains(rep.Failed["vendor"].Error(), "truncated") {
		t.Fatalf("broken: report %+v", rep)
	}
	st := d.Status()[0]
	if st.Active == nil || st.Active.SHA256 != alwaysSHA || st.Error == "" || st.FailedSHA256 == alwaysSHA {
		t.Fatalf("broken: status %+v", st)
	}
	if got := decideAbsent(t, d, "vendor"); got != sdk.ActionPull {
		t.Fatalf("broken: the previous version should still decide; got %s", got)
	}
	// The same broken bytes are not retried on every scan, but still reported.
	rep, _ = d.Sync(ctx)
	if rep.Failed["vendor"] == nil {
		t.Fatal("a broken file still present must stay reported")
	}

	// Replace with a good version: `never` fails an absent image.
	write(t, path, builtin(t, "never"))
	rep, _ = d.Sync(ctx)
	if len(rep.Replaced) != 1 || len(rep.Failed) != 0 {
		t.Fatalf("good: report %+v", rep)
	}
	if got := decideAbsent(t, d, "vendor"); got != sdk.ActionFail {
		t.Fatalf("good: action %s, want fail (the new module)", got)
	}
	if st := d.Status()[0]; st.Error != "" || st.Active.Metadata.Name != "never" {
		t.Fatalf("good: status %+v", st)
	}

	// Remove.
	os.Remove(path)
	rep, _ = d.Sync(ctx)
	if len(rep.Removed) != 1 {
		t.Fatalf("remove: report %+v", rep)
	}
	if _, ok := d.Module("vendor"); ok {
		t.Fatal("removed module is still active")
	}
}

func TestDropInPins(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "pinned.wasm"), builtin(t, "never"))
	info, err := plugins.Inspect(builtin(t, "always"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := plugins.OpenDir(ctx, rt, dir, plugins.WithPins(map[string]string{"pinned": "sha256:" + strings.ToUpper(info.SHA256)}))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	if _, ok := d.Module("pinned"); ok {
		t.Fatal("a module not matching its pin was loaded")
	}
	if st := d.Status(); len(st) != 1 || !strings.Contains(st[0].Error, "does not match the pinned sha256 "+info.SHA256) {
		t.Fatalf("status %+v", st)
	}
	write(t, filepath.Join(dir, "pinned.wasm"), builtin(t, "always"))
	if rep, _ := d.Sync(ctx); len(rep.Loaded) != 1 {
		t.Fatalf("the pinned content should load: %+v", rep)
	}
}

// TestDropInWatch proves modules are picked up without a call to Sync.
func TestDropInWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt, _ := newRuntime(t)
	dir := t.TempDir()
	d, err := plugins.OpenDir(ctx, rt, dir)
	if err != nil {
		t.Fatal(err)
	}
	reports := make(chan plugins.SyncReport, 16)
	go d.Watch(ctx, 50*time.Millisecond, func(r plugins.SyncReport) { reports <- r })
	<-reports // the initial scan
	// Write under another name and rename, as a careful vendor would; a plain
	// write works too, through a failed partial load and a retry.
	tmp := filepath.Join(dir, "vendor.tmp")
	write(t, tmp, builtin(t, "never"))
	if err := os.Rename(tmp, filepath.Join(dir, "vendor.wasm")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case r := <-reports:
			if len(r.Loaded) == 1 && r.Loaded[0] == "vendor" {
				if got := decideAbsent(t, d, "vendor"); got != sdk.ActionFail {
					t.Fatalf("action %s", got)
				}
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the watcher did not load a module dropped into its directory")
		}
	}
}
