// Package atomicfile writes a file whole or not at all: a temporary file
// in the same directory, renamed over the old one, so a reader (or a power
// cut) never sees half of it. Sync adds an fsync before the rename, for
// files whose loss would be a wrong state rather than a line less.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes b to path (mode 0600, its directory made 0700 if missing).
// With sync the data reaches the disk before it replaces the old file.
func Write(path string, b []byte, sync bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // a no-op once renamed
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
