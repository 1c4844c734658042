package app

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/sdk"
)

// An app with a healthcheck (its own, or else its image's HEALTHCHECK) is
// probed twice over:
//   - after an image change, by the worker itself (watchStart): a pass
//     within the healthcheck's window is what lets the change stand;
//   - while it runs, by a watcher goroutine per process (watchHealth), as
//     Docker does: its state is in the status, the events and the
//     policy's input (sdk.App.Health). A running app that turns
//     unhealthy is reported, not restarted or rolled back (Docker's
//     semantics; a policy may act on it at its next decision).
//
// The state lives in memory only: a healthy app's probes write nothing.

// HealthInfo is an app's healthcheck state as reported.
type HealthInfo struct {
	sdk.Health
	// Source is where the healthcheck comes from: "app" (the configuration)
	// or "image" (the image's HEALTHCHECK).
	Source string `json:"source"`
	// LastError is the last failed probe's error.
	LastError string `json:"lastError,omitempty"`
}

// probeOf is the healthcheck app's process is held to, and where it comes
// from: the app's own, or else its image's; nil for none.
func (w *worker) probeOf(ctx context.Context, app config.App) (*config.Probe, string) {
	hc, source := app.Healthcheck, "app"
	if hc == nil {
		img, err := w.h.o.Containers.ImageHealthcheck(ctx, w.uuid)
		if err != nil {
			w.logger().Debug("cannot read the image's healthcheck", "error", err)
		}
		hc, source = img, "image"
	}
	if hc == nil {
		return nil, ""
	}
	p, err := hc.Probe()
	if err != nil {
		return nil, "" // the configuration's was validated; the image's was read with Probe
	}
	return &p, source
}

// healthState is one process's healthcheck bookkeeping, under w.mu.
type healthState struct {
	info    HealthInfo
	pid     uint32    // the process probed
	started time.Time // when probing it began, for the start period
	probe   config.Probe
}

// resetHealth starts process pid's health record (p nil: no healthcheck).
func (w *worker) resetHealth(p *config.Probe, source string, pid uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rev++
	if p == nil {
		w.health = nil
		return
	}
	w.health = &healthState{pid: pid, started: time.Now(), probe: *p,
		info: HealthInfo{Health: sdk.Health{Status: sdk.HealthStarting, Since: w.h.o.Now().UTC()}, Source: source}}
}

// noteProbe records one probe's outcome and says what the state was and
// is now.
func (w *worker) noteProbe(err error) (was, now sdk.HealthStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	hs := w.health
	if hs == nil {
		return "", ""
	}
	w.rev++
	was, next := hs.info.Status, hs.info.Status
	if err == nil {
		hs.info.FailingStreak, hs.info.LastError = 0, ""
		next = sdk.HealthHealthy
	} else {
		hs.info.LastError = err.Error()
		if hs.info.Status != sdk.HealthStarting || time.Since(hs.started) >= hs.probe.StartPeriod {
			// Docker: failures in the start period do not count.
			hs.info.FailingStreak++
		}
		if hs.info.FailingStreak >= hs.probe.Retries {
			next = sdk.HealthUnhealthy
		}
	}
	if next != was {
		hs.info.Status, hs.info.Since = next, w.h.o.Now().UTC()
	}
	return was, next
}

// healthInfo is the app's healthcheck state, nil without one.
func (w *worker) healthInfo() *HealthInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.health == nil {
		return nil
	}
	hi := w.health.info
	return &hi
}

// watchHealth probes the app's watched process (see watchExit) at its
// healthcheck's interval until the process exits, a container action
// begins (stopHealthWatch) or the healthcheck changes. Started again only
// when one of those happened.
func (w *worker) watchHealth(ctx context.Context, app config.App) {
	pid, proc := w.lastWatched, w.procCtx
	if proc == nil || proc.Err() != nil {
		return // no live process: its exit ended the watch
	}
	hcJSON, _ := json.Marshal(app.Healthcheck)
	key := fmt.Sprintf("%d %s", pid, hcJSON)
	if key == w.healthKey && (w.healthCtx == nil || w.healthCtx.Err() == nil) {
		return // probing this process with this healthcheck already, or it has none
	}
	w.stopHealthWatch()
	w.healthKey = key
	p, source := w.probeOf(ctx, app)
	if hs := w.healthInfo(); p == nil || hs == nil || hs.Source != source || w.healthPid() != pid {
		w.resetHealth(p, source, pid)
	}
	if p == nil {
		return
	}
	hctx, cancel := context.WithCancel(proc)
	w.healthWatch, w.healthCtx = cancel, hctx
	uuid, name := w.uuid, w.rec.DisplayName // the goroutine must not read the loop's record
	go func() {
		t := time.NewTimer(p.Interval)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
			err := w.h.o.Containers.Probe(hctx, uuid, *p)
			if hctx.Err() != nil {
				return
			}
			// Told: turning unhealthy, and recovering. A process's first
			// pass (after a restart, a rollback, an agent start) only
			// shows in the status; a change's is told by watchStart.
			switch was, now := w.noteProbe(err); {
			case was == now:
			case now == sdk.HealthUnhealthy:
				w.h.tell(events.Event{Kind: events.Unhealthy, App: uuid, AppName: name,
					Message: fmt.Sprintf("the app failed its healthcheck %d times in a row", p.Retries), Error: err.Error()})
				w.h.changed()
			case was == sdk.HealthUnhealthy:
				w.h.tell(events.Event{Kind: events.Healthy, App: uuid, AppName: name, Message: "the app passed its healthcheck again"})
				w.h.changed()
			default:
				w.h.changed()
			}
			t.Reset(p.Interval)
		}
	}()
}

func (w *worker) healthPid() uint32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.health == nil {
		return 0
	}
	return w.health.pid
}

// stopHealthWatch ends the health watch: a container action is about to
// stop the process, whose probes would fail meanwhile.
func (w *worker) stopHealthWatch() {
	if w.healthWatch != nil {
		w.healthWatch()
	}
	w.healthWatch, w.healthCtx, w.healthKey = nil, nil, ""
}
