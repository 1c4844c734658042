package agent

import (
	"encoding/json"
	"errors"
	"os"
	"sync"

	"github.com/pullwise/pullwise/host/config"
)

// bumps are counter increases asked through the API (pullwise refresh,
// restart, purge), as a controller would send them. They are added to the
// configuration file's counters and persisted, so they survive restarts and
// never make a counter go backwards.
type bumps struct {
	path string
	mu   sync.Mutex
	m    map[string]*counters
}

type counters struct {
	Restart      int64 `json:"restart"`
	Purge        int64 `json:"purge"`
	RefreshImage int64 `json:"refreshImage"`
}

func loadBumps(path string) (*bumps, error) {
	b := &bumps{path: path, m: map[string]*counters{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return nil, err
	}
	return b, json.Unmarshal(data, &b.m)
}

// add increases one counter of an app and persists it.
func (b *bumps) add(uuid, op string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.m[uuid]
	if c == nil {
		c = &counters{}
		b.m[uuid] = c
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
	data, err := json.Marshal(b.m)
	if err != nil {
		return err
	}
	tmp := b.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, b.path)
}

func (b *bumps) apply(c *config.Config) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range c.Apps {
		if x := b.m[c.Apps[i].UUID]; x != nil {
			c.Apps[i].Restart.Counter += x.Restart
			c.Apps[i].Purge.Counter += x.Purge
			c.Apps[i].RefreshImage.Counter += x.RefreshImage
		}
	}
}
