package agent

import (
	"encoding/json"
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/statedb"
)

// bumps are counter increases asked through the API (pullwise refresh,
// restart, purge), as a controller would send them. They are added to the
// configuration file's counters and persisted in the state file before the
// API answers, so an accepted request survives a crash and never makes a
// counter go backwards.
type bumps struct {
	db *bolt.DB
	mu sync.Mutex
	m  map[string]*config.Counters
}

func loadBumps(db *bolt.DB) (*bumps, error) {
	b := &bumps{db: db, m: map[string]*config.Counters{}}
	err := db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(statedb.BucketAPICounters)
		if err != nil {
			return err
		}
		return bk.ForEach(func(k, v []byte) error {
			var c config.Counters
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			b.m[string(k)] = &c
			return nil
		})
	})
	return b, err
}

// add increases one counter of an app and persists it.
func (b *bumps) add(uuid, op string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := config.Counters{}
	if old := b.m[uuid]; old != nil {
		c = *old
	}
	switch op {
	case "restart":
		c.Restart++
	case "purge":
		c.Purge++
	case "refresh":
		c.RefreshImage++
	default:
		return errors.New("unknown operation " + op)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(statedb.BucketAPICounters).Put([]byte(uuid), data)
	}); err != nil {
		return err
	}
	b.m[uuid] = &c
	return nil
}

func (b *bumps) apply(c *config.Config) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range c.Apps {
		if x := b.m[c.Apps[i].UUID]; x != nil {
			c.Apps[i].AddCounters(*x)
		}
	}
}
