package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/config"
)

// The state file keeps, per app, the configuration as last acted upon (its
// counters included) and its status. An action is recorded as done only
// when it has completed, so after a crash the configuration's counters are
// compared with the acted ones and an interrupted action runs again; a
// completed one is never repeated.
var (
	bucketApplied = []byte("applied-apps")
	bucketStatus  = []byte("app-status")
	bucketDevice  = []byte("device")
	keyDevice     = []byte("device")
)

type stateStore struct{ db *bolt.DB }

func openState(path string) (*stateStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("app state %s is in use by another process (is another pullwise agent running with this state directory?)", path)
		}
		return nil, fmt.Errorf("opening app state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketApplied, bucketStatus, bucketDevice} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &stateStore{db: db}, nil
}

func (s *stateStore) close() error { return s.db.Close() }

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

func (s *stateStore) setApplied(a config.App) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketApplied, []byte(a.UUID), a) })
}

func (s *stateStore) setDevice(d config.Device) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketDevice, keyDevice, d) })
}

func (s *stateStore) forget(uuid string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketApplied).Delete([]byte(uuid)); err != nil {
			return err
		}
		return tx.Bucket(bucketStatus).Delete([]byte(uuid))
	})
}

func (s *stateStore) status(uuid string) (AppInfo, error) {
	var st AppInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketStatus).Get([]byte(uuid))
		if v == nil {
			return nil
		}
		return json.Unmarshal(v, &st)
	})
	return st, err
}

func (s *stateStore) setStatus(st AppInfo) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketStatus, []byte(st.UUID), st) })
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
