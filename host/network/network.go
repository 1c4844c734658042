// Package network gives app containers their network namespace's
// interfaces, through containerd's go-cni and the standard CNI plugins
// (Debian's containernetworking-plugins): loopback for every app with a
// network of its own, and for bridge apps a veth on the pullwise0 bridge
// with an address from host-local IPAM, NAT to the outside and published
// ports (portmap).
//
// The namespace itself is the container's (runc creates it with the task);
// Attach runs between task creation and start, Detach before the task is
// deleted. CNI's DEL is idempotent, so Attach first detaches whatever an
// earlier task of the same app left (an agent killed before it could).
package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/netns"
	gocni "github.com/containerd/go-cni"

	"github.com/pullwise/pullwise/host/config"
)

// Labels on an app's container that say how its network is attached, so
// whoever finds the container (the agent after a restart, a test's
// cleanup) can release it.
const (
	// LabelMode is bridge, none or host.
	LabelMode = "io.pullwise.network"
	// LabelPorts lists the published ports, comma-separated.
	LabelPorts = "io.pullwise.ports"
	// LabelNetNS is the pinned network namespace the app's current (or
	// last) process runs in.
	LabelNetNS = "io.pullwise.netns"
)

// DefaultNetNSDir is where app network namespaces are pinned: runtime
// state, gone at a reboot like the namespaces themselves.
const DefaultNetNSDir = "/run/pullwise/netns"

// The bridge network every bridge app joins.
const (
	Name   = "pullwise"
	Bridge = "pullwise0"
	Subnet = "10.213.0.0/16"
)

// DefaultPluginDirs are where Debian (and most distributions) install the
// CNI plugins.
func DefaultPluginDirs() []string { return []string{"/usr/lib/cni", "/opt/cni/bin"} }

// Mode is what an app's namespace gets: config.NetworkBridge or
// config.NetworkNone (host-network apps have no namespace of their own).
type Mode = config.NetworkMode

// CNI attaches and detaches app network namespaces.
type CNI struct {
	bridge, lo gocni.CNI
	dirs       []string
}

// New loads the two networks from the plugin directories. It fails, naming
// what is missing, when the plugins are not installed.
func New(pluginDirs []string) (*CNI, error) {
	if len(pluginDirs) == 0 {
		pluginDirs = DefaultPluginDirs()
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if !found(pluginDirs, p) {
			return nil, fmt.Errorf("CNI plugin %q not found in %v: install Debian's containernetworking-plugins, or give apps network: host or none", p, pluginDirs)
		}
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`, Name, Bridge, Subnet)
	bridge, err := gocni.New(gocni.WithPluginDir(pluginDirs), gocni.WithMinNetworkCount(2))
	if err != nil {
		return nil, fmt.Errorf("CNI: %w", err)
	}
	if err := bridge.Load(gocni.WithLoNetwork, gocni.WithConfListBytes([]byte(conf))); err != nil {
		return nil, fmt.Errorf("CNI bridge network: %w", err)
	}
	lo, err := gocni.New(gocni.WithPluginDir(pluginDirs), gocni.WithMinNetworkCount(1))
	if err != nil {
		return nil, fmt.Errorf("CNI: %w", err)
	}
	if err := lo.Load(gocni.WithLoNetwork); err != nil {
		return nil, fmt.Errorf("CNI loopback: %w", err)
	}
	return &CNI{bridge: bridge, lo: lo, dirs: pluginDirs}, nil
}

func found(dirs []string, plugin string) bool {
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, plugin)); err == nil && !fi.IsDir() {
			return true
		}
	}
	return false
}

// Attach sets up the namespace at netns for app id: loopback, and for a
// bridge app its interface, address and published ports.
func (c *CNI) Attach(ctx context.Context, id string, mode Mode, netns string, ports []config.Port) error {
	n, opts := c.network(mode, ports)
	// Whatever an earlier namespace of this app left (an address, NAT and
	// port rules) is released first.
	_ = n.Remove(ctx, id, netns, opts...)
	if _, err := n.Setup(ctx, id, netns, opts...); err != nil {
		return fmt.Errorf("app %s: network %s: %w", id, mode, err)
	}
	return nil
}

// Detach releases what Attach set up (address, NAT and port rules). The
// namespace may already be gone.
func (c *CNI) Detach(ctx context.Context, id string, mode Mode, netns string, ports []config.Port) error {
	n, opts := c.network(mode, ports)
	if err := n.Remove(ctx, id, netns, opts...); err != nil {
		return fmt.Errorf("app %s: releasing network %s: %w", id, mode, err)
	}
	return nil
}

func (c *CNI) network(mode Mode, ports []config.Port) (gocni.CNI, []gocni.NamespaceOpts) {
	if mode != config.NetworkBridge {
		return c.lo, nil
	}
	var pm []gocni.PortMapping
	for _, p := range ports {
		pm = append(pm, gocni.PortMapping{HostPort: int32(p.HostPort), ContainerPort: int32(p.ContainerPort), Protocol: p.Protocol, HostIP: p.HostIP})
	}
	var opts []gocni.NamespaceOpts
	if len(pm) > 0 {
		opts = append(opts, gocni.WithCapabilityPortMap(pm))
	}
	return c.bridge, opts
}

// ResolvConf is the host's resolver configuration at path as an app in a
// namespace of its own should see it: loopback nameservers (a local
// caching resolver such as systemd-resolved's 127.0.0.53) mean the app's
// own loopback there, so they are dropped; with none left, public DNS is
// not guessed and the file says why.
func ResolvConf(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "# pullwise: the host has no " + path + "\n"
	}
	var out []string
	dropped := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if ip := net.ParseIP(f[1]); ip != nil && ip.IsLoopback() {
				dropped = true
				continue
			}
		}
		out = append(out, line)
	}
	s := strings.TrimRight(strings.Join(out, "\n"), "\n") + "\n"
	if dropped {
		s += "# pullwise: loopback nameservers of the host dropped (unreachable from the app's namespace)\n"
	}
	return s
}

// Labels are the container labels that record mode and ports.
func Labels(mode Mode, ports []config.Port) map[string]string {
	var ps []string
	for _, p := range ports {
		ps = append(ps, p.String())
	}
	return map[string]string{LabelMode: string(mode), LabelPorts: strings.Join(ps, ",")}
}

// FromLabels reads mode and ports back from a container's labels. A
// container without the mode label was made before networks existed, when
// every app shared the host's.
func FromLabels(labels map[string]string) (Mode, []config.Port, error) {
	mode := Mode(labels[LabelMode])
	if mode == "" {
		mode = config.NetworkHost
	}
	var ports []config.Port
	for _, ps := range strings.Split(labels[LabelPorts], ",") {
		if ps == "" {
			continue
		}
		p, err := config.ParsePort(ps)
		if err != nil {
			return mode, nil, err
		}
		ports = append(ports, p)
	}
	return mode, ports, nil
}

// Release detaches and removes the pinned network namespace a container's
// labels name, if any: CNI first (address, NAT and port rules; the
// namespace must still exist for the NAT rules to be found), then the
// namespace. Idempotent. c may be nil (no plugins): the namespace is still
// removed.
func (c *CNI) Release(ctx context.Context, id string, labels map[string]string) error {
	path := labels[LabelNetNS]
	if path == "" {
		return nil
	}
	var errs []error
	if mode, ports, err := FromLabels(labels); err != nil {
		errs = append(errs, err)
	} else if c != nil {
		errs = append(errs, c.Detach(ctx, id, mode, path, ports))
	}
	if err := netns.LoadNetNS(path).Remove(); err != nil {
		errs = append(errs, fmt.Errorf("app %s: removing network namespace: %w", id, err))
	}
	return errors.Join(errs...)
}

// Alive reports whether path is a pinned network namespace that still
// exists (it does not after a reboot).
func Alive(path string) bool {
	closed, err := netns.LoadNetNS(path).Closed()
	return err == nil && !closed
}

// Pin creates a new network namespace pinned under dir and attaches it for
// app id. The caller records its path in the container (LabelNetNS) and
// spec, and releases it with Release.
func (c *CNI) Pin(ctx context.Context, dir, id string, mode Mode, ports []config.Port) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	ns, err := netns.NewNetNS(dir)
	if err != nil {
		return "", fmt.Errorf("app %s: network namespace: %w", id, err)
	}
	if err := c.Attach(ctx, id, mode, ns.GetPath(), ports); err != nil {
		ns.Remove()
		return "", err
	}
	return ns.GetPath(), nil
}
