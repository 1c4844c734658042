package containers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	hostapparmor "github.com/containerd/containerd/v2/pkg/apparmor"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/network"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/internal/testing/ctrdtest"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// starts waits for the app's volume log to have n lines and returns them.
func starts(t *testing.T, m *Manager, id string, n int) []string {
	t.Helper()
	return regtest.Starts(t, m.VolumeDir(id, "data"), n, m.LogPath(id))
}

// appImages pushes the test app at each REPO:VERSION to a registry and
// pulls it into d, returning the containerd names in order.
func appImages(t testing.TB, d *ctrdtest.Daemon, repoVersions ...string) []string {
	t.Helper()
	ctx := d.Context()
	host := regtest.NewRegistry(t)
	reg, err := registry.New(registry.WithInsecure(host))
	if err != nil {
		t.Fatal(err)
	}
	puller, err := pull.New(d.Client, reg)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, rv := range repoVersions {
		_, version, _ := strings.Cut(rv, ":")
		regtest.PushImage(t, host+"/"+rv, regtest.AppImage(t, version, false))
		res, err := reg.Resolve(ctx, host+"/"+rv, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := puller.Pull(ctx, res, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, r.Name)
	}
	return names
}

// TestLifecycle runs a real container through create, restart, image
// change, purge and remove, checking what each keeps and discards.
func TestLifecycle(t *testing.T) {
	d := ctrdtest.Start(t)
	ctx := d.Context()
	names := appImages(t, d, "app:v1", "app:v2", "assets:a1")
	v1, v2, assets := names[0], names[1], names[2]

	m := New(d.Client, t.TempDir())
	spec := Spec{ID: "app-1", Image: v1,
		ReadOnly: []Mount{{Source: assets, Path: "/opt/ro"}},
		Volumes:  []Mount{{Source: "data", Path: "/data"}}}
	if err := m.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "app-1"); err != nil {
		t.Fatal(err)
	}
	if got := starts(t, m, "app-1", 1)[0]; got != "start version=v1 freshrootfs=true ro=a1" {
		t.Fatalf("first start: %q", got)
	}
	st, err := m.Status(ctx, "app-1")
	if err != nil || !st.Running || st.Generation != 1 || st.Image != v1 {
		t.Fatalf("status %+v %v", st, err)
	}
	// The app's network namespace: pinned, named in its labels, and the
	// same one through restarts and image changes (no CNI call).
	netns := func() string {
		c, err := d.Client.LoadContainer(ctx, "app-1")
		if err != nil {
			t.Fatal(err)
		}
		l, _ := c.Labels(ctx)
		return l[network.LabelNetNS]
	}
	ns := netns()
	if ns == "" || !network.Alive(ns) {
		t.Fatalf("bridge app: network namespace %q", ns)
	}

	// Restart keeps the writable layer (no fresh root filesystem) and volumes.
	if err := m.Restart(ctx, "app-1"); err != nil {
		t.Fatal(err)
	}
	if got := starts(t, m, "app-1", 2)[1]; got != "start version=v1 freshrootfs=false ro=a1" {
		t.Fatalf("after restart: %q", got)
	}
	if got := netns(); got != ns {
		t.Fatalf("restart changed the network namespace: %s -> %s", ns, got)
	}

	// An image change builds a new root filesystem and keeps the volumes.
	spec.Image = v2
	if err := m.Replace(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got := starts(t, m, "app-1", 3)[2]; got != "start version=v2 freshrootfs=true ro=a1" {
		t.Fatalf("after image change: %q", got)
	}
	if st, _ := m.Status(ctx, "app-1"); st.Generation != 2 || st.Image != v2 {
		t.Fatalf("status after replace %+v", st)
	}
	if got := netns(); got != ns {
		t.Fatalf("the new container did not adopt the app's network namespace: %s -> %s", ns, got)
	}

	// Purge discards the writable layer and the volumes.
	if err := m.Purge(ctx, spec); err != nil {
		t.Fatal(err)
	}
	lines := starts(t, m, "app-1", 1)
	if len(lines) != 1 || lines[0] != "start version=v2 freshrootfs=true ro=a1" {
		t.Fatalf("after purge the volume should hold one start: %q", lines)
	}

	ids, err := m.Apps(ctx)
	if err != nil || len(ids) != 1 || ids[0] != "app-1" {
		t.Fatalf("apps %v %v", ids, err)
	}
	if err := m.Remove(ctx, "app-1"); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.Status(ctx, "app-1"); st.Exists {
		t.Fatal("container still exists after remove")
	}
	if _, err := os.Stat(m.VolumeDir("app-1", "data")); !os.IsNotExist(err) {
		t.Fatal("volume still exists after remove")
	}
	if network.Alive(ns) {
		t.Fatal("network namespace still pinned after remove")
	}
	if out, _ := exec.Command("iptables", "-t", "nat", "-S").Output(); strings.Contains(string(out), `id: \"app-1\"`) {
		t.Fatalf("NAT rules of the removed app left:\n%s", out)
	}
}

func TestStartFailureIsVisible(t *testing.T) {
	d := ctrdtest.Start(t)
	ctx := d.Context()
	host := regtest.NewRegistry(t)
	reg, err := registry.New(registry.WithInsecure(host))
	if err != nil {
		t.Fatal(err)
	}
	regtest.PushImage(t, host+"/bad:v1", regtest.AppImage(t, "bad", true))
	res, _ := reg.Resolve(ctx, host+"/bad:v1", nil)
	puller, err := pull.New(d.Client, reg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := puller.Pull(ctx, res, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	m := New(d.Client, t.TempDir())
	if err := m.Create(ctx, Spec{ID: "bad", Image: r.Name, Volumes: []Mount{{Source: "data", Path: "/data"}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "bad"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := m.Status(ctx, "bad")
		if err != nil {
			t.Fatal(err)
		}
		if !st.Running && st.ExitCode == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v: want exited with 1", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUserNamespace: an app with userns auto runs with its container root
// mapped to an unprivileged host range (the kernel's uid_map says so), its
// root filesystem chowned into that range and its volume owned by it, so
// it can write there; back in the host's namespace, its volume's files are
// moved back and it still can.
func TestUserNamespace(t *testing.T) {
	d := ctrdtest.Start(t)
	ctx := d.Context()
	names := appImages(t, d, "app:v1", "app:v2")
	app := config.App{UUID: "0a7c3b1e-0000-4000-8000-0000000005e1", UserNS: config.UserNSAuto}
	spec, err := SpecFromConfig(app)
	if err != nil || !spec.HasUserNS {
		t.Fatalf("%+v %v", spec, err)
	}
	base := spec.UserNS
	spec.Image, spec.Volumes = names[0], []Mount{{Source: "data", Path: "/data"}}
	m := New(d.Client, t.TempDir())
	id := spec.ID
	if err := m.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Remove(ctx, id) })
	if got := starts(t, m, id, 1)[0]; got != "start version=v1 freshrootfs=true ro=" {
		t.Fatalf("first start in a user namespace: %q", got)
	}
	st, _ := m.Status(ctx, id)
	uidMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", st.Pid))
	if err != nil || strings.Join(strings.Fields(string(uidMap)), " ") != fmt.Sprintf("0 %d %d", base, config.IDRangeSize) {
		t.Fatalf("the app's uid_map: %q %v; want 0 %d %d", uidMap, err, base, config.IDRangeSize)
	}
	owner := func(p string) uint32 {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid
	}
	vol := m.VolumeDir(id, "data")
	entries, _ := os.ReadDir(vol)
	if len(entries) == 0 || owner(vol) != base || owner(filepath.Join(vol, entries[0].Name())) != base {
		t.Fatalf("the volume and what the app wrote there: owned by %d; want %d", owner(vol), base)
	}
	// An image change: a new chowned root filesystem, the same range.
	spec.Image = names[1]
	if err := m.Replace(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got := starts(t, m, id, 2)[1]; got != "start version=v2 freshrootfs=true ro=" {
		t.Fatalf("after an image change: %q", got)
	}
	// Back in the host's namespace: the volume's files are root's again.
	spec.HasUserNS = false
	if err := m.Replace(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got := starts(t, m, id, 3)[2]; got != "start version=v2 freshrootfs=true ro=" {
		t.Fatalf("back in the host's namespace: %q", got)
	}
	if owner(vol) != 0 || owner(filepath.Join(vol, entries[0].Name())) != 0 {
		t.Fatalf("the volume after leaving the user namespace: owned by %d", owner(vol))
	}
}

// TestAppArmor: where the kernel has AppArmor, the app's process runs
// confined by pullwise's profile; where it does not (as on these test
// machines: the test says which), the app runs without one and nothing
// asks for it.
func TestAppArmor(t *testing.T) {
	d := ctrdtest.Start(t)
	ctx := d.Context()
	image := appImages(t, d, "app:v1")[0]
	m := New(d.Client, t.TempDir())
	spec := Spec{ID: "aa-1", Image: image, Volumes: []Mount{{Source: "data", Path: "/data"}}}
	if err := m.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Remove(ctx, spec.ID) })
	if err := m.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	starts(t, m, spec.ID, 1)
	c, _ := d.Client.LoadContainer(ctx, spec.ID)
	s, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := m.Status(ctx, spec.ID)
	label, _ := os.ReadFile(fmt.Sprintf("/proc/%d/attr/current", st.Pid))
	if hostapparmor.HostSupports() {
		t.Logf("this kernel has AppArmor: the app runs under %q", strings.TrimSpace(string(label)))
		if s.Process.ApparmorProfile != AppArmorProfile || !strings.HasPrefix(string(label), AppArmorProfile) {
			t.Fatalf("spec profile %q, process label %q; want %s", s.Process.ApparmorProfile, label, AppArmorProfile)
		}
		return
	}
	t.Log("this kernel has no AppArmor: the profile is not asked for, and the app runs (the confined path is not exercised here)")
	if s.Process.ApparmorProfile != "" {
		t.Fatalf("a profile was asked of a kernel without AppArmor: %q", s.Process.ApparmorProfile)
	}
}
