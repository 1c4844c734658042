package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/containers"
	"github.com/pullwise/pullwise/host/events"
)

// The local API, on a unix socket (mode 0600) in the state directory:
//
//	GET  /v1/status                 Status
//	POST /v1/apps/{app}/{op}        op: refresh, restart or purge; increases the
//	                                counter as a controller would. With ?wait=1
//	                                the answer streams newline-delimited JSON:
//	                                {"progress": ...} lines, then {"result": AppInfo}
//	                                or {"error": "..."}.
//	GET  /v1/apps/{app}             AppInfo: one app's report
//	GET  /v1/apps/{app}/dry-run     []ImageCheck: what a refresh would change
//	GET  /v1/apps/{app}/logs/since?t=RFC3339
//	                                LogPosition: where its output since t starts
//	GET  /v1/events                 the kept events as newline-delimited JSON;
//	                                ?app= ?since= ?after= ?kind= ?follow=1
//	                                (see handleEvents)
//
// {app} is an app's uuid or display name.
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := a.snapshot()
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		d := a.device()
		st.Agent.Device = &d
		writeJSON(w, st)
	})
	mux.HandleFunc("POST /v1/apps/{app}/{op}", a.handleOp)
	mux.HandleFunc("GET /v1/events", a.handleEvents)
	mux.HandleFunc("GET /v1/apps/{app}", func(w http.ResponseWriter, r *http.Request) {
		uuid, err := a.findApp(r.PathValue("app"))
		if err != nil {
			httpError(w, http.StatusNotFound, err)
			return
		}
		st, ok := a.host.App(uuid)
		if !ok {
			httpError(w, http.StatusNotFound, fmt.Errorf("no app %q", r.PathValue("app")))
			return
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("GET /v1/apps/{app}/logs/since", func(w http.ResponseWriter, r *http.Request) {
		uuid, err := a.findApp(r.PathValue("app"))
		if err != nil {
			httpError(w, http.StatusNotFound, err)
			return
		}
		t, err := time.Parse(time.RFC3339Nano, r.URL.Query().Get("t"))
		if err != nil {
			httpError(w, http.StatusBadRequest, fmt.Errorf("t: %w", err))
			return
		}
		var dev config.Device
		if d := a.host.Desired(); d != nil {
			dev = d.Device
		}
		_, keep := dev.LogLimits()
		writeJSON(w, a.marks.since(uuid, t, keep))
	})
	mux.HandleFunc("GET /v1/apps/{app}/dry-run", func(w http.ResponseWriter, r *http.Request) {
		uuid, err := a.findApp(r.PathValue("app"))
		if err != nil {
			httpError(w, http.StatusNotFound, err)
			return
		}
		checks, err := a.host.DryRunRefresh(r.Context(), uuid)
		if err != nil {
			httpError(w, http.StatusBadGateway, err)
			return
		}
		writeJSON(w, checks)
	})
	return mux
}

func (a *Agent) handleOp(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	if op != "refresh" && op != "restart" && op != "purge" {
		httpError(w, http.StatusNotFound, fmt.Errorf("unknown operation %q: want refresh, restart or purge", op))
		return
	}
	uuid, err := a.findApp(r.PathValue("app"))
	if err != nil {
		httpError(w, http.StatusNotFound, err)
		return
	}
	mark := a.events.Last() // the app's stopping is followed from here
	if err := a.bumps.add(uuid, op); err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	tickets, err := a.reconcile()
	if tickets == nil {
		httpError(w, http.StatusConflict, fmt.Errorf("the configuration is rejected, so the %s cannot be applied: %w", op, err))
		return
	}
	if err := tickets.Rejected(uuid); err != nil {
		httpError(w, http.StatusConflict, fmt.Errorf("the app's configuration is rejected, so the %s cannot be applied: %w", op, err))
		return
	}
	if r.URL.Query().Get("wait") == "" {
		w.WriteHeader(http.StatusAccepted)
		writeJSON(w, map[string]string{"status": "accepted"})
		return
	}
	// The app's stopping, as it happens (a transient event).
	stopping := make(chan events.Event, 4)
	sctx, stopFollowing := context.WithCancel(r.Context())
	defer stopFollowing()
	go func() {
		f := events.Filter{App: uuid, After: mark, Kinds: []string{string(events.Stopping)}}
		for {
			es, err := a.events.Wait(sctx, f)
			if err != nil {
				return
			}
			for _, e := range es {
				f.After = e.Seq
				select {
				case stopping <- e:
				default:
				}
			}
		}
	}()
	progress := make(chan progressEvent, 64)
	a.mu.Lock()
	a.subs[progress] = uuid
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.subs, progress)
		a.mu.Unlock()
	}()
	// Only this app's outcome: other apps' work and errors are not waited
	// for and not reported here.
	done := make(chan error, 1)
	go func() { done <- tickets.Wait(r.Context(), uuid) }()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := newNDJSON(w)
	for {
		select {
		case ev := <-progress:
			enc.encode(map[string]any{"progress": ev.Progress})
			enc.flush()
		case e := <-stopping:
			enc.encode(map[string]any{"stopping": e})
			enc.flush()
		case err := <-done:
			a.flushStatus(r.Context())
			var result *app.AppInfo
			if st, ok := a.host.App(uuid); ok {
				result = &st
			}
			switch {
			case containers.Unreachable(err):
				// Not a failure of the action: it waits for containerd.
				enc.encode(map[string]any{"error": err.Error(), "queued": true, "result": result})
			case err != nil:
				enc.encode(map[string]any{"error": err.Error(), "result": result})
			default:
				enc.encode(map[string]any{"result": result})
			}
			enc.flush()
			return
		}
	}
}

// findApp maps a uuid or display name to the app's uuid, whatever state the
// app is in (a failed create included).
func (a *Agent) findApp(name string) (string, error) {
	if desired := a.host.Desired(); desired != nil {
		for _, ap := range desired.Apps {
			if ap.UUID == name || ap.DisplayName == name {
				return ap.UUID, nil
			}
		}
	}
	return "", fmt.Errorf("no app %q (give its uuid or display name; `pullwise status` lists them)", name)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
