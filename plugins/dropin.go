package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/internal/printable"
)

// Dir keeps the modules of a drop-in directory loaded: every NAME.wasm in it
// is the policy module NAME. New and changed files are picked up by Sync, or
// continuously by Watch, without a restart. A file that fails to load (or
// does not match its sha256 pin) leaves the previous version of that module
// active, and the failure is reported by Status and logged.
//
// The directory is a trust boundary: a module in it decides for the apps
// that name it. So the directory and its files must be owned by root (or by
// the user the agent runs as) and writable by no one else; anything else is
// refused, with the reason, and nothing in it is loaded. File names must be
// valid policy names (lower-case letters, digits, '.', '_', '-', starting
// with a letter or digit, at most 64 characters); other entries ending in
// .wasm are reported and ignored.
type Dir struct {
	rt     *Runtime
	path   string
	logger hclog.Logger

	syncing  sync.Mutex // one Sync at a time (the watcher's, SetPins')
	mu       sync.RWMutex
	pins     map[string]string
	verify   VerifyFunc // nil: modules need no signature
	verifyID string     // names the verifier (its keys): a change re-syncs
	active   map[string]*Module
	attempts map[string]attempt // last file contents tried, per name
	ignored  map[string]string  // directory entries not loaded, and why
	refused  error              // the directory itself is not trusted
}

type attempt struct {
	sha256 string
	pin    string // the pin the attempt was checked against
	// verified is the verifier and the signature file the attempt was
	// checked with: a signature added later, or new keys, try it again.
	verified string
	err      error
	at       time.Time
}

// VerifyFunc checks a module file's signature before the module loads:
// path is the module file, wasm its contents; the signature is in a file
// beside it (NAME.wasm.*), and a change to any of those tries it again. A
// module it refuses never runs, and the previous version of that module
// stays active.
type VerifyFunc func(path string, wasm []byte) error

// SetVerify sets the signature check (nil: none) and syncs when it changed;
// id names it (its keys), so an unchanged check costs nothing.
func (d *Dir) SetVerify(ctx context.Context, verify VerifyFunc, id string) (SyncReport, error) {
	d.mu.Lock()
	same := d.verifyID == id && (d.verify == nil) == (verify == nil)
	d.verify, d.verifyID = verify, id
	d.mu.Unlock()
	if same {
		return SyncReport{}, nil
	}
	return d.Sync(ctx)
}

// verifiedKey is what an attempt's verification depended on: the
// verifier's id and the sizes and times of the files beside the module
// (NAME.wasm.*: its signatures).
func (d *Dir) verifiedKey(path string) (VerifyFunc, string) {
	d.mu.RLock()
	verify, id := d.verify, d.verifyID
	d.mu.RUnlock()
	if verify == nil {
		return nil, ""
	}
	key := id
	beside, _ := filepath.Glob(path + ".*") // NAME.wasm.sig, NAME.wasm.sigstore.json...; names are globsafe
	for _, f := range beside {
		if fi, err := os.Stat(f); err == nil {
			key = fmt.Sprint(key, "\x00", filepath.Base(f), fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return verify, key
}

// DirOption configures a Dir; OpenDir returns the error of one that
// refuses its value.
type DirOption func(*Dir) error

// WithPins requires module NAME to have the sha256 pins[NAME] (hex, with or
// without a "sha256:" prefix). A file with any other content is refused.
// SetPins changes them later.
func WithPins(pins map[string]string) DirOption {
	return func(d *Dir) error { d.pins = normalizePins(pins); return nil }
}

// WithVerify sets the signature check modules must pass (see SetVerify).
func WithVerify(verify VerifyFunc, id string) DirOption {
	return func(d *Dir) error { d.verify, d.verifyID = verify, id; return nil }
}

func normalizePins(pins map[string]string) map[string]string {
	out := map[string]string{}
	for name, sum := range pins {
		out[name] = strings.ToLower(strings.TrimPrefix(strings.ToLower(sum), "sha256:"))
	}
	return out
}

// OpenDir loads the modules in path. The directory need not exist yet: an
// empty drop-in directory is the normal case.
func OpenDir(ctx context.Context, rt *Runtime, path string, opts ...DirOption) (*Dir, error) {
	d := &Dir{rt: rt, path: path, pins: map[string]string{}, logger: rt.logger.Named("dropin"),
		active: map[string]*Module{}, attempts: map[string]attempt{}, ignored: map[string]string{}}
	for _, o := range opts {
		if err := o(d); err != nil {
			return nil, err
		}
	}
	if _, err := d.Sync(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// SetPins replaces the sha256 pins, as a new configuration states them,
// and syncs: a file refused under the old pin is tried again under the new
// one, so a rotation works in either order (new file first, or new pin
// first), and a removed pin stops refusing its file.
//
// Unchanged pins cost nothing: every configuration passes them, and a scan
// reads and hashes every module file.
func (d *Dir) SetPins(ctx context.Context, pins map[string]string) (SyncReport, error) {
	next := normalizePins(pins)
	d.mu.Lock()
	same := maps.Equal(d.pins, next)
	d.pins = next
	d.mu.Unlock()
	if same {
		return SyncReport{}, nil
	}
	return d.Sync(ctx)
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

// nameRE is what a policy name (and so a drop-in file's base name) may be.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidName reports whether name may name a policy module.
func ValidName(name string) bool {
	return nameRE.MatchString(name) && !strings.HasSuffix(name, ".wasm")
}

// Sync brings the active modules in line with the directory. It reads every
// file but compiles only those whose contents (or pin) changed since the
// last attempt, so a broken file is reported once, not on every scan. The
// returned error is for the directory itself; per-module failures are in
// the report.
func (d *Dir) Sync(ctx context.Context) (SyncReport, error) {
	d.syncing.Lock()
	defer d.syncing.Unlock()
	rep := SyncReport{Failed: map[string]error{}}
	entries, err := os.ReadDir(d.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return rep, fmt.Errorf("policy module directory %s: %w", d.path, err)
	}
	present := map[string]bool{}
	ignored := map[string]string{}
	refused := trusted(d.path, true)
	if refused != nil {
		d.logger.Error("policy module directory refused; none of its modules is used", "error", refused)
		entries = nil
	}
	for _, e := range entries {
		base := e.Name()
		if !strings.HasSuffix(strings.ToLower(base), ".wasm") {
			continue
		}
		name := strings.TrimSuffix(base, ".wasm")
		switch {
		case !strings.HasSuffix(base, ".wasm"):
			ignored[base] = "the file name must end in lower-case .wasm"
			continue
		case !ValidName(name):
			ignored[base] = "not a valid policy name (lower-case letters, digits, '.', '_', '-'; starting with a letter or digit; at most 64 characters)"
			continue
		case e.IsDir():
			ignored[base] = "a directory, not a module file"
			continue
		}
		f := filepath.Join(d.path, base)
		if err := trusted(f, false); err != nil {
			ignored[base] = err.Error()
			continue
		}
		present[name] = true
		wasm, err := readModuleFile(f, d.rt.cfg.maxModuleSize)
		if err != nil {
			rep.Failed[name] = err
			continue
		}
		sum := sha256.Sum256(wasm)
		hexsum := hex.EncodeToString(sum[:])
		verify, verified := d.verifiedKey(f)
		d.mu.RLock()
		last, tried := d.attempts[name]
		pin := d.pins[name]
		d.mu.RUnlock()
		if tried && last.sha256 == hexsum && last.pin == pin && last.verified == verified {
			if last.err != nil {
				rep.Failed[name] = last.err
			}
			continue
		}
		var m *Module
		if verify != nil {
			err = verify(f, wasm)
		}
		if err == nil {
			m, err = d.load(ctx, name, wasm, hexsum, pin)
		}
		d.mu.Lock()
		d.attempts[name] = attempt{sha256: hexsum, pin: pin, verified: verified, err: err, at: time.Now()}
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
		case had && old == m:
		case had:
			old.Close(ctx)
			rep.Replaced = append(rep.Replaced, name)
			d.logger.Info("policy module replaced", "module", name, "version", printable.String(m.Info.Metadata.Version), "sha256", hexsum)
		default:
			rep.Loaded = append(rep.Loaded, name)
			d.logger.Info("policy module loaded", "module", name, "version", printable.String(m.Info.Metadata.Version), "sha256", hexsum)
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
	for base, why := range ignored {
		if d.ignored[base] != why {
			d.logger.Warn("ignoring a file in the policy module directory", "file", printable.String(base), "reason", why)
		}
	}
	d.ignored, d.refused = ignored, refused
	d.mu.Unlock()
	sort.Strings(rep.Loaded)
	sort.Strings(rep.Replaced)
	sort.Strings(rep.Removed)
	return rep, nil
}

// trusted checks that path (the directory, or a file in it) is owned by
// root or by the user the agent runs as, and writable by no one else: a
// module there decides for the device's apps.
func trusted(path string, isDir bool) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) && isDir {
		return nil // nothing to load yet
	}
	if err != nil {
		return err
	}
	what := "file"
	if isDir {
		what = "directory"
		if !fi.IsDir() {
			return fmt.Errorf("policy module directory %s is not a directory", path)
		}
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (a link or a device); refused", path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("policy module %s %s is writable by users other than its owner (mode %#o): refused; run `chmod go-w %s`", what, path, fi.Mode().Perm(), path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("policy module %s %s is owned by uid %d, not root or the agent's user: refused; run `chown root %s`", what, path, st.Uid, path)
	}
	return nil
}

// readModuleFile reads a module file, refusing one larger than max bytes
// before reading it (a 50 MB "module" must not cost the agent 50 MB).
func readModuleFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && max > 0 && fi.Size() > max {
		return nil, fmt.Errorf("module file %s is %d bytes, over the %d byte limit (WithMaxModuleSize)", path, fi.Size(), max)
	}
	return io.ReadAll(io.LimitReader(f, max+1))
}

func (d *Dir) load(ctx context.Context, name string, wasm []byte, sum, pin string) (*Module, error) {
	if pin != "" && pin != sum {
		return nil, fmt.Errorf("module %s: file sha256 %s does not match the pinned sha256 %s", name, sum, pin)
	}
	d.mu.RLock()
	old, had := d.active[name]
	d.mu.RUnlock()
	if had && old.Info.SHA256 == sum {
		return old, nil // tried again under a new pin: the same module
	}
	m, err := d.rt.Load(ctx, name, wasm)
	if err != nil {
		return nil, err
	}
	if md := m.Info.Metadata.Name; md != name {
		d.logger.Warn("a module's metadata names it differently from its file; the file name is its name", "module", name, "metadata_name", printable.String(md))
	}
	return m, nil
}

// ModuleStatus is one drop-in module (or an ignored file) as Status
// reports it.
type ModuleStatus struct {
	Name string `json:"name"`
	// Active is the version in use, if any.
	Active *Info `json:"active,omitempty"`
	// Error is why the current file is not the active version, if it is not
	// (or why a file is ignored, or why the whole directory is refused).
	Error string `json:"error,omitempty"`
	// FailedSHA256 is the sha256 of the file that failed to load.
	FailedSHA256 string `json:"failedSha256,omitempty"`
	// Warning notes something odd about an active module (its metadata
	// names it differently from its file).
	Warning string `json:"warning,omitempty"`
}

// Status lists every module the directory has or had a file for, by name,
// the files it ignores, and the directory itself if it is refused.
func (d *Dir) Status() []ModuleStatus {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []ModuleStatus
	if d.refused != nil {
		out = append(out, ModuleStatus{Name: d.path, Error: d.refused.Error()})
	}
	for name, a := range d.attempts {
		s := ModuleStatus{Name: name}
		if m, ok := d.active[name]; ok {
			info := m.Info
			s.Active = &info
			if info.Metadata.Name != name {
				s.Warning = "its metadata names it " + strconv.Quote(info.Metadata.Name) + "; it is used as " + strconv.Quote(name)
			}
		}
		if a.err != nil {
			s.Error, s.FailedSHA256 = a.err.Error(), a.sha256
		}
		out = append(out, s)
	}
	for base, why := range d.ignored {
		out = append(out, ModuleStatus{Name: base, Error: "ignored: " + why})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Watch syncs whenever the directory changes, until ctx ends. Events are
// coalesced for settle, so a file still being copied is loaded once it is
// complete (a partial file fails, and the final write brings a new attempt).
// onSync, if not nil, sees every report.
func (d *Dir) Watch(ctx context.Context, settle time.Duration, onSync func(SyncReport)) error {
	if err := os.MkdirAll(d.path, 0o700); err != nil {
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
			// NAME.wasm and the files beside it (signatures).
			if strings.Contains(filepath.Base(ev.Name), ".wasm") {
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
