package events

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRingKeepsNumberingAndBound: the ring is bounded by two files, its
// numbering continues across a reopen, transient events never reach the
// disk, and Read finds old events in the files once memory no longer
// holds them.
func TestRingKeepsNumberingAndBound(t *testing.T) {
	dir := t.TempDir()
	l, err := open(dir, 8<<10)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 * memory {
		kind := Checked
		if i%3 == 0 {
			kind = DownloadProgress
		}
		if _, err := l.Append(Event{Time: t0.Add(time.Duration(i) * time.Second), Kind: kind, App: "a", Reason: strings.Repeat("x", 20)}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	var total int64
	files, _ := filepath.Glob(filepath.Join(dir, "events*"))
	for _, f := range files {
		fi, _ := os.Stat(f)
		total += fi.Size()
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), string(DownloadProgress)) {
			t.Fatalf("%s holds a transient event", f)
		}
	}
	if len(files) != 2 || total > 2*8<<10 {
		t.Fatalf("files %v, %d bytes: want two files of at most 8 KiB", files, total)
	}
	l, err = open(dir, 8<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Last() != 3*memory {
		t.Fatalf("numbering after reopen at %d, want %d", l.Last(), 3*memory)
	}
	e, _ := l.Append(Event{Kind: RolledBack, App: "b"})
	if e.Seq != 3*memory+1 || e.Time.IsZero() {
		t.Fatalf("appended %+v", e)
	}
	got, err := l.Read(Filter{App: "b"})
	if err != nil || len(got) != 1 || got[0].Kind != RolledBack {
		t.Fatalf("Read app b: %v %v", got, err)
	}
	// Older than memory: from the files (the newest of which are kept).
	old, err := l.Read(Filter{Since: t0})
	if err != nil || len(old) < 20 || old[len(old)-1].Seq != e.Seq {
		t.Fatalf("Read since t0: %d events (%v)", len(old), err)
	}
	for i := 1; i < len(old); i++ {
		if old[i].Seq <= old[i-1].Seq {
			t.Fatal("not oldest first")
		}
	}
}

// TestWaitWakesFollowers: a follower waiting after the last event is
// woken by the next one its filter selects, and only by it.
func TestWaitWakesFollowers(t *testing.T) {
	l, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan []Event, 1)
	go func() {
		es, _ := l.Wait(context.Background(), Filter{App: "web", Kinds: []string{"app.*"}})
		got <- es
	}()
	time.Sleep(20 * time.Millisecond)
	l.Append(Event{Kind: Started, App: "db"})
	l.Append(Event{Kind: Checked, App: "web"})
	l.Append(Event{Kind: RolledBack, App: "web"})
	select {
	case es := <-got:
		if len(es) != 1 || es[0].Kind != RolledBack || es[0].Seq != 3 {
			t.Fatalf("woken with %+v, want the rollback alone", es)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower was not woken")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Wait(ctx, Filter{After: l.Last()}); err != context.DeadlineExceeded {
		t.Fatalf("Wait with nothing new: %v", err)
	}
}

func TestFilterAndKinds(t *testing.T) {
	for _, tc := range []struct {
		kinds []string
		kind  Kind
		want  bool
	}{
		{nil, Started, true},
		{nil, DownloadProgress, false},
		{[]string{"app.*"}, RolledBack, true},
		{[]string{"app.*"}, ImageChanged, false},
		{[]string{"download.*"}, DownloadProgress, false},
		{[]string{"download.progress"}, DownloadProgress, true},
		{[]string{"*"}, PolicyFault, true},
		{[]string{"image.changed", "app.rolled-back"}, ImageChanged, true},
	} {
		if got := (Filter{Kinds: tc.kinds}).Match(Event{Seq: 1, Kind: tc.kind}); got != tc.want {
			t.Errorf("%v matches %s: %v, want %v", tc.kinds, tc.kind, got, tc.want)
		}
	}
	if err := CheckKinds([]string{"app.*", "image.changed", "*"}); err != nil {
		t.Fatal(err)
	}
	if err := CheckKinds([]string{"app.rollback"}); err == nil || !strings.Contains(err.Error(), `"app.rollback"`) {
		t.Fatalf("a misspelt kind: %v", err)
	}
}

// TestDurationsAreGoDurations: took is "1.5s" in JSON, never nanoseconds.
func TestDurationsAreGoDurations(t *testing.T) {
	b, _ := json.Marshal(Event{Kind: DownloadFinished, Took: Duration(1500 * time.Millisecond)})
	if !strings.Contains(string(b), `"took":"1.5s"`) {
		t.Fatalf("%s", b)
	}
	var e Event
	if err := json.Unmarshal(b, &e); err != nil || e.Took != Duration(1500*time.Millisecond) {
		t.Fatalf("%+v %v", e, err)
	}
}
