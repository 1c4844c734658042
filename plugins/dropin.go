package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// Dir keeps the modules of a drop-in directory loaded: every NAME.wasm in it
// is the policy module NAME. New and changed files are picked up by Sync, or
// continuously by Watch, without a restart. A file that fails to load (or
// does not match its sha256 pin) leaves the previous version of that module
// active, and the failure is reported by Status and logged.
type Dir struct {
	rt     *Runtime
	path   string
	pins   map[string]string
	logger hclog.Logger

	mu       sync.RWMutex
	active   map[string]*Module
	attempts map[string]attempt // last file contents tried, per name
}

type attempt struct {
	sha256 string
	err    error
	at     time.Time
}

// DirOption configures a Dir.
type DirOption func(*Dir)

// WithPins requires module NAME to have the sha256 pins[NAME] (hex, with or
// without a "sha256:" prefix). A file with any other content is refused.
func WithPins(pins map[string]string) DirOption {
	return func(d *Dir) {
		for name, sum := range pins {
			d.pins[name] = strings.ToLower(strings.TrimPrefix(sum, "sha256:"))
		}
	}
}

// OpenDir loads the modules in path. The directory need not exist yet: an
// empty drop-in directory is the normal case.
func OpenDir(ctx context.Context, rt *Runtime, path string, opts ...DirOption) (*Dir, error) {
	d := &Dir{rt: rt, path: path, pins: map[string]string{}, logger: rt.logger.Named("dropin"),
		active: map[string]*Module{}, attempts: map[string]attempt{}}
	for _, o := range opts {
		o(d)
	}
	if _, err := d.Sync(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Module returns the active version of module name.
func (d *Dir) Module(name string) (*Module, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	m, ok := d.active[name]
	return m, ok
}

// SyncReport says what one Sync changed.
type SyncReport struct {
	Loaded   []string         // new names
	Replaced []string         // names whose file changed and loaded
	Removed  []string         // names whose file is gone
	Failed   map[string]error // names whose current file did not load; the previous version, if any, stays active
}

// Changed reports whether the sync changed any active module.
func (r SyncReport) Changed() bool { return len(r.Loaded)+len(r.Replaced)+len(r.Removed) > 0 }

// Sync brings the active modules in line with the directory. It reads every
// file but compiles only those whose contents changed since the last attempt,
// so a broken file is reported once, not on every scan. The returned error is
// for the directory itself; per-module failures are in the report.
func (d *Dir) Sync(ctx context.Context) (SyncReport, error) {
	rep := SyncReport{Failed: map[string]error{}}
	files, err := filepath.Glob(filepath.Join(d.path, "*.wasm"))
	if err != nil {
		return rep, err
	}
	if _, err := os.Stat(d.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return rep, fmt.Errorf("policy module directory %s: %w", d.path, err)
	}
	present := map[string]bool{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".wasm")
		present[name] = true
		wasm, err := os.ReadFile(f)
		if err != nil {
			rep.Failed[name] = err
			continue
		}
		sum := sha256.Sum256(wasm)
		hexsum := hex.EncodeToString(sum[:])
		d.mu.RLock()
		last, tried := d.attempts[name]
		d.mu.RUnlock()
		if tried && last.sha256 == hexsum {
			if last.err != nil {
				rep.Failed[name] = last.err
			}
			continue
		}
		m, err := d.load(ctx, name, wasm, hexsum)
		d.mu.Lock()
		d.attempts[name] = attempt{sha256: hexsum, err: err, at: time.Now()}
		old, had := d.active[name]
		if err == nil {
			d.active[name] = m
		}
		d.mu.Unlock()
		switch {
		case err != nil:
			rep.Failed[name] = err
			if had {
				d.logger.Error("policy module did not load; the previous version stays active", "module", name, "active_sha256", old.Info.SHA256, "error", err)
			} else {
				d.logger.Error("policy module did not load", "module", name, "error", err)
			}
		case had:
			old.Close(ctx)
			rep.Replaced = append(rep.Replaced, name)
			d.logger.Info("policy module replaced", "module", name, "version", m.Info.Metadata.Version, "sha256", hexsum)
		default:
			rep.Loaded = append(rep.Loaded, name)
			d.logger.Info("policy module loaded", "module", name, "version", m.Info.Metadata.Version, "sha256", hexsum)
		}
	}
	d.mu.Lock()
	for name, m := range d.active {
		if !present[name] {
			delete(d.active, name)
			m.Close(ctx)
			rep.Removed = append(rep.Removed, name)
			d.logger.Info("policy module removed", "module", name)
		}
	}
	for name := range d.attempts {
		if !present[name] {
			delete(d.attempts, name)
		}
	}
	d.mu.Unlock()
	sort.Strings(rep.Loaded)
	sort.Strings(rep.Replaced)
	sort.Strings(rep.Removed)
	return rep, nil
}

func (d *Dir) load(ctx context.Context, name string, wasm []byte, sum string) (*Module, error) {
	if pin, ok := d.pins[name]; ok && pin != sum {
		return nil, fmt.Errorf("module %s: file sha256 %s does not match the pinned sha256 %s", name, sum, pin)
	}
	return d.rt.Load(ctx, name, wasm)
}

// ModuleStatus is one drop-in module as Status reports it.
type ModuleStatus struct {
	Name string `json:"name"`
	// Active is the version in use, if any.
	Active *Info `json:"active,omitempty"`
	// Error is why the current file is not the active version, if it is not.
	Error string `json:"error,omitempty"`
	// FailedSHA256 is the sha256 of the file that failed to load.
	FailedSHA256 string `json:"failedSha256,omitempty"`
}

// Status lists every module the directory has or had a file for, by name.
func (d *Dir) Status() []ModuleStatus {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []ModuleStatus
	for name, a := range d.attempts {
		s := ModuleStatus{Name: name}
		if m, ok := d.active[name]; ok {
			info := m.Info
			s.Active = &info
		}
		if a.err != nil {
			s.Error, s.FailedSHA256 = a.err.Error(), a.sha256
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Watch syncs whenever the directory changes, until ctx ends. Events are
// coalesced for settle, so a file still being copied is loaded once it is
// complete (a partial file fails, and the final write brings a new attempt).
// onSync, if not nil, sees every report.
func (d *Dir) Watch(ctx context.Context, settle time.Duration, onSync func(SyncReport)) error {
	if err := os.MkdirAll(d.path, 0o755); err != nil {
		return fmt.Errorf("policy module directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching policy modules: %w", err)
	}
	defer w.Close()
	if err := w.Add(d.path); err != nil {
		return fmt.Errorf("watching %s: %w", d.path, err)
	}
	// Files may have changed between OpenDir and now.
	sync := func() {
		rep, err := d.Sync(ctx)
		if err != nil {
			d.logger.Error("scanning policy modules", "error", err)
			return
		}
		if onSync != nil {
			onSync(rep)
		}
	}
	sync()
	timer := time.NewTimer(settle)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("policy module watcher closed")
			}
			if strings.HasSuffix(ev.Name, ".wasm") {
				timer.Reset(settle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("policy module watcher closed")
			}
			d.logger.Warn("policy module watcher", "error", err)
			timer.Reset(settle) // events may have been lost: rescan
		case <-timer.C:
			sync()
		}
	}
}

// Close releases every active module.
func (d *Dir) Close(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, m := range d.active {
		m.Close(ctx)
		delete(d.active, name)
	}
}
