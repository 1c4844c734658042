package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/config"
)

// The state file keeps, per app, the configuration as last acted upon (its
// counters included) and its record: what its container runs, and the
// journal of a container action under way. An action is recorded as done
// only when it has completed, so after a crash the journal is compared with
// what the container runs: a completed action is recorded, an interrupted
// one done; a completed one is never repeated.
var (
	bucketApplied = []byte("applied-apps")
	bucketStatus  = []byte("app-status")
	bucketDevice  = []byte("device")
	keyDevice     = []byte("device")
)

type stateStore struct {
	db *bolt.DB

	mu    sync.Mutex
	saved map[string][]byte // app uuid -> what is on disk (record, then applied), to skip writes that change nothing
}

// openState keeps the app records in buckets of their own in db (the
// agent's one state file, see host/statedb).
func openState(db *bolt.DB) (*stateStore, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketApplied, bucketStatus, bucketDevice} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("initialising the app state in %s: %w", db.Path(), err)
	}
	return &stateStore{db: db, saved: map[string][]byte{}}, nil
}

func put(tx *bolt.Tx, bucket, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(key, b)
}

// applied returns the configuration as last acted upon (nil if none).
func (s *stateStore) applied() (*config.Config, error) {
	var c config.Config
	var any bool
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketDevice).Get(keyDevice); v != nil {
			any = true
			if err := json.Unmarshal(v, &c.Device); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketApplied).ForEach(func(_, v []byte) error {
			any = true
			var a config.App
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			c.Apps = append(c.Apps, a)
			return nil
		})
	})
	if err != nil || !any {
		return nil, err
	}
	return &c, nil
}

// save writes an app's record and the configuration acted upon for it in
// one transaction, unless they are what the file already holds: flash
// wears, and most pieces of work (a check that found nothing new) change
// nothing a reader can see but a time.
func (s *stateStore) save(rec AppInfo, applied *config.App) error {
	r, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	var a []byte
	if applied != nil {
		if a, err = json.Marshal(applied); err != nil {
			return err
		}
	}
	both := append(append(append([]byte{}, r...), 0), a...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(s.saved[rec.UUID], both) {
		return nil
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketStatus).Put([]byte(rec.UUID), r); err != nil {
			return err
		}
		if a == nil {
			return nil
		}
		return tx.Bucket(bucketApplied).Put([]byte(rec.UUID), a)
	})
	if err != nil {
		return fmt.Errorf("saving the state of app %s: %w", rec.UUID, err)
	}
	s.saved[rec.UUID] = both
	return nil
}

func (s *stateStore) setDevice(d config.Device) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketDevice, keyDevice, d) })
}

func (s *stateStore) forget(uuid string) error {
	s.mu.Lock()
	delete(s.saved, uuid)
	s.mu.Unlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketApplied).Delete([]byte(uuid)); err != nil {
			return err
		}
		return tx.Bucket(bucketStatus).Delete([]byte(uuid))
	})
}

func (s *stateStore) statuses() ([]AppInfo, error) {
	var out []AppInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStatus).ForEach(func(_, v []byte) error {
			var st AppInfo
			if err := json.Unmarshal(v, &st); err != nil {
				return err
			}
			out = append(out, st)
			return nil
		})
	})
	return out, err
}
