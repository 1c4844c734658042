// Package agent is the pullwise agent: it watches a configuration file and
// applies it (through host/app) whenever it changes, serves a local API on a
// unix socket for the CLI, writes the info report to a status file, runs the
// policy ticks the policies ask for, and on SIGTERM stops leaving every app
// running, to adopt them again on the next start.
package agent

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/budget"
	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/containers"
	"github.com/pullwise/pullwise/host/decisions"
	"github.com/pullwise/pullwise/host/eve"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/metrics"
	"github.com/pullwise/pullwise/host/modules"
	"github.com/pullwise/pullwise/host/notify"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/host/statedb"
	"github.com/pullwise/pullwise/host/trust"
	"github.com/pullwise/pullwise/host/uplink"
	"github.com/pullwise/pullwise/internal/version"
	"github.com/pullwise/pullwise/plugins"
	"github.com/pullwise/pullwise/policies"
	"github.com/pullwise/pullwise/sdk"
)

// Defaults.
const (
	DefaultStateDir   = "/var/lib/pullwise"
	DefaultContainerd = "/run/containerd/containerd.sock"
	DefaultNamespace  = "pullwise"
	SocketName        = "pullwise.sock"
	StatusName        = "status.json"
)

// Options configure an agent.
type Options struct {
	ConfigPath string
	// EVEConfigPath, if set, is an EVE EdgeDevConfig (protobuf or its JSON
	// form) the apps come from; ConfigPath's apps are then overlays of
	// EVE's, by uuid (host/eve).
	EVEConfigPath string
	// ControllerURL, if set, makes the agent a device of an EVE controller
	// (API v2): its configuration is polled from there (and kept as the EVE
	// configuration, STATE/eve/config.json), its info posted there.
	ControllerURL string
	// ControllerCA verifies the controller's TLS certificate (and its
	// signing certificate when that chains to it); ControllerSigningCert
	// pins a signing certificate that does not.
	ControllerCA, ControllerSigningCert string
	// ControllerInterval is how often the configuration is polled. Default
	// 1 min, at the device's own phase of it (device.id).
	ControllerInterval time.Duration
	// ControllerOnboardCert and ControllerOnboardKey are an onboarding
	// certificate and key, and ControllerSerial the device's serial: an
	// unknown device registers itself with them.
	ControllerOnboardCert, ControllerOnboardKey, ControllerSerial string
	StateDir                                                      string
	ContainerdSocket                                              string
	Namespace                                                     string
	Logger                                                        hclog.Logger
	// GracePeriod for rollback after an image change. Default 10 s.
	GracePeriod time.Duration
	// MaxModuleSize bounds a policy module file, in bytes. Default
	// plugins.DefaultMaxModuleSize.
	MaxModuleSize int64
	// LogCheck is how often the apps' log sizes are checked against
	// device.logs. Default 30 s.
	LogCheck time.Duration
	// LinkCheck is how often the uplink is looked at for changes (a
	// download whose policy no longer accepts the link is paused). Default
	// app.DefaultLinkCheck.
	LinkCheck time.Duration
	// ReleaseModulesAfter releases a policy module no decision used for
	// that long (its compiled code and warm instance); its next decision
	// compiles it again from the module cache. 0: never.
	ReleaseModulesAfter time.Duration
}

// Status is what the status file and GET /v1/status hold.
type Status struct {
	Agent AgentStatus `json:"agent"`
	Info  app.Info    `json:"info"`
}

// AgentStatus describes the agent itself.
type AgentStatus struct {
	// Version is the agent binary's build.
	Version    version.Info `json:"version"`
	ConfigPath string       `json:"configPath"`
	// ConfigError is why the current configuration file was rejected; the
	// apps run as the last accepted one said.
	ConfigError string `json:"configError,omitempty"`
	// Device is what policies are told about the device now (the API
	// only: its free space and bandwidth change all the time, and the
	// status file is written only when something a reader cares about
	// changed).
	Device    *sdk.Device `json:"device,omitempty"`
	AppliedAt time.Time   `json:"appliedAt,omitzero"`
	// DeviceID is the device's identity: device.id, else the machine id.
	DeviceID string `json:"deviceID,omitempty"`
	// Controller is the EVE controller link, in device mode.
	Controller *ControllerStatus `json:"controller,omitempty"`
	// MetricsURL is the Prometheus endpoint, when device.metrics.listen
	// opened one.
	MetricsURL string `json:"metricsURL,omitempty"`
	// Policies are the drop-in modules and any that failed to load.
	Policies []plugins.ModuleStatus `json:"policies,omitempty"`
}

// Agent is a running agent.
type Agent struct {
	o      Options
	log    hclog.Logger
	client *containerd.Client
	rt     *plugins.Runtime
	dir    *plugins.Dir
	// modules keeps the policy modules configurations name by registry
	// reference.
	modules *modules.Keeper
	db      *bolt.DB // the one state file (host/statedb)
	images  *imagestore.Store
	host    *app.Host
	reg     *registry.Client
	cm      *containers.Manager
	meter   *budget.Meter // what downloads spent of device.download.budget
	puller  *pull.Puller
	uplink  *uplink.Watcher // NetworkManager's or the routing table's view of the uplink
	record  *decisions.Log  // every decision, for policy replay
	events  *events.Log     // what happened, for `pullwise events`, notifications and metrics
	metrics *metrics.Metrics
	notify  *notify.Manager // the webhooks and the MQTT broker device.notify names
	// obs is the metrics endpoint and textfile as device.metrics says.
	obs struct {
		sync.Mutex
		addr, textfile string
		server         *metrics.Server
	}
	textfilePoke chan struct{}
	infoPoke     chan struct{}             // the status changed: device mode posts its info
	controller   *eve.Controller           // device mode's link, nil otherwise
	eveCreds     map[string]registry.Basic // the EVE datastores' credentials, by registry host
	// machineID identifies the device when the configuration does not
	// (device.id): /etc/machine-id, else the host name.
	machineID string
	marks     logMarks
	bumps     *bumps
	ctx       context.Context
	// reconciling serialises reading the configuration and submitting it,
	// so submissions reach the host in the order the file was read. It is
	// never held while an app acts.
	reconciling sync.Mutex
	parsed      *config.Config // the last parse of the file, and its size and times
	claim       *claim         // the state directory's lock, held while the agent runs
	parsedKey   string
	toldConfig  string  // the file and outcome last made an event (tellConfig)
	moduleRefs  *string // the registry modules named at the last collection (nil: none yet)
	statusPoke  chan struct{}
	statusFlush chan chan struct{} // see flushStatus
	statusFile  *statusFile
	mu          sync.Mutex
	status      AgentStatus
	subs        map[chan progressEvent]string // subscriber -> app uuid
}

type progressEvent struct {
	App      string        `json:"app"`
	Progress pull.Progress `json:"progress"`
}

// Run starts the agent and serves until ctx ends.
func Run(ctx context.Context, o Options) error {
	a, err := start(ctx, o)
	if err != nil {
		return err
	}
	return a.serve(ctx)
}

func start(ctx context.Context, o Options) (*Agent, error) {
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.ContainerdSocket == "" {
		o.ContainerdSocket = DefaultContainerd
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Logger == nil {
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: "pullwise"})
	}
	if o.ConfigPath == "" {
		return nil, errors.New("no configuration file: pass --config FILE")
	}
	if o.ControllerURL != "" {
		if o.EVEConfigPath != "" {
			return nil, errors.New("--controller and --eve-config: the controller's configuration is the EVE configuration; give one")
		}
		o.EVEConfigPath = filepath.Join(o.StateDir, "eve", "config.json")
	}
	if err := privateDir(o.StateDir, o.Logger); err != nil {
		return nil, err
	}
	cl, err := claimState(o.StateDir)
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			cl.release()
		}
	}()
	a := &Agent{o: o, log: o.Logger, statusFile: newStatusFile(filepath.Join(o.StateDir, StatusName)), statusPoke: make(chan struct{}, 1), statusFlush: make(chan chan struct{}), textfilePoke: make(chan struct{}, 1),
		subs: map[chan progressEvent]string{}, claim: cl}
	a.metrics = a.newMetrics()
	if o.ControllerURL != "" {
		var copts []eve.ControllerOption
		if o.ControllerCA != "" {
			copts = append(copts, eve.WithCA(o.ControllerCA))
		}
		if o.ControllerSigningCert != "" {
			copts = append(copts, eve.WithSigningCert(o.ControllerSigningCert))
		}
		if o.ControllerOnboardCert != "" || o.ControllerOnboardKey != "" {
			copts = append(copts, eve.WithOnboarding(o.ControllerOnboardCert, o.ControllerOnboardKey, o.ControllerSerial))
		}
		c, err := eve.NewController(ctx, o.ControllerURL, filepath.Join(o.StateDir, "eve"), copts...)
		if err != nil {
			return nil, fmt.Errorf("--controller: %w", err)
		}
		a.controller, a.infoPoke = c, make(chan struct{}, 1)
		a.status.Controller = &ControllerStatus{URL: o.ControllerURL, DeviceCert: c.CertPath()}
	}
	a.status.ConfigPath = o.ConfigPath
	a.status.Version = version.Get()
	ctx = namespaces.WithNamespace(ctx, o.Namespace)
	a.ctx = ctx
	first, err := config.Load(o.ConfigPath, nil, nil)
	if err != nil {
		// An invalid file must not keep the agent down: it starts, serves its
		// API and reports the error, and the apps run as they were. Device
		// settings come from whatever of the file parses.
		b, rerr := os.ReadFile(o.ConfigPath)
		if rerr != nil {
			return nil, fmt.Errorf("reading config: %w", rerr)
		}
		if first, err = config.ParseFile(o.ConfigPath, b); err != nil {
			first = &config.Config{}
		}
		a.log.Error("the configuration is invalid; starting with the apps as they run", "error", err)
	}
	client, err := containerd.New(o.ContainerdSocket, containerd.WithDefaultNamespace(o.Namespace), containerd.WithTimeout(10*time.Second))
	if err == nil {
		_, err = client.Version(ctx)
	}
	if err != nil && (errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "permission denied")) {
		return nil, fmt.Errorf("cannot reach containerd at %s: permission denied: the agent needs root (containerd's socket is root's)", o.ContainerdSocket)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot reach containerd at %s: %w (is containerd running? start it, or pass --containerd SOCKET)", o.ContainerdSocket, err)
	}
	a.client = client
	if err := claimNamespace(ctx, client, o.Namespace, o.StateDir); err != nil {
		return nil, err
	}
	// One idle instance per module: an agent makes a few decisions an hour,
	// and each warm instance holds a few MiB.
	if a.rt, err = plugins.NewRuntime(ctx, plugins.WithCacheDir(filepath.Join(o.StateDir, "module-cache")),
		plugins.WithLogger(a.log.Named("policy")), plugins.WithIdleInstances(1), plugins.WithMaxModuleSize(o.MaxModuleSize),
		plugins.WithReleaseAfter(o.ReleaseModulesAfter)); err != nil {
		return nil, err
	}
	policyDir := first.Device.PolicyDir
	if policyDir == "" {
		policyDir = filepath.Join(o.StateDir, "policies")
	}
	policyTrust, verifyDropIn, verifierID := verifiers(first.Device)
	if a.dir, err = plugins.OpenDir(ctx, a.rt, policyDir, plugins.WithPins(pins(first)), plugins.WithVerify(verifyDropIn, verifierID)); err != nil {
		return nil, err
	}
	if a.db, err = statedb.Open(o.StateDir); err != nil {
		return nil, err
	}
	if a.images, err = imagestore.New(a.db); err != nil {
		return nil, err
	}
	// The insecure list and the hosts directory follow the configuration
	// (reconcile); the hosts directory's files are re-read when they change.
	a.cm = containers.New(client, o.StateDir)
	a.machineID = machineID()
	// The file's device part may be one the first reconcile rejects: a
	// value the registry client refuses then starts the agent on the
	// client's defaults (reconcile applies the next valid file's), for an
	// invalid file must not keep the agent down.
	if a.reg, err = registry.New(registry.WithInsecure(first.Device.InsecureRegistries...), registry.WithHostsDir(first.Device.HostsDir()),
		registry.WithDownloads(downloads(first.Device)), registry.WithRequestObserver(a.metrics.Request)); err != nil {
		a.log.Error("the configuration's registry settings are refused; starting with the defaults", "error", err)
		if a.reg, err = registry.New(registry.WithRequestObserver(a.metrics.Request)); err != nil {
			return nil, err
		}
	}
	if a.puller, err = pull.New(client, a.reg); err != nil {
		return nil, err
	}
	// Registry modules arrive in the background; each arrival (and each
	// failed try's next turn) applies the configuration again, so the apps
	// waiting for a module are accepted without anyone editing the file.
	if a.modules, err = modules.New(ctx, filepath.Join(o.StateDir, "modules"), a.reg, modules.WithMaxSize(a.rt.MaxModuleSize()),
		modules.WithLogger(a.log.Named("modules")), modules.WithOnChange(func() { go a.reconcile() })); err != nil {
		return nil, err
	}
	if a.modules.SetTrust(policyTrust) && policyTrust.Broken != nil {
		a.log.Error("device.policyTrust: the trusted keys cannot be read; no module that needs a signature runs", "error", policyTrust.Broken)
	}
	if a.uplink, err = uplink.New(); err != nil {
		return nil, err
	}
	a.uplink.UseNetworkManager(useNetworkManager(first.Device))
	if a.meter, err = budget.Open(a.db, a.reg.Received); err != nil {
		return nil, err
	}
	if a.record, err = decisions.Open(o.StateDir); err != nil {
		return nil, err
	}
	if a.events, err = events.Open(o.StateDir); err != nil {
		return nil, err
	}
	a.seedMetrics()
	a.notify = notify.New(a.events, o.StateDir, a.log.Named("notify"))
	catalog, err := app.NewCatalog(a.rt, app.WithDropIns(a.dir), app.WithRegistryModules(a.modules))
	if err != nil {
		return nil, err
	}
	hostOpts := []app.Option{
		app.WithRegistry(a.reg), app.WithPuller(a.puller), app.WithImages(a.images), app.WithContainers(a.cm),
		app.WithPolicies(catalog), app.WithLogger(a.log.Named("apps")),
		app.WithProgress(a.publish), app.WithDevice(a.device), app.WithOnChange(a.statusChanged),
		app.WithRecord(a.recordDecision), app.WithEvents(a.keepEvent),
	}
	if o.GracePeriod != 0 {
		hostOpts = append(hostOpts, app.WithGracePeriod(o.GracePeriod))
	}
	if o.LinkCheck != 0 {
		hostOpts = append(hostOpts, app.WithLinkCheck(o.LinkCheck))
	}
	if a.host, err = app.New(ctx, a.db, hostOpts...); err != nil {
		return nil, err
	}
	a.bumps, err = loadBumps(a.db, o.StateDir)
	if err != nil {
		return nil, err
	}
	started = true
	return a, nil
}

// rotateLogs caps the apps' logs (device.logs) every interval, and marks
// where each stood (logMarks). A log under its cap costs one stat: nothing
// is written.
func (a *Agent) rotateLogs(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cfg := a.host.Desired(); cfg != nil {
			maxBytes, keep := cfg.Device.LogLimits()
			for _, app := range cfg.Apps {
				rotated, err := a.cm.RotateLog(app.UUID, maxBytes, keep)
				if err != nil {
					a.log.Warn("rotating an app's log", "app", app.UUID, "error", err)
				} else if rotated {
					a.log.Debug("app log rotated", "app", app.UUID, "max_bytes", maxBytes, "kept", keep)
				}
				if fi, err := os.Stat(a.cm.LogPath(app.UUID)); err == nil {
					a.marks.record(app.UUID, time.Now(), rotated, fi.Size())
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// downloads are the registry client's download limits from the device
// settings.
func downloads(d config.Device) registry.Downloads {
	r, below, window := d.DownloadLimits()
	return registry.Downloads{RateLimit: r, StallBelow: below, StallWindow: window}
}

// recordDecision appends a decision to the record; a failure to write it
// is logged, never a failure of the decision.
func (a *Agent) recordDecision(e decisions.Entry) {
	a.metrics.Decided(e.Module.Name, e.Took)
	if err := a.record.Append(e); err != nil {
		a.log.Warn("recording a decision", "error", err)
	}
}

// useNetworkManager is device.link.networkManager (default true).
func useNetworkManager(d config.Device) bool {
	return d.Link == nil || d.Link.NetworkManager == nil || *d.Link.NetworkManager
}

// budgetPlan is device.download.budget as the meter takes it; nil when
// the device has none.
func budgetPlan(d config.Device) *budget.Plan {
	if d.Download == nil || d.Download.Budget == nil {
		return nil
	}
	b := d.Download.Budget
	n, err := config.ParseBytes(b.Bytes)
	if err != nil {
		return nil // refused by validation; never in force
	}
	return &budget.Plan{Limit: n, Period: budget.Period(cmp.Or(b.Period, string(budget.Month))), ResetDay: b.ResetDay}
}

// keepBudget folds the traffic into the data budget every interval and
// saves it (at most once a minute, only when it changed: an idle device
// writes nothing), and once more at stop.
func (a *Agent) keepBudget(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.device() // folds the traffic in
		if err := a.meter.Save(time.Now(), false); err != nil {
			a.log.Warn("saving the data budget", "error", err)
		}
	}
}

// machineID is the device's identity for splaying periodic checks when the
// configuration gives none.
func machineID() string {
	if b, err := os.ReadFile("/etc/machine-id"); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b))
	}
	h, _ := os.Hostname()
	return h
}

// privateDir makes the state directory, or checks the one that exists: it
// holds the apps' data and logs and the API socket, so it must be the
// agent's own (owner) and closed to everyone else (0700). A looser mode is
// tightened (and said so); another owner is refused.
func privateDir(dir string, log hclog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("state directory %s belongs to uid %d, not to the agent's user (uid %d): give it to the agent's user, or pass another --state", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state directory %s is %v, and making it 0700 failed: %w", dir, fi.Mode().Perm(), err)
		}
		log.Warn("state directory was open to other users; made it 0700", "dir", dir, "was", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
	return nil
}

// device is what policies are told about the device: free disk where
// containerd stores images (its roots, as the daemon reports them; the
// host subtracts what downloads under way reserve), its phase, its data
// budget, and the link: online and bandwidth as the device's own registry
// traffic measures them; its interface and metered as NetworkManager (or
// the default route) says; metered and cost as device.link says of it.
func (a *Agent) device() sdk.Device {
	d := sdk.Device{}
	// The link as this device's own registry traffic sees it: online
	// unless the last contact failed, and the measured bandwidth.
	d.Link.Online, d.Link.BandwidthBps = a.reg.Link()
	var dev config.Device
	if a.host != nil {
		if cfg := a.host.Desired(); cfg != nil {
			dev = cfg.Device
		}
	}
	d.Splay = dev.Splay(a.machineID)
	d.Budget = a.meter.Observe(time.Now(), budgetPlan(dev))
	// The uplink in use as NetworkManager (or the routing table) says,
	// then what the configuration says of it: the operator's word wins.
	up := a.uplink.State(a.ctx)
	d.Link.Interface = up.Interface
	if up.Metered != nil {
		d.Link.Metered = *up.Metered
	}
	metered, cost := dev.LinkOn(up.Interface)
	if metered != nil {
		d.Link.Metered = *metered
	}
	if cost != nil {
		d.Link.Cost = *cost
	}
	if free, _, err := a.puller.FreeDisk(a.ctx); err == nil {
		d.FreeDiskBytes = free
	}
	return d
}

// verifiers turns device.policyTrust into what the registry modules must
// carry and the drop-in directory's signature check (nil without dropIns),
// with the check's id.
func verifiers(d config.Device) (trust.Policy, plugins.VerifyFunc, string) {
	p := trust.NewPolicy(d.TrustKeys())
	if d.PolicyTrust == nil || !d.PolicyTrust.DropIns {
		return p, nil, ""
	}
	return p, func(path string, wasm []byte) error {
		_, err := p.VerifyFile(path, wasm)
		return err
	}, p.ID()
}

func pins(c *config.Config) map[string]string {
	p := map[string]string{}
	add := func(r *config.PolicyRef) {
		if r != nil && r.SHA256 != "" {
			p[r.Name] = r.SHA256
		}
	}
	add(c.Device.PullPolicy)
	for _, a := range c.Apps {
		add(a.PullPolicy)
	}
	return p
}

func (a *Agent) serve(ctx context.Context) error {
	defer a.close()
	sock := filepath.Join(a.o.StateDir, SocketName)
	os.Remove(sock) // a stale socket from a killed agent
	// The socket is 0600 from its first instant: bind creates it with the
	// process umask, so the umask is tightened around Listen. No app worker
	// runs yet (they start with the first reconcile, below), so nothing
	// else creates files meanwhile.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", sock)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("API socket %s: %w", sock, err)
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		os.Remove(sock)
	}()
	go a.dir.Watch(ctx, 500*time.Millisecond, func(r plugins.SyncReport) {
		if r.Changed() {
			a.reconcile()
		}
	})
	// Armed before the first read of the file: an edit made while the agent
	// starts is either in that read or brings an event after it.
	cw, err := a.configWatcher()
	if err != nil {
		a.log.Error("watching the configuration; edits need an agent restart", "error", err)
	} else {
		go a.watchConfig(ctx, cw)
	}
	go a.writeStatusOnChange(ctx)
	go a.writeTextfile(ctx)
	if a.controller != nil {
		a.log.Info("device mode: the configuration comes from the controller", "controller", a.o.ControllerURL,
			"device-cert", a.controller.CertPath())
		go a.runController(ctx, a.controller)
	}
	go a.rotateLogs(ctx, cmp.Or(a.o.LogCheck, 30*time.Second))
	go a.keepBudget(ctx, 10*time.Second)
	a.log.Info("agent started", "config", a.o.ConfigPath, "state", a.o.StateDir, "socket", sock, "namespace", a.o.Namespace)
	if t, _ := a.reconcile(); t != nil {
		go func() {
			// The first pass (decoding and compiling modules, adopting or
			// creating every app, its decisions in parallel) leaves garbage
			// the idle agent will not reuse: hand it back to the kernel once
			// every app has acted.
			t.WaitAll(ctx)
			debug.FreeOSMemory()
		}()
	}
	// Ready for systemd (Type=notify): the API serves and the configuration
	// was applied (the apps act on their own workers from here).
	if err := sdNotify("READY=1"); err != nil {
		a.log.Warn("telling systemd the agent is ready", "error", err)
	}
	<-ctx.Done()
	sdNotify("STOPPING=1")
	a.log.Info("stopping; apps keep running")
	return nil
}

// reconcile reads the configuration file, adds the counter increases asked
// through the API, and hands it to the apps' workers; it does not wait for
// them. A file that does not parse, or whose device part is invalid, leaves
// every app as it was; an app whose own part is invalid stays as it was
// while the others are acted upon. The tickets let a caller wait for one
// app (nil when nothing was submitted).
func (a *Agent) reconcile() (*app.Tickets, error) {
	a.reconciling.Lock()
	defer a.reconciling.Unlock()
	defer a.statusChanged()
	c, err := a.readConfig()
	var t *app.Tickets
	if err == nil {
		// Trust and pins follow the configuration: a file refused under the
		// old ones is tried under the new, in whichever order file, key and
		// pin arrive.
		policyTrust, verifyDropIn, verifierID := verifiers(c.Device)
		if a.modules.SetTrust(policyTrust) && policyTrust.Broken != nil {
			a.log.Error("device.policyTrust: the trusted keys cannot be read; no module that needs a signature runs", "error", policyTrust.Broken)
		}
		if _, perr := a.dir.SetVerify(a.ctx, verifyDropIn, verifierID); perr != nil {
			a.log.Error("scanning policy modules", "error", perr)
		}
		if _, perr := a.dir.SetPins(a.ctx, pins(c)); perr != nil {
			a.log.Error("scanning policy modules", "error", perr)
		}
		a.bumps.apply(c)
		a.reg.Reconfigure(c.Device.InsecureRegistries, c.Device.HostsDir())
		a.reg.SetCredentials(a.eveCreds)
		a.reg.SetDownloads(downloads(c.Device))
		a.uplink.UseNetworkManager(useNetworkManager(c.Device))
		a.applyMetrics(c.Device)
		a.notify.Apply(c.Device.Notify, cmp.Or(c.Device.ID, a.machineID))
		a.mu.Lock()
		a.status.DeviceID = cmp.Or(c.Device.ID, a.machineID)
		a.mu.Unlock()
		t, err = a.host.Submit(a.ctx, c)
		a.collectModules(c)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status.ConfigError = ""
	if t != nil {
		a.status.AppliedAt = time.Now().UTC()
	}
	if t != nil || err != nil {
		a.tellConfig(err)
	}
	if err != nil {
		a.status.ConfigError = err.Error()
		if t == nil {
			a.log.Error("configuration rejected; apps left as they were", "error", err)
		} else {
			a.log.Error("some apps' configuration rejected; they are left as they were", "error", err)
		}
	}
	return t, err
}

// collectModules removes the kept registry modules that neither the file
// nor the configuration in force (an app whose new part was rejected keeps
// its old module) names any more. It looks only when the set of named
// modules changed: an action on one app costs no directory read.
func (a *Agent) collectModules(file *config.Config) {
	var refs []string
	for _, c := range []*config.Config{file, a.host.Desired()} {
		if c == nil {
			continue
		}
		for _, p := range append([]*config.PolicyRef{c.Device.PullPolicy}, appPolicies(c)...) {
			if p != nil && p.Module != "" {
				refs = append(refs, p.Module)
			}
		}
	}
	slices.Sort(refs)
	refs = slices.Compact(refs)
	key := strings.Join(refs, "\n")
	if a.moduleRefs != nil && *a.moduleRefs == key {
		return
	}
	a.moduleRefs = &key
	removed, err := a.modules.Collect(refs)
	if err != nil {
		a.log.Warn("removing policy modules no configuration names", "error", err)
	}
	for _, d := range removed {
		a.log.Info("policy module removed: no configuration names it", "digest", d.String())
	}
}

func appPolicies(c *config.Config) []*config.PolicyRef {
	out := make([]*config.PolicyRef, 0, len(c.Apps))
	for _, ap := range c.Apps {
		out = append(out, ap.PullPolicy)
	}
	return out
}

// readConfig parses the configuration file, or returns a copy of the last
// parse when the file has not changed since (same size, modification and
// change times): a CLI action on one app does not parse every app again.
func (a *Agent) readConfig() (*config.Config, error) {
	fi, err := os.Stat(a.o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	var ctime int64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ctime = st.Ctim.Nano()
	}
	key := fmt.Sprint(fi.Size(), fi.ModTime().UnixNano(), ctime)
	if a.o.EVEConfigPath != "" {
		efi, err := os.Stat(a.o.EVEConfigPath)
		if errors.Is(err, os.ErrNotExist) && a.controller != nil {
			return nil, errors.New("no configuration from the controller yet (is the device registered? `pullwise status` shows the controller link)")
		}
		if err != nil {
			return nil, fmt.Errorf("reading the EVE configuration: %w", err)
		}
		var ectime int64
		if st, ok := efi.Sys().(*syscall.Stat_t); ok {
			ectime = st.Ctim.Nano()
		}
		key += fmt.Sprint(" eve ", efi.Size(), efi.ModTime().UnixNano(), ectime)
	}
	if a.parsed == nil || a.parsedKey != key {
		b, err := os.ReadFile(a.o.ConfigPath)
		if err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
		c, err := config.ParseFile(a.o.ConfigPath, b)
		if err != nil {
			a.parsed = nil
			return nil, err
		}
		if a.o.EVEConfigPath != "" {
			if c, err = a.fromEVE(c); err != nil {
				a.parsed = nil
				return nil, err
			}
		}
		a.parsed, a.parsedKey = c, key
	}
	c := *a.parsed
	c.Apps = slices.Clone(c.Apps) // bumps change counters in the copy
	return &c, nil
}

// statusChanged asks for the status file (and, in device mode, the info
// the controller has) to be brought up to date.
func (a *Agent) statusChanged() {
	a.pokeInfo()
	select {
	case a.statusPoke <- struct{}{}:
	default:
	}
}

// flushStatus has the status file written now rather than when the
// changes settle, and returns once it is: an action asked through the API
// has ended, and its caller reads the file's account of it as soon as it
// has the answer. The file is written while the agent is awake anyway,
// instead of waking it again a moment later.
func (a *Agent) flushStatus(ctx context.Context) {
	written := make(chan struct{})
	select {
	case a.statusFlush <- written:
	case <-ctx.Done():
		return
	case <-a.ctx.Done(): // the agent stops: so does the writer
		return
	}
	select {
	case <-written:
	case <-ctx.Done():
	case <-a.ctx.Done():
	}
}

// statusSettle is how long the status file waits after a change for the
// changes that follow it: one app's action changes its report several
// times within a few milliseconds (accepted, checking, decided, running),
// and the file is written once for all of them.
const statusSettle = 100 * time.Millisecond

// writeStatusOnChange writes the status file when asked, once the changes
// settled (see statusSettle), or at once when an action asked through the
// API ended (flushStatus): once per action rather than once per step of
// it. It is the file's one writer.
func (a *Agent) writeStatusOnChange(ctx context.Context) {
	settle := time.NewTimer(statusSettle)
	settle.Stop()
	for {
		var flushed chan struct{}
		select {
		case <-ctx.Done():
			return
		case flushed = <-a.statusFlush:
		case <-a.statusPoke:
			settle.Reset(statusSettle)
			select {
			case <-ctx.Done():
				settle.Stop()
				return
			case <-settle.C:
			case flushed = <-a.statusFlush:
				settle.Stop()
			}
		}
		select {
		case <-a.statusPoke: // a change while settling: this write has it
		default:
		}
		a.writeStatus()
		if flushed != nil {
			close(flushed)
		}
	}
}

func (a *Agent) snapshot() (Status, error) {
	info, err := a.host.Info(a.ctx)
	a.mu.Lock()
	st := Status{Agent: a.status, Info: info}
	if c := a.status.Controller; c != nil {
		cc := *c
		st.Agent.Controller = &cc
	}
	a.mu.Unlock()
	st.Agent.Policies = a.dir.Status()
	for i, p := range st.Agent.Policies {
		if p.Active != nil && slices.Contains(policies.Names(), p.Name) && p.Warning == "" {
			st.Agent.Policies[i].Warning = "named like a built-in policy: used only by apps whose configuration pins its sha256; the others use the built-in"
		}
	}
	return st, err
}

// writeStatus writes the status file atomically (rename), unless nothing
// but its times changed: flash wears (see statusFile).
func (a *Agent) writeStatus() {
	st, err := a.snapshot()
	if err != nil {
		a.log.Error("building status", "error", err)
		return
	}
	if _, err := a.statusFile.write(st); err != nil {
		a.log.Error("writing status file", "error", err)
	}
}

// configWatcher watches the configuration file's directory, so editors that
// replace the file by renaming are seen too.
func (a *Agent) configWatcher() (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	for _, p := range []string{a.o.ConfigPath, a.o.EVEConfigPath} {
		if p == "" {
			continue
		}
		if err := w.Add(filepath.Dir(p)); err != nil {
			w.Close()
			return nil, err
		}
	}
	return w, nil
}

// watchConfig reconciles whenever the configuration file changes.
func (a *Agent) watchConfig(ctx context.Context, w *fsnotify.Watcher) {
	defer w.Close()
	name := filepath.Clean(a.o.ConfigPath)
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.Events:
			if n := filepath.Clean(ev.Name); n == name || (a.o.EVEConfigPath != "" && n == filepath.Clean(a.o.EVEConfigPath)) {
				settle = time.After(200 * time.Millisecond)
			}
		case err := <-w.Errors:
			a.log.Warn("configuration watcher", "error", err)
			settle = time.After(200 * time.Millisecond)
		case <-settle:
			a.log.Info("configuration changed")
			a.reconcile()
		}
	}
}

func (a *Agent) publish(appID string, p pull.Progress) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ch, id := range a.subs {
		if id == appID {
			select {
			case ch <- progressEvent{App: appID, Progress: p}:
			default: // a slow reader misses progress, never the result
			}
		}
	}
}

func (a *Agent) close() {
	a.host.Close()
	if a.bumps != nil {
		a.bumps.close()
	}
	a.device() // the last traffic
	if err := a.meter.Save(time.Now(), true); err != nil {
		a.log.Warn("saving the data budget", "error", err)
	}
	a.images.Close()
	a.db.Close()
	a.dir.Close(context.Background())
	a.rt.Close(context.Background())
	a.client.Close()
	a.uplink.Close()
	a.record.Close()
	a.events.Close()
	a.closeMetrics()
	a.notify.Close()
	a.claim.release()
}
