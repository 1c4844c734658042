package app

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/internal/printable"
)

// worker is one app's lifecycle. It is fed the desired configuration
// (which may change at any time, also while it downloads) and the time
// its policy asked to be consulted again; it acts on them one piece of
// work at a time, on its own goroutine, so no app waits for another.
//
// Submissions are numbered (gen). A piece of work takes the latest
// configuration when it starts and again before its container action, so
// edits that arrive during a download are merged into that action; it then
// answers every waiter up to the last generation it took in.
type worker struct {
	h    *Host
	uuid string
	wake chan struct{}

	mu       sync.Mutex
	cfg      *config.Config // latest desired; the app may be absent (removed)
	gen      uint64         // of cfg (or of the latest tick request)
	since    time.Time      // when gen was asked for (the host's clock)
	acted    uint64         // the last generation acted upon
	errs     map[uint64]error
	waiters  []waiter
	info     AppInfo  // the published report: replaced by publish, never changed
	snap     *AppInfo // info with the downloads and health, as of its Revision
	started  bool
	stopped  chan struct{}               // closed when the loop has ended (app removed or host closed)
	ranLong  bool                        // the last watched process ran past the crash back-off reset
	exitSeen bool                        // the watched process exited since the worker last looked
	linkDue  bool                        // the link changed while the policy waited for a next check
	health   *healthState                // the running process's healthcheck state; nil without one
	download map[string]DownloadProgress // downloads under way, by ImageObjectID
	rev      uint64                      // counts changes to info, download and health (AppInfo.Revision)

	// Owned by the loop goroutine (and New, before it starts).
	rec         AppInfo                       // the app's persisted record
	applied     *config.App                   // the configuration as last acted upon; nil before create
	attempted   string                        // attemptKey of the configuration whose create or change last failed
	holds       []func()                      // images held from garbage collection until this piece of work ends
	dirty       bool                          // rec (or applied) has changes not yet written (see settle)
	eager       int                           // consecutive decisions that asked to be consulted again too soon
	moduleFails int                           // consecutive rounds whose policy module could not be had
	loggedAt    map[string]time.Time          // when each image's decision was last logged at info level
	announced   map[string]imagedigest.Digest // ImageObjectID -> the digest last told available (image.update-available)
	booted      bool                          // the first piece of work has run (boot event)
	exitWatch   context.CancelFunc
	crashes     int             // consecutive exits after the grace period
	restartAt   time.Time       // when an exited app is started again
	lookAgainAt time.Time       // when to observe the container again after containerd did not answer
	lastWatched uint32          // the pid whose exit is being watched
	procCtx     context.Context // the watched process's: done when it exited
	healthWatch context.CancelFunc
	healthCtx   context.Context // the health watch's: done when it ended
	healthKey   string          // the process and healthcheck the health watch probes
}

type waiter struct {
	gen uint64
	ch  chan error
}

func (h *Host) newWorker(uuid string) *worker {
	w := &worker{h: h, uuid: uuid, wake: make(chan struct{}, 1), errs: map[uint64]error{}, stopped: make(chan struct{})}
	w.rec.UUID = uuid
	h.workers[uuid] = w
	return w
}

// logger is the host's logger with the app's display name and uuid, so a
// log line says which app in words an operator knows.
func (w *worker) logger() hclog.Logger {
	return w.h.log.With("app", w.rec.DisplayName, "uuid", w.uuid)
}

// tell is where something that happened to the app becomes known: one log
// line at the kind's level, and the event for whoever watches
// (Options.Events: `pullwise events`, notifications, metrics).
func (w *worker) tell(e events.Event) {
	e.App, e.AppName = w.uuid, w.rec.DisplayName
	w.h.tell(e)
}

// tell logs e and hands it on (see worker.tell).
func (h *Host) tell(e events.Event) {
	if e.Time.IsZero() {
		e.Time = h.o.Now().UTC()
	}
	e.Reason, e.Error = printable.String(e.Reason), printable.String(e.Error)
	h.log.Log(e.Kind.Level(), e.Message, e.Fields()...)
	if h.o.Events != nil {
		h.o.Events(e)
	}
}

// submit hands the worker a new desired configuration and returns its
// generation.
func (w *worker) submit(cfg *config.Config) uint64 {
	w.mu.Lock()
	w.cfg, w.since = cfg, w.h.o.Now()
	w.gen++
	gen := w.gen
	w.mu.Unlock()
	w.poke()
	return gen
}

// isStarted reports whether the worker's loop runs (it has had its first
// piece of work: boot, healing, adoption).
func (w *worker) isStarted() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.started
}

// keep hands the worker a configuration in which its app is unchanged,
// without waking it, and returns the generation it is at.
func (w *worker) keep(cfg *config.Config) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cfg = cfg
	return w.gen
}

// tick wakes the worker if its policy's requested time has come (reconcile
// sees that by the same clock) and returns the generation to wait for.
func (w *worker) tick(now time.Time) (uint64, bool) {
	w.mu.Lock()
	next := w.info.NextCheck
	if next == nil || next.After(now) || w.cfg == nil {
		w.mu.Unlock()
		return 0, false
	}
	w.gen++
	gen := w.gen
	w.mu.Unlock()
	w.poke()
	return gen, true
}

// linkChanged wakes the worker if its policy waits for a next check: the
// link it decided on is not the link now.
func (w *worker) linkChanged() {
	w.mu.Lock()
	if w.info.NextCheck == nil || w.cfg == nil {
		w.mu.Unlock()
		return
	}
	w.linkDue = true
	w.gen++
	w.mu.Unlock()
	w.poke()
}

// takeLinkDue reports (and forgets) whether the link changed while the
// policy waited.
func (w *worker) takeLinkDue() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	due := w.linkDue
	w.linkDue = false
	return due
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run starts the worker's loop once.
func (w *worker) run(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return
	}
	w.started = true
	w.h.wg.Add(1)
	go w.loop(ctx)
}

// wait waits until generation gen has been acted upon and returns its error.
func (w *worker) wait(ctx context.Context, gen uint64) error {
	w.mu.Lock()
	if w.acted >= gen {
		err := w.errs[gen]
		w.mu.Unlock()
		return err
	}
	ch := make(chan error, 1)
	w.waiters = append(w.waiters, waiter{gen: gen, ch: ch})
	w.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-w.stopped:
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.acted >= gen {
			return w.errs[gen]
		}
		return context.Canceled
	case <-ctx.Done():
		return ctx.Err()
	}
}

// latest is the configuration to act on, its generation and the time it
// was asked for.
func (w *worker) latest() (*config.Config, uint64, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg, w.gen, w.since
}

// finish answers the waiters up to gen.
func (w *worker) finish(gen uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for g := w.acted + 1; g <= gen; g++ {
		if err != nil {
			w.errs[g] = err
		}
	}
	// Keep only recent outcomes: a waiter asks right after submitting.
	for g := range w.errs {
		if g+64 < gen {
			delete(w.errs, g)
		}
	}
	w.acted = max(w.acted, gen)
	kept := w.waiters[:0]
	for _, wt := range w.waiters {
		if wt.gen <= w.acted {
			wt.ch <- w.errs[wt.gen]
		} else {
			kept = append(kept, wt)
		}
	}
	w.waiters = kept
}

// publish makes the record the reported state.
func (w *worker) publish() {
	w.mu.Lock()
	w.info = w.rec.clone()
	w.rev++
	w.mu.Unlock()
}

// setDownload notes how far the download of image id is (nil: it ended).
func (w *worker) setDownload(id string, p *DownloadProgress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rev++
	if p == nil {
		delete(w.download, id)
		return
	}
	if w.download == nil {
		w.download = map[string]DownloadProgress{}
	}
	w.download[id] = *p
}

// snapshot is the app's reported state. It is made again only when the
// revision moved (fifty apps reported after one app's action copy one
// app's maps), and it shares its maps with the next callers: a report is
// read, never changed. (The published info is a copy of the record that
// is replaced, not changed, so it can be shared too.)
func (w *worker) snapshot() AppInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.snap == nil || w.snap.Revision != w.rev {
		info := w.info
		info.Revision = w.rev
		info.Downloads = maps.Clone(w.download)
		if w.health != nil {
			hi := w.health.info
			info.Health = &hi
		}
		w.snap = &info
	}
	return *w.snap
}

// loop acts on submissions, policy ticks and app exits until the app is
// removed or the host closes.
func (w *worker) loop(ctx context.Context) {
	defer w.h.wg.Done()
	defer close(w.stopped)
	defer func() {
		if w.exitWatch != nil {
			w.exitWatch()
		}
		w.stopHealthWatch()
	}()
	for {
		var timer <-chan time.Time
		stop := func() bool { return false }
		if at, ok := w.nextWake(); ok {
			t := time.NewTimer(max(time.Until(at), 0))
			timer, stop = t.C, t.Stop
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-w.wake:
		case <-timer:
		}
		stop()
		cfg, gen, since := w.latest()
		restarts, created := w.rec.Restarts, w.applied != nil
		removed, taken, err := w.reconcile(ctx, cfg, gen, since)
		if ctx.Err() != nil {
			return // closing: the journal lets the next run finish the work
		}
		if !removed && w.applied != nil && (w.exitWatch == nil || w.rec.Restarts != restarts || !created) {
			// A new process runs: its exit must wake the worker. Armed before
			// the waiters hear the outcome; if containerd does not answer,
			// the worker looks again shortly.
			st, serr := w.h.o.Containers.Status(ctx, w.uuid)
			switch {
			case serr != nil:
				w.lookAgain()
			case st.Running:
				w.watchExit(ctx, st.Pid)
			}
		}
		if !removed && w.applied != nil {
			w.watchHealth(ctx, *w.applied)
		}
		w.finish(taken, err)
		w.h.changed()
		if removed {
			if w.h.retire(w) {
				return
			}
			// Configured again while it was being removed: start afresh.
			w.rec, w.applied, w.attempted, w.booted = AppInfo{UUID: w.uuid}, nil, "", true
			w.publish()
			w.poke()
		}
	}
}

// nextWake is when the worker must look again without being asked: the
// policy's next check, or an exited app's restart.
func (w *worker) nextWake() (time.Time, bool) {
	var at time.Time
	if w.rec.NextCheck != nil {
		// The host's clock may not be the wall clock (tests): the timer
		// counts the difference. (schedule keeps a policy's nextCheck at
		// least MinNextCheck away; the second here only keeps a clock
		// that disagrees with the record from spinning the loop.)
		at = time.Now().Add(w.rec.NextCheck.Sub(w.h.o.Now()))
		at = maxTime(at, time.Now().Add(time.Second))
	}
	for _, t := range []time.Time{w.restartAt, w.lookAgainAt} {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	return at, !at.IsZero()
}

// lookAgain has the worker observe its container again shortly, after
// containerd did not answer.
func (w *worker) lookAgain() { w.lookAgainAt = time.Now().Add(2 * time.Second) }

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
