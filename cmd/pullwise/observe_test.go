package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/notify"
	"github.com/pullwise/pullwise/internal/testing/mqtttest"
	"github.com/pullwise/pullwise/internal/testing/promtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// TestMetricsScrapedByPrometheus: with device.metrics on, a real
// Prometheus scrapes the agent's endpoint and sees the app running, then
// the update a refresh made; promtool finds nothing wrong with the
// endpoint's exposition or the node_exporter textfile, which the agent
// rewrote after the update.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	port := promtest.FreePort(t)
	textfile := filepath.Join(t.TempDir(), "pullwise.prom")
	e.writeConfig(fmt.Sprintf("device:\n  insecureRegistries: [%q]\n  metrics:\n    listen: 127.0.0.1:%s\n    textfile: %s\napps:\n%s",
		e.registry, port, textfile, e.web()))
	e.startAgent()
	st := e.status("web running", func(st agent.Status) bool { return running(st) && st.Agent.MetricsURL != "" })
	if want := "http://127.0.0.1:" + port + "/metrics"; st.Agent.MetricsURL != want {
		t.Fatalf("metricsURL %q, want %q", st.Agent.MetricsURL, want)
	}
	prom := promtest.Start(t, "127.0.0.1:"+port)
	prom.WaitFor(t, `pullwise_app_state{app="web",state="RUNNING"}`, 1)
	prom.WaitFor(t, `pullwise_build_info`, 1)

	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false))
	if out, err := e.cli("refresh", "web"); err != nil {
		t.Fatalf("refresh: %v\n%s", err, out)
	}
	prom.WaitFor(t, `pullwise_image_updates_total{app="web"}`, 1)
	prom.WaitFor(t, `pullwise_restarts_total{app="web",action="start"}`, 2) // created, then on v2
	prom.WaitFor(t, `pullwise_downloads_total{app="web",outcome="finished"}`, 2)
	prom.WaitFor(t, `sum(pullwise_registry_requests_total{outcome="2xx"}) > bool 0`, 1)
	prom.WaitFor(t, `count(pullwise_decision_duration_seconds_count{policy="always"}) > bool 0`, 1)

	resp, err := http.Get(st.Agent.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	promtest.Check(t, body)

	waitFor(t, "the textfile to show the update", func() bool {
		b, _ := os.ReadFile(textfile)
		return strings.Contains(string(b), `pullwise_image_updates_total{app="web",uuid="`+webUUID+`"} 1`)
	})
	b, _ := os.ReadFile(textfile)
	promtest.Check(t, b)
	if strings.Contains(string(b), "go_goroutines") || strings.Contains(string(b), "process_") {
		t.Fatal("the textfile carries the runtime's metrics, which node_exporter has of its own")
	}
}

// hookReceiver is a webhook receiver: it keeps the events it takes, with
// their headers, and answers 503 while down.
type hookReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	down   bool
	got    []events.Event
	sigs   []string
	kinds  []string
	refuse int // requests answered 503
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.down {
			h.refuse++
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		var e events.Event
		if err := json.Unmarshal(body, &e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.Header.Get(notify.HeaderDelivery) != fmt.Sprint(e.Seq) {
			http.Error(w, "delivery header is not the seq", http.StatusBadRequest)
			return
		}
		h.got = append(h.got, e)
		h.kinds = append(h.kinds, r.Header.Get(notify.HeaderEvent))
		h.sigs = append(h.sigs, r.Header.Get(notify.HeaderSignature)+" "+notify.Sign("s3cret", body))
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) setDown(down bool) {
	h.mu.Lock()
	h.down = down
	h.mu.Unlock()
}

func (h *hookReceiver) events() []events.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]events.Event(nil), h.got...)
}

// TestNotifications: events reach a webhook (signed) and a real MQTT
// broker (mosquitto) as they happen. A webhook that is down delays neither
// the refresh nor the other receivers; what it missed is kept, across an
// agent restart, and delivered in order once it is back.
func TestNotifications(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	up, down := newHookReceiver(t), newHookReceiver(t)
	broker := mqtttest.Start(t)
	sub := broker.Subscribe(t, "fleet/#")
	e.writeConfig(fmt.Sprintf(`device:
  id: dev-7
  insecureRegistries: [%q]
  notify:
    webhooks:
      - {name: up, url: %q, secret: s3cret, events: ["image.*", "app.*"]}
      - {name: down, url: %q, events: [image.changed], timeout: 2s}
    mqtt: {broker: %q, topic: fleet, events: [image.changed, app.rolled-back]}
apps:
%s`, e.registry, up.URL+"/hook", down.URL+"/hook", broker.URL, e.web()))
	down.setDown(true)
	e.startAgent()
	e.status("web running", running)

	v2 := regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v2", false)).String()
	if out, err := e.cli("refresh", "web"); err != nil {
		t.Fatalf("refresh with a receiver down: %v\n%s", err, out)
	}
	waitFor(t, "the webhook that is up to get the image change", func() bool { return findEvent(up.events(), events.ImageChanged) != nil })
	ch := findEvent(up.events(), events.ImageChanged)
	if ch.Digest.String() != v2 || ch.AppName != "web" {
		t.Fatalf("webhook event %+v", ch)
	}
	up.mu.Lock()
	for i, s := range up.sigs {
		if f := strings.Fields(s); len(f) != 2 || f[0] != f[1] {
			t.Errorf("request %d (%s): signature %q does not match the body's HMAC", i, up.kinds[i], s)
		}
	}
	for _, ev := range up.got {
		if !strings.HasPrefix(string(ev.Kind), "image.") && !strings.HasPrefix(string(ev.Kind), "app.") {
			t.Errorf("the webhook's filter let %s through", ev.Kind)
		}
	}
	up.mu.Unlock()
	waitFor(t, "the broker to get the image change", func() bool {
		for _, m := range sub.Messages() {
			if m.Topic == "fleet/dev-7/"+webUUID && strings.Contains(string(m.Payload), `"kind":"image.changed"`) {
				return true
			}
		}
		return false
	})
	waitFor(t, "the webhook that is down to be tried", func() bool { down.mu.Lock(); defer down.mu.Unlock(); return down.refuse > 0 })
	if len(down.events()) != 0 {
		t.Fatal("the receiver that is down took events")
	}

	// The agent restarts while the receiver is down; the event waits in the
	// ring and arrives, once, when the receiver is back.
	e.stopAgent()
	e.startAgent()
	e.status("web running again", running)
	down.setDown(false)
	waitFor(t, "the receiver that was down to get what it missed", func() bool { return len(down.events()) > 0 })
	time.Sleep(time.Second)
	got := down.events()
	if len(got) != 1 || got[0].Kind != events.ImageChanged || got[0].Digest.String() != v2 {
		t.Fatalf("after the receiver came back: %+v, want the one image change", got)
	}
}
