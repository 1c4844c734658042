// Package statedb is pullwise's one state file: a bbolt database in the
// state directory (state.db, mode 0600) holding the image store, the apps'
// records and journals, and the counter increases asked through the API,
// each package in buckets of its own. One file means one kind of
// transaction for everything the agent persists: a journal entry and the
// latches it brings are written together or not at all.
//
// Agents before this one kept three files (images.db, apps.db, bumps.json).
// Open moves their contents into state.db on first start and removes them;
// nothing is asked of the operator.
package statedb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Name is the state file's name in the state directory.
const Name = "state.db"

// BucketAPICounters holds the counter increases asked through the API, by
// app uuid (host/agent).
var BucketAPICounters = []byte("api-counters")

// legacy are the files of earlier agents, in the order they are merged.
var legacy = []string{"images.db", "apps.db", "bumps.json"}

// Open opens (creating, and migrating from the earlier files, if needed)
// the state file in dir. Only one process may hold it: a second waits a
// second, then fails saying so.
func Open(dir string) (*bolt.DB, error) {
	path := filepath.Join(dir, Name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := migrate(dir); err != nil {
			return nil, fmt.Errorf("moving the earlier state files into %s: %w", path, err)
		}
	}
	db, err := open(path)
	if err != nil {
		return nil, err
	}
	// A migration that stopped after state.db was in place left the old
	// files: their content is in state.db.
	for _, name := range legacy {
		os.Remove(filepath.Join(dir, name))
	}
	return db, nil
}

func open(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("state %s is in use by another process (is another pullwise agent running with this state directory?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	return db, nil
}

// migrate copies the earlier files' buckets (and bumps.json as
// BucketAPICounters) into a new state file, put in place by rename once
// complete. With no earlier files it does nothing.
func migrate(dir string) error {
	var found bool
	for _, name := range legacy {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			found = true
		}
	}
	if !found {
		return nil
	}
	tmp := filepath.Join(dir, Name+".migrating")
	os.Remove(tmp)
	dst, err := open(tmp)
	if err != nil {
		return err
	}
	err = dst.Update(func(tx *bolt.Tx) error {
		for _, name := range legacy[:2] {
			if err := copyBuckets(tx, filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return copyCounters(tx, filepath.Join(dir, "bumps.json"))
	})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, Name))
}

func copyBuckets(dst *bolt.Tx, path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return err
	}
	defer src.Close()
	return src.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			// Keys and values live in src's memory map, gone when src closes,
			// before dst commits: copy them.
			to, err := dst.CreateBucketIfNotExists(bytes.Clone(name))
			if err != nil {
				return err
			}
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return nil // nested buckets: none in the earlier files
				}
				return to.Put(bytes.Clone(k), bytes.Clone(v))
			})
		})
	})
}

func copyCounters(dst *bolt.Tx, path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("bumps.json: %w", err)
	}
	b, err := dst.CreateBucketIfNotExists(BucketAPICounters)
	if err != nil {
		return err
	}
	for id, v := range m {
		if err := b.Put([]byte(id), v); err != nil {
			return err
		}
	}
	return nil
}
