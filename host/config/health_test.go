package config

import (
	"strings"
	"testing"
	"time"
)

func TestHealthcheckProbe(t *testing.T) {
	for _, tc := range []struct {
		h    Healthcheck
		want string // "" when valid
	}{
		{Healthcheck{HTTP: "8080/healthz"}, ""},
		{Healthcheck{TCP: 5432, Interval: "1s", Retries: 5}, ""},
		{Healthcheck{Exec: []string{"/app", "health"}, StartPeriod: "30s"}, ""},
		{Healthcheck{}, "exactly one"},
		{Healthcheck{TCP: 1, HTTP: "80"}, "exactly one"},
		{Healthcheck{HTTP: "http://x/y"}, "PORT/PATH"},
		{Healthcheck{TCP: 70000}, "want a port"},
		{Healthcheck{TCP: 80, Interval: "2h"}, "up to 1h"},
		{Healthcheck{TCP: 80, Retries: -1}, "retries"},
	} {
		p, err := tc.h.Probe()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.h, err, tc.want)
		}
		if tc.want == "" && p.Window() <= 0 {
			t.Errorf("%+v: window %s", tc.h, p.Window())
		}
	}
	p, _ := Healthcheck{HTTP: "8080"}.Probe()
	if p.HTTPPort != 8080 || p.HTTPPath != "/" || p.Window() != 3*(5*time.Second+2*time.Second) {
		t.Fatalf("defaults: %+v window %s", p, p.Window())
	}
}
