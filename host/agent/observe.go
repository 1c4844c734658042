package agent

import (
	"context"
	"time"

	"github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/metrics"
	"github.com/pullwise/pullwise/internal/version"
)

// The metrics follow device.metrics: the endpoint is opened, moved or
// closed when an accepted configuration changes its address, and the
// textfile is written when an event changed a counter (at most once a
// second), never on a timer.

// newMetrics makes the agent's metrics; pullwise_app_state reports every
// app state.
func (a *Agent) newMetrics() *metrics.Metrics {
	states := metrics.States{app.StateResolving, app.StateDownloading, app.StateRunning, app.StateHalted,
		app.StateRestarting, app.StatePurging, app.StateRefreshing, app.StateRolledBack, app.StateDeferred, app.StateError}
	return metrics.New(version.Get().Version, states, a.metricsSnapshot)
}

// seedMetrics gives the metrics what the kept events say of the past.
func (a *Agent) seedMetrics() {
	es, err := a.events.Read(events.Filter{Kinds: []string{string(events.ImageChanged), string(events.Started)}})
	if err != nil {
		a.log.Warn("reading the kept events for the metrics", "error", err)
	}
	a.metrics.Seed(es)
}

// metricsSnapshot is what the gauges say now.
func (a *Agent) metricsSnapshot() metrics.Snapshot {
	var s metrics.Snapshot
	info, _ := a.host.Info(a.ctx)
	last := map[string]time.Time{}
	for _, img := range info.Images {
		if img.LastCheck != nil && img.LastCheck.After(last[img.App]) {
			last[img.App] = *img.LastCheck
		}
	}
	for _, ap := range info.Apps {
		s.Apps = append(s.Apps, metrics.App{UUID: ap.UUID, Name: ap.DisplayName, State: ap.State, Policy: ap.Policy, LastCheck: last[ap.UUID]})
	}
	d := a.device()
	s.Online, s.Metered = d.Link.Online, d.Link.Metered
	if b := d.Budget; b != nil {
		s.Budget = &metrics.Budget{Limit: b.LimitBytes, Spent: b.SpentBytes, Remaining: b.RemainingBytes}
	}
	a.mu.Lock()
	s.ConfigRejected = a.status.ConfigError != ""
	a.mu.Unlock()
	return s
}

// applyMetrics opens, moves or closes the endpoint as dev says, and notes
// the textfile. A port that cannot be bound is logged; the agent runs on.
func (a *Agent) applyMetrics(dev config.Device) {
	addr := dev.MetricsAddr()
	textfile := ""
	if dev.Metrics != nil {
		textfile = dev.Metrics.Textfile
	}
	a.obs.Lock()
	defer a.obs.Unlock()
	if textfile != a.obs.textfile && textfile != "" {
		a.pokeTextfile()
	}
	a.obs.textfile = textfile
	if addr == a.obs.addr {
		return
	}
	if a.obs.server != nil {
		a.obs.server.Close()
		a.obs.server = nil
		a.setMetricsURL("")
		a.log.Info("metrics endpoint closed", "address", a.obs.addr)
	}
	a.obs.addr = addr
	if addr == "" {
		return
	}
	s, err := a.metrics.Listen(addr)
	if err != nil {
		a.log.Error("device.metrics.listen: the endpoint cannot be opened; the agent runs without it", "error", err)
		return
	}
	a.obs.server = s
	a.setMetricsURL("http://" + s.Addr + "/metrics")
	a.log.Info("metrics endpoint open", "url", "http://"+s.Addr+"/metrics")
}

func (a *Agent) setMetricsURL(u string) {
	a.mu.Lock()
	a.status.MetricsURL = u
	a.mu.Unlock()
}

func (a *Agent) pokeTextfile() {
	select {
	case a.textfilePoke <- struct{}{}:
	default:
	}
}

// writeTextfile writes the metrics textfile when poked, at most once a
// second.
func (a *Agent) writeTextfile(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.textfilePoke:
		}
		a.obs.Lock()
		path := a.obs.textfile
		a.obs.Unlock()
		if path != "" {
			if err := a.metrics.WriteTextfile(path); err != nil {
				a.log.Warn("device.metrics.textfile", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// closeMetrics closes the endpoint.
func (a *Agent) closeMetrics() {
	a.obs.Lock()
	defer a.obs.Unlock()
	if a.obs.server != nil {
		a.obs.server.Close()
		a.obs.server = nil
	}
}
