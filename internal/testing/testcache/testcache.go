// Package testcache names the compilation cache the tests of every package
// share, so each policy module compiles once per machine rather than once
// per test (a 5 MB Go module takes over a second). It lives in the user's
// cache directory, like Go's own build cache, not in the temporary
// directory that tests must leave clean.
package testcache

import (
	"os"
	"path/filepath"
)

// ModuleDir is the shared compilation cache for policy modules in tests.
func ModuleDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = filepath.Join(os.TempDir(), "pullwise-cache") // no home: still shared
	}
	return filepath.Join(dir, "pullwise", "test-module-cache")
}
