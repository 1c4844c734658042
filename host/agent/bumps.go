package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/statedb"
	"github.com/pullwise/pullwise/internal/atomicfile"
)

// BumpsName is the journal of the counter increases asked through the
// API, in the state directory: one JSON line per accepted request, the
// app's whole API counters after it.
const BumpsName = "api-counters.jsonl"

// bumps are counter increases asked through the API (pullwise refresh,
// restart, purge), as a controller would send them. They are added to the
// configuration file's counters and made durable before the API answers,
// so an accepted request survives a crash and never makes a counter go
// backwards.
//
// They are a journal of their own rather than a bbolt bucket of the state
// file: appending a line and one fdatasync is one flush per request, where
// a bbolt commit is two (its pages, then its meta page). See RATIONALE,
// "One state file".
type bumps struct {
	path  string
	mu    sync.Mutex
	m     map[string]config.Counters
	f     *os.File // the journal, open for appending once a request came
	lines int
}

// loadBumps reads the journal in dir (and the bucket earlier agents kept
// the counters in, moved into the journal once). A line torn by a power
// cut was never acknowledged and is skipped.
func loadBumps(db *bolt.DB, dir string) (*bumps, error) {
	b := &bumps{path: filepath.Join(dir, BumpsName), m: map[string]config.Counters{}}
	legacy := false
	if err := db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(statedb.BucketAPICounters)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			var c config.Counters
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("API counters of %s: %w", k, err)
			}
			legacy = true
			b.merge(string(k), c)
			return nil
		})
	}); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(b.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var l bumpLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.App == "" {
			continue // torn by a power cut: never acknowledged
		}
		b.lines++
		b.merge(l.App, l.Counters)
	}
	if legacy || b.lines > 2*len(b.m)+64 {
		if err := b.compact(); err != nil {
			return nil, err
		}
	}
	if legacy {
		// Only once the journal holding them is durable.
		if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(statedb.BucketAPICounters) }); err != nil {
			return nil, err
		}
	}
	return b, nil
}

type bumpLine struct {
	App      string          `json:"app"`
	Counters config.Counters `json:"counters"`
}

// merge keeps the larger of each counter: counters never go backwards.
func (b *bumps) merge(app string, c config.Counters) {
	old := b.m[app]
	b.m[app] = config.Counters{Restart: max(old.Restart, c.Restart), Purge: max(old.Purge, c.Purge),
		RefreshImage: max(old.RefreshImage, c.RefreshImage)}
}

// compact writes the journal afresh, one line per app, durably (the file
// and its directory synced).
func (b *bumps) compact() error {
	var buf bytes.Buffer
	for app, c := range b.m {
		line, _ := json.Marshal(bumpLine{App: app, Counters: c})
		buf.Write(append(line, '\n'))
	}
	if err := atomicfile.Write(b.path, buf.Bytes(), true); err != nil {
		return err
	}
	b.lines = len(b.m)
	return syncDir(filepath.Dir(b.path))
}

// add increases one counter of an app and makes it durable: one line
// appended, one fdatasync.
func (b *bumps) add(uuid, op string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.m[uuid]
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
	if b.f == nil {
		_, statErr := os.Stat(b.path)
		f, err := os.OpenFile(b.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("API counters: %w", err)
		}
		if errors.Is(statErr, os.ErrNotExist) {
			if err := syncDir(filepath.Dir(b.path)); err != nil { // the new file's name, once
				f.Close()
				return fmt.Errorf("API counters: %w", err)
			}
		}
		b.f = f
	}
	line, _ := json.Marshal(bumpLine{App: uuid, Counters: c})
	if _, err := b.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("API counters: %w", err)
	}
	if err := fdatasync(b.f); err != nil {
		return fmt.Errorf("API counters: %w", err)
	}
	b.m[uuid] = c
	b.lines++
	return nil
}

// close closes the journal.
func (b *bumps) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.f != nil {
		b.f.Close()
		b.f = nil
	}
}

func (b *bumps) apply(c *config.Config) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range c.Apps {
		if x, ok := b.m[c.Apps[i].UUID]; ok {
			c.Apps[i].AddCounters(x)
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// fdatasync flushes f's data (and the size it needs), not its times.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
