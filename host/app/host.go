// Package app runs app instances as the EVE design note describes: it
// applies a configuration to containerd, asking the apps' pull policies at
// every decision and acting on their answers, with EVE's counter semantics:
//
//   - create: absent image, pull; present, whatever the policy says;
//   - refreshImage: check every container drive, download while the app keeps
//     running, restart only if an image changed (or restart was asked too);
//   - restart, purge and any other change wait for the refresh's download
//     attempt, success or failure; a failed refresh leaves the app running;
//   - several increases of a counter before it is acted upon are one action;
//     acted-upon counters are persisted, so a restart of the host neither
//     repeats a completed action nor loses a pending one;
//   - an app that dies within the grace period after an image change is
//     reported to its policy (start-failed), which may roll it back.
package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/containers"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/internal/faultpoint"
	"github.com/pullwise/pullwise/sdk"
)

// ErrRejected marks an Apply that refused the configuration whole: nothing
// was touched.
var ErrRejected = errors.New("configuration rejected")

// Options are what a Host is made of. Every field but Logger, Now, Device
// and GracePeriod is required.
type Options struct {
	Registry   *registry.Client
	Puller     *pull.Puller
	Images     *imagestore.Store
	Containers *containers.Manager
	Policies   *Catalog
	// StatePath is the app state file (a bbolt file in the state directory).
	StatePath string
	Logger    hclog.Logger
	// Now is the clock policies see. Default time.Now.
	Now func() time.Time
	// Device reports the link and disk for policies. Default: online,
	// unmetered, unknown bandwidth.
	Device func() sdk.Device
	// GracePeriod is how long a changed app must keep running before its
	// previous images stop being a rollback target. Default 10 s.
	GracePeriod time.Duration
	// Progress, if set, receives the download progress of every pull.
	Progress func(app string, p pull.Progress)
}

// Host applies configurations. Its methods are safe for concurrent use; they
// run one at a time.
type Host struct {
	o     Options
	state *stateStore
	log   hclog.Logger

	// mu serialises Apply and Tick. applied is read without it, so the
	// report and the API answer while an action runs.
	mu      sync.Mutex
	applied atomic.Pointer[config.Config]
	// desired is the last configuration accepted by Apply, including apps
	// whose create failed (they are not in applied until it succeeds).
	desired atomic.Pointer[config.Config]
	// round and sizes cache resolutions and download estimates during one
	// Apply or Tick (nil outside).
	round map[string]roundResult
	sizes map[string]int64
	// watching are the apps whose images changed during this Apply.
	watching []watched
	// booted is set once the first Apply has asked the policies about the
	// apps it found running (event boot).
	booted bool
}

// New opens the host's state and picks up where the last run stopped: the
// configuration acted upon is loaded, and apps already running in containerd
// are adopted as they are.
func New(o Options) (*Host, error) {
	if o.Registry == nil || o.Puller == nil || o.Images == nil || o.Containers == nil || o.Policies == nil || o.StatePath == "" {
		return nil, errors.New("app.New: Registry, Puller, Images, Containers, Policies and StatePath are required")
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Device == nil {
		o.Device = func() sdk.Device { return sdk.Device{Link: sdk.Link{Online: true}} }
	}
	if o.GracePeriod == 0 {
		o.GracePeriod = 10 * time.Second
	}
	st, err := openState(o.StatePath)
	if err != nil {
		return nil, err
	}
	applied, err := st.applied()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("reading app state: %w", err)
	}
	h := &Host{o: o, state: st, log: o.Logger}
	h.applied.Store(applied)
	return h, nil
}

// Close closes the state. Apps keep running.
func (h *Host) Close() error { return h.state.close() }

// Applied is the configuration as acted upon (nil before the first Apply).
func (h *Host) Applied() *config.Config { return h.applied.Load() }

// Apply brings the apps in line with cfg. An invalid configuration (any
// field, counters going backwards, unknown policies, settings a policy
// rejects) is refused whole, naming the field, and nothing is touched. A
// valid one is acted upon app by app; the error reports the apps whose
// action failed (they are also in Info).
func (h *Host) Apply(ctx context.Context, cfg *config.Config) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := cfg.Validate(h.applied.Load(), h.o.Policies.Known); err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if err := h.checkSettings(ctx, cfg); err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if err := h.state.setDevice(cfg.Device); err != nil {
		return err
	}
	h.desired.Store(cfg)
	h.round, h.sizes, h.watching = map[string]roundResult{}, map[string]int64{}, nil
	defer func() { h.round, h.sizes, h.watching = nil, nil, nil }()
	var errs []error
	deltas := cfg.Diff(h.applied.Load())
	for _, d := range deltas {
		if err := h.act(ctx, cfg, d); err != nil {
			errs = append(errs, fmt.Errorf("app %s: %w", d.UUID, err))
		}
	}
	if !h.booted {
		h.booted = true
		errs = append(errs, h.boot(ctx, cfg, deltas))
	}
	// Forget apps that left the configuration before they were ever created.
	if sts, err := h.state.statuses(); err == nil {
		for _, st := range sts {
			if !slices.ContainsFunc(cfg.Apps, func(a config.App) bool { return a.UUID == st.UUID }) {
				if err := h.state.forget(st.UUID); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := h.watchStarts(ctx, cfg, h.watching); err != nil {
		errs = append(errs, err)
	}
	applied, err := h.state.applied()
	if err != nil {
		errs = append(errs, err)
	}
	h.applied.Store(applied)
	return errors.Join(errs...)
}

func (h *Host) checkSettings(ctx context.Context, cfg *config.Config) error {
	var errs []error
	check := func(field string, ref *config.PolicyRef) {
		if ref == nil {
			return
		}
		m, err := h.o.Policies.Module(ctx, *ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			return
		}
		if err := m.ValidateSettings(ctx, ref.Settings); err != nil {
			errs = append(errs, fmt.Errorf("%s.settings: %w", field, err))
		}
	}
	check("device.pullPolicy", cfg.Device.PullPolicy)
	for i, a := range cfg.Apps {
		check(fmt.Sprintf("apps[%d].pullPolicy", i), a.PullPolicy)
	}
	return errors.Join(errs...)
}

// act carries out one app's delta, in EVE's order: the refresh first (its
// downloads happen while the app runs), then purge, other changes, restart.
func (h *Host) act(ctx context.Context, cfg *config.Config, d config.Delta) error {
	if d.Removed {
		return h.remove(ctx, cfg, d.UUID)
	}
	app := findApp(cfg, d.UUID)
	rec, err := h.state.status(app.UUID)
	if err != nil {
		return err
	}
	rec.UUID, rec.DisplayName, rec.Policy = app.UUID, app.DisplayName, cfg.Policy(app).Name
	if d.Created {
		return h.create(ctx, cfg, app, &rec)
	}
	if h.completedBeforeCrash(ctx, app, &rec) {
		// The agent died after the action took effect but before recording
		// it: record it now, do not repeat it.
		h.setState(&rec, StateRunning)
		return h.done(app, &rec, true)
	}
	var refreshErr error
	changed, restartOnChange := false, false
	switch {
	case d.Refresh:
		h.setState(&rec, StateRefreshing)
		changed, restartOnChange, refreshErr = h.refresh(ctx, cfg, app, &rec, sdk.EventRefresh)
	case d.Restart || d.Purge:
		// The app is about to start again: its policy may want to look first
		// (check-on-start does).
		changed, restartOnChange, refreshErr = h.refresh(ctx, cfg, app, &rec, sdk.EventStart)
	}
	if refreshErr != nil {
		h.fail(&rec, refreshErr)
		h.log.Warn("checking images failed; the app stays on its images", "app", app.UUID, "error", refreshErr)
	}
	if d.Modified {
		// A changed drive may name an image not resolved yet (a new
		// ImageObjectID, or a new reference for one): resolve it as at create.
		for _, dr := range app.Drives {
			if dr.Kind != config.DriveContainer {
				continue
			}
			if r, ok, _ := h.o.Images.Get(dr.Image.UUID); ok && r.Ref == dr.Image.Name {
				continue
			}
			if _, err := h.decide(ctx, cfg, app, *dr.Image, sdk.EventCreate, &rec); err != nil {
				h.fail(&rec, err)
				h.setState(&rec, StateError)
				return err
			}
		}
	}
	spec, err := h.spec(ctx, app)
	if err != nil {
		h.fail(&rec, err)
		h.setState(&rec, StateError)
		return err
	}
	switch {
	case d.Purge:
		h.begin(ctx, &rec, "purge", StatePurging)
		faultpoint.Hit("purge:begun")
		err = h.o.Containers.Purge(ctx, spec)
		faultpoint.Hit("purge:done")
	case d.Modified || (changed && (restartOnChange || d.Restart)):
		h.begin(ctx, &rec, "replace", StateRestarting)
		err = h.o.Containers.Replace(ctx, spec)
		faultpoint.Hit("replace:done")
	case d.Restart:
		h.begin(ctx, &rec, "restart", StateRestarting)
		faultpoint.Hit("restart:begun")
		err = h.o.Containers.Restart(ctx, app.UUID)
		faultpoint.Hit("restart:done")
	default:
		// A refresh that changed nothing (or whose policy does not restart):
		// no restart.
		h.setState(&rec, StateRunning)
		return errors.Join(refreshErr, h.done(app, &rec, refreshErr == nil))
	}
	if err != nil {
		h.fail(&rec, err)
		h.setState(&rec, StateError)
		return err
	}
	rec.Restarts++
	h.setState(&rec, StateRunning)
	if d.Modified {
		if err := h.release(ctx, cfg, app.UUID); err != nil {
			h.log.Warn("releasing images the app no longer uses", "app", app.UUID, "error", err)
		}
	}
	err = h.done(app, &rec, refreshErr == nil)
	if changed {
		// Watched after every app has been acted upon, all at once: one grace
		// period per pass, not one per changed app.
		h.watching = append(h.watching, watched{app: app, rec: &rec})
	}
	return errors.Join(refreshErr, err)
}

// create resolves and fetches every container drive, then creates and
// starts the app. A failure leaves the app uncreated and in ERROR (or
// DEFERRED if its policy asked to wait); the next Apply tries again.
func (h *Host) create(ctx context.Context, cfg *config.Config, app config.App, rec *AppInfo) error {
	h.setState(rec, StateResolving)
	for _, d := range app.Drives {
		if d.Kind != config.DriveContainer {
			continue
		}
		out, err := h.decide(ctx, cfg, app, *d.Image, sdk.EventCreate, rec)
		if err != nil {
			state := StateError
			if out.deferred {
				state = StateDeferred
			}
			h.fail(rec, err)
			h.setState(rec, state)
			return err
		}
	}
	spec, err := h.spec(ctx, app)
	if err == nil {
		if st, _ := h.o.Containers.Status(ctx, app.UUID); st.Exists {
			// Left by an interrupted create, or adopted: build it afresh.
			err = h.o.Containers.Replace(ctx, spec)
		} else if err = h.o.Containers.Create(ctx, spec); err == nil {
			err = h.o.Containers.Start(ctx, app.UUID)
		}
	}
	if err != nil {
		h.fail(rec, err)
		h.setState(rec, StateError)
		return err
	}
	h.setState(rec, StateRunning)
	return h.done(app, rec, true)
}

// refresh asks the policy about every container drive (other drives are not
// touched) for event ev and downloads what changed, while the app keeps
// running. The images it involves are held from garbage collection until it
// returns.
func (h *Host) refresh(ctx context.Context, cfg *config.Config, app config.App, rec *AppInfo, ev sdk.Event) (changed, restartOnChange bool, err error) {
	var held []string
	for _, d := range app.Drives {
		if d.Kind == config.DriveContainer {
			if r, ok, _ := h.o.Images.Get(d.Image.UUID); ok {
				held = append(held, r.Digest, r.IndexDigest)
			}
		}
	}
	defer h.o.Images.Hold(held...)()
	var errs []error
	for _, d := range app.Drives {
		if d.Kind != config.DriveContainer {
			continue
		}
		out, err := h.decide(ctx, cfg, app, *d.Image, ev, rec)
		if err != nil {
			errs = append(errs, fmt.Errorf("image %s: %w", d.Image.Name, err))
			continue
		}
		changed = changed || out.changed
		restartOnChange = restartOnChange || (out.changed && out.restartOnChange)
	}
	return changed, restartOnChange, errors.Join(errs...)
}

// boot asks the policies (event boot) about the apps the host found running
// from an earlier run and that this Apply did not otherwise act on: the
// built-ins use the images they have; a policy that checks at boot may bring
// a new image, and the app restarts on it if the policy says so.
func (h *Host) boot(ctx context.Context, cfg *config.Config, acted []config.Delta) error {
	var errs []error
	for _, app := range cfg.Apps {
		if slices.ContainsFunc(acted, func(d config.Delta) bool { return d.UUID == app.UUID }) {
			continue
		}
		if st, err := h.o.Containers.Status(ctx, app.UUID); err != nil || !st.Running {
			continue
		}
		rec, err := h.state.status(app.UUID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := h.recheck(ctx, cfg, app, &rec, sdk.EventBoot); err != nil {
			errs = append(errs, fmt.Errorf("app %s at boot: %w", app.UUID, err))
		}
	}
	return errors.Join(errs...)
}

// recheck asks the policy about a running app's images (boot, tick) and, if
// an image changed and the policy wants a restart for it, rebuilds the app on
// the new images (journalled, and watched through the grace period).
func (h *Host) recheck(ctx context.Context, cfg *config.Config, app config.App, rec *AppInfo, ev sdk.Event) error {
	changed, restart, err := h.refresh(ctx, cfg, app, rec, ev)
	if err != nil {
		h.fail(rec, err)
	}
	if changed && restart {
		spec, serr := h.spec(ctx, app)
		if serr == nil {
			h.begin(ctx, rec, "replace", StateRestarting)
			serr = h.o.Containers.Replace(ctx, spec)
		}
		if serr != nil {
			h.fail(rec, serr)
			h.setState(rec, StateError)
			return errors.Join(err, serr)
		}
		rec.Restarts++
		h.watching = append(h.watching, watched{app: app, rec: rec})
	}
	rec.Pending = nil
	h.setState(rec, StateRunning)
	return err
}

// watched is an app whose images changed in this pass.
type watched struct {
	app config.App
	rec *AppInfo
}

// watchStarts waits one grace period for the apps whose images changed. An
// app that dies in it is reported to its policy (start-failed); on rollback
// it goes back to its previous images.
func (h *Host) watchStarts(ctx context.Context, cfg *config.Config, apps []watched) error {
	var errs []error
	deadline := time.Now().Add(h.o.GracePeriod)
	for len(apps) > 0 && time.Now().Before(deadline) {
		var still []watched
		for _, w := range apps {
			st, err := h.o.Containers.Status(ctx, w.app.UUID)
			switch {
			case err != nil:
				errs = append(errs, err)
			case st.Exists && !st.Running:
				if _, err := h.startFailed(ctx, cfg, w.app, w.rec, st.ExitCode); err != nil {
					errs = append(errs, fmt.Errorf("app %s: %w", w.app.UUID, err))
				}
			default:
				still = append(still, w)
			}
		}
		apps = still
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.Join(errs...)
}

func (h *Host) startFailed(ctx context.Context, cfg *config.Config, app config.App, rec *AppInfo, code uint32) (bool, error) {
	root := app.RootDrive().Image
	m, err := h.o.Policies.Module(ctx, cfg.Policy(app))
	if err != nil {
		return false, err
	}
	r, _, _ := h.o.Images.Get(root.UUID)
	msg := fmt.Sprintf("app exited with code %d within %s of starting on new images", code, h.o.GracePeriod)
	in := h.input(cfg, app, *root, r, true, sdk.EventStartFailed, rec)
	in.LastError = msg
	d, err := m.Decide(ctx, in)
	if err != nil {
		return false, err
	}
	h.record(rec, cfg, *root, sdk.EventStartFailed, d)
	if d.Action != sdk.ActionRollback {
		h.fail(rec, errors.New(msg))
		h.setState(rec, StateError)
		return false, nil
	}
	for _, dr := range app.Drives {
		if dr.Kind != config.DriveContainer {
			continue
		}
		r, ok, _ := h.o.Images.Get(dr.Image.UUID)
		if !ok || r.PreviousDigest == "" {
			continue
		}
		back := r
		back.Digest, back.IndexDigest, back.Reason, back.ResolvedAt = r.PreviousDigest, "", imagestore.LatchRollback, h.o.Now().UTC()
		back.IndexDigest = r.PreviousIndexDigest
		if err := h.o.Images.Latch(back); err != nil {
			return false, err
		}
	}
	spec, err := h.spec(ctx, app)
	if err != nil {
		return false, err
	}
	if err := h.o.Containers.Replace(ctx, spec); err != nil {
		return false, err
	}
	rec.Restarts++
	h.fail(rec, fmt.Errorf("%s; rolled back to the previous images", msg))
	h.setState(rec, StateRolledBack)
	return true, nil
}

func (h *Host) remove(ctx context.Context, cfg *config.Config, uuid string) error {
	if err := h.o.Containers.Remove(ctx, uuid); err != nil {
		return err
	}
	if err := h.release(ctx, cfg, uuid); err != nil {
		return err
	}
	return h.state.forget(uuid)
}

// release forgets the ImageObjectIDs the app used as last acted upon that no
// app of cfg uses any more, and lets containerd collect images nothing
// refers to.
func (h *Host) release(ctx context.Context, cfg *config.Config, uuid string) error {
	for _, d := range findApp(h.applied.Load(), uuid).Drives {
		if d.Kind == config.DriveContainer && !usesImage(cfg, d.Image.UUID) {
			if err := h.o.Images.Delete(d.Image.UUID); err != nil {
				return err
			}
		}
	}
	if _, err := h.o.Puller.Collect(ctx, h.o.Images); err != nil {
		h.log.Warn("collecting unused images", "error", err)
	}
	return nil
}

// begin journals a container action before it starts.
func (h *Host) begin(ctx context.Context, rec *AppInfo, op, state string) {
	st, _ := h.o.Containers.Status(ctx, rec.UUID)
	rec.Pending = &Pending{Op: op, Generation: st.Generation, Pid: st.Pid}
	h.setState(rec, state)
}

// completedBeforeCrash reports whether a journalled action took effect: a
// restart shows a running process other than the one before it; a replace
// or purge a running container of a later generation. An action that did
// not take effect is simply done again (restart and rebuild are safe to
// repeat until they have taken effect).
func (h *Host) completedBeforeCrash(ctx context.Context, app config.App, rec *AppInfo) bool {
	p := rec.Pending
	if p == nil {
		return false
	}
	st, err := h.o.Containers.Status(ctx, app.UUID)
	if err != nil || !st.Running {
		return false
	}
	done := false
	switch p.Op {
	case "restart":
		done = st.Generation == p.Generation && st.Pid != p.Pid
	case "replace", "purge":
		done = st.Generation > p.Generation
	}
	if done {
		h.log.Info("an action interrupted by a crash had completed; recording it", "app", app.UUID, "op", p.Op)
		rec.Restarts++
	}
	return done
}

// done records the app as acted upon. ok clears the last error.
func (h *Host) done(app config.App, rec *AppInfo, ok bool) error {
	rec.Pending = nil
	rec.Counters = Counters{Restart: app.Restart.Counter, Purge: app.Purge.Counter, RefreshImage: app.RefreshImage.Counter}
	if ok && rec.State != StateRolledBack {
		rec.LastError, rec.LastErrorAt = "", nil
	}
	if err := h.state.setStatus(*rec); err != nil {
		return err
	}
	return h.state.setApplied(app)
}

func (h *Host) setState(rec *AppInfo, s string) {
	rec.State = s
	if err := h.state.setStatus(*rec); err != nil {
		h.log.Error("saving app status", "app", rec.UUID, "error", err)
	}
}

func (h *Host) fail(rec *AppInfo, err error) {
	now := h.o.Now().UTC()
	rec.LastError, rec.LastErrorAt = err.Error(), &now
}

// spec builds the container spec from the latched images.
func (h *Host) spec(ctx context.Context, app config.App) (containers.Spec, error) {
	s := containers.Spec{ID: app.UUID, Command: app.Command, Env: app.Env}
	root := app.RootDrive()
	for i, d := range app.Drives {
		switch d.Kind {
		case config.DriveVolume:
			s.Volumes = append(s.Volumes, containers.Mount{Source: fmt.Sprintf("drive%d", i), Path: d.MountPath})
		case config.DriveContainer:
			r, ok, err := h.o.Images.Get(d.Image.UUID)
			if err != nil {
				return s, err
			}
			if !ok {
				return s, fmt.Errorf("image %s (%s) has not been resolved", d.Image.UUID, d.Image.Name)
			}
			name, err := h.imageName(r)
			if err != nil {
				return s, err
			}
			if &app.Drives[i] == root {
				s.Image = name
			} else {
				s.ReadOnly = append(s.ReadOnly, containers.Mount{Source: name, Path: d.MountPath})
			}
		}
	}
	return s, nil
}

// imageName is the containerd name of a latched image: repository@digest
// of what was pulled (the index for a multi-arch tag).
func (h *Host) imageName(r imagestore.Record) (string, error) {
	ref, err := h.o.Registry.ParseReference(r.Ref)
	if err != nil {
		return "", err
	}
	top := r.Digest
	if r.IndexDigest != "" {
		top = r.IndexDigest
	}
	return ref.Context().Name() + "@" + top, nil
}

func findApp(cfg *config.Config, uuid string) config.App {
	if cfg != nil {
		for _, a := range cfg.Apps {
			if a.UUID == uuid {
				return a
			}
		}
	}
	return config.App{UUID: uuid}
}

func usesImage(cfg *config.Config, imageID string) bool {
	return slices.ContainsFunc(cfg.Apps, func(a config.App) bool {
		return slices.ContainsFunc(a.Drives, func(d config.Drive) bool { return d.Image != nil && d.Image.UUID == imageID })
	})
}
