package agent

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
)

// keepEvent is the app host's event hook: the event goes into the ring,
// where `pullwise events`, the notifiers and the metrics read it. A
// failure to write it is logged, never a failure of what happened.
func (a *Agent) keepEvent(e events.Event) {
	if _, err := a.events.Append(e); err != nil {
		a.log.Warn("keeping an event", "error", err)
	}
	if a.metrics.Event(e) {
		a.pokeTextfile()
	}
}

// tellConfig makes an event of a configuration file's outcome (accepted;
// rejected, or some apps' parts rejected), once per file and outcome: an
// action that re-reads an unchanged file tells nothing new.
func (a *Agent) tellConfig(err error) {
	key := a.parsedKey + "\x00"
	if err != nil {
		key += err.Error()
	}
	if key == a.toldConfig {
		return
	}
	a.toldConfig = key
	e := events.Event{Kind: events.ConfigAccepted, Message: "configuration applied", File: a.o.ConfigPath}
	if err != nil {
		e.Kind, e.Message, e.Error = events.ConfigRejected, "configuration rejected; what ran keeps running", err.Error()
		if fe, ok := errors.AsType[*config.FieldError](err); ok {
			e.Field = fe.Field
		}
	}
	a.keepEvent(e)
}

// handleEvents serves GET /v1/events: the kept events, oldest first, as
// newline-delimited JSON. Query: app (uuid or display name), since
// (RFC 3339), after (a sequence number), kind (repeatable; "app.*" a
// family) and follow=1 (keep streaming until the client goes).
func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f events.Filter
	if name := q.Get("app"); name != "" {
		uuid, err := a.findApp(name)
		if err != nil {
			httpError(w, http.StatusNotFound, err)
			return
		}
		f.App = uuid
	}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			httpError(w, http.StatusBadRequest, errors.New("since: want an RFC 3339 time"))
			return
		}
		f.Since = t
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			httpError(w, http.StatusBadRequest, errors.New("after: want an event's sequence number"))
			return
		}
		f.After = n
	}
	f.Kinds = q["kind"]
	if err := events.CheckKinds(f.Kinds); err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	follow := q.Get("follow") != ""
	if follow && len(f.Kinds) == 0 && f.App != "" {
		// A follower of one app watches its downloads too.
		f.Kinds = []string{"*", string(events.DownloadProgress)}
	}
	last := a.events.Last()
	es, err := a.events.Read(f)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := newNDJSON(w)
	if !follow {
		for _, e := range es {
			enc.encode(e)
		}
		return
	}
	// Following: after what was read, and whatever came meanwhile.
	f.After = last
	for _, e := range es {
		f.After = max(f.After, e.Seq)
		enc.encode(e)
	}
	enc.flush()
	for {
		es, err := a.events.Wait(r.Context(), f)
		if err != nil {
			return // the client went
		}
		for _, e := range es {
			enc.encode(e)
			f.After = e.Seq
		}
		enc.flush()
	}
}

// ndjson writes newline-delimited JSON to a streaming answer.
type ndjson struct {
	w   http.ResponseWriter
	enc *json.Encoder
}

func newNDJSON(w http.ResponseWriter) ndjson { return ndjson{w: w, enc: json.NewEncoder(w)} }

func (n ndjson) encode(v any) { n.enc.Encode(v) }

func (n ndjson) flush() {
	if f, ok := n.w.(http.Flusher); ok {
		f.Flush()
	}
}
