package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/statedb"
)

// TestBumpsSurviveARestart: a counter increase asked through the API is in
// its journal before the API answers (a line torn by a power cut is
// skipped), counters earlier agents kept in the state file are moved into
// it once, and they are added to the configuration's counters after the
// agent restarts.
func TestBumpsSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	db, err := statedb.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// An earlier agent's counters, in the state file's bucket.
	if err := db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(statedb.BucketAPICounters)
		if err != nil {
			return err
		}
		return bk.Put([]byte("app-2"), []byte(`{"restart":0,"purge":2,"refreshImage":0}`))
	}); err != nil {
		t.Fatal(err)
	}
	b, err := loadBumps(db, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"refresh", "refresh", "restart"} {
		if err := b.add("app-1", op); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.add("app-1", "reboot"); err == nil {
		t.Fatal("an unknown operation was accepted")
	}
	b.close()
	// A power cut in the middle of a fourth request's line.
	f, err := os.OpenFile(filepath.Join(dir, BumpsName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"app":"app-1","counters":{"restart":9`)
	f.Close()
	db.Close()

	db, err = statedb.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b, err = loadBumps(db, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(statedb.BucketAPICounters) != nil {
			t.Error("the earlier agent's bucket is still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	a := agentOn(t, "apps:\n  - {uuid: app-1, displayName: web, restart: {counter: 4}, refreshImage: {counter: 1}, drives: [{kind: container, image: {uuid: i, name: \"r/a:1\"}}]}\n"+
		"  - {uuid: app-2, displayName: db, drives: [{kind: container, image: {uuid: j, name: \"r/b:1\"}}]}\n")
	c, err := a.readConfig()
	if err != nil {
		t.Fatal(err)
	}
	b.apply(c)
	if c.Apps[0].Restart.Counter != 5 || c.Apps[0].RefreshImage.Counter != 3 || c.Apps[0].Purge.Counter != 0 {
		t.Fatalf("counters %+v %+v %+v", c.Apps[0].Restart, c.Apps[0].RefreshImage, c.Apps[0].Purge)
	}
	if c.Apps[1].Purge.Counter != 2 {
		t.Fatalf("the earlier agent's purge counter: %+v", c.Apps[1].Purge)
	}
}

// TestReadConfigParsesOnlyChangedFiles: the last parse is reused while the
// file is unchanged, the counters added to a copy never leak into it, and
// an edit is seen.
func TestReadConfigParsesOnlyChangedFiles(t *testing.T) {
	a := agentOn(t, "apps:\n  - {uuid: app-1, displayName: web, drives: [{kind: container, image: {uuid: i, name: \"r/a:1\"}}]}\n")
	c1, err := a.readConfig()
	if err != nil {
		t.Fatal(err)
	}
	c1.Apps[0].Restart.Counter = 99 // as bumps.apply does
	c2, err := a.readConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c2.Apps[0].Restart.Counter != 0 {
		t.Fatal("a change to one copy reached the next")
	}
	if a.parsed == nil {
		t.Fatal("nothing kept")
	}
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(a.o.ConfigPath, []byte("apps:\n  - {uuid: app-1, displayName: db, drives: [{kind: container, image: {uuid: i, name: \"r/a:1\"}}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c3, err := a.readConfig()
	if err != nil || c3.Apps[0].DisplayName != "db" {
		t.Fatalf("the edit was not seen: %v %+v", err, c3)
	}
	os.WriteFile(a.o.ConfigPath, []byte("apps: [{uuid"), 0o644)
	if _, err := a.readConfig(); err == nil {
		t.Fatal("a malformed file parsed")
	}
}

func agentOn(t *testing.T, config string) *Agent {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Agent{o: Options{ConfigPath: path}}
}
