// Package atomicfile writes a file whole or not at all: a temporary file
// in the same directory, renamed over the old one, so a reader (or a power
// cut) never sees half of it. Sync adds an fsync before the rename, for
// files whose loss would be a wrong state rather than a line less.
package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Write writes b to path (mode 0600, its directory made 0700 if missing).
// With sync the data reaches the disk before it replaces the old file.
//
// The status file is written with it after every action, so it makes no
// system call a write does not need: the directory is made only when the
// temporary file cannot be, and the temporary file removed only when it
// was not renamed.
func Write(path string, b []byte, sync bool) (err error) {
	dir, pattern := filepath.Dir(path), filepath.Base(path)+".*.tmp"
	f, err := os.CreateTemp(dir, pattern)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		f, err = os.CreateTemp(dir, pattern)
	}
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
