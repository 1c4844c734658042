// Package metrics is the agent's Prometheus metrics: counters fed by the
// event stream (host/events: updates, rollbacks, restarts, downloads,
// checks, deferrals, policy faults), by the decision record (decision
// latency per policy) and by the registry client (requests by outcome),
// and gauges read from the agent's status when scraped (app state, last
// check and change, data budget, link).
//
// It is served on the address device.metrics.listen names (off by default)
// and written, when set, to device.metrics.textfile for node_exporter's
// textfile collector. Nothing here ticks: the endpoint computes when
// scraped, and the textfile is written when an event changed a value.
//
// prometheus/client_golang rather than a smaller library: the agent
// already links protobuf (containerd's client), so the cost is the
// package itself (see BENCHMARKS.md), and it brings HELP and TYPE lines,
// label escaping, a registry per instance and node_exporter's atomic
// textfile write (docs/RATIONALE.md, "Metrics").
package metrics

import (
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pullwise/pullwise/host/events"
)

// Snapshot is what the gauges say, read from the agent when scraped.
type Snapshot struct {
	Apps []App
	// Budget is the data budget, when one is set.
	Budget *Budget
	// Online and Metered describe the uplink.
	Online, Metered bool
	// ConfigRejected: the configuration file in force was rejected.
	ConfigRejected bool
}

// App is one app's gauges.
type App struct {
	UUID, Name, State, Policy string
	// LastCheck is the latest check of its images; zero when none.
	LastCheck time.Time
}

// Budget is the data budget of the period.
type Budget struct {
	Limit, Spent, Remaining int64
}

// States are the app states a pullwise_app_state series exists for (one
// is 1, the others 0), so a PromQL rule sees a state end.
type States []string

// Metrics holds the agent's metrics. Its methods are safe for concurrent
// use.
type Metrics struct {
	reg     *prometheus.Registry // pullwise_* (the textfile's)
	runtime *prometheus.Registry // process_* and go_* (the endpoint's too)

	updates, rollbacks, restarts, exits, checks, deferrals *prometheus.CounterVec
	downloads, downloadBytes                               *prometheus.CounterVec
	faults                                                 *prometheus.CounterVec
	configs                                                *prometheus.CounterVec
	decisions                                              *prometheus.HistogramVec
	requests                                               *prometheus.CounterVec

	counts map[events.Kind]appCount // the app counters by event kind (appCounts)

	mu         sync.Mutex
	lastChange map[string]time.Time // app uuid -> its last image change or creation
}

// New returns the metrics, with snapshot read at every scrape for the
// gauges and states the app states to report. version labels
// pullwise_build_info.
func New(version string, states States, snapshot func() Snapshot) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), runtime: prometheus.NewRegistry(), lastChange: map[string]time.Time{}}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pullwise_" + name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	m.updates = counter("image_updates_total", "Images an app moved to a new digest of (image.changed events).", "app", "uuid")
	m.rollbacks = counter("rollbacks_total", "Times an app went back to its previous images after failing on new ones.", "app", "uuid")
	m.restarts = counter("restarts_total", "Container actions: the app started on a new root filesystem, restarted or purged.", "app", "uuid", "action")
	m.exits = counter("app_exits_total", "Times the app's process ended on its own (and was started again after a back-off).", "app", "uuid")
	m.checks = counter("image_checks_total", "Registry checks of an app's image references, by result (unchanged, changed, failed).", "app", "uuid", "result")
	m.deferrals = counter("refresh_deferrals_total", "Refreshes a policy put off (by the budget, the link, a window).", "app", "uuid")
	m.downloads = counter("downloads_total", "Image downloads by outcome (finished, failed, refused for disk, paused for the link).", "app", "uuid", "outcome")
	m.downloadBytes = counter("download_bytes_total", "Bytes of images downloaded.", "app", "uuid")
	m.faults = counter("policy_faults_total", "Decisions a policy module failed to give (trap, timeout, malformed answer).", "policy")
	m.configs = counter("config_loads_total", "Configuration files read, by outcome (accepted, rejected).", "outcome")
	m.requests = counter("registry_requests_total", "Requests sent to registries (each try), by outcome: status class, error, endpoint-down.", "outcome")
	m.decisions = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pullwise_decision_duration_seconds",
		Help:    "Time a policy module took to decide, from the host's call to its answer.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}}, []string{"policy"})
	m.reg.MustRegister(m.decisions)
	m.counts = m.appCounts()
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pullwise_build_info", Help: "The agent's version.",
		ConstLabels: prometheus.Labels{"version": version}})
	build.Set(1)
	m.reg.MustRegister(build, &status{m: m, states: states, snapshot: snapshot})
	// The runtime's metrics are the endpoint's alone: node_exporter, which
	// reads the textfile, has process_* and go_* series of its own.
	m.runtime.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return m
}

// Seed takes the last image change of each app from kept events (the ring
// read at start), so the gauge survives an agent restart; counters start
// at zero, as Prometheus expects of a restarted process.
func (m *Metrics) Seed(es []events.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range es {
		if changes(e.Kind) {
			m.lastChange[e.App] = e.Time
		}
	}
}

func changes(k events.Kind) bool { return k == events.ImageChanged || k == events.Started }

// appCount is the app counter an event kind adds one to, with the label
// values after the app's (the action, the result, the outcome).
type appCount struct {
	c      *prometheus.CounterVec
	labels []string
}

// appCounts maps each counted kind of app event to its counter.
func (m *Metrics) appCounts() map[events.Kind]appCount {
	return map[events.Kind]appCount{
		events.ImageChanged:     {m.updates, nil},
		events.RolledBack:       {m.rollbacks, nil},
		events.Started:          {m.restarts, []string{"start"}},
		events.Restarted:        {m.restarts, []string{"restart"}},
		events.Purged:           {m.restarts, []string{"purge"}},
		events.Exited:           {m.exits, nil},
		events.CheckFailed:      {m.checks, []string{"failed"}},
		events.Deferred:         {m.deferrals, nil},
		events.DownloadFinished: {m.downloads, []string{"finished"}},
		events.DownloadFailed:   {m.downloads, []string{"failed"}},
		events.DownloadRefused:  {m.downloads, []string{"refused"}},
		events.DownloadPaused:   {m.downloads, []string{"paused"}},
	}
}

// Event counts an event. It reports whether a counter changed (the textfile
// is written only then).
func (m *Metrics) Event(e events.Event) bool {
	if changes(e.Kind) {
		m.mu.Lock()
		m.lastChange[e.App] = e.Time
		m.mu.Unlock()
	}
	if ac, ok := m.counts[e.Kind]; ok {
		ac.c.WithLabelValues(append([]string{e.AppName, e.App}, ac.labels...)...).Inc()
		if e.Kind == events.DownloadFinished {
			m.downloadBytes.WithLabelValues(e.AppName, e.App).Add(float64(e.Bytes))
		}
		return true
	}
	switch e.Kind {
	case events.Checked:
		result := "unchanged"
		if e.From != "" {
			result = "changed"
		}
		m.checks.WithLabelValues(e.AppName, e.App, result).Inc()
	case events.PolicyFault:
		m.faults.WithLabelValues(e.Policy).Inc()
	case events.ConfigAccepted:
		m.configs.WithLabelValues("accepted").Inc()
	case events.ConfigRejected:
		m.configs.WithLabelValues("rejected").Inc()
	default:
		return false
	}
	return true
}

// Decided records how long a policy took to decide.
func (m *Metrics) Decided(policy string, took time.Duration) {
	m.decisions.WithLabelValues(policy).Observe(took.Seconds())
}

// Request counts a registry request by outcome (registry.WithRequestObserver).
func (m *Metrics) Request(outcome string) { m.requests.WithLabelValues(outcome).Inc() }

// status is the collector of the gauges read from a Snapshot.
type status struct {
	m        *Metrics
	states   States
	snapshot func() Snapshot
}

var (
	descState      = prometheus.NewDesc("pullwise_app_state", "The app's state: 1 for the state it is in, 0 for the others.", []string{"app", "uuid", "state"}, nil)
	descInfo       = prometheus.NewDesc("pullwise_app_info", "The app's policy, as a label (always 1).", []string{"app", "uuid", "policy"}, nil)
	descLastCheck  = prometheus.NewDesc("pullwise_app_last_check_timestamp_seconds", "When the app's images were last checked with a registry.", []string{"app", "uuid"}, nil)
	descLastChange = prometheus.NewDesc("pullwise_app_last_change_timestamp_seconds", "When the app last moved to new images (or was created).", []string{"app", "uuid"}, nil)
	descBudget     = prometheus.NewDesc("pullwise_budget_bytes", "The data budget of the period: its limit, what was spent, what remains.", []string{"kind"}, nil)
	descOnline     = prometheus.NewDesc("pullwise_link_online", "1 when the device has an uplink.", nil, nil)
	descMetered    = prometheus.NewDesc("pullwise_link_metered", "1 when the uplink is paid by the byte.", nil, nil)
	descRejected   = prometheus.NewDesc("pullwise_config_rejected", "1 while the configuration file in force is rejected (the apps run as the last accepted one said).", nil, nil)
)

func (s *status) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descInfo, descLastCheck, descLastChange, descBudget, descOnline, descMetered, descRejected} {
		ch <- d
	}
}

func (s *status) Collect(ch chan<- prometheus.Metric) {
	snap := s.snapshot()
	s.m.mu.Lock()
	lastChange := maps.Clone(s.m.lastChange)
	s.m.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, a := range snap.Apps {
		for _, st := range s.states {
			gauge(descState, b2f(a.State == st), a.Name, a.UUID, st)
		}
		gauge(descInfo, 1, a.Name, a.UUID, a.Policy)
		if !a.LastCheck.IsZero() {
			gauge(descLastCheck, seconds(a.LastCheck), a.Name, a.UUID)
		}
		if t, ok := lastChange[a.UUID]; ok {
			gauge(descLastChange, seconds(t), a.Name, a.UUID)
		}
	}
	if b := snap.Budget; b != nil {
		gauge(descBudget, float64(b.Limit), "limit")
		gauge(descBudget, float64(b.Spent), "spent")
		gauge(descBudget, float64(b.Remaining), "remaining")
	}
	gauge(descOnline, b2f(snap.Online))
	gauge(descMetered, b2f(snap.Metered))
	gauge(descRejected, b2f(snap.ConfigRejected))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
