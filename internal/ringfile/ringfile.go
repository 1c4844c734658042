// Package ringfile is a bounded append-only file of lines in a directory:
// NAME.jsonl, moved to NAME.1.jsonl once it passes its size, so at most two
// files of about that size are kept. Lines are appended without fsync: the
// records kept this way (decisions, events) are histories, and a line lost
// in a power cut is a line less, not a wrong state. Both the decision
// record (host/decisions) and the event ring (host/events) are one.
package ringfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// File appends lines to a ring. Its methods are safe for concurrent use.
type File struct {
	live, old string
	max       int64
	what      string // for errors: "the decision record"

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (creating, mode 0600) the ring name (the live file) and old
// (its rotated copy) in dir, rotating past max bytes. what names the ring
// in errors.
func Open(dir, name, old string, max int64, what string) (*File, error) {
	r := &File{live: filepath.Join(dir, name), old: filepath.Join(dir, old), max: max, what: what}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *File) open() error {
	f, err := os.OpenFile(r.live, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", r.what, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("opening %s: %w", r.what, err)
	}
	r.f, r.size = f, fi.Size()
	return nil
}

// Append writes line (which ends in a newline), rotating first when the
// live file is full.
func (r *File) Append(line []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return fmt.Errorf("writing %s: it is closed", r.what)
	}
	if r.size > 0 && r.size+int64(len(line)) > r.max {
		r.f.Close()
		r.f = nil
		if err := os.Rename(r.live, r.old); err != nil {
			return fmt.Errorf("rotating %s: %w", r.what, err)
		}
		if err := r.open(); err != nil {
			return err
		}
	}
	n, err := r.f.Write(line)
	r.size += int64(n)
	if err != nil {
		return fmt.Errorf("writing %s: %w", r.what, err)
	}
	return nil
}

// Close closes the file.
func (r *File) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// ReadDir reads the ring name/old in dir, the rotated copy first, calling
// each for every line. It reports os.ErrNotExist when neither file exists.
func ReadDir(dir, name, old string, each func(path string, line int, b []byte, last bool) error) error {
	found := false
	for _, n := range []string{old, name} {
		err := ReadFile(filepath.Join(dir, n), each)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		found = true
	}
	if !found {
		return os.ErrNotExist
	}
	return nil
}

// ReadFile calls each for every non-blank line of the file at path; last
// is set for the file's last line, which a power cut may have torn.
func ReadFile(path string, each func(path string, line int, b []byte, last bool) error) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	return Read(fh, path, each)
}

// Read is ReadFile on a reader.
func Read(rd io.Reader, path string, each func(path string, line int, b []byte, last bool) error) error {
	br := bufio.NewReader(rd)
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			if cerr := each(path, line, b, err == io.EOF); cerr != nil {
				return cerr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
}
