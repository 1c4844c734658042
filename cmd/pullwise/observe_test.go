package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/host/agent"
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
