// Package notify sends the agent's events (host/events) to the receivers
// device.notify names: webhooks (an HTTP POST of each event as JSON,
// optionally HMAC-signed) and an MQTT broker (QoS 1, a topic per device and
// app).
//
// Each receiver reads the event ring on its own goroutine, from its own
// place in it, and keeps that place in STATE/notify/ once an event is
// delivered: the ring is its queue, bounded (two files of 1 MiB) and kept
// across restarts, and nothing is copied per receiver. A receiver that is
// down or slow is retried with back-off (1 s doubling to 5 min) and
// delays nothing else: the apps never wait for a notification, and no
// receiver waits for another. A receiver down for longer than the ring
// holds (weeks of a busy device) misses the events that left it. Delivery is at least once: a receiver may
// see an event twice after a crash, and tells duplicates by the event's
// seq. A new receiver starts at the newest event, not the ring's history.
//
// Idle costs nothing: a receiver waits on the ring without a timer, and
// the MQTT connection is opened when there is something to publish and
// closed once it is published, so an idle device sends no keep-alives.
package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/internal/atomicfile"
)

// Dir is where receivers keep their place, in the state directory.
const Dir = "notify"

// Backoff bounds the wait between tries of an undelivered event.
const (
	MinBackoff = time.Second
	MaxBackoff = 5 * time.Minute
)

// sender delivers events to one receiver.
type sender interface {
	// send delivers es (oldest first) and returns how many were delivered
	// or given up on (a receiver that refuses one for good); an error
	// means the rest is to be tried again.
	send(ctx context.Context, es []events.Event) (int, error)
	close()
}

// Manager runs the receivers the configuration names. Its methods are
// safe for concurrent use.
type Manager struct {
	log    hclog.Logger
	ring   *events.Log
	dir    string
	device string

	mu        sync.Mutex
	receivers map[string]*receiver // by key: "webhook-NAME", "mqtt"
	wg        sync.WaitGroup
}

type receiver struct {
	settings string // as configured, serialized: a change restarts it
	cancel   context.CancelFunc
}

// New returns a Manager over the event ring, keeping the receivers' places
// in stateDir/notify.
func New(ring *events.Log, stateDir string, log hclog.Logger) *Manager {
	return &Manager{log: log, ring: ring, dir: filepath.Join(stateDir, Dir), receivers: map[string]*receiver{}}
}

// Apply starts, restarts and stops receivers as n says. device names the
// device in MQTT topics and client IDs.
func (m *Manager) Apply(n *config.NotifySettings, device string) {
	// Each receiver wanted, by key, with its settings as configured (a
	// change restarts it) and how to make its sender.
	type wanted struct {
		settings, dest string
		kinds          []string
		make           func() (sender, error)
	}
	want := map[string]wanted{}
	key := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b) + "\x00" + device
	}
	if n != nil {
		for _, w := range n.Webhooks {
			want["webhook-"+w.WebhookName()] = wanted{key(w), w.URL, w.Events, func() (sender, error) { return newWebhook(w), nil }}
		}
		if q := n.MQTT; q != nil {
			want["mqtt"] = wanted{key(q), q.Broker, q.Events, func() (sender, error) { return newMQTT(*q, device) }}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, r := range m.receivers {
		if _, ok := want[key]; !ok {
			r.cancel()
			delete(m.receivers, key)
		}
	}
	for key, w := range want {
		if r, ok := m.receivers[key]; ok {
			if r.settings == w.settings {
				continue
			}
			r.cancel()
		}
		s, err := w.make()
		dest, kinds := w.dest, w.kinds
		if err != nil {
			m.log.Error("notifications: the receiver cannot be set up", "receiver", key, "error", err)
			delete(m.receivers, key)
			continue
		}
		if len(kinds) == 0 {
			kinds = config.DefaultNotifyEvents()
		}
		// The place is taken now, not when the goroutine runs: an event
		// told right after Apply is the receiver's.
		place := filepath.Join(m.dir, key+".seq")
		f := events.Filter{Kinds: kinds, After: m.place(place)}
		ctx, cancel := context.WithCancel(context.Background())
		m.receivers[key] = &receiver{settings: w.settings, cancel: cancel}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer s.close()
			m.run(ctx, key, dest, place, s, f)
		}()
	}
}

// Close stops every receiver and waits for them.
func (m *Manager) Close() {
	m.mu.Lock()
	for key, r := range m.receivers {
		r.cancel()
		delete(m.receivers, key)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// run delivers the events f selects after f.After to s, keeping the
// receiver's place in the file place, until ctx ends.
func (m *Manager) run(ctx context.Context, key, dest, place string, s sender, f events.Filter) {
	log := m.log.With("receiver", key, "destination", dest)
	fails := 0
	for {
		es, err := m.ring.Wait(ctx, f)
		if err != nil {
			return
		}
		for len(es) > 0 {
			n, err := s.send(ctx, es)
			if n > 0 {
				f.After = es[n-1].Seq
				if err := savePlace(place, f.After); err != nil {
					log.Warn("notifications: keeping the receiver's place", "error", err)
				}
				es = es[n:]
				fails = 0
			}
			if err == nil {
				continue
			}
			if _, skipped := errors.AsType[refusedError](err); skipped {
				log.Warn("notifications: the receiver refused an event; skipped", "seq", f.After, "error", err)
				continue
			}
			if ctx.Err() != nil {
				return
			}
			wait := min(MinBackoff<<min(fails, 20), MaxBackoff)
			fails++
			if fails == 1 || fails%10 == 0 {
				log.Warn("notifications: the receiver did not take an event; trying again", "seq", es[0].Seq, "kind", es[0].Kind,
					"in", wait.String(), "tries", fails, "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// place is the receiver's kept place: the last event it took, or the
// newest event now for a receiver that has none (history is not replayed
// to a new receiver).
func (m *Manager) place(path string) uint64 {
	b, err := os.ReadFile(path)
	if err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n <= m.ring.Last() {
			return n
		}
	}
	last := m.ring.Last()
	if err := savePlace(path, last); err != nil {
		m.log.Warn("notifications: keeping a receiver's place", "error", err)
	}
	return last
}

// savePlace writes a receiver's place (no fsync: a place lost in a power
// cut sends an event twice, not never).
func savePlace(path string, seq uint64) error {
	return atomicfile.Write(path, []byte(strconv.FormatUint(seq, 10)+"\n"), false)
}

// Sign is the signature header's value for body under secret:
// "sha256=" and the hex HMAC-SHA256 (as GitHub's X-Hub-Signature-256).
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
