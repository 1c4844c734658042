package config

import (
	"fmt"
	"strings"
	"time"
)

// Healthcheck is how an app shows it works after an image change (Docker's
// HEALTHCHECK semantics): one of Exec (a command inside the container, exit
// 0 is healthy), HTTP (a GET inside the app's network namespace, 2xx or 3xx
// is healthy) or TCP (a connection inside it is accepted). After a change
// the app must pass one probe before StartPeriod plus Retries failed
// probes have gone by, or it is handled as a failed start: its policy is
// asked, and the built-ins roll it back.
type Healthcheck struct {
	Exec []string `json:"exec,omitempty"`
	// HTTP is "PORT/PATH" ("8080/healthz") or a port alone ("8080": /).
	HTTP string `json:"http,omitempty"`
	// TCP is a port.
	TCP int `json:"tcp,omitempty"`
	// Interval between probes (default 5s), Timeout of one (default 2s),
	// StartPeriod before failures count (default 0): Go durations.
	Interval    string `json:"interval,omitempty"`
	Timeout     string `json:"timeout,omitempty"`
	StartPeriod string `json:"startPeriod,omitempty"`
	// Retries is how many probes in a row must fail (default 3).
	Retries int `json:"retries,omitempty"`
}

// Probe is a Healthcheck with its defaults applied.
type Probe struct {
	Exec                           []string
	HTTPPort                       int
	HTTPPath                       string
	TCPPort                        int
	Interval, Timeout, StartPeriod time.Duration
	Retries                        int
}

// Window is how long a changed app has to become healthy.
func (p Probe) Window() time.Duration {
	return p.StartPeriod + time.Duration(p.Retries)*(p.Interval+p.Timeout)
}

// Probe reads the healthcheck (call it on a validated configuration).
func (h Healthcheck) Probe() (Probe, error) {
	p := Probe{Exec: h.Exec, TCPPort: h.TCP, Interval: 5 * time.Second, Timeout: 2 * time.Second, Retries: 3}
	n := 0
	if len(h.Exec) > 0 {
		n++
	}
	if h.TCP != 0 {
		n++
		if h.TCP < 1 || h.TCP > 65535 {
			return p, fmt.Errorf("tcp %d: want a port", h.TCP)
		}
	}
	if h.HTTP != "" {
		n++
		port, path, _ := strings.Cut(h.HTTP, "/")
		if _, err := fmt.Sscanf(port, "%d", &p.HTTPPort); err != nil || p.HTTPPort < 1 || p.HTTPPort > 65535 || fmt.Sprint(p.HTTPPort) != port {
			return p, fmt.Errorf("http %q: want PORT/PATH (8080/healthz)", h.HTTP)
		}
		p.HTTPPath = "/" + path
	}
	if n != 1 {
		return p, fmt.Errorf("give exactly one of exec, http and tcp")
	}
	for _, d := range []struct {
		s   string
		to  *time.Duration
		min time.Duration
	}{{h.Interval, &p.Interval, 100 * time.Millisecond}, {h.Timeout, &p.Timeout, 100 * time.Millisecond}, {h.StartPeriod, &p.StartPeriod, 0}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v < d.min || v > time.Hour {
			return p, fmt.Errorf("%q: want a duration up to 1h", d.s)
		}
		*d.to = v
	}
	if h.Retries != 0 {
		if h.Retries < 1 || h.Retries > 100 {
			return p, fmt.Errorf("retries %d: want 1 to 100", h.Retries)
		}
		p.Retries = h.Retries
	}
	return p, nil
}
