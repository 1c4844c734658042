package notify

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
)

// TestWebhookOrderRetryAndRefusal: a webhook gets the events after its
// place in order; a 503 is retried, a 400 skips that event for good, and
// the place is kept so a new manager (an agent restart) goes on from it.
func TestWebhookOrderRetryAndRefusal(t *testing.T) {
	dir := t.TempDir()
	ring, err := events.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	var mu sync.Mutex
	var got []string
	unavailable := 2
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		kind := r.Header.Get(HeaderEvent)
		switch {
		case kind == string(events.Restarted) && unavailable > 0:
			unavailable--
			w.WriteHeader(http.StatusServiceUnavailable)
		case kind == string(events.Purged):
			w.WriteHeader(http.StatusBadRequest) // refused for good
		default:
			got = append(got, kind+"#"+r.Header.Get(HeaderDelivery))
		}
	}))
	defer srv.Close()
	ring.Append(events.Event{Kind: events.Started}) // before the webhook: not sent
	m := New(ring, dir, hclog.NewNullLogger())
	m.Apply(&config.NotifySettings{Webhooks: []config.WebhookSettings{{Name: "w", URL: srv.URL}}}, "dev")
	for _, k := range []events.Kind{events.Restarted, events.Purged, events.Checked, events.ImageChanged} {
		ring.Append(events.Event{Kind: k})
	}
	want := []string{"app.restarted#2", "image.changed#5"} // purge refused, check not selected by default
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.Close()
	mu.Lock()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	mu.Unlock()
	b, _ := os.ReadFile(filepath.Join(dir, Dir, "webhook-w.seq"))
	if strings.TrimSpace(string(b)) != "5" {
		t.Fatalf("kept place %q, want 5", b)
	}
	// An agent restart: the next event only.
	ring.Append(events.Event{Kind: events.RolledBack})
	m = New(ring, dir, hclog.NewNullLogger())
	m.Apply(&config.NotifySettings{Webhooks: []config.WebhookSettings{{Name: "w", URL: srv.URL}}}, "dev")
	defer m.Close()
	deadline = time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[2] != "app.rolled-back#6" {
		t.Fatalf("after a restart: %v", got)
	}
}

func TestSign(t *testing.T) {
	// The value GitHub documents for X-Hub-Signature-256's example.
	if got := Sign("It's a Secret to Everybody", []byte("Hello, World!")); got != "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17" {
		t.Fatal(got)
	}
}
