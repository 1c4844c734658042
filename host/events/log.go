package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pullwise/pullwise/internal/ringfile"
)

// File names in the state directory.
const (
	Name    = "events.jsonl"
	OldName = "events.1.jsonl"
)

// MaxFileSize is the size past which the live file is rotated: two files
// hold some thousands of events, weeks of a busy device's history.
const MaxFileSize = 1 << 20

// memory is how many recent events the Log keeps in memory for followers
// and notifiers, so they do not read the files as events come.
const memory = 512

// Log is the event ring of a state directory. Its methods are safe for
// concurrent use.
type Log struct {
	ring *ringfile.File
	dir  string

	mu      sync.Mutex
	seq     uint64
	recent  []Event       // the last events, transient ones included, oldest first
	changed chan struct{} // closed and replaced at each Append
}

// Open opens (creating) the ring in dir and finds where its numbering
// stands.
func Open(dir string) (*Log, error) { return open(dir, MaxFileSize) }

func open(dir string, size int64) (*Log, error) {
	l := &Log{dir: dir, changed: make(chan struct{})}
	kept, err := ReadDir(dir, Filter{})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if n := len(kept); n > 0 {
		l.seq = kept[n-1].Seq
		l.recent = kept[max(0, n-memory):]
	}
	if l.ring, err = ringfile.Open(dir, Name, OldName, size, "the event ring"); err != nil {
		return nil, err
	}
	return l, nil
}

// Append numbers e, keeps it (on disk unless transient) and wakes whoever
// waits. It returns e as kept. A zero Time is now.
func (l *Log) Append(e Event) (Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	var err error
	if !e.Kind.Transient() {
		var b []byte
		if b, err = json.Marshal(e); err == nil {
			err = l.ring.Append(append(b, '\n'))
		}
	}
	l.recent = append(l.recent, e)
	if len(l.recent) > 2*memory {
		l.recent = append([]Event(nil), l.recent[len(l.recent)-memory:]...)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	if err != nil {
		return e, fmt.Errorf("keeping event %d: %w", e.Seq, err)
	}
	return e, nil
}

// Last is the newest event's number (0: none yet).
func (l *Log) Last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// Read returns the kept events f selects, oldest first: from memory when
// it reaches back far enough, else from the files.
func (l *Log) Read(f Filter) ([]Event, error) {
	l.mu.Lock()
	if l.covers(f) {
		out := pick(l.recent, f)
		l.mu.Unlock()
		return out, nil
	}
	l.mu.Unlock()
	out, err := ReadDir(l.dir, f)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return out, err
}

// covers reports whether the events in memory include all f selects.
func (l *Log) covers(f Filter) bool {
	if len(l.recent) == 0 {
		return l.seq == 0
	}
	first := l.recent[0]
	return first.Seq == 1 || first.Seq <= f.After+1 || !f.Since.IsZero() && !first.Time.After(f.Since)
}

func pick(es []Event, f Filter) []Event {
	var out []Event
	for _, e := range es {
		if f.Match(e) {
			out = append(out, e)
		}
	}
	return out
}

// Wait returns the events f selects numbered after f.After, waiting until
// there is at least one or ctx ends (then it returns ctx's error). A
// reader that keeps its place passes the last number it saw as After.
func (l *Log) Wait(ctx context.Context, f Filter) ([]Event, error) {
	for {
		l.mu.Lock()
		changed, seq := l.changed, l.seq
		l.mu.Unlock()
		if seq > f.After {
			es, err := l.Read(f)
			if err != nil || len(es) > 0 {
				return es, err
			}
			f.After = seq // nothing selected up to seq: wait past it
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// Close closes the ring's file.
func (l *Log) Close() error { return l.ring.Close() }

// ReadDir reads the event ring of a state directory, oldest first. A torn
// last line (a power cut while it was written) is skipped. It reports
// os.ErrNotExist when there is no ring.
func ReadDir(dir string, f Filter) ([]Event, error) {
	var out []Event
	err := ringfile.ReadDir(dir, Name, OldName, func(path string, line int, b []byte, last bool) error {
		var e Event
		if err := json.Unmarshal(b, &e); err != nil {
			if last {
				return nil
			}
			return fmt.Errorf("%s:%d: not an event line: %w", filepath.Base(path), line, err)
		}
		if f.Match(e) {
			out = append(out, e)
		}
		return nil
	})
	return out, err
}
