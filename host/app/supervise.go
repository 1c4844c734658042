package app

import (
	"context"
	"fmt"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/containers"
	"github.com/pullwise/pullwise/host/events"
)

// An app's process that exits on its own after its grace period (a crash,
// an OOM kill) is reported with its exit code and started again with
// kubelet's back-off: 10 s (Options.CrashBackoff), doubling to 5 min,
// reset once it has run for 10 min. The worker watches its own app's
// process; an exit wakes it.
const (
	crashBackoffCap   = 5 * time.Minute
	crashBackoffReset = 10 * time.Minute
)

// watchExit arms a watch on the app's current process (pid): its exit
// wakes the worker. Started again only when the process changed.
func (w *worker) watchExit(ctx context.Context, pid uint32) {
	if pid == w.lastWatched && w.exitWatch != nil {
		return
	}
	if w.exitWatch != nil {
		w.exitWatch()
	}
	wctx, cancel := context.WithCancel(ctx)
	exit, err := w.h.o.Containers.Wait(wctx, w.uuid)
	if err != nil {
		cancel()
		w.exitWatch, w.lastWatched, w.procCtx = nil, 0, nil
		w.lookAgain()
		w.logger().Debug("cannot watch the app's process; looking again shortly", "error", err)
		return
	}
	w.exitWatch, w.lastWatched, w.procCtx = cancel, pid, wctx
	started := time.Now()
	go func() {
		select {
		case code := <-exit:
			cancel() // ends the process's health watch
			w.logger().Debug("the watched process ended", "pid", pid, "code", code)
			w.mu.Lock()
			w.ranLong = time.Since(started) > crashBackoffReset
			w.exitSeen = true
			w.mu.Unlock()
			w.poke()
		case <-wctx.Done():
		}
	}()
}

// exited handles an app whose process is not running although nothing
// stopped it: report, then start it again when its back-off has passed.
func (w *worker) exited(ctx context.Context, cfg *config.Config, app config.App, st containers.Status) error {
	h := w.h
	if app.RestartOnExit != nil && !*app.RestartOnExit {
		if w.rec.State != StateHalted {
			code := st.ExitCode
			w.rec.LastExit = &code
			w.fail(fmt.Errorf("the app exited with code %d; not started again (restartOnExit: false)", code))
			w.setState(StateHalted)
			return w.save()
		}
		return nil
	}
	now := time.Now()
	if w.restartAt.IsZero() {
		w.mu.Lock()
		if w.ranLong {
			w.crashes = 0
		}
		w.mu.Unlock()
		w.crashes++
		delay := h.o.CrashBackoff
		for i := 1; i < w.crashes && delay < crashBackoffCap; i++ {
			delay *= 2
		}
		delay = min(delay, crashBackoffCap)
		w.restartAt = now.Add(delay)
		code := st.ExitCode
		w.rec.LastExit = &code
		w.fail(fmt.Errorf("the app exited with code %d; starting it again at %s (back-off %s)", code, w.restartAt.UTC().Format(time.RFC3339), delay))
		w.setState(StateHalted)
		w.tell(events.Event{Kind: events.Exited, Message: "app exited; starting it again after a back-off", Code: ptr(int(code)), Until: ptr(w.restartAt.UTC())})
		return w.save()
	}
	if now.Before(w.restartAt) {
		return nil
	}
	w.restartAt = time.Time{}
	if err := h.o.Containers.Start(ctx, w.uuid); err != nil {
		w.fail(err)
		w.save()
		return err
	}
	w.rec.Restarts++
	w.setState(StateRunning)
	if s, err := h.o.Containers.Status(ctx, w.uuid); err == nil {
		w.watchExit(ctx, s.Pid)
	}
	return w.save()
}

// takeExitSeen reports (and forgets) that the watched process exited.
func (w *worker) takeExitSeen() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := w.exitSeen
	w.exitSeen = false
	return seen
}
