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
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/pullwise/pullwise/internal/ringfile"
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
	// Took is how long the module took (for the metrics; not recorded:
	// a replay measures its own).
	Took time.Duration `json:"-"`
}

// Log appends entries to the record. Its methods are safe for concurrent
// use.
type Log struct{ ring *ringfile.File }

// Open opens (creating) the record in dir.
func Open(dir string) (*Log, error) { return open(dir, MaxFileSize) }

func open(dir string, max int64) (*Log, error) {
	r, err := ringfile.Open(dir, Name, OldName, max, "the decision record")
	if err != nil {
		return nil, err
	}
	return &Log{ring: r}, nil
}

// Append records e, rotating the file first when it is full.
func (l *Log) Append(e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("recording a decision: %w", err)
	}
	return l.ring.Append(append(b, '\n'))
}

// Close closes the record.
func (l *Log) Close() error { return l.ring.Close() }

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
	err := ringfile.ReadDir(dir, Name, OldName, f.collect(&all))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no decision record in %s (the agent writes %s there once it has made a decision)", dir, Name)
	}
	if err != nil {
		return nil, err
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	return all, nil
}

// ReadFile reads one record file (a copy taken from a device, say). A
// torn last line (a power cut while it was written) is skipped; any other
// bad line is an error naming its line.
func ReadFile(path string, f Filter) ([]Entry, error) {
	var out []Entry
	if err := ringfile.ReadFile(path, f.collect(&out)); err != nil {
		return nil, err
	}
	return out, nil
}

func (f Filter) collect(out *[]Entry) func(string, int, []byte, bool) error {
	return func(path string, line int, b []byte, last bool) error {
		var e Entry
		if err := json.Unmarshal(b, &e); err != nil {
			if last {
				return nil // torn last line
			}
			return fmt.Errorf("%s:%d: not a decision record line: %w", path, line, err)
		}
		if f.keep(e) {
			*out = append(*out, e)
		}
		return nil
	}
}

// Differs reports whether two decisions differ in what the host would do:
// the action and the fields that steer it (reasons are for people and are
// not compared).
func Differs(a, b sdk.Decision) bool {
	sameNext := (a.NextCheck == nil) == (b.NextCheck == nil) && (a.NextCheck == nil || a.NextCheck.Equal(*b.NextCheck))
	return a.Action != b.Action || a.RestartOnChange != b.RestartOnChange || a.OnPullFailure != b.OnPullFailure || !sameNext
}
