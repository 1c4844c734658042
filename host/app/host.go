// Package app runs app instances as the EVE design note describes: it
// brings containerd in line with a configuration, asking the apps' pull
// policies at every decision and acting on their answers, with EVE's
// counter semantics:
//
//   - create: absent image, pull; present, whatever the policy says;
//     "present" is what containerd holds (the note's "exists"), whichever
//     ImageObjectID or app brought it there;
//   - refreshImage: check every container drive, download while the app keeps
//     running, restart only if an image changed (or restart was asked too);
//   - restart, purge and any other change wait for the refresh's download
//     attempt, success or failure, and whatever arrives meanwhile is merged
//     into one stop and one start; a failed refresh leaves the app running;
//   - several increases of a counter before it is acted upon are one action;
//     every container action is journalled before its effect, so a restart
//     of the host neither repeats a completed action nor loses a pending one,
//     and a crash is healed by comparing what each container runs with what
//     it should run;
//   - an app that dies within the grace period after an image change is
//     reported to its policy (start-failed), which may roll it back.
//
// Each app has a worker of its own (worker.go): one app's slow download,
// failed create or grace period never delays another app. What apps share
// stays shared: one registry check of a reference at a time, one download of
// an image.
package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/singleflight"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/imagedigest"
)

// ErrRejected marks configuration problems: the device part rejects the
// whole configuration (nothing is touched); an app's own problem rejects
// that app only, which keeps running as it was while the others apply.
var ErrRejected = errors.New("configuration rejected")

// Host runs the apps of a configuration, each on its own worker. Its methods
// are safe for concurrent use.
type Host struct {
	o      options
	state  *stateStore
	log    hclog.Logger
	checks *checks
	pulls  singleflight.Group // one download per image at a time, shared by the apps that need it

	mu          sync.Mutex
	desired     *config.Config     // the last configuration submitted, rejected apps as they were
	rejected    map[string]string  // app uuid -> why its latest configuration was rejected
	submitted   map[string][]byte  // app uuid ("" the device) -> as last submitted, serialized
	savedDevice []byte             // the device part as last written to the state file, serialized
	settings    map[string]error   // module sha256 + settings -> its validate_settings answer
	reserved    int64              // disk bytes the downloads under way will take (disk.go)
	workers     map[string]*worker // by app uuid
	cancel      context.CancelFunc // stops the workers
	wctx        context.Context    // the workers' context, set at the first Submit
	wg          sync.WaitGroup
}

// New opens the host's state (the state file, see host/statedb, which the
// caller owns and closes) and picks up where the last run stopped: each
// app's record (what it runs, what it was doing) is loaded, and apps
// already running in containerd are adopted as they are when the first
// configuration is submitted. WithRegistry, WithPuller, WithImages,
// WithContainers and WithPolicies are required.
func New(ctx context.Context, state *bolt.DB, opts ...Option) (*Host, error) {
	o, err := newOptions(state, opts)
	if err != nil {
		return nil, fmt.Errorf("app host: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err // a start given up opens nothing
	}
	st, err := openState(o.State)
	if err != nil {
		return nil, err
	}
	h := &Host{o: o, state: st, log: o.Logger, checks: newChecks(o.Registry, o.CheckWindow),
		workers: map[string]*worker{}, rejected: map[string]string{}, settings: map[string]error{}}
	applied, err := st.applied()
	if err != nil {
		return nil, fmt.Errorf("reading app state: %w", err)
	}
	statuses, err := st.statuses()
	if err != nil {
		return nil, fmt.Errorf("reading app state: %w", err)
	}
	for _, rec := range statuses {
		w := h.newWorker(rec.UUID)
		w.rec = rec
		if a, ok := applied.App(rec.UUID); ok {
			w.applied = &a
			if len(w.rec.Running) == 0 {
				// A record of an agent before per-app images: its apps ran
				// what their ImageObjectIDs were latched to.
				w.rec.Running = h.latchedImages(a)
			}
		}
		w.publish()
	}
	if applied != nil {
		h.desired = applied
		h.savedDevice, _ = json.Marshal(applied.Device)
	}
	return h, nil
}

// latchedImages are the images app's ImageObjectIDs are latched to.
func (h *Host) latchedImages(app config.App) map[string]RunImage {
	run := map[string]RunImage{}
	for _, img := range containerImages(app) {
		if r, ok, _ := h.o.Images.Get(img.UUID); ok && r.Ref == img.Name {
			run[img.UUID] = RunImage{Ref: r.Ref, Pair: r.Pair}
		}
	}
	return run
}

// Close stops the workers (an action in progress is abandoned where it
// stands; its journal lets the next run finish it) and writes the records
// kept in memory. Apps keep running; the state file stays open (its owner
// closes it).
func (h *Host) Close() error {
	h.mu.Lock()
	if h.cancel != nil {
		h.cancel()
	}
	h.mu.Unlock()
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for _, w := range h.workers {
		if w.dirty {
			errs = append(errs, h.state.save(w.rec, w.applied))
		}
	}
	return errors.Join(errs...)
}

// Desired is the configuration the apps are being brought to: the last one
// submitted, with any app whose part was rejected as it was before (nil
// before the first submission).
func (h *Host) Desired() *config.Config {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.desired
}

// Tickets are the pieces of work one submission gave the apps' workers.
type Tickets struct {
	h        *Host
	gens     map[string]uint64 // app uuid -> the configuration generation to wait for
	rejected map[string]error  // app uuid -> why its part was rejected
}

// Rejected is why the app's part of the submission was rejected (nil if it
// was not): the app goes on as its previous configuration said.
func (t *Tickets) Rejected(uuid string) error { return t.rejected[uuid] }

// Wait waits until the app's worker has acted on the submission (or on a
// later one) and returns the outcome for that app alone. An app not in the
// submission answers nil at once.
func (t *Tickets) Wait(ctx context.Context, uuid string) error {
	gen, ok := t.gens[uuid]
	if !ok {
		return nil
	}
	t.h.mu.Lock()
	w := t.h.workers[uuid]
	t.h.mu.Unlock()
	if w == nil {
		return nil // removed: its worker has finished
	}
	return w.wait(ctx, gen)
}

// WaitAll waits for every app of the submission and joins their errors,
// each prefixed with the app's uuid.
func (t *Tickets) WaitAll(ctx context.Context) error {
	ids := make([]string, 0, len(t.gens))
	for id := range t.gens {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var errs []error
	for _, id := range ids {
		if err := t.Wait(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("app %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// Apply submits cfg and waits until every app has acted on it. See Submit
// for what is rejected; the error joins the rejections and every app's
// failure.
func (h *Host) Apply(ctx context.Context, cfg *config.Config) error {
	t, err := h.Submit(ctx, cfg)
	if t == nil {
		return err
	}
	return errors.Join(err, t.WaitAll(ctx))
}

// Submit hands cfg to the apps' workers and returns at once. Problems of
// the device part reject the whole configuration (nil Tickets, error
// wrapping ErrRejected, nothing touched). Problems of one app (any field,
// counters going backwards, unknown policies, settings its policy rejects)
// reject that app only: it keeps running as its previous configuration
// said and reports the problem, while every other app is acted upon; the
// error then wraps ErrRejected and Tickets is not nil.
//
// ctx carries the containerd namespace for the workers; they outlive it
// (they run until Close).
func (h *Host) Submit(ctx context.Context, cfg *config.Config) (*Tickets, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// What the device part and each app are submitted as, serialized: a
	// caller may change the configuration it passed after passing it, and
	// an app whose part is the one accepted last time, under the same
	// device part, is not parsed again (Config.CheckChanged).
	asGiven := make(map[string][]byte, len(cfg.Apps)+1)
	for _, a := range cfg.Apps {
		asGiven[a.UUID], _ = json.Marshal(a)
	}
	asGiven[""], _ = json.Marshal(cfg.Device)
	sameDevice := bytes.Equal(h.submitted[""], asGiven[""])
	accepted := func(a config.App) bool {
		_, rejected := h.rejected[a.UUID]
		return sameDevice && !rejected && bytes.Equal(h.submitted[a.UUID], asGiven[a.UUID])
	}
	dev, appErrs := cfg.CheckChanged(h.desired, h.o.Policies.Known, accepted)
	if dev != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, dev)
	}
	if err := h.checkSettings(ctx, "device.pullPolicy", cfg.Device.PullPolicy); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	var rejected []error
	appRejected := map[string]error{}
	eff := &config.Config{Device: cfg.Device}
	h.rejected = map[string]string{}
	for i, a := range cfg.Apps {
		err := appErrs[a.UUID]
		if err == nil {
			err = h.checkSettings(ctx, fmt.Sprintf("apps[%d].pullPolicy", i), a.PullPolicy)
		}
		if err == nil {
			eff.Apps = append(eff.Apps, a)
			continue
		}
		rejected = append(rejected, fmt.Errorf("%w: app %s: %w", ErrRejected, a.UUID, err))
		appRejected[a.UUID] = fmt.Errorf("%w: %w", ErrRejected, err)
		h.rejected[a.UUID] = err.Error()
		if old, ok := h.desired.App(a.UUID); ok {
			eff.Apps = append(eff.Apps, old)
		} else if h.workers[a.UUID] == nil && a.UUID != "" {
			// A new app rejected: reported (with why), not acted upon, until
			// its part is fixed or it leaves the configuration.
			w := h.newWorker(a.UUID)
			w.rec.DisplayName = a.DisplayName
			w.publish()
		}
	}
	// An app the file no longer lists is removed only by a file whose every
	// app part is valid. A rejected part may be that very app with its uuid
	// mangled ("12345" for its UUID): taking the file at its word would
	// remove the app with its volume, and the fixed file would bring it back
	// empty. So while any app part is rejected, the apps it leaves out are
	// kept as they were, and say why.
	if len(rejected) > 0 {
		for _, old := range h.desired.AppsNotIn(cfg) {
			eff.Apps = append(eff.Apps, old)
			why := fmt.Sprintf("not removed although the configuration no longer lists it: %d app part(s) of the file were rejected, and an app is removed only by a file whose every app part is valid", len(rejected))
			h.rejected[old.UUID] = why
			rejected = append(rejected, fmt.Errorf("%w: app %s (%s): %s", ErrRejected, old.UUID, old.DisplayName, why))
		}
	}
	submitted := make(map[string][]byte, len(eff.Apps)+1)
	for _, a := range eff.Apps {
		if b, given := asGiven[a.UUID]; given && appRejected[a.UUID] == nil {
			submitted[a.UUID] = b
		} else {
			submitted[a.UUID], _ = json.Marshal(a) // kept as it was
		}
	}
	submitted[""] = asGiven[""]
	deviceChanged := !bytes.Equal(h.submitted[""], submitted[""])
	if deviceChanged && !bytes.Equal(h.savedDevice, submitted[""]) {
		if err := h.state.setDevice(cfg.Device); err != nil {
			return nil, err
		}
		h.savedDevice = submitted[""]
	}
	prevSubmitted := h.submitted
	h.submitted = submitted
	h.desired = eff
	if h.wctx == nil {
		h.wctx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
		h.wg.Add(1)
		go h.watchLink(h.wctx)
	}
	t := &Tickets{h: h, gens: map[string]uint64{}, rejected: appRejected}
	for _, a := range eff.Apps {
		w := h.workers[a.UUID]
		if w == nil {
			w = h.newWorker(a.UUID)
		}
		if !deviceChanged && w.isStarted() && bytes.Equal(prevSubmitted[a.UUID], submitted[a.UUID]) {
			// Nothing for this app: its worker is not woken (fifty apps, an
			// action on one: one worker works).
			t.gens[a.UUID] = w.keep(eff)
			continue
		}
		t.gens[a.UUID] = w.submit(eff)
	}
	// Apps that left the configuration: their workers remove them. (A new
	// app whose part was rejected is still in it: reported, not acted upon.)
	for id, w := range h.workers {
		_, kept := eff.App(id)
		_, listed := cfg.App(id)
		if !kept && !listed {
			t.gens[id] = w.submit(eff)
		}
	}
	for _, w := range h.workers {
		w.run(h.wctx)
	}
	return t, errors.Join(rejected...)
}

// checkSettings asks a policy module whether it accepts an app's (or the
// device's) settings. The answer is remembered per module and settings: a
// submission that changes one app does not run every module again.
func (h *Host) checkSettings(ctx context.Context, field string, ref *config.PolicyRef) error {
	if ref == nil {
		return nil
	}
	m, err := h.o.Policies.Module(ctx, *ref)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	key := m.Info.SHA256 + "\x00" + string(ref.Settings)
	verr, ok := h.settings[key]
	if !ok {
		verr = m.ValidateSettings(ctx, ref.Settings)
		if len(h.settings) > 1024 {
			clear(h.settings)
		}
		h.settings[key] = verr
	}
	if verr != nil {
		return fmt.Errorf("%s.settings: %w", field, verr)
	}
	return nil
}

// Tick asks every app whose policy's requested time has come (by the
// host's clock) to consult its policy now, and waits for them. Workers
// also do this on their own when the time comes; Tick is for a clock that
// is not the wall clock (tests) and for "now".
func (h *Host) Tick(ctx context.Context) error {
	h.mu.Lock()
	t := &Tickets{h: h, gens: map[string]uint64{}}
	for id, w := range h.workers {
		if gen, ok := w.tick(h.o.Now()); ok {
			t.gens[id] = gen
		}
	}
	h.mu.Unlock()
	return t.WaitAll(ctx)
}

// retire drops a worker whose app was removed, unless a submission made
// since configures the app again (then the worker goes on).
func (h *Host) retire(w *worker) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cfg, _, _ := w.latest(); cfg != nil {
		if _, ok := cfg.App(w.uuid); ok {
			return false
		}
	}
	if h.workers[w.uuid] == w {
		delete(h.workers, w.uuid)
	}
	return true
}

// changed tells the agent that an app's report may have changed.
func (h *Host) changed() {
	if h.o.OnChange != nil {
		h.o.OnChange()
	}
}

// collect lets containerd collect the images no ImageObjectID refers to
// and no app runs, and says how many it removed.
func (h *Host) collect(ctx context.Context) int {
	var keep []imagedigest.Digest
	h.mu.Lock()
	for _, w := range h.workers {
		for _, r := range w.snapshot().Running {
			keep = append(keep, r.Digest, r.IndexDigest)
		}
	}
	h.mu.Unlock()
	defer h.o.Images.Hold(keep...)()
	removed, err := h.o.Puller.Collect(ctx, h.o.Images)
	if err != nil {
		h.log.Warn("collecting unused images", "error", err)
	}
	return len(removed)
}
