package eve

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	evecfg "github.com/lf-edge/eve-api/go/config"

	"github.com/pullwise/pullwise/internal/atomicfile"
)

// GenerationsFile keeps, in the state directory, the ContentTree
// generation counts last seen and each app's refresh counter.
const GenerationsFile = "eve-generations.json"

// Generations turns ContentTree generation_count changes into each app's
// refreshImage counter: when a tree an app uses changes its count (in
// either direction: EVE acts on a count that differs), the app's counter
// goes up by one. The counters only grow, across restarts, so a refresh
// asked is never lost: if the app's part is rejected meanwhile, the mended
// part still carries the higher counter.
type Generations struct {
	Trees   map[string]int64 `json:"trees"`   // ContentTree uuid -> generation_count last seen
	Refresh map[string]int64 `json:"refresh"` // app uuid -> its refreshImage counter
	// Volumes are the last configuration's volumes that apps use, by
	// uuid: what ZInfoVolume reports.
	Volumes map[string]Volume `json:"volumes,omitempty"`
	changed bool
}

// Volume is one of the configuration's volumes as its info needs it.
type Volume struct {
	Name string `json:"name,omitempty"`
	App  string `json:"app"`
	// Tree is the ContentTree the volume comes from; empty for a blank one.
	Tree       string `json:"tree,omitempty"`
	Generation int64  `json:"generation,omitempty"`
}

// noteVolumes keeps vols as the configuration's volumes.
func (g *Generations) noteVolumes(vols map[string]Volume) {
	if !maps.Equal(g.Volumes, vols) {
		g.Volumes, g.changed = vols, true
	}
}

// LoadGenerations reads the record in dir (none yet: an empty record).
func LoadGenerations(dir string) (*Generations, error) {
	g := &Generations{Trees: map[string]int64{}, Refresh: map[string]int64{}}
	b, err := os.ReadFile(filepath.Join(dir, GenerationsFile))
	if errors.Is(err, os.ErrNotExist) {
		return g, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, g); err != nil {
		return nil, fmt.Errorf("%s: %w", GenerationsFile, err)
	}
	if g.Trees == nil {
		g.Trees = map[string]int64{}
	}
	if g.Refresh == nil {
		g.Refresh = map[string]int64{}
	}
	return g, nil
}

// Save writes the record to dir when it changed (a temporary file renamed
// over it, synced: a refresh counter that went back would lose a refresh).
func (g *Generations) Save(dir string) error {
	if !g.changed {
		return nil
	}
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, GenerationsFile), b, true); err != nil {
		return err
	}
	g.changed = false
	return nil
}

// apply takes the trees each app uses now (by app uuid): every app using a
// tree whose count changed since the last look gets its counter raised by
// one (once, however many of its trees changed), then the counts are
// noted. It returns each app's counter.
func (g *Generations) apply(usedBy map[string][]string, trees map[string]*evecfg.ContentTree) map[string]int64 {
	changed := map[string]bool{}
	for id, ct := range trees {
		was, seen := g.Trees[id]
		if seen && was != ct.GetGenerationCount() {
			changed[id] = true
		}
	}
	out := map[string]int64{}
	for app, used := range usedBy {
		if slices.ContainsFunc(used, func(id string) bool { return changed[id] }) {
			g.Refresh[app]++
			g.changed = true
		}
		out[app] = g.Refresh[app]
	}
	for id, ct := range trees {
		if was, seen := g.Trees[id]; !seen || was != ct.GetGenerationCount() {
			g.Trees[id] = ct.GetGenerationCount()
			g.changed = true
		}
	}
	return out
}
