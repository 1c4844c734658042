// Package promtest runs Debian's Prometheus tools for a test: promtool to
// lint an exposition, and a private Prometheus server (temporary storage,
// a loopback port) that scrapes a target every second.
package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/testing/testbin"
)

func need(t testing.TB, bin string) string {
	t.Helper()
	return testbin.Need(t, bin, "apt-get install prometheus")
}

// Check runs `promtool check metrics` on an exposition and fails the test
// with promtool's findings.
func Check(t testing.TB, exposition []byte) {
	t.Helper()
	cmd := exec.Command(need(t, "promtool"), "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\nthe exposition:\n%s", err, out, exposition)
	}
}

// Server is a private Prometheus.
type Server struct {
	URL string
}

// Start runs a Prometheus that scrapes target (host:port, path /metrics)
// every second, until the test ends.
func Start(t testing.TB, target string) *Server {
	t.Helper()
	bin := need(t, "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pullwise
    static_configs:
      - targets: [%q]
`, target)), 0o644)
	port := FreePort(t)
	var log bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+port, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
	s := &Server{URL: "http://127.0.0.1:" + port}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus did not become ready: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Query evaluates an instant PromQL query and returns the first sample's
// value; ok is false when the result is empty.
func (s *Server) Query(t testing.TB, q string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(s.URL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s", q, err, r.Error)
	}
	if len(r.Data.Result) == 0 {
		return 0, false
	}
	v, _ := strconv.ParseFloat(fmt.Sprint(r.Data.Result[0].Value[1]), 64)
	return v, true
}

// WaitFor polls query until it returns want, for up to a minute.
func (s *Server) WaitFor(t testing.TB, q string, want float64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		v, ok := s.Query(t, q)
		if ok && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus: %s is %v (present %v), want %v", q, v, ok, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// FreePort is a loopback port free a moment ago, for a server a test
// configures before it starts.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
