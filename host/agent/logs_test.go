package agent

import (
	"testing"
	"time"
)

// TestLogMarks: --since starts at the last mark at or before its time, in
// the file that was live then (a rotated copy by now, or the live log).
func TestLogMarks(t *testing.T) {
	var l logMarks
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	l.record("a", t0, false, 100)
	l.record("a", t0.Add(30*time.Second), false, 500)
	l.record("a", t0.Add(60*time.Second), true, 0) // rotated: 500+ bytes now in LOG.1
	l.record("a", t0.Add(90*time.Second), false, 40)
	for _, tc := range []struct {
		at   time.Duration
		want LogPosition
	}{
		{-time.Second, LogPosition{}},
		{10 * time.Second, LogPosition{File: 1, Offset: 100, Found: true, MarkedAt: t0}},
		{45 * time.Second, LogPosition{File: 1, Offset: 500, Found: true, MarkedAt: t0.Add(30 * time.Second)}},
		{60 * time.Second, LogPosition{File: 0, Offset: 0, Found: true, MarkedAt: t0.Add(60 * time.Second)}},
		{time.Hour, LogPosition{File: 0, Offset: 40, Found: true, MarkedAt: t0.Add(90 * time.Second)}},
	} {
		if got := l.since("a", t0.Add(tc.at), 3); got != tc.want {
			t.Errorf("since %v: %+v, want %+v", tc.at, got, tc.want)
		}
	}
	if got := l.since("a", t0.Add(10*time.Second), 0); got.Found {
		t.Errorf("with no rotated copies kept, the mark's file is gone: %+v", got)
	}
	if got := l.since("b", t0, 3); got.Found {
		t.Errorf("an app without marks: %+v", got)
	}
}
