package statedb

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestMigratesEarlierFiles: a state directory of an earlier agent (two
// bbolt files and a JSON file) is moved into state.db on first open, every
// bucket and key kept, and the earlier files removed.
func TestMigratesEarlierFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, bucket, key, value string) {
		db, err := bolt.Open(filepath.Join(dir, name), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucketIfNotExists([]byte(bucket))
			return b.Put([]byte(key), []byte(value))
		})
		db.Close()
	}
	write("images.db", "image-object-ids", "img-1", `{"id":"img-1"}`)
	write("apps.db", "app-status", "app-1", `{"uuid":"app-1"}`)
	os.WriteFile(filepath.Join(dir, "bumps.json"), []byte(`{"app-1":{"restart":2,"purge":0,"refreshImage":1}}`), 0o600)

	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := map[[2]string]string{
		{"image-object-ids", "img-1"}:        `{"id":"img-1"}`,
		{"app-status", "app-1"}:              `{"uuid":"app-1"}`,
		{string(BucketAPICounters), "app-1"}: `{"restart":2,"purge":0,"refreshImage":1}`,
	}
	db.View(func(tx *bolt.Tx) error {
		for k, v := range want {
			b := tx.Bucket([]byte(k[0]))
			if b == nil || string(b.Get([]byte(k[1]))) != v {
				t.Errorf("%s/%s not migrated", k[0], k[1])
			}
		}
		return nil
	})
	for _, name := range legacy {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s left behind", name)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, Name)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state.db: %v %v", fi, err)
	}
}

// TestFreshDirectory: no earlier files, a new empty state file.
func TestFreshDirectory(t *testing.T) {
	db, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// TestSecondProcessIsRefused names the likely cause.
func TestSecondProcessIsRefused(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(dir); err == nil {
		t.Fatal("a second open succeeded")
	}
}
