package app

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/containers"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/host/round"
	"github.com/pullwise/pullwise/internal/faultpoint"
	"github.com/pullwise/pullwise/sdk"
)

// One app's refresh, read top to bottom: reconcile heals what a crash
// interrupted, then create or act brings the app to its latest
// configuration: the policy decides for each container drive (decide.go),
// the host downloads while the app runs, takes in whatever configuration
// arrived meanwhile, journals the one container action, latches, acts,
// records, and watches the new images through the grace period.

// reconcile does one piece of work for the app. It returns whether the app
// was removed, the last configuration generation it took in, and the
// outcome of this piece of work for that app alone.
func (w *worker) reconcile(ctx context.Context, cfg *config.Config, gen uint64, since time.Time) (removed bool, taken uint64, err error) {
	h := w.h
	defer w.releaseHolds()
	if w.rec.Pending != nil {
		if err := w.heal(ctx, cfg); err != nil {
			return false, gen, err
		}
	}
	app, ok := cfg.App(w.uuid)
	if !ok {
		return true, gen, w.remove(ctx, cfg)
	}
	if w.rec.DisplayName != app.DisplayName || w.rec.Policy != cfg.Policy(app).Label() {
		w.rec.DisplayName, w.rec.Policy = app.DisplayName, cfg.Policy(app).Label()
		w.publish()
	}
	due, linkDue := false, w.takeLinkDue()
	if next := w.rec.NextCheck; next != nil && (!next.After(h.o.Now()) || linkDue) {
		// The policy's time has come (its own timer, or Host.Tick), or the
		// link changed under it: a check made since then by another app
		// answers for this one too.
		due, since = true, *next
		if now := h.o.Now(); since.After(now) {
			since = now
		}
		w.rec.NextCheck = nil
	}
	if w.applied == nil {
		if !due && w.attempted == attemptKey(cfg, app) {
			return false, gen, nil // failed with this configuration; retried when its policy says
		}
		w.booted = true
		return false, gen, w.create(ctx, cfg, app, since)
	}
	d := config.DiffApp(*w.applied, app)
	var ev sdk.Event
	switch {
	case d.Refresh:
		ev = sdk.EventRefresh
	case d.Restart || d.Purge:
		// The app is about to start again: its policy may want to look first
		// (check-on-start does).
		ev = sdk.EventStart
	case d.Any():
		if !due && w.attempted == attemptKey(cfg, app) {
			return false, gen, nil // this change failed; retried when its policy says
		}
	case !w.booted:
		// Adopted from an earlier run: the policy is asked (event boot) about
		// an app that runs.
		w.booted = true
		st, err := h.o.Containers.Status(ctx, w.uuid)
		if err != nil {
			return false, gen, err
		}
		if st.Exists && !st.Running {
			// Stopped while the agent was away (a power cut ends every task):
			// started at once, no crash back-off.
			if err := h.o.Containers.Start(ctx, w.uuid); err != nil {
				w.fail(err)
				w.setState(StateError)
				return false, gen, errors.Join(err, w.save())
			}
			w.tell(events.Event{Kind: events.Started, Message: "the app was not running (stopped while the agent was away); started it"})
			w.rec.Restarts++
			w.setState(StateRunning)
			return false, gen, w.save()
		}
		if !st.Exists {
			return false, gen, w.observe(ctx, cfg, app)
		}
		ev = sdk.EventBoot
	case due && w.rec.RefreshDeferred:
		ev = sdk.EventRefresh
	case due:
		ev = sdk.EventTick
	case w.takeExitSeen() || !w.restartAt.IsZero() || !w.lookAgainAt.IsZero():
		// The watched process ended, or containerd went away under the watch
		// (a containerd restart ends every Wait): look, and watch anew.
		if w.exitWatch != nil {
			w.exitWatch()
			w.exitWatch = nil
		}
		w.lookAgainAt = time.Time{}
		err := w.observe(ctx, cfg, app)
		if err != nil {
			w.lookAgain() // containerd did not answer
			w.logger().Warn("observing the app's container", "error", err)
		}
		return false, gen, err
	default:
		return false, gen, nil // nothing asked, nothing due: no work, no I/O
	}
	w.booted = true
	taken, err = w.act(ctx, cfg, app, gen, d, ev, since)
	return false, taken, err
}

// act brings a created app from its configuration as acted upon to app: the
// checks and downloads of event ev first (while the app runs), then
// whatever configuration arrived meanwhile, then one container action.
func (w *worker) act(ctx context.Context, cfg *config.Config, app config.App, gen uint64, d config.Delta, ev sdk.Event, since time.Time) (uint64, error) {
	targets := map[string]round.Result{}
	changed, restartOnChange, deferred := false, false, false
	var refreshErr error
	if ev != "" {
		if ev == sdk.EventRefresh {
			w.setState(StateRefreshing)
		}
		var errs []error
		for _, img := range containerImages(app) {
			if run, ok := w.rec.Running[img.UUID]; !ok || run.Ref != img.Name {
				continue // a new image for this drive: resolved below, as at create
			}
			c, err := w.decide(ctx, cfg, app, img, ev, since)
			if err != nil {
				errs = append(errs, fmt.Errorf("image %s: %w", img.Name, err))
				continue
			}
			targets[img.UUID] = c
			deferred = deferred || c.Deferred
			changed = changed || c.Changed
			restartOnChange = restartOnChange || (c.Changed && c.RestartOnChange)
		}
		refreshErr = errors.Join(errs...)
		if ev == sdk.EventRefresh {
			w.rec.RefreshDeferred = w.rec.NextCheck != nil && (refreshErr != nil || deferred)
			if deferred && w.rec.NextCheck != nil {
				e := events.Event{Kind: events.Deferred, Message: "refresh deferred by the policy; the app stays on its images",
					Policy: w.rec.Policy, Until: ptr(w.rec.NextCheck.UTC())}
				for _, id := range slices.Sorted(maps.Keys(targets)) {
					if targets[id].Deferred && e.Reason == "" {
						e.Reason = w.rec.Decisions[id].Reason
					}
				}
				w.tell(e)
			}
		}
		if refreshErr != nil {
			w.fail(refreshErr)
			w.tell(events.Event{Kind: events.CheckFailed, Message: "checking images failed; the app stays on its images", Error: refreshErr.Error()})
		}
		// Whatever arrived during the downloads (a restart, a purge, another
		// refresh, any other change) is merged into this one action.
		latest, lgen, _ := w.latest()
		la, ok := latest.App(w.uuid)
		if !ok {
			w.poke() // removed meanwhile: the next piece of work removes it
			return lgen, refreshErr
		}
		if lgen != gen {
			if d2 := config.DiffApp(*w.applied, la); d2.Refresh && ev != sdk.EventRefresh {
				// A refresh asked while another event's decisions ran (boot,
				// tick, start) was not looked at by them: it is a piece of work
				// of its own, next.
				w.poke()
			} else {
				cfg, app, gen, d = latest, la, lgen, d2
				w.logger().Info("configuration changed during the downloads; acting on the latest")
			}
		}
	}
	if d.Modified {
		// A drive may name an image not acted upon yet (a new ImageObjectID,
		// another reference, a pin): resolved and verified as at create, before
		// the container changes. A failure leaves the app running as it was.
		for i, img := range containerImages(app) {
			if c, ok := targets[img.UUID]; ok && c.Run.Ref == img.Name {
				continue
			}
			if run, ok := w.rec.Running[img.UUID]; ok && run.Ref == img.Name && run.Matches(img.Pin()) {
				continue
			}
			c, err := w.decide(ctx, cfg, app, img, sdk.EventCreate, since)
			if err != nil {
				w.attempted = attemptKey(cfg, app)
				err = fmt.Errorf("drive %s (%s): %w", driveField(app, i), img.Name, err)
				w.fail(err)
				w.rec.State = StateRunning // as it was: nothing changed
				w.save()
				return gen, errors.Join(refreshErr, err)
			}
			targets[img.UUID] = c
			changed = true
		}
	}
	w.attempted = ""
	run := map[string]RunImage{}
	for _, img := range containerImages(app) {
		if c, ok := targets[img.UUID]; ok {
			run[img.UUID] = c.Run
		} else {
			run[img.UUID] = w.rec.Running[img.UUID]
		}
	}
	var op string
	switch {
	case d.Purge:
		op = opPurge
	case d.Modified || (changed && (restartOnChange || d.Restart)):
		op = opReplace
	case d.Restart:
		op = opRestart
	}
	latches := latchesOf(targets)
	if op == "" {
		// Nothing for the container: a refresh that found nothing new, or
		// whose policy does not restart for it.
		if err := w.latch(latches); err != nil {
			return gen, err
		}
		w.setState(StateRunning)
		if len(latches) == 0 && refreshErr == nil {
			// Nothing that runs changed (a refresh that found nothing new):
			// kept in memory and written with the app's next write or at
			// shutdown. After a power cut the refresh runs once more: one
			// manifest request, nothing else. Flash wears.
			w.settle(app)
			return gen, nil
		}
		return gen, errors.Join(refreshErr, w.done(app, refreshErr == nil))
	}
	before := w.rec.Running
	if err := w.perform(ctx, cfg, app, op, run, latches); err != nil {
		return gen, errors.Join(refreshErr, err)
	}
	if d.Modified {
		w.release(ctx, cfg)
	}
	err := w.done(app, refreshErr == nil)
	if op != opRestart && !sameImages(before, run) {
		err = errors.Join(err, w.watchStart(ctx, cfg, app, before))
	}
	return gen, errors.Join(refreshErr, err)
}

// Container actions, as journalled.
const (
	opRestart = "restart"
	opReplace = "replace"
	opPurge   = "purge"
)

// perform journals a container action, latches what it brings, carries it
// out and records what the container now runs. The journal is written
// before anything changes, so a crash at any step is healed by heal.
func (w *worker) perform(ctx context.Context, cfg *config.Config, app config.App, op string, run map[string]RunImage, latches []imagestore.Record) error {
	h := w.h
	st, _ := h.o.Containers.Status(ctx, w.uuid)
	w.rec.Pending = &Pending{Op: op, Generation: st.Generation, Pid: st.Pid, Target: run, Latch: latches, App: &app}
	state := StateRestarting
	if op == opPurge {
		state = StatePurging
	}
	w.setState(state)
	if err := w.save(); err != nil {
		return err
	}
	faultpoint.Hit(op + ":journalled")
	if err := w.latch(latches); err != nil {
		return err
	}
	faultpoint.Hit(op + ":latched")
	w.stopHealthWatch() // the process is about to stop: its probes would fail
	if err := w.containerAction(ctx, app, op, run); err != nil {
		w.fail(err)
		w.setState(StateError)
		w.save()
		return err
	}
	w.logAction(op, w.rec.Running, run)
	w.rec.Running = run
	w.rec.Restarts++
	w.setState(StateRunning)
	return nil
}

// logAction tells the story of a container action at info level: what
// was done, and each image that changed, from which digest to which.
func (w *worker) logAction(op string, before, after map[string]RunImage) {
	switch op {
	case opRestart:
		w.tell(events.Event{Kind: events.Restarted, Message: "app restarted (writable layer and volumes kept)"})
	case opPurge:
		w.tell(events.Event{Kind: events.Purged, Message: "app purged (writable layer and volumes discarded) and started"})
	default:
		w.tell(events.Event{Kind: events.Started, Message: "app started on a new root filesystem (volumes kept)"})
	}
	for _, id := range slices.Sorted(maps.Keys(after)) {
		now := after[id]
		if was, ok := before[id]; !ok || was.Digest != now.Digest {
			w.tell(events.Event{Kind: events.ImageChanged, Message: "image changed", Image: id, Ref: now.Ref, From: was.Digest, Digest: now.Digest})
		}
	}
}

// containerAction carries out a journalled action.
func (w *worker) containerAction(ctx context.Context, app config.App, op string, run map[string]RunImage) error {
	h := w.h
	if st, err := h.o.Containers.Status(ctx, w.uuid); err == nil && st.Running {
		wait := cmp.Or(app.StopWait(), h.o.Containers.StopTimeout())
		w.tell(events.Event{Kind: events.Stopping, Message: fmt.Sprintf("stopping the app (up to %s: SIGTERM, then SIGKILL)", wait),
			Until: ptr(h.o.Now().Add(wait).UTC())})
	}
	if op == opRestart {
		faultpoint.Hit("restart:begun")
		err := h.o.Containers.Restart(ctx, w.uuid)
		faultpoint.Hit("restart:done")
		return err
	}
	spec, err := w.spec(app, run)
	if err != nil {
		return err
	}
	if op == opPurge {
		faultpoint.Hit("purge:begun")
		err = h.o.Containers.Purge(ctx, spec)
		faultpoint.Hit("purge:done")
		return err
	}
	err = h.o.Containers.Replace(ctx, spec)
	faultpoint.Hit("replace:done")
	return err
}

// heal finishes a container action a crash interrupted. What the container
// runs is the truth: a restart took effect if another process runs in the
// same generation; an image change or purge if a later generation runs the
// journalled images. Taken effect: recorded, not repeated. Not taken
// effect: latched and done again, which is safe (a restart or rebuild that
// never happened).
func (w *worker) heal(ctx context.Context, cfg *config.Config) error {
	h := w.h
	p := w.rec.Pending
	if p.App == nil {
		return w.healLegacy(ctx, cfg)
	}
	app := *p.App
	st, err := h.o.Containers.Status(ctx, w.uuid)
	if err != nil {
		return err
	}
	spec, err := w.spec(app, p.Target)
	if err != nil {
		return err
	}
	if p.tookEffect(st, spec.Images()) {
		w.logger().Info("an action interrupted by a crash had completed; recording it", "op", p.Op)
		if err := w.latch(p.Latch); err != nil {
			return err
		}
		w.rec.Running = p.Target
		w.rec.Restarts++
		w.setState(StateRunning)
	} else {
		w.logger().Info("an action interrupted by a crash had not completed; doing it", "op", p.Op)
		if err := w.perform(ctx, cfg, app, p.Op, p.Target, p.Latch); err != nil {
			return err
		}
	}
	w.booted = true
	return w.done(app, true)
}

// tookEffect reports whether the journalled action shows in what the
// container runs: a restart as another process in the same generation; an
// image change or purge as a later generation running images (when known;
// the earlier agent's journal did not note them).
func (p *Pending) tookEffect(st containers.Status, images []string) bool {
	if !st.Running {
		return false
	}
	switch p.Op {
	case opRestart:
		return st.Generation == p.Generation && st.Pid != p.Pid
	case opReplace, opPurge:
		return st.Generation > p.Generation && (images == nil || slices.Equal(st.Images, images))
	}
	return false
}

// healLegacy resolves a journal entry of an agent before this one, which
// noted only the operation and the container's generation and pid, as that
// agent did: an action that took effect is recorded with the counters of
// the configuration; one that did not is forgotten, and the counters'
// difference asks for it again.
func (w *worker) healLegacy(ctx context.Context, cfg *config.Config) error {
	p := w.rec.Pending
	w.rec.Pending = nil
	st, err := w.h.o.Containers.Status(ctx, w.uuid)
	if err != nil {
		return err
	}
	app, ok := cfg.App(w.uuid)
	if !p.tookEffect(st, nil) || !ok {
		return w.save()
	}
	w.logger().Info("an action interrupted by a crash of the earlier agent had completed; recording it", "op", p.Op)
	w.rec.Restarts++
	w.rec.Running = w.h.latchedImages(app)
	w.setState(StateRunning)
	return w.done(app, true)
}

// create resolves and fetches every container drive, then creates and
// starts the app. A failure leaves the app uncreated and in ERROR (or
// DEFERRED if its policy asked to wait); it is tried again when its
// configuration changes or its policy's time comes.
func (w *worker) create(ctx context.Context, cfg *config.Config, app config.App, since time.Time) error {
	h := w.h
	w.attempted = attemptKey(cfg, app)
	w.setState(StateResolving)
	targets := map[string]round.Result{}
	for _, img := range containerImages(app) {
		c, err := w.decide(ctx, cfg, app, img, sdk.EventCreate, since)
		if err != nil {
			state := StateError
			if c.Deferred {
				state = StateDeferred
			}
			w.fail(err)
			w.setState(state)
			w.save()
			return err
		}
		targets[img.UUID] = c
	}
	err := w.latch(latchesOf(targets))
	run := map[string]RunImage{}
	for id, c := range targets {
		run[id] = c.Run
	}
	var spec containers.Spec
	if err == nil {
		spec, err = w.spec(app, run)
	}
	if err == nil {
		if st, _ := h.o.Containers.Status(ctx, w.uuid); st.Exists {
			// Left by an interrupted create, or adopted: build it afresh.
			err = h.o.Containers.Replace(ctx, spec)
		} else if err = h.o.Containers.Create(ctx, spec); err == nil {
			err = h.o.Containers.Start(ctx, w.uuid)
		}
	}
	if err != nil {
		w.tell(events.Event{Kind: events.StartFailed, Message: "the app could not be created and started", Error: err.Error()})
		w.fail(err)
		w.setState(StateError)
		w.save()
		return err
	}
	w.attempted = ""
	w.rec.Running = run
	w.setState(StateRunning)
	w.tell(events.Event{Kind: events.Started, Message: "app created and started"})
	return w.done(app, true)
}

// observe compares what containerd holds with what the app should run when
// nothing was asked: a container that vanished is rebuilt from the images
// the app runs; a process that exited after its grace period is reported
// and started again with back-off.
func (w *worker) observe(ctx context.Context, cfg *config.Config, app config.App) error {
	h := w.h
	st, err := h.o.Containers.Status(ctx, w.uuid)
	if err != nil {
		return err
	}
	switch {
	case !st.Exists:
		w.logger().Warn("the app's container is gone; building it again")
		return w.perform(ctx, cfg, app, opReplace, w.rec.Running, nil)
	case st.Running:
		w.watchExit(ctx, st.Pid)
		if w.rec.State == StateHalted {
			w.setState(StateRunning)
		}
		return nil
	}
	return w.exited(ctx, cfg, app, st)
}

// watchStart waits one grace period for the app, which now runs new
// images, and, when it has a healthcheck (its own, or else its image's),
// until a probe passes (the healthcheck's window at most). If it dies in it, or no probe passes, its
// policy is asked (start-failed); on rollback it goes back to the images
// it ran before.
func (w *worker) watchStart(ctx context.Context, cfg *config.Config, app config.App, before map[string]RunImage) error {
	h := w.h
	start := time.Now()
	deadline := start.Add(h.o.GracePeriod)
	probe, source := w.probeOf(ctx, app)
	if probe != nil {
		deadline = start.Add(max(h.o.GracePeriod, probe.Window()))
		st, _ := h.o.Containers.Status(ctx, w.uuid)
		w.resetHealth(probe, source, st.Pid)
	}
	healthy := probe == nil
	fails := 0
	var next time.Time
	var lastErr error
	for time.Now().Before(deadline) {
		st, err := h.o.Containers.Status(ctx, w.uuid)
		if err != nil {
			return err
		}
		if st.Exists && !st.Running {
			return w.startFailed(ctx, cfg, app, before, fmt.Sprintf("app exited with code %d within %s of starting on new images", st.ExitCode, h.o.GracePeriod))
		}
		if !healthy && !time.Now().Before(next) {
			next = time.Now().Add(probe.Interval)
			lastErr = h.o.Containers.Probe(ctx, w.uuid, *probe)
			w.noteProbe(lastErr)
			switch {
			case lastErr == nil:
				healthy = true
				w.tell(events.Event{Kind: events.Healthy, Message: "the app passed its healthcheck on its new images", Took: events.Duration(time.Since(start).Round(time.Millisecond))})
			case time.Since(start) >= probe.StartPeriod:
				fails++
				if fails >= probe.Retries {
					return w.startFailed(ctx, cfg, app, before, fmt.Sprintf("app unhealthy on new images: %d probes in a row failed (last: %v)", fails, lastErr))
				}
			}
		}
		if healthy && time.Since(start) >= h.o.GracePeriod {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !healthy {
		return w.startFailed(ctx, cfg, app, before, fmt.Sprintf("app unhealthy on new images: no probe passed within %s (last: %v)", probe.Window(), lastErr))
	}
	return nil
}

func (w *worker) startFailed(ctx context.Context, cfg *config.Config, app config.App, before map[string]RunImage, msg string) error {
	h := w.h
	root := app.RootDrive().Image
	m, err := h.o.Policies.Module(ctx, cfg.Policy(app))
	if err != nil {
		return err
	}
	r, _, _ := h.o.Images.Get(root.UUID)
	run := w.rec.Running[root.UUID]
	in := h.input(cfg, app, *root, r, run, true, sdk.EventStartFailed, &w.rec)
	in.LastError = msg
	d, err := w.ask(ctx, m, *root, in)
	if err != nil {
		return err
	}
	w.record(*root, sdk.EventStartFailed, d)
	if d.Action != sdk.ActionRollback || len(before) == 0 {
		w.tell(events.Event{Kind: events.StartFailed, Message: "the app failed on its new images and stays failed", Policy: w.rec.Policy,
			Reason: d.Reason, Error: msg})
		w.fail(errors.New(msg))
		w.setState(StateError)
		return w.save()
	}
	var latches []imagestore.Record
	for id, b := range before {
		r, ok, _ := h.o.Images.Get(id)
		if ok && r.Digest != b.Digest {
			// The digest it failed on is marked, so a tag that still
			// names it is not pulled again until it moves or a refresh.
			latches = append(latches, imagestore.Record{ID: id, Ref: b.Ref, Pair: b.Pair,
				Reason: imagestore.LatchRollback, ResolvedAt: h.o.Now().UTC(), RolledBackFrom: r.Digest})
		}
	}
	if err := w.perform(ctx, cfg, app, opReplace, before, latches); err != nil {
		return err
	}
	w.fail(fmt.Errorf("%s; rolled back to the previous images", msg))
	w.tell(events.Event{Kind: events.RolledBack, Message: "rolled back to the previous images", Policy: w.rec.Policy, Reason: msg})
	w.setState(StateRolledBack)
	return w.done(app, false)
}

func (w *worker) remove(ctx context.Context, cfg *config.Config) error {
	h := w.h
	if err := h.o.Containers.Remove(ctx, w.uuid); err != nil {
		w.fail(err)
		w.publish()
		return err
	}
	w.rec.Running = nil
	w.publish()
	w.tell(events.Event{Kind: events.Removed, Message: "app removed: the configuration no longer lists it"})
	w.release(ctx, cfg)
	return h.state.forget(w.uuid)
}

// release forgets the ImageObjectIDs the app used as last acted upon that
// no app of cfg uses any more, and lets containerd collect images nothing
// refers to.
func (w *worker) release(ctx context.Context, cfg *config.Config) {
	h := w.h
	if w.applied == nil {
		return
	}
	for _, img := range containerImages(*w.applied) {
		if !usesImage(cfg, img.UUID) {
			if err := h.o.Images.Delete(img.UUID); err != nil {
				h.log.Warn("forgetting an image no app uses", "image", img.UUID, "error", err)
			}
		}
	}
	h.collect(ctx)
}

// done records the app as acted upon: its counters, its configuration and
// what it runs, in one transaction. ok clears the last error.
func (w *worker) done(app config.App, ok bool) error {
	w.rec.Pending = nil
	w.rec.Counters = app.Counters()
	if ok && w.rec.State != StateRolledBack {
		w.rec.LastError, w.rec.LastErrorAt, w.rec.Hint = "", nil, ""
	}
	w.applied = &app
	return w.save()
}

// settle is done without the write: the record is published, and written
// with the next save (or when the host closes).
func (w *worker) settle(app config.App) {
	w.rec.Pending = nil
	w.rec.Counters = app.Counters()
	w.rec.LastError, w.rec.LastErrorAt, w.rec.Hint = "", nil, ""
	w.applied = &app
	w.dirty = true
	w.publish()
}

// save persists the record (and the configuration acted upon) when
// something a reader can see changed: flash wears.
func (w *worker) save() error {
	w.publish()
	if err := w.h.state.save(w.rec, w.applied); err != nil {
		return err
	}
	w.dirty = false
	return nil
}

func (w *worker) setState(s string) {
	if w.rec.State != s {
		w.rec.State = s
		w.publish()
		w.h.changed()
	}
}

func (w *worker) fail(err error) {
	now := w.h.o.Now().UTC()
	w.rec.LastError, w.rec.LastErrorAt = err.Error(), &now
	w.rec.Hint = registry.Hint(err, "list it in device.insecureRegistries")
	if containers.Unreachable(err) {
		w.rec.Hint = "containerd does not answer (is it running? `systemctl status containerd`): the action is tried again when it does"
	}
}

// spec builds the container spec for the images the app is to run.
func (w *worker) spec(app config.App, run map[string]RunImage) (containers.Spec, error) {
	s, err := containers.SpecFromConfig(app)
	if err != nil {
		return s, err
	}
	root := app.RootDrive()
	for i, d := range app.Drives {
		switch d.Kind {
		case config.DriveVolume:
			s.Volumes = append(s.Volumes, containers.Mount{Source: fmt.Sprintf("drive%d", i), Path: d.MountPath})
		case config.DriveContainer:
			r, ok := run[d.Image.UUID]
			if !ok || r.Digest == "" {
				return s, fmt.Errorf("image %s (%s) has not been resolved", d.Image.UUID, d.Image.Name)
			}
			name, err := w.h.imageName(r)
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

// latch records the ImageObjectIDs' new resolutions.
func (w *worker) latch(recs []imagestore.Record) error {
	for _, r := range recs {
		if err := w.h.o.Images.Latch(r); err != nil {
			return err
		}
	}
	return nil
}

func (w *worker) releaseHolds() {
	for _, r := range w.holds {
		r()
	}
	w.holds = nil
}

func latchesOf(targets map[string]round.Result) []imagestore.Record {
	var out []imagestore.Record
	for _, c := range targets {
		if c.Latch != nil {
			out = append(out, *c.Latch)
		}
	}
	return out
}

func containerImages(app config.App) []config.Image {
	var out []config.Image
	for _, d := range app.Drives {
		if d.Kind == config.DriveContainer && d.Image != nil {
			out = append(out, *d.Image)
		}
	}
	return out
}

// driveField names the i-th container drive of app as the configuration
// does.
func driveField(app config.App, i int) string {
	n := 0
	for j, d := range app.Drives {
		if d.Kind == config.DriveContainer {
			if n == i {
				return fmt.Sprintf("drives[%d].image", j)
			}
			n++
		}
	}
	return fmt.Sprintf("drives[?%d]", i)
}

func usesImage(cfg *config.Config, imageID string) bool {
	for _, a := range cfg.Apps {
		for _, img := range containerImages(a) {
			if img.UUID == imageID {
				return true
			}
		}
	}
	return false
}

func sameImages(a, b map[string]RunImage) bool { return maps.Equal(a, b) }

// attemptKey identifies a configuration of the app, policy included, so a
// failed create or change is tried again when anything about it changes.
func attemptKey(cfg *config.Config, app config.App) string {
	b, _ := json.Marshal(struct {
		App    config.App
		Policy config.PolicyRef
	}{app, cfg.Policy(app)})
	return string(b)
}
