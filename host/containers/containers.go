// Package containers runs app instances as containerd containers: one
// container per app, its root filesystem a snapshot of the root image, its
// further container drives read-only views of their images, its volumes
// directories in the state directory bind-mounted read-write.
//
// The operations keep EVE's meanings: Restart keeps the container's writable
// layer and the volumes; Replace (an image change) builds a new root
// filesystem from the new image and keeps the volumes; Purge discards both.
package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/apparmor"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	containerstore "github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/defaults"
	hostapparmor "github.com/containerd/containerd/v2/pkg/apparmor"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/signal"
	"github.com/opencontainers/image-spec/identity"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/network"
	"github.com/pullwise/pullwise/internal/atomicfile"
	"github.com/pullwise/pullwise/internal/faultpoint"
)

// Labels pullwise puts on what it creates, so it can find them again after a
// restart (adoption) and never touches containers it did not make.
const (
	LabelApp        = "io.pullwise.app"
	LabelRootfs     = "io.pullwise.rootfs"
	LabelGeneration = "io.pullwise.generation"
	// LabelImages lists the images a container was built from (its root
	// image, then its read-only drives, comma-separated): what the app
	// actually runs, compared with what it should run after a crash.
	LabelImages = "io.pullwise.images"
	// LabelStopTimeout is the app's stop timeout, when it sets one.
	LabelStopTimeout = "io.pullwise.stop-timeout"
)

// AppArmorProfile is the AppArmor profile apps run under where the kernel
// has AppArmor: containerd's default profile, loaded under this name.
const AppArmorProfile = "pullwise-default"

// Manager creates and runs app containers in the client's namespace.
type Manager struct {
	client      *containerd.Client
	dir         string
	snapshotter string
	stopTimeout time.Duration
	// cni attaches network namespaces; nil with cniErr when the CNI
	// plugins are missing (then only host-network apps can start).
	cni      *network.CNI
	cniErr   error
	netnsDir string
}

// New returns a Manager keeping volumes and logs under stateDir.
func New(client *containerd.Client, stateDir string) *Manager {
	cni, err := network.New(nil)
	return &Manager{client: client, dir: stateDir, snapshotter: defaults.DefaultSnapshotter, stopTimeout: DefaultStopTimeout,
		cni: cni, cniErr: err, netnsDir: network.DefaultNetNSDir}
}

// Spec is what an app's container is made of.
type Spec struct {
	// ID is the app's uuid; it names the container.
	ID string
	// Image is the containerd image name of the root filesystem drive.
	Image string
	// ReadOnly are further container drives, mounted read-only.
	ReadOnly []Mount
	// Volumes are writable directories holding the app's state.
	Volumes []Mount
	// Command replaces the image's entrypoint and command when set.
	Command []string
	Env     []string
	// Network is the app's network (bridge, none or host); Ports are
	// published on the bridge.
	Network config.NetworkMode
	Ports   []config.Port
	// MemoryBytes, CPUs and Pids limit the app; 0 means no limit.
	MemoryBytes int64
	CPUs        float64
	Pids        int64
	// ReadOnlyRootfs mounts the root filesystem read-only.
	ReadOnlyRootfs bool
	// StopSignal stops the process ("": the image's STOPSIGNAL, else
	// SIGTERM); StopTimeout is how long it has before SIGKILL (0: the
	// manager's default).
	StopSignal  string
	StopTimeout time.Duration
	// Devices and Binds are what of the host the app is given (checked
	// against device.allow by the configuration).
	Devices []config.DeviceMapping
	Binds   []config.BindMapping
	// User, when HasUser, runs the process as UID:GID and gives it its
	// volumes.
	UID, GID uint32
	HasUser  bool
	// UserNS, when HasUserNS, is the first host UID and GID of the app's
	// user namespace (config.IDRangeSize of them map 0 and up inside).
	UserNS    uint32
	HasUserNS bool
}

// idMap is the spec's user namespace mapping.
func (s Spec) idMap() []specs.LinuxIDMapping {
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: s.UserNS, Size: config.IDRangeSize}}
}

// hostIDs are the host UID and GID the app's process (and so its volumes)
// has: its user's, moved into its user namespace's range.
func (s Spec) hostIDs() (uid, gid uint32) {
	if s.HasUser {
		uid, gid = s.UID, s.GID
	}
	if s.HasUserNS {
		uid, gid = uid+s.UserNS, gid+s.UserNS
	}
	return uid, gid
}

// SpecFromConfig fills the runtime part of a Spec (network, limits, user)
// from an app's validated configuration.
func SpecFromConfig(app config.App) (Spec, error) {
	s := Spec{ID: app.UUID, Command: app.Command, Env: app.Env, Network: app.NetworkMode(), ReadOnlyRootfs: app.ReadOnlyRootfs,
		StopSignal: app.StopSignal, StopTimeout: app.StopWait()}
	for _, ps := range app.Ports {
		p, err := config.ParsePort(ps)
		if err != nil {
			return s, err
		}
		s.Ports = append(s.Ports, p)
	}
	if l := app.Limits; l != nil {
		n, err := l.MemoryBytes()
		if err != nil {
			return s, err
		}
		s.MemoryBytes, s.CPUs, s.Pids = n, l.CPUs, l.Pids
	}
	for _, d := range app.Devices {
		dm, err := config.ParseDevice(d)
		if err != nil {
			return s, err
		}
		s.Devices = append(s.Devices, dm)
	}
	for _, b := range app.Binds {
		bm, err := config.ParseBind(b)
		if err != nil {
			return s, err
		}
		s.Binds = append(s.Binds, bm)
	}
	var err error
	s.UID, s.GID, s.HasUser, err = app.UserIDs()
	s.UserNS, s.HasUserNS = app.UserNSRange()
	return s, err
}

// Images are the images the spec builds from: the root image, then the
// read-only drives' images.
func (s Spec) Images() []string {
	out := []string{s.Image}
	for _, ro := range s.ReadOnly {
		out = append(out, ro.Source)
	}
	return out
}

// Mount is an image (for ReadOnly) or a volume name (for Volumes) at Path.
type Mount struct {
	Source string
	Path   string
}

// Status is an app container's state.
type Status struct {
	Exists  bool
	Running bool
	// Image is the root image the container was created from.
	Image string
	// Images are every image it was built from: Image, then the read-only
	// drives' images, in Spec order.
	Images []string
	// Generation counts root filesystems built for the app: it changes on
	// Replace and Purge, not on Restart.
	Generation int
	// ExitCode is the last exit status when not running.
	ExitCode uint32
	Pid      uint32
}

// Create creates the app's container (not started). Volumes are created
// empty if they do not exist.
func (m *Manager) Create(ctx context.Context, s Spec) error {
	return m.create(ctx, s, 1)
}

func (m *Manager) create(ctx context.Context, s Spec, gen int) error {
	if s.Network == "" {
		s.Network = config.NetworkBridge
	}
	img, err := m.client.GetImage(ctx, s.Image)
	if err != nil {
		return fmt.Errorf("app %s: root image %s: %w", s.ID, s.Image, err)
	}
	mounts := []specs.Mount{}
	for _, v := range s.Volumes {
		dir, err := m.volume(s, v.Source)
		if err != nil {
			return err
		}
		mounts = append(mounts, specs.Mount{Destination: path.Clean(v.Path), Type: "bind", Source: dir, Options: []string{"rbind", "rw"}})
	}
	for _, b := range s.Binds {
		mode := "rw"
		if b.ReadOnly {
			mode = "ro"
		}
		mounts = append(mounts, specs.Mount{Destination: b.Container, Type: "bind", Source: b.Host, Options: []string{"rbind", mode}})
	}
	for i, ro := range s.ReadOnly {
		ms, err := m.view(ctx, s.ID, gen, i, ro.Source)
		if err != nil {
			return err
		}
		for _, mt := range ms {
			opts := append([]string{"ro"}, mt.Options...)
			if mt.Type == "bind" {
				opts = append(opts, "rbind")
			}
			mounts = append(mounts, specs.Mount{Destination: path.Clean(ro.Path), Type: mt.Type, Source: mt.Source, Options: opts})
		}
	}
	netOpts, err := m.networkFiles(s)
	if err != nil {
		return err
	}
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(img)}, netOpts...)
	specOpts = append(specOpts, oci.WithMounts(mounts))
	if len(s.Command) > 0 {
		specOpts = append(specOpts, oci.WithProcessArgs(s.Command...))
	}
	if len(s.Env) > 0 {
		specOpts = append(specOpts, oci.WithEnv(s.Env))
	}
	specOpts = append(specOpts, hardening(s)...)
	rootfs := fmt.Sprintf("%s-rootfs-%d", s.ID, gen)
	labels := network.Labels(s.Network, s.Ports)
	maps.Copy(labels, map[string]string{LabelApp: s.ID, LabelRootfs: rootfs, LabelGeneration: strconv.Itoa(gen),
		LabelImages: strings.Join(s.Images(), ",")})
	if s.StopTimeout > 0 {
		labels[LabelStopTimeout] = s.StopTimeout.String()
	}
	// How the process is stopped, as containerd's clients keep it: its
	// well-known label, from the app's configuration or the image's
	// STOPSIGNAL.
	opts := []containerd.NewContainerOpts{containerd.WithContainerLabels(labels)}
	if hc, err := imageHealthcheck(ctx, img); err != nil {
		return fmt.Errorf("app %s: %w", s.ID, err)
	} else if hc != nil {
		if b, err := json.Marshal(hc); err == nil && len(b) <= 4096 { // containerd's label limit
			labels[LabelHealthcheck] = string(b)
		}
	}
	if s.StopSignal != "" {
		labels[containerd.StopSignalLabel] = s.StopSignal
	} else {
		opts = append(opts, containerd.WithImageStopSignal(img, "SIGTERM"))
	}
	snapshot := containerd.WithNewSnapshot(rootfs, img)
	if s.HasUserNS {
		// containerd's way without idmapped mounts (which a 1.6 daemon
		// lacks): a copy of the image's layers chowned into the app's
		// range, shared by every container of that image and range.
		snapshot = containerd.WithUserNSRemappedSnapshot(rootfs, img, s.idMap(), s.idMap())
	}
	_, err = m.client.NewContainer(ctx, s.ID, append(opts,
		containerd.WithImage(img),
		containerd.WithSnapshotter(m.snapshotter),
		snapshot,
		containerd.WithNewSpec(specOpts...),
	)...)
	if err != nil {
		return fmt.Errorf("app %s: creating container: %w", s.ID, err)
	}
	return nil
}

// hardening is what every app's process runs under, whatever its image
// says: containerd's default seccomp profile, the default AppArmor profile
// where the kernel has AppArmor, no privilege gain through setuid files,
// and the app's limits, read-only root and user.
func hardening(s Spec) []oci.SpecOpts {
	opts := []oci.SpecOpts{seccomp.WithDefaultProfile(), oci.WithNoNewPrivileges}
	if hostapparmor.HostSupports() {
		opts = append(opts, apparmor.WithDefaultProfile(AppArmorProfile))
	}
	if s.MemoryBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(s.MemoryBytes)))
	}
	if s.CPUs > 0 {
		const period = 100_000 // µs, the kernel's default CFS period
		opts = append(opts, oci.WithCPUCFS(int64(s.CPUs*period), period))
	}
	if s.Pids > 0 {
		opts = append(opts, oci.WithPidsLimit(s.Pids))
	}
	if s.ReadOnlyRootfs {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if s.HasUser {
		opts = append(opts, oci.WithUIDGID(s.UID, s.GID))
	}
	if s.HasUserNS {
		opts = append(opts, oci.WithUserNamespace(s.idMap(), s.idMap()), withSysBind)
	}
	for _, d := range s.Devices {
		opts = append(opts, withDevice(d))
	}
	return opts
}

// withDevice gives the app a host device node at its container path, and
// the cgroup rule that lets it use the node as d.Access says.
func withDevice(d config.DeviceMapping) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containerstore.Container, s *specs.Spec) error {
		dev, err := oci.DeviceFromPath(d.Host)
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Host, err)
		}
		dev.Path = d.Container
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		s.Linux.Devices = append(s.Linux.Devices, *dev)
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
			Allow: true, Type: dev.Type, Major: &dev.Major, Minor: &dev.Minor, Access: d.Access})
		return nil
	}
}

// withSysBind gives a container in a user namespace the host's /sys,
// read-only, instead of a sysfs of its own: the kernel lets a user
// namespace mount sysfs only in a network namespace it owns, and the
// app's namespace is the host's (made and pinned for CNI before the
// container exists). runc 1.1 does not fall back by itself.
func withSysBind(_ context.Context, _ oci.Client, _ *containerstore.Container, s *oci.Spec) error {
	for i, m := range s.Mounts {
		if m.Destination == "/sys" {
			s.Mounts[i] = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
		}
	}
	return nil
}

// networkFiles are the spec options of the app's network: the host's
// namespace and files for a host-network app; for the others a namespace
// of their own (the spec's default), and /etc/hosts and /etc/resolv.conf
// files of their own, because the host's name loopback addresses that mean
// something else inside.
func (m *Manager) networkFiles(s Spec) ([]oci.SpecOpts, error) {
	if s.Network == config.NetworkHost {
		return []oci.SpecOpts{oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile, oci.WithHostResolvconf}, nil
	}
	if m.cni == nil {
		return nil, fmt.Errorf("app %s: network %s: %w", s.ID, s.Network, m.cniErr)
	}
	dir := filepath.Join(m.dir, "net", s.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("app %s: %w", s.ID, err)
	}
	hosts := filepath.Join(dir, "hosts")
	if err := writeIfChanged(hosts, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"); err != nil {
		return nil, fmt.Errorf("app %s: %w", s.ID, err)
	}
	files := []specs.Mount{{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"rbind", "ro"}}}
	if s.Network == config.NetworkBridge {
		resolv := filepath.Join(dir, "resolv.conf")
		if err := writeIfChanged(resolv, network.ResolvConf("/etc/resolv.conf")); err != nil {
			return nil, fmt.Errorf("app %s: %w", s.ID, err)
		}
		files = append(files, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: resolv, Options: []string{"rbind", "ro"}})
	}
	return []oci.SpecOpts{oci.WithMounts(files)}, nil
}

// writeIfChanged writes a small file (0644: the app's user must read it)
// unless it already holds content: no flash write for nothing.
func writeIfChanged(path, content string) error {
	if b, err := os.ReadFile(path); err == nil && string(b) == content {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

// volume creates an app's volume directory if needed: 0700, owned by the
// app's user when it has one, so other local users cannot read app data.
func (m *Manager) volume(s Spec, name string) (string, error) {
	dir := m.VolumeDir(s.ID, name)
	for _, d := range []string{filepath.Join(m.dir, "volumes"), filepath.Join(m.dir, "volumes", s.ID), dir} {
		if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
			return "", fmt.Errorf("app %s: volume %s: %w", s.ID, name, err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("app %s: volume %s: %w", s.ID, name, err)
	}
	if s.HasUser || s.HasUserNS {
		// The volumes and app directories above stay root's; only the
		// volume itself is handed over (searchable by its owner: 0711).
		if err := os.Chmod(filepath.Join(m.dir, "volumes", s.ID), 0o711); err != nil {
			return "", err
		}
		if err := os.Chmod(filepath.Join(m.dir, "volumes"), 0o711); err != nil {
			return "", err
		}
		uid, gid := s.hostIDs()
		if err := shiftVolume(dir, s.UserNS); err != nil {
			return "", fmt.Errorf("app %s: volume %s: moving it into the app's user namespace: %w", s.ID, name, err)
		}
		if err := os.Lchown(dir, int(uid), int(gid)); err != nil {
			return "", fmt.Errorf("app %s: volume %s: %w", s.ID, name, err)
		}
	} else if err := shiftVolume(dir, 0); err != nil {
		return "", fmt.Errorf("app %s: volume %s: moving it out of the app's user namespace: %w", s.ID, name, err)
	}
	return dir, nil
}

// shiftVolume moves a volume's files into the user namespace range that
// starts at base (0: the host's), when its directory is in another: an app
// whose userns changed finds its data owned as before, seen from inside.
// Nothing is walked when the volume is already in the range (every start
// after the first).
func shiftVolume(dir string, base uint32) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return err
	}
	from := config.UserNSRangeOf(st.Uid)
	if from == base {
		return nil
	}
	shift := func(id uint32) uint32 {
		if id >= from && id-from < config.IDRangeSize {
			return id - from + base
		}
		return id // outside the old range: not the app's to move
	}
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		return os.Lchown(p, int(shift(st.Uid)), int(shift(st.Gid)))
	})
}

// view makes a read-only view of an image's unpacked layers.
func (m *Manager) view(ctx context.Context, id string, gen, i int, image string) ([]mount.Mount, error) {
	img, err := m.client.GetImage(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("app %s: read-only image %s: %w", id, image, err)
	}
	diffs, err := img.RootFS(ctx)
	if err != nil {
		return nil, fmt.Errorf("app %s: read-only image %s: %w", id, image, err)
	}
	key := fmt.Sprintf("%s-ro-%d-%d", id, gen, i)
	sn := m.client.SnapshotService(m.snapshotter)
	ms, err := sn.View(ctx, key, identity.ChainID(diffs).String())
	if errdefs.IsAlreadyExists(err) {
		ms, err = sn.Mounts(ctx, key)
	}
	if err != nil {
		return nil, fmt.Errorf("app %s: view of %s: %w", id, image, err)
	}
	return ms, nil
}

// Start starts the app's process, replacing a stopped task.
func (m *Manager) Start(ctx context.Context, id string) error {
	c, err := m.client.LoadContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("app %s: %w", id, err)
	}
	if t, err := c.Task(ctx, nil); err == nil {
		st, err := t.Status(ctx)
		if err == nil && st.Status == containerd.Running {
			return nil
		}
		if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("app %s: removing old task: %w", id, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(m.dir, "logs"), 0o700); err != nil {
		return err
	}
	// The log is the app's output: 0600 from its first byte (cio would
	// create it 0644).
	if f, err := os.OpenFile(m.LogPath(id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		f.Close()
	}
	if err := m.attach(ctx, c); err != nil {
		return err
	}
	t, err := c.NewTask(ctx, cio.LogFile(m.LogPath(id)))
	if err != nil {
		return fmt.Errorf("app %s: creating task: %w", id, err)
	}
	if err := t.Start(ctx); err != nil {
		t.Delete(ctx, containerd.WithProcessKill)
		return fmt.Errorf("app %s: starting: %w", id, err)
	}
	return nil
}

// attach gives the app a network namespace of its own for the process
// about to start: a namespace pinned under the netns directory, so it
// outlives the process, attached through CNI, and named in the container's
// spec and labels. The namespace belongs to the app, not to one container:
// a restart finds it alive on the container, and an image change or purge
// (a new container) finds it in the app's network record
// (STATE/net/UUID/netns.json) and adopts it with its address and ports, so
// neither costs a CNI call. After a reboot the namespace is gone; what the
// labels and the record name is released and a new one pinned.
// Host-network apps have nothing to attach.
func (m *Manager) attach(ctx context.Context, c containerd.Container) error {
	labels, err := c.Labels(ctx)
	if err != nil {
		return fmt.Errorf("app %s: %w", c.ID(), err)
	}
	mode, ports, err := network.FromLabels(labels)
	if err != nil || mode == config.NetworkHost {
		return err
	}
	if m.cni == nil {
		return fmt.Errorf("app %s: network %s: %w", c.ID(), mode, m.cniErr)
	}
	if p := labels[network.LabelNetNS]; p != "" && network.Alive(p) {
		return nil
	}
	want := network.Labels(mode, ports)
	rec := m.netRecord(c.ID())
	path := rec[network.LabelNetNS]
	if path == "" || !network.Alive(path) || rec[network.LabelMode] != want[network.LabelMode] || rec[network.LabelPorts] != want[network.LabelPorts] {
		// Whatever an earlier container or start left (a power cut, a
		// changed network) is released first.
		_ = m.cni.Release(ctx, c.ID(), labels)
		_ = m.cni.Release(ctx, c.ID(), rec)
		if path, err = m.cni.Pin(ctx, m.netnsDir, c.ID(), mode, ports); err != nil {
			return err
		}
		want[network.LabelNetNS] = path
		if err := m.saveNetRecord(c.ID(), want); err != nil {
			_ = m.cni.Release(ctx, c.ID(), want)
			return err
		}
	}
	spec, err := c.Spec(ctx)
	if err == nil {
		err = oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: path})(ctx, nil, nil, spec)
	}
	if err == nil {
		err = c.Update(ctx, containerd.UpdateContainerOpts(containerd.WithSpec(spec)))
	}
	if err == nil {
		_, err = c.SetLabels(ctx, map[string]string{network.LabelNetNS: path})
	}
	if err != nil {
		return fmt.Errorf("app %s: network namespace: %w", c.ID(), err)
	}
	return nil
}

// netRecord is the app's network record: the labels (mode, ports, pinned
// namespace) of the namespace the app owns, or nil.
func (m *Manager) netRecord(id string) map[string]string {
	b, err := os.ReadFile(filepath.Join(m.dir, "net", id, "netns.json"))
	if err != nil {
		return nil
	}
	var rec map[string]string
	if json.Unmarshal(b, &rec) != nil {
		return nil
	}
	return rec
}

func (m *Manager) saveNetRecord(id string, rec map[string]string) error {
	dir := filepath.Join(m.dir, "net", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(rec)
	return atomicfile.Write(filepath.Join(dir, "netns.json"), b, false)
}

// releaseNet releases the app's network namespace (what the container's
// labels and the app's record name), after its process stopped: the NAT
// rules are found through the namespace. Failures are not the caller's to
// handle (the app is going either way); a later attach tries again.
func (m *Manager) releaseNet(ctx context.Context, id string, labels map[string]string) {
	_ = m.cni.Release(ctx, id, labels)
	if rec := m.netRecord(id); rec != nil {
		_ = m.cni.Release(ctx, id, rec)
		os.Remove(filepath.Join(m.dir, "net", id, "netns.json"))
	}
}

// DefaultStopTimeout is how long an app's process has to exit after
// SIGTERM before it is killed.
const DefaultStopTimeout = 10 * time.Second

// StopTimeout is how long a stopping process is given before SIGKILL.
func (m *Manager) StopTimeout() time.Duration { return m.stopTimeout }

// Stop stops the app's process: SIGTERM, then SIGKILL after the stop
// timeout. The container and its writable layer stay.
func (m *Manager) Stop(ctx context.Context, id string) error {
	c, err := m.client.LoadContainer(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("app %s: %w", id, err)
	}
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("app %s: %w", id, err)
	}
	exit, err := t.Wait(ctx)
	if err != nil {
		return fmt.Errorf("app %s: %w", id, err)
	}
	if st, err := t.Status(ctx); err == nil && st.Status == containerd.Running {
		// How to stop it, from its labels (read once): containerd's
		// well-known stop signal, and our stop timeout.
		sig, wait := syscall.SIGTERM, m.stopTimeout
		if labels, err := c.Labels(ctx); err == nil {
			if s, err := signal.ParseSignal(labels[containerd.StopSignalLabel]); err == nil {
				sig = s
			}
			if d, err := time.ParseDuration(labels[LabelStopTimeout]); err == nil && d > 0 {
				wait = d
			}
		}
		if err := t.Kill(ctx, sig); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("app %s: stopping: %w", id, err)
		}
		select {
		case <-exit:
		case <-time.After(wait):
			if err := t.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("app %s: killing: %w", id, err)
			}
			<-exit
		}
	}
	if _, err := t.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("app %s: removing task: %w", id, err)
	}
	return nil
}

// Restart stops and starts the app on the same container: the writable
// layer and the volumes are kept.
func (m *Manager) Restart(ctx context.Context, id string) error {
	if err := m.Stop(ctx, id); err != nil {
		return err
	}
	return m.Start(ctx, id)
}

// Replace rebuilds the app's root filesystem from s.Image (an image change)
// and starts it; volumes are kept. The new container is created before the
// old one is stopped only in the sense that images are already on disk: the
// downtime is a stop, a snapshot and a start.
func (m *Manager) Replace(ctx context.Context, s Spec) error {
	return m.rebuild(ctx, s, false)
}

// Purge discards the app's writable layer and empties its volumes, then
// starts it from s.Image.
func (m *Manager) Purge(ctx context.Context, s Spec) error {
	return m.rebuild(ctx, s, true)
}

func (m *Manager) rebuild(ctx context.Context, s Spec, purge bool) error {
	st, err := m.Status(ctx, s.ID)
	if err != nil {
		return err
	}
	// The app's network namespace stays: the new container adopts it.
	if err := m.deleteContainer(ctx, s.ID, true); err != nil {
		return err
	}
	faultpoint.Hit("rebuild:stopped")
	if purge {
		if err := os.RemoveAll(filepath.Join(m.dir, "volumes", s.ID)); err != nil {
			return fmt.Errorf("app %s: emptying volumes: %w", s.ID, err)
		}
	}
	if err := m.create(ctx, s, st.Generation+1); err != nil {
		return err
	}
	faultpoint.Hit("rebuild:created")
	return m.Start(ctx, s.ID)
}

// Remove stops and deletes the app's container, its snapshots and volumes.
func (m *Manager) Remove(ctx context.Context, id string) error {
	if err := m.deleteContainer(ctx, id, false); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(m.dir, "net", id)); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(m.dir, "volumes", id))
}

// deleteContainer stops and deletes the app's container; its network
// namespace too unless keepNet (a rebuild: the next container adopts it).
func (m *Manager) deleteContainer(ctx context.Context, id string, keepNet bool) error {
	if err := m.Stop(ctx, id); err != nil {
		return err
	}
	c, err := m.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		if !keepNet {
			m.releaseNet(ctx, id, nil)
		}
		return nil
	} else if err != nil {
		return fmt.Errorf("app %s: %w", id, err)
	}
	labels, _ := c.Labels(ctx)
	if !keepNet {
		m.releaseNet(ctx, id, labels)
	} else if p, old := labels[network.LabelNetNS], m.netRecord(id); p != "" && old[network.LabelNetNS] != p {
		// A namespace the app's record does not know of (the container was
		// adopted from an agent on another state directory): carried in the
		// record, for the next container to adopt or release, rather than
		// left pinned with nothing naming it.
		rec := map[string]string{}
		for _, k := range []string{network.LabelMode, network.LabelPorts, network.LabelNetNS} {
			if v, ok := labels[k]; ok {
				rec[k] = v
			}
		}
		if old != nil && m.cni != nil {
			_ = m.cni.Release(ctx, id, old)
		}
		if err := m.saveNetRecord(id, rec); err != nil {
			return fmt.Errorf("app %s: network record: %w", id, err)
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("app %s: deleting container: %w", id, err)
	}
	// Read-only views are ours, not the container's: remove them too.
	sn := m.client.SnapshotService(m.snapshotter)
	var keys []string
	sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if len(info.Name) > len(id)+4 && info.Name[:len(id)+4] == id+"-ro-" {
			keys = append(keys, info.Name)
		}
		return nil
	})
	for _, k := range keys {
		if err := sn.Remove(ctx, k); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("app %s: removing view %s: %w", id, k, err)
		}
	}
	return nil
}

// Status reports the app's container and process.
func (m *Manager) Status(ctx context.Context, id string) (Status, error) {
	c, err := m.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return Status{}, nil
	} else if err != nil {
		return Status{}, fmt.Errorf("app %s: %w", id, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("app %s: %w", id, err)
	}
	gen, _ := strconv.Atoi(info.Labels[LabelGeneration])
	st := Status{Exists: true, Image: info.Image, Generation: gen}
	if l := info.Labels[LabelImages]; l != "" {
		st.Images = strings.Split(l, ",")
	} else if info.Image != "" {
		st.Images = []string{info.Image}
	}
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return st, nil
	} else if err != nil {
		return st, fmt.Errorf("app %s: %w", id, err)
	}
	ts, err := t.Status(ctx)
	if err != nil {
		return st, fmt.Errorf("app %s: %w", id, err)
	}
	st.Running, st.ExitCode, st.Pid = ts.Status == containerd.Running, ts.ExitStatus, t.Pid()
	return st, nil
}

// Wait returns a channel that receives the exit code when the app's
// current process exits (or is stopped). It fails if the app has no task.
func (m *Manager) Wait(ctx context.Context, id string) (<-chan uint32, error) {
	c, err := m.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", id, err)
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", id, err)
	}
	exit, err := t.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", id, err)
	}
	out := make(chan uint32, 1)
	go func() {
		select {
		case st := <-exit:
			out <- st.ExitCode()
		case <-ctx.Done():
		}
	}()
	return out, nil
}

// Apps lists the app ids of the containers pullwise made in this namespace.
func (m *Manager) Apps(ctx context.Context) ([]string, error) {
	cs, err := m.client.Containers(ctx, "labels."+`"`+LabelApp+`"`)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID())
	}
	return ids, nil
}

// LogPath is where the app's stdout and stderr go.
func (m *Manager) LogPath(id string) string { return filepath.Join(m.dir, "logs", id+".log") }

// VolumeDir is the host directory of an app's volume.
func (m *Manager) VolumeDir(id, name string) string { return filepath.Join(m.dir, "volumes", id, name) }

// RotateLog caps an app's log: when it is larger than maxBytes its content
// moves to LOG.1 (older copies shift to LOG.2 ... LOG.keep, the oldest is
// dropped) and the live file is emptied. The shim keeps the live file open
// and appends to it (O_APPEND), so it is copied and truncated, as
// logrotate's copytruncate does: a line the app writes between the copy and
// the truncation is lost. Nothing is written while the log is small.
func (m *Manager) RotateLog(id string, maxBytes int64, keep int) (bool, error) {
	live := m.LogPath(id)
	fi, err := os.Stat(live)
	if err != nil || fi.Size() <= maxBytes {
		return false, nil
	}
	keep = max(keep, 1)
	os.Remove(fmt.Sprintf("%s.%d", live, keep))
	for i := keep - 1; i >= 1; i-- {
		if err := os.Rename(fmt.Sprintf("%s.%d", live, i), fmt.Sprintf("%s.%d", live, i+1)); err != nil && !os.IsNotExist(err) {
			return false, fmt.Errorf("app %s: rotating its log: %w", id, err)
		}
	}
	src, err := os.OpenFile(live, os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("app %s: rotating its log: %w", id, err)
	}
	defer src.Close()
	dst, err := os.OpenFile(live+".1", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return false, fmt.Errorf("app %s: rotating its log: %w", id, err)
	}
	_, cerr := io.Copy(dst, src)
	if err := errors.Join(cerr, dst.Close()); err != nil {
		return false, fmt.Errorf("app %s: rotating its log: %w", id, err)
	}
	if err := src.Truncate(0); err != nil {
		return false, fmt.Errorf("app %s: rotating its log: %w", id, err)
	}
	return true, nil
}

// LogFiles lists the rotated copies of the log at live that exist, oldest
// first, then live itself.
func LogFiles(live string) []string {
	var rotated []string
	for i := 1; ; i++ {
		p := fmt.Sprintf("%s.%d", live, i)
		if _, err := os.Stat(p); err != nil {
			break
		}
		rotated = append([]string{p}, rotated...)
	}
	return append(rotated, live)
}
