package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		path func(dir string) string
		sync bool
	}{
		{"existing directory", func(dir string) string { return filepath.Join(dir, "status.json") }, false},
		{"missing directories, synced", func(dir string) string { return filepath.Join(dir, "a", "b", "status.json") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tc.path(dir)
			for _, content := range []string{"first", "second, longer"} {
				if err := Write(path, []byte(content), tc.sync); err != nil {
					t.Fatal(err)
				}
				if got, err := os.ReadFile(path); err != nil || string(got) != content {
					t.Fatalf("%q, %v; want %q", got, err, content)
				}
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v; want 0600", fi.Mode().Perm())
			}
			left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.tmp"))
			if len(left) != 0 {
				t.Errorf("temporary files left: %q", left)
			}
		})
	}
	// A write that cannot replace the file (a directory in its place)
	// leaves neither a temporary file nor a changed file.
	dir := t.TempDir()
	path := filepath.Join(dir, "taken")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new"), false); err == nil {
		t.Fatal("a directory was replaced")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Errorf("temporary files left after a failed write: %q", left)
	}
}
