package decisions

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullwise/pullwise/sdk"
)

func entry(i int, app string) Entry {
	t := time.Date(2026, 12, 1, 0, 0, i, 0, time.UTC)
	return Entry{Time: t, App: app, Module: Module{Name: "always", SHA256: strings.Repeat("a", 64)},
		Input:    sdk.Input{ABIVersion: 1, Now: t, Event: sdk.EventTick, Image: sdk.Image{Ref: "r/web:latest", LocalDigest: "sha256:aa"}},
		Decision: &sdk.Decision{Action: sdk.ActionUseLocal, Reason: strings.Repeat("x", 200)}}
}

// TestBoundedAndReadBack: the record rotates past its size, keeps two
// files at most, reads back oldest first with filters, and skips a torn
// last line.
func TestBoundedAndReadBack(t *testing.T) {
	dir := t.TempDir()
	l, err := open(dir, 4<<10)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		app := "a"
		if i%2 == 1 {
			app = "b"
		}
		if err := l.Append(entry(i, app)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "decisions*"))
	if len(files) != 2 {
		t.Fatalf("files %v, want the live file and one rotated", files)
	}
	var total int64
	for _, f := range files {
		fi, _ := os.Stat(f)
		total += fi.Size()
	}
	if total > 2*4<<10 {
		t.Fatalf("%d bytes kept, over twice the file size", total)
	}
	all, err := ReadDir(dir, Filter{})
	if err != nil || len(all) < 10 || all[len(all)-1].Time != entry(99, "b").Time {
		t.Fatalf("read back %d entries (%v); want the newest last", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Time.Before(all[i-1].Time) {
			t.Fatal("not oldest first")
		}
	}
	bs, _ := ReadDir(dir, Filter{App: "b", Since: entry(90, "").Time})
	if len(bs) != 5 {
		t.Fatalf("app b since 90: %d entries, want 5", len(bs))
	}
	// A power cut in the middle of a line.
	f, _ := os.OpenFile(filepath.Join(dir, Name), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"2026-12-01T01:00:00Z","app":"a","inp`)
	f.Close()
	if again, err := ReadDir(dir, Filter{}); err != nil || len(again) != len(all) {
		t.Fatalf("torn last line: %d entries, %v", len(again), err)
	}
	// A bad line elsewhere is an error naming it.
	os.WriteFile(filepath.Join(dir, OldName), []byte("{}\nnot json\n{}\n"), 0o600)
	if _, err := ReadDir(dir, Filter{}); err == nil || !strings.Contains(err.Error(), OldName+":2") {
		t.Fatalf("bad line: %v", err)
	}
	if _, err := ReadDir(t.TempDir(), Filter{}); err == nil || !strings.Contains(err.Error(), "no decision record") {
		t.Fatalf("no record: %v", err)
	}
}

func TestDiffers(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	later := at.Add(time.Hour)
	base := sdk.Decision{Action: sdk.ActionPull, OnPullFailure: sdk.PullFailureFail, RestartOnChange: true, NextCheck: &at, Reason: "a"}
	for _, tc := range []struct {
		name   string
		change func(*sdk.Decision)
		differ bool
	}{
		{"same but the reason", func(d *sdk.Decision) { d.Reason = "b" }, false},
		{"same next check in another zone", func(d *sdk.Decision) { t := at.In(time.FixedZone("x", 3600)); d.NextCheck = &t }, false},
		{"action", func(d *sdk.Decision) { d.Action = sdk.ActionUseLocal }, true},
		{"on failure", func(d *sdk.Decision) { d.OnPullFailure = sdk.PullFailureKeepExisting }, true},
		{"restart", func(d *sdk.Decision) { d.RestartOnChange = false }, true},
		{"next check", func(d *sdk.Decision) { d.NextCheck = &later }, true},
		{"no next check", func(d *sdk.Decision) { d.NextCheck = nil }, true},
	} {
		d := base
		tc.change(&d)
		if got := Differs(base, d); got != tc.differ {
			t.Errorf("%s: Differs = %v", tc.name, got)
		}
	}
}
