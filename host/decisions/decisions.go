// Package decisions keeps the record of every decision the agent asked a
// policy for: its whole input, the module (name and sha256) and its answer
// or error, with the time. It is what `pullwise policy replay` re-runs
// through another module and `policy record-cases` turns into a case file:
// a vendor checks a new module against a device's real history before
// shipping it.
//
// The record is bounded: STATE/decisions.jsonl, one JSON document a line,
// moved to decisions.1.jsonl once it passes MaxFileSize, so at most two
// files of about MaxFileSize are kept. Lines are appended without fsync
// (a decision lost in a power cut is a case less to replay, not a wrong
// state): a device making a few decisions an hour writes a few hundred
// bytes an hour.
package decisions

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/pullwise/pullwise/sdk"
)

// File names in the state directory.
const (
	Name    = "decisions.jsonl"
	OldName = "decisions.1.jsonl"
)

// MaxFileSize is the size past which the live file is rotated.
const MaxFileSize = 2 << 20

// Module names the module that decided.
type Module struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// Entry is one recorded decision.
type Entry struct {
	Time time.Time `json:"time"`
	// App is the app's uuid; Image the drive's ImageObjectID.
	App    string `json:"app"`
	Image  string `json:"image,omitempty"`
	Module Module `json:"module"`
	// Input is the whole input document the module was given.
	Input sdk.Input `json:"input"`
	// Decision is the answer; Error the failure instead (a fault, a
	// module's own error, a malformed answer).
	Decision *sdk.Decision `json:"decision,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// Log appends entries to the record. Its methods are safe for concurrent
// use.
type Log struct {
	dir string
	max int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (creating) the record in dir.
func Open(dir string) (*Log, error) {
	l := &Log{dir: dir, max: MaxFileSize}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(filepath.Join(l.dir, Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening the decision record: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening the decision record: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Append records e, rotating the file first when it is full.
func (l *Log) Append(e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("recording a decision: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("recording a decision: the record is closed")
	}
	if l.size > 0 && l.size+int64(len(b)) > l.max {
		l.f.Close()
		l.f = nil
		if err := os.Rename(filepath.Join(l.dir, Name), filepath.Join(l.dir, OldName)); err != nil {
			return fmt.Errorf("rotating the decision record: %w", err)
		}
		if err := l.open(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		return fmt.Errorf("recording a decision: %w", err)
	}
	return nil
}

// Close closes the record.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Filter selects entries: those at or after Since (zero: all) of App
// (empty: every app; a uuid).
type Filter struct {
	Since time.Time
	App   string
}

func (f Filter) keep(e Entry) bool {
	return !e.Time.Before(f.Since) && (f.App == "" || e.App == f.App)
}

// ReadDir reads the record of a state directory, oldest first.
func ReadDir(dir string, f Filter) ([]Entry, error) {
	var all []Entry
	found := false
	for _, name := range []string{OldName, Name} {
		es, err := ReadFile(filepath.Join(dir, name), f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		found = true
		all = append(all, es...)
	}
	if !found {
		return nil, fmt.Errorf("no decision record in %s (the agent writes %s there once it has made a decision)", dir, Name)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	return all, nil
}

// ReadFile reads one record file (a copy taken from a device, say). A
// torn last line (a power cut while it was written) is skipped; any other
// bad line is an error naming its line.
func ReadFile(path string, f Filter) ([]Entry, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return read(fh, path, f)
}

func read(r io.Reader, path string, f Filter) ([]Entry, error) {
	var out []Entry
	br := bufio.NewReader(r)
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			var e Entry
			if jerr := json.Unmarshal(b, &e); jerr != nil {
				if err == io.EOF {
					break // torn last line
				}
				return nil, fmt.Errorf("%s:%d: not a decision record line: %w", path, line, jerr)
			}
			if f.keep(e) {
				out = append(out, e)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	return out, nil
}

// Differs reports whether two decisions differ in what the host would do:
// the action and the fields that steer it (reasons are for people and are
// not compared).
func Differs(a, b sdk.Decision) bool {
	sameNext := (a.NextCheck == nil) == (b.NextCheck == nil) && (a.NextCheck == nil || a.NextCheck.Equal(*b.NextCheck))
	return a.Action != b.Action || a.RestartOnChange != b.RestartOnChange || a.OnPullFailure != b.OnPullFailure || !sameNext
}
