// Package config is pullwise's declarative configuration: the device's pull
// policy and registries, and the app instances with their drives and EVE's
// restart, purge and refreshImage counters. It parses YAML or JSON strictly
// and validates everything before anything acts on it, naming the field of
// every problem, so a bad edit is rejected whole and running apps stay as
// they were.
package config

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/modules"
)

// DefaultPolicy is used when neither the app nor the device names a policy.
const DefaultPolicy = "always"

// Config is the whole configuration.
type Config struct {
	Device Device `json:"device"`
	Apps   []App  `json:"apps"`

	// file and src are where the configuration was read from (ParseFile),
	// so that every problem Check finds names its line and column.
	file string
	src  []byte
	// appsFile, when set, is the file the apps came from instead (an EVE
	// configuration, host/eve): their problems name it and no line.
	appsFile string
	// rejectedApps are apps whose source was refused before Check (an EVE
	// app that cannot be mapped), by uuid: Check reports them so.
	rejectedApps map[string]error
}

// Device is the device-wide part.
type Device struct {
	// PullPolicy is the default for apps that do not name one.
	PullPolicy *PolicyRef `json:"pullPolicy,omitempty"`
	// PolicyDir is the drop-in module directory. Default: STATE/policies.
	PolicyDir string `json:"policyDir,omitempty"`
	// PolicyTrust lists the keys policy modules must be signed with.
	PolicyTrust *PolicyTrust `json:"policyTrust,omitempty"`
	// InsecureRegistries are reached over plain HTTP, and only over plain
	// HTTP (host or host:port). Every other registry is reached over HTTPS
	// only, loopback and private addresses included.
	InsecureRegistries []string `json:"insecureRegistries,omitempty"`
	// RegistryHostsDir holds per-registry host configuration in containerd's
	// certs.d layout (HOST[_PORT_]/hosts.toml, ca.crt, client certificates;
	// mirrors), for resolving and pulling alike. Default:
	// /etc/containerd/certs.d. Read at every request, so edits need no
	// restart.
	RegistryHostsDir string `json:"registryHostsDir,omitempty"`
	// Logs caps each app's log (STATE/logs/UUID.log).
	Logs *LogSettings `json:"logs,omitempty"`
	// Link says what the device's uplink costs, for policies. Omitted:
	// NetworkManager's Metered property when it runs, else unmetered, cost 0.
	Link *LinkSettings `json:"link,omitempty"`
	// Download limits every image download: a rate cap and a stall floor.
	Download *DownloadSettings `json:"download,omitempty"`
	// ID identifies the device in its fleet (EVE's device UUID, say). It
	// seeds the device's phase for periodic checks (sdk Device.Splay), so a
	// fleet's devices check at different points of an interval. Default:
	// /etc/machine-id, else the host name.
	ID string `json:"id,omitempty"`
	// Metrics turns on the Prometheus endpoint and textfile. Off by default.
	Metrics *MetricsSettings `json:"metrics,omitempty"`
	// Notify sends events to webhooks and an MQTT broker. Off by default.
	Notify *NotifySettings `json:"notify,omitempty"`
	// Allow lists the host devices and directories apps may be given.
	// Omitted: none.
	Allow *AllowSettings `json:"allow,omitempty"`
}

// Splay is the device's phase for periodic checks: a stable fraction in
// (0, 1) from its identity (ID, else machineID), the same at every start.
func (d Device) Splay(machineID string) float64 {
	id := d.ID
	if id == "" {
		id = machineID
	}
	if id == "" {
		return 0
	}
	sum := sha256.Sum256([]byte("pullwise splay\x00" + id))
	// 53 bits: every value exactly representable; +1 keeps 0 out.
	return (float64(binary.BigEndian.Uint64(sum[:8])>>11) + 1) / (1<<53 + 1)
}

// LogSettings cap an app's log: past MaxSize it is rotated, and MaxFiles
// rotated copies are kept.
type LogSettings struct {
	// MaxSize of the live log: bytes or with a unit ("10Mi"). Default 10Mi.
	MaxSize string `json:"maxSize,omitempty"`
	// MaxFiles is how many rotated copies are kept. Default 3.
	MaxFiles int `json:"maxFiles,omitempty"`
}

// LinkSettings describe the device's uplink to policies.
type LinkSettings struct {
	// Metered says the link is paid by the byte (LTE, satellite).
	// Omitted: NetworkManager's Metered property of the primary
	// connection, else unmetered.
	Metered *bool `json:"metered,omitempty"`
	// Cost is EVE's uplink cost: 0 (free) to 255.
	Cost *int `json:"cost,omitempty"`
	// NetworkManager: ask NetworkManager (over D-Bus) for the primary
	// connection's interface and Metered property. Default true; without
	// NetworkManager the default route names the interface.
	NetworkManager *bool `json:"networkManager,omitempty"`
	// Uplinks give cost and metered per network interface, over the
	// device-wide values, for the uplink in use.
	Uplinks []UplinkSettings `json:"uplinks,omitempty"`
}

// UplinkSettings describe one uplink by its network interface.
type UplinkSettings struct {
	Interface string `json:"interface"`
	Cost      *int   `json:"cost,omitempty"`
	Metered   *bool  `json:"metered,omitempty"`
}

// LinkOn is what the configuration says of the uplink on interface iface:
// its entry in Uplinks over the device-wide values. nil fields are not
// set.
func (d Device) LinkOn(iface string) (metered *bool, cost *int) {
	l := d.Link
	if l == nil {
		return nil, nil
	}
	metered, cost = l.Metered, l.Cost
	for _, u := range l.Uplinks {
		if u.Interface == iface && iface != "" {
			if u.Metered != nil {
				metered = u.Metered
			}
			if u.Cost != nil {
				cost = u.Cost
			}
		}
	}
	return metered, cost
}

// DownloadSettings limit image downloads.
type DownloadSettings struct {
	// RateLimit caps all downloads together, in bytes per second ("4Mi",
	// "500k"). Omitted: no cap.
	RateLimit string `json:"rateLimit,omitempty"`
	// StallBelow and StallWindow: a download slower than StallBelow bytes
	// per second over a whole StallWindow is aborted and resumed (a Range
	// from what arrived) at the policy's next attempt. Defaults: 1Ki, 60s;
	// StallBelow "0" turns it off.
	StallBelow  string `json:"stallBelow,omitempty"`
	StallWindow string `json:"stallWindow,omitempty"`
	// Budget is a data budget: what registry traffic may bring in a
	// period. Policies see what is left (the built-ins keep to it; a pull
	// that would exceed it waits for the reset). Omitted: none.
	Budget *BudgetSettings `json:"budget,omitempty"`
}

// BudgetSettings are a data budget: Bytes per Period, periods starting at
// 00:00 UTC on ResetDay.
type BudgetSettings struct {
	// Bytes a period may bring ("2Gi", "500M").
	Bytes string `json:"bytes"`
	// Period is day, week or month. Default month.
	Period string `json:"period,omitempty"`
	// ResetDay is the day a period starts: for month the day of the month
	// (1 to 28, default 1), for week the weekday (0 Sunday to 6 Saturday,
	// default 0).
	ResetDay int `json:"resetDay,omitempty"`
}

// DownloadLimits are the download settings in effect: the rate cap (0:
// none), and the stall floor and its window (floor 0: off).
func (d Device) DownloadLimits() (rateLimit, stallBelow int64, stallWindow time.Duration) {
	stallBelow, stallWindow = 1<<10, time.Minute
	if s := d.Download; s != nil {
		if n, err := ParseBytes(s.RateLimit); err == nil {
			rateLimit = n
		}
		if n, err := ParseBytes(s.StallBelow); s.StallBelow != "" && err == nil {
			stallBelow = n
		}
		if w, err := time.ParseDuration(s.StallWindow); err == nil && w > 0 {
			stallWindow = w
		}
	}
	return rateLimit, stallBelow, stallWindow
}

// LogLimits are the log settings in effect: the live log's maximum size
// and how many rotated copies are kept.
func (d Device) LogLimits() (maxBytes int64, keep int) {
	maxBytes, keep = 10<<20, 3
	if d.Logs != nil {
		if n, err := ParseBytes(d.Logs.MaxSize); err == nil && n > 0 {
			maxBytes = n
		}
		if d.Logs.MaxFiles > 0 {
			keep = d.Logs.MaxFiles
		}
	}
	return maxBytes, keep
}

// HostsDir is the registry hosts directory in effect.
func (d Device) HostsDir() string {
	if d.RegistryHostsDir == "" {
		return DefaultRegistryHostsDir
	}
	return d.RegistryHostsDir
}

// PolicyTrust is which signatures policy modules must carry (cosign's
// formats; checked offline against the keys alone).
type PolicyTrust struct {
	// Keys are PEM public key files (ECDSA, RSA or Ed25519; cosign.pub as
	// `cosign generate-key-pair` writes it). A module from a registry runs
	// only with a signature by one of them (`cosign sign --key`).
	Keys []string `json:"keys" jsonschema:"required"`
	// DropIns: drop-in modules need one too, NAME.wasm.sig beside the
	// module (`cosign sign-blob --key K --output-signature NAME.wasm.sig`).
	DropIns bool `json:"dropIns,omitempty"`
}

// TrustKeys is the configured key files (none without policyTrust).
func (d Device) TrustKeys() []string {
	if d.PolicyTrust == nil {
		return nil
	}
	return d.PolicyTrust.Keys
}

// checkModuleRef is modules.ParseRef's verdict on a module reference.
func checkModuleRef(ref string) error {
	_, err := modules.ParseRef(ref)
	return err
}

// DefaultRegistryHostsDir is containerd's usual registry hosts directory.
const DefaultRegistryHostsDir = "/etc/containerd/certs.d"

// PolicyRef names a policy: a built-in, a drop-in module or a module in an
// OCI registry, with its settings and an optional sha256 pin of the module
// file. In YAML it is either a plain name or an object.
type PolicyRef struct {
	// Name is a built-in's or a drop-in's name. With Module it is only the
	// name reports show (default: the repository's last component).
	Name     string          `json:"name,omitempty"`
	Settings json.RawMessage `json:"settings,omitempty"`
	SHA256   string          `json:"sha256,omitempty"`
	// Module is a policy module in an OCI registry, by digest
	// (registry/ns/name[:tag]@sha256:..., as `pullwise policy push`
	// prints it): the agent fetches it through the images' registry
	// settings, checks it against the digest (and device.policyTrust's
	// keys) and keeps it in its state directory, so it runs offline.
	Module string `json:"module,omitempty"`
}

// Label is how reports name the policy: its name, else its module
// reference.
func (p PolicyRef) Label() string { return cmp.Or(p.Name, p.Module) }

// UnmarshalJSON accepts "name" or {"name": ..., "settings": ..., "sha256": ...}.
func (p *PolicyRef) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*p = PolicyRef{Name: s}
		return nil
	}
	type plain PolicyRef
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var v plain
	if err := dec.Decode(&v); err != nil {
		return err
	}
	*p = PolicyRef(v)
	return nil
}

// App is one app instance.
type App struct {
	UUID         string      `json:"uuid" jsonschema:"required,pattern=^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"`
	DisplayName  string      `json:"displayName" jsonschema:"required"`
	PullPolicy   *PolicyRef  `json:"pullPolicy,omitempty"`
	Drives       []Drive     `json:"drives" jsonschema:"required"`
	Restart      InstanceOps `json:"restart"`
	Purge        InstanceOps `json:"purge"`
	RefreshImage InstanceOps `json:"refreshImage"`
	Command      []string    `json:"command,omitempty"`
	Env          []string    `json:"env,omitempty"`
	// RestartOnExit says whether the app's process is started again when it
	// exits on its own after its grace period (with back-off: 10 s doubling
	// to 5 min). Default true.
	RestartOnExit *bool `json:"restartOnExit,omitempty"`
	// Network is the app's network: "bridge" (the default: a network
	// namespace of its own on the pullwise0 bridge, NAT to the outside),
	// "none" (loopback only) or "host" (the host's network namespace, every
	// host port and loopback service included: an explicit opt-in).
	Network NetworkMode `json:"network,omitempty"`
	// Ports publishes container ports on the host, bridge network only:
	// "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]".
	Ports []string `json:"ports,omitempty"`
	// Limits caps the app's memory, CPU and process count. Default: none.
	Limits *Limits `json:"limits,omitempty"`
	// ReadOnlyRootfs mounts the root filesystem read-only (volumes stay
	// writable).
	ReadOnlyRootfs bool `json:"readOnlyRootfs,omitempty"`
	// StopSignal is what stops the app's process ("SIGQUIT", "SIGINT",
	// "15"). Default: the image's STOPSIGNAL, else SIGTERM.
	StopSignal string `json:"stopSignal,omitempty"`
	// StopTimeout is how long the process has after its stop signal before
	// SIGKILL (a Go duration, 1s to 1h). Default 10s.
	StopTimeout string `json:"stopTimeout,omitempty"`
	// Devices are host devices given to the app,
	// "HOSTPATH[:CONTAINERPATH][:ACCESS]" ("/dev/ttyUSB0",
	// "/dev/gpiochip0:/dev/gpiochip0:rw"), each listed in device.allow.devices.
	Devices []string `json:"devices,omitempty"`
	// Binds are host paths mounted in the app, "HOSTPATH:CONTAINERPATH[:ro]",
	// each under a directory device.allow.binds lists.
	Binds []string `json:"binds,omitempty"`
	// Healthcheck, if set, must pass after an image change, or the change
	// is handled as a failed start (the built-in policies roll back).
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
	// User runs the app's process as "UID[:GID]" (numeric), instead of the
	// image's user. Its volumes are owned by that user.
	User string `json:"user,omitempty"`
	// UserNS is the app's user namespace: "host" (the default: root in
	// the container is root on the host) or "auto" (a user namespace of
	// its own: the container's UIDs and GIDs 0-65535 are an unprivileged
	// range of the host's, chosen from the app's uuid; its root filesystem
	// is a copy chowned into that range, and its volumes are owned by it).
	UserNS UserNSMode `json:"userns,omitempty"`
}

// UserNSMode is an app's user namespace.
type UserNSMode string

// The user namespace modes.
const (
	UserNSHost UserNSMode = "host"
	UserNSAuto UserNSMode = "auto"
)

// IDRangeSize is how many UIDs (and GIDs) an app's user namespace maps:
// 0-65535 in the container.
const IDRangeSize = 1 << 16

// userNSBase and userNSSlots place the apps' ranges: 2^30 and up, above
// what /etc/subuid hands out to users (100000 and up, 65536 each) for a
// long way, in 16384 slots of IDRangeSize.
const (
	userNSBase  = 1 << 30
	userNSSlots = 1 << 14
)

// UserNSRangeOf is the user namespace range a host ID falls in: 0 for the
// host's own IDs, else the first ID of the app range that holds it.
func UserNSRangeOf(id uint32) uint32 {
	if id < userNSBase {
		return 0
	}
	return id - (id-userNSBase)%IDRangeSize
}

// UserNSRange is the first host UID (and GID) of the app's user namespace,
// and false when the app runs in the host's. It is derived from the uuid
// alone, so it is the same at every start, for every container the app
// gets, and needs no state; Check refuses two apps whose ranges meet.
func (a App) UserNSRange() (uint32, bool) {
	if a.UserNS != UserNSAuto {
		return 0, false
	}
	sum := sha256.Sum256([]byte("pullwise userns\x00" + a.UUID))
	slot := binary.BigEndian.Uint32(sum[:4]) % userNSSlots
	return userNSBase + slot*IDRangeSize, true
}

// NetworkMode is an app's network.
type NetworkMode string

// The network modes.
const (
	NetworkBridge NetworkMode = "bridge"
	NetworkNone   NetworkMode = "none"
	NetworkHost   NetworkMode = "host"
)

// NetworkMode is the app's network, the default filled in.
func (a App) NetworkMode() NetworkMode {
	if a.Network == "" {
		return NetworkBridge
	}
	return a.Network
}

// Limits are an app's resource limits; zero values mean no limit.
type Limits struct {
	// Memory in bytes, or with a unit: "256Mi", "1Gi", "500M".
	Memory string `json:"memory,omitempty"`
	// CPUs is how many CPUs' worth of time the app may use: 0.5, 2.
	CPUs float64 `json:"cpus,omitempty"`
	// Pids caps the number of processes and threads.
	Pids int64 `json:"pids,omitempty"`
}

// MemoryBytes is Memory in bytes (0: no limit).
func (l *Limits) MemoryBytes() (int64, error) {
	if l == nil || l.Memory == "" {
		return 0, nil
	}
	return ParseBytes(l.Memory)
}

// ParseBytes reads a size: a whole number of bytes, optionally with a
// decimal (k, M, G) or binary (Ki, Mi, Gi) unit.
func ParseBytes(s string) (int64, error) {
	m := bytesRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size (want e.g. 268435456, 256Mi, 1G)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	unit := map[string]int64{"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m[2]]
	if n > (1<<62)/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
}

var bytesRE = regexp.MustCompile(`^([0-9]+)(|k|K|M|G|Ki|Mi|Gi)$`)

// Port is one published port.
type Port struct {
	HostIP        string
	HostPort      int
	ContainerPort int
	Protocol      string
}

// String is the port in the form ParsePort reads.
func (p Port) String() string {
	s := fmt.Sprintf("%d:%d/%s", p.HostPort, p.ContainerPort, p.Protocol)
	if p.HostIP != "" {
		host := p.HostIP
		if strings.Contains(host, ":") {
			host = "[" + host + "]" // IPv6
		}
		s = host + ":" + s
	}
	return s
}

// ParsePort reads "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]".
func ParsePort(s string) (Port, error) {
	p := Port{Protocol: "tcp"}
	spec := s
	if i := strings.LastIndex(spec, "/"); i >= 0 {
		p.Protocol, spec = spec[i+1:], spec[:i]
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			return p, fmt.Errorf("%q: protocol %q, want tcp or udp", s, p.Protocol)
		}
	}
	i := strings.LastIndex(spec, ":")
	if i < 0 {
		return p, fmt.Errorf("%q: want [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]", s)
	}
	hostPart, cport := spec[:i], spec[i+1:]
	hport := hostPart
	if j := strings.LastIndex(hostPart, ":"); j >= 0 {
		p.HostIP, hport = strings.Trim(hostPart[:j], "[]"), hostPart[j+1:]
		if net.ParseIP(p.HostIP) == nil {
			return p, fmt.Errorf("%q: %q is not an IP address", s, p.HostIP)
		}
	}
	var err error
	if p.HostPort, err = portNumber(hport); err != nil {
		return p, fmt.Errorf("%q: host port: %w", s, err)
	}
	if p.ContainerPort, err = portNumber(cport); err != nil {
		return p, fmt.Errorf("%q: container port: %w", s, err)
	}
	return p, nil
}

func portNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return n, nil
}

// UserIDs reads User: "UID" or "UID:GID" (the GID defaults to the UID).
// ok is false when User is empty.
func (a App) UserIDs() (uid, gid uint32, ok bool, err error) {
	if a.User == "" {
		return 0, 0, false, nil
	}
	u, g, hasGID := strings.Cut(a.User, ":")
	uid64, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, false, fmt.Errorf("%q: want a numeric UID[:GID]", a.User)
	}
	gid64 := uid64
	if hasGID {
		if gid64, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, false, fmt.Errorf("%q: want a numeric UID[:GID]", a.User)
		}
	}
	return uint32(uid64), uint32(gid64), true, nil
}

// InstanceOps is EVE's InstanceOpsCmd: an increase of Counter asks for one
// action, however many steps it increased by.
type InstanceOps struct {
	Counter int64 `json:"counter"`
}

// Counters are an app's three counters as one value: as configured, as
// acted upon (the report), as increased through the API, and as a policy
// sees them (sdk.Counters converts from it directly). The file keeps EVE's
// form, {counter: N} each.
type Counters struct {
	Restart      int64 `json:"restart"`
	Purge        int64 `json:"purge"`
	RefreshImage int64 `json:"refreshImage"`
}

// Counters are the app's counters.
func (a App) Counters() Counters {
	return Counters{Restart: a.Restart.Counter, Purge: a.Purge.Counter, RefreshImage: a.RefreshImage.Counter}
}

// AddCounters increases the app's counters by c (what was asked through
// the API, on top of the file's).
func (a *App) AddCounters(c Counters) {
	a.Restart.Counter += c.Restart
	a.Purge.Counter += c.Purge
	a.RefreshImage.Counter += c.RefreshImage
}

// DriveKind says what a drive is.
type DriveKind string

const (
	// DriveContainer is a container image. The app's first container drive
	// is its root filesystem; further ones are mounted read-only at
	// MountPath. Only container drives are refreshed.
	DriveContainer DriveKind = "container"
	// DriveVolume is an empty writable volume at MountPath, holding the
	// app's state: kept across restarts and image changes, emptied by purge.
	DriveVolume DriveKind = "volume"
)

// Drive is one of an app's drives.
type Drive struct {
	Kind      DriveKind `json:"kind" jsonschema:"required"`
	Image     *Image    `json:"image,omitempty"`
	MountPath string    `json:"mountPath,omitempty"`
}

// Image is a container drive's image.
type Image struct {
	// UUID is the ImageObjectID.
	UUID string `json:"uuid" jsonschema:"required,pattern=^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"`
	// Name is the reference: "registry/repo:tag", "repo@sha256:...", or both.
	Name string `json:"name" jsonschema:"required"`
	// SHA256 optionally pins the manifest (index or platform manifest).
	SHA256 string `json:"sha256,omitempty"`
}

// Pin returns the sha256 the image must have, from SHA256 or from an
// "@sha256:" in Name, lower-case with its prefix; empty if none.
func (i Image) Pin() imagedigest.Digest {
	if i.SHA256 != "" {
		return imagedigest.Normalize(i.SHA256)
	}
	if _, d, ok := strings.Cut(i.Name, "@"); ok {
		return imagedigest.Normalize(d)
	}
	return ""
}

// Policy returns the app's effective policy: its own, else the device's,
// else the built-in default.
func (c *Config) Policy(app App) PolicyRef {
	switch {
	case app.PullPolicy != nil:
		return *app.PullPolicy
	case c.Device.PullPolicy != nil:
		return *c.Device.PullPolicy
	}
	return PolicyRef{Name: DefaultPolicy}
}

// RootDrive is the app's first container drive.
func (a App) RootDrive() *Drive {
	for i := range a.Drives {
		if a.Drives[i].Kind == DriveContainer {
			return &a.Drives[i]
		}
	}
	return nil
}

// ErrEmpty is Parse's error for a document with nothing in it.
var ErrEmpty = errors.New("the document is empty (write `apps: []` for a device with no apps)")

// Parse reads a configuration (YAML or JSON), strictly: field names match
// exactly, a key given twice, a value of the wrong type, a second document
// or text after the first are errors. Every problem is a *FieldError
// (joined) with its line and column. It does not validate: call Validate.
//
// An empty document (no bytes, blanks or comments only) is an error, not a
// configuration with no apps: it is what a reader sees while a controller
// rewrites the file in place (truncate, then write), and taking it for "no
// apps" would remove every app and its volumes until the write completes.
func Parse(b []byte) (*Config, error) { return ParseFile("", b) }

// ParseFile is Parse for the file named file: its problems, and those
// Check finds in the result, are given as FILE:LINE:COLUMN.
func ParseFile(file string, b []byte) (*Config, error) {
	var c Config
	if err := decode(b, &c); err != nil {
		if errors.Is(err, ErrEmpty) {
			return nil, &FieldError{File: file, Message: err.Error(), err: ErrEmpty}
		}
		for _, fe := range FieldErrors(err) {
			fe.File = file
		}
		return nil, err
	}
	c.file, c.src = file, b
	return &c, nil
}

// WithApps is c with its apps replaced by apps read from file (an EVE
// configuration), of which rejected were refused before they could be
// mapped (by uuid; each such app is in apps with its uuid and name only).
// The device part keeps its file and positions; the apps' problems name
// file, without a line.
func (c *Config) WithApps(file string, apps []App, rejected map[string]error) *Config {
	out := *c
	out.Apps, out.appsFile, out.rejectedApps = apps, file, rejected
	return &out
}

// Load reads and validates the configuration file at path against the
// configuration currently applied (prev, or nil) and the policies known.
func Load(file string, prev *Config, known func(string) bool) (*Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := ParseFile(file, b)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(prev, known); err != nil {
		return nil, err
	}
	return c, nil
}

var (
	sha256RE = regexp.MustCompile(`^(sha256:)?[0-9a-fA-F]{64}$`)
	// uuidRE is a UUID in its text form, as EVE's controller assigns them.
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// legacyIDRE is what earlier versions accepted as a "uuid". Such an
	// id is still accepted where the configuration in force already has it
	// (an upgraded device keeps its apps), never for a new app or image.
	legacyIDRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$`)
)

// Validate checks the configuration, every problem named by its field.
// prev is the configuration in force (nil at first start): counters may not
// go backwards. known reports whether a policy name is a built-in or a
// loaded drop-in module; nil accepts any name.
func (c *Config) Validate(prev *Config, known func(string) bool) error {
	dev, apps := c.Check(prev, known)
	errs := []error{dev}
	for _, a := range c.Apps {
		errs = append(errs, apps[a.UUID])
	}
	return errors.Join(errs...)
}

// App returns the app with uuid, if c has one.
func (c *Config) App(uuid string) (App, bool) {
	if c != nil {
		for _, a := range c.Apps {
			if a.UUID == uuid {
				return a, true
			}
		}
	}
	return App{}, false
}

// AppsNotIn lists c's apps that other does not list (by uuid), in c's
// order; none when c is nil.
func (c *Config) AppsNotIn(other *Config) []App {
	var out []App
	if c != nil {
		for _, a := range c.Apps {
			if _, ok := other.App(a.UUID); !ok {
				out = append(out, a)
			}
		}
	}
	return out
}

// quoteShort quotes a value for an error message, cut to 64 bytes: a
// mangled field may hold a megabyte, and the message is printed and kept.
func quoteShort(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%q… (%d bytes)", strings.ToValidUTF8(s[:64], ""), len(s))
}

// validID reports whether id may name an app or an image: a UUID, or an
// id of an earlier version's looser form that the configuration in force
// already uses (known).
func validID(id string, known bool) bool {
	return uuidRE.MatchString(id) || (known && legacyIDRE.MatchString(id))
}

// FieldError is one problem of a configuration, at a field path such as
// "apps[0].drives[1].image.sha256", and where the file has it when known.
type FieldError struct {
	// File, Line and Column (1-based) are where the problem is written;
	// zero when not known (a YAML syntax error has no column).
	File         string
	Line, Column int
	// Field is the path of the field ("syntax" for a syntax error, empty
	// for the document as a whole).
	Field, Message string

	err error // what errors.Is sees, if anything (ErrEmpty)
}

// Error is "FILE:LINE:COLUMN: FIELD: MESSAGE", with what is known of it.
func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "":
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
			if e.Column > 0 {
				fmt.Fprintf(&b, ":%d", e.Column)
			}
		}
		b.WriteString(": ")
	case e.Line > 0 && e.Column > 0:
		fmt.Fprintf(&b, "line %d, column %d: ", e.Line, e.Column)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.err }

// place gives the field errors of a parsed configuration their file,
// line and column (the source is parsed again once, only when there are
// errors).
func (c *Config) place(errs []error) {
	if len(errs) == 0 || (c.src == nil && c.appsFile == "") {
		return
	}
	root := parseNode(c.src)
	for _, err := range errs {
		for _, fe := range FieldErrors(err) {
			if c.appsFile != "" && strings.HasPrefix(fe.Field, "apps[") {
				if fe.File == "" {
					fe.File = c.appsFile
				}
				continue
			}
			if fe.File == "" {
				fe.File = c.file
			}
			if fe.Line == 0 && root != nil {
				pos := locateNode(root, fe.Field)
				fe.Line, fe.Column = pos.Line, pos.Column
			}
		}
	}
}

// FieldErrors lists the field problems in err (joined or wrapped), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if fe, ok := err.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// Delta is what changed for one app between two configurations.
type Delta struct {
	UUID             string
	Created, Removed bool
	// Modified: anything other than the counters changed.
	Modified bool
	// Restart, Purge and Refresh: the counter increased (one action each,
	// however many steps).
	Restart, Purge, Refresh bool
}

// Diff lists what changed from prev (nil: nothing was configured) to c, in
// c's app order, removed apps last.
func (c *Config) Diff(prev *Config) []Delta {
	var out []Delta
	seen := map[string]bool{}
	for _, a := range c.Apps {
		seen[a.UUID] = true
		p, ok := prev.App(a.UUID)
		if !ok {
			out = append(out, Delta{UUID: a.UUID, Created: true})
			continue
		}
		if d := DiffApp(p, a); d.Any() {
			out = append(out, d)
		}
	}
	if prev != nil {
		for _, a := range prev.Apps {
			if !seen[a.UUID] {
				out = append(out, Delta{UUID: a.UUID, Removed: true})
			}
		}
	}
	return out
}

// DiffApp is what changed for one app from its configuration as acted upon
// (was) to the one wanted now.
func DiffApp(was, now App) Delta {
	d := Delta{UUID: now.UUID,
		Restart: now.Restart.Counter > was.Restart.Counter,
		Purge:   now.Purge.Counter > was.Purge.Counter,
		Refresh: now.RefreshImage.Counter > was.RefreshImage.Counter,
	}
	now.Restart, now.Purge, now.RefreshImage = was.Restart, was.Purge, was.RefreshImage
	d.Modified = !sameApp(was, now)
	return d
}

// Any reports whether the delta asks for anything.
func (d Delta) Any() bool {
	return d.Created || d.Removed || d.Modified || d.Restart || d.Purge || d.Refresh
}

// sameApp compares two apps, counters already equalised. The pull policy is
// left out: it is how decisions are made, not what runs, so changing it
// never restarts an app.
func sameApp(a, b App) bool {
	a.PullPolicy, b.PullPolicy = nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// StopWait is the app's stop timeout, 0 when it sets none (the host's
// default applies).
func (a App) StopWait() time.Duration {
	d, err := time.ParseDuration(a.StopTimeout)
	if err != nil || d <= 0 {
		return 0
	}
	return d
}
