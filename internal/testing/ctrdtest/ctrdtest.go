// Package ctrdtest starts a private containerd daemon for a test: its own
// root, state and socket under the test's temporary directory, nothing shared
// with a system containerd. Under CI (CI=true) a missing containerd fails
// the test loudly; elsewhere it skips with the command that installs it.
package ctrdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/pullwise/pullwise/host/network"
	"github.com/pullwise/pullwise/internal/testing/testbin"
)

// Daemon is a running private containerd.
type Daemon struct {
	Socket string
	Dir    string
	// Namespace is unique to the daemon: runc keeps container state under a
	// machine-wide root per namespace, and shims outlive their daemon, so
	// test daemons running side by side must not share one.
	Namespace string
	Client    *containerd.Client

	cfgPath string
	logf    *os.File
	cmd     *exec.Cmd
	stopped bool // by Stop, until Start
}

// Context is a background context in the daemon's namespace.
func (d *Daemon) Context() context.Context {
	return namespaces.WithNamespace(context.Background(), d.Namespace)
}

// Need fails (under CI) or skips the test when binaries are missing.
func Need(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		testbin.Need(t, b, "apt-get install "+b)
	}
	if os.Geteuid() != 0 {
		msg := "containerd tests need root"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// Start runs a private containerd until the test ends.
func Start(t testing.TB) *Daemon { return StartWithRoot(t, 0) }

// StartWithRoot is Start with containerd's root (its content store and
// snapshots) on a tmpfs of rootBytes, so a test can fill the disk. 0 means
// no limit.
func StartWithRoot(t testing.TB, rootBytes int64) *Daemon {
	t.Helper()
	Need(t, "containerd", "runc")
	// Unix socket paths are limited to 108 bytes: keep the directory short.
	dir, err := os.MkdirTemp("", "pwctrd-")
	if err != nil {
		t.Fatal(err)
	}
	// Searchable by all, as /run/containerd is: a container in a user
	// namespace reaches its root filesystem under the state directory as
	// an unprivileged host user.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	if rootBytes > 0 {
		root := filepath.Join(dir, "root")
		os.MkdirAll(root, 0o700)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", rootBytes), "tmpfs", root).CombinedOutput(); err != nil {
			t.Fatalf("mounting a %d byte tmpfs for containerd: %v\n%s", rootBytes, err, out)
		}
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "debug.sock"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Socket: sock, Dir: dir, Namespace: "pullwise-test-" + filepath.Base(dir)[len("pwctrd-"):], cfgPath: cfgPath, logf: logf}
	if err := d.startProcess(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.stopped {
			// Stopped by the test and not started again (it failed): the
			// shims it left are stopped through a containerd again.
			if d.startProcess() == nil {
				d.waitReady(t)
			}
		}
		if d.Client != nil {
			d.removeAll()
			d.Client.Close()
		}
		d.stopProcess()
		logf.Close()
		// Snapshots may leave mounts behind if a test failed mid-way.
		exec.Command("sh", "-c", "grep -o ' "+dir+"[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l").Run()
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("containerd state kept for inspection in %s", dir)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd did not start:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := containerd.New(sock, containerd.WithDefaultNamespace(d.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	d.Client = c
	d.waitReady(t)
	return d
}

// waitReady waits until containerd answers on its socket. The socket
// exists before containerd serves on it: ask until it answers (a test once
// failed with "connection refused" here).
func (d *Daemon) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.Client.Version(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(d.logf.Name())
			t.Fatalf("containerd at %s does not answer: %v\n%s", d.Socket, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart stops containerd (SIGTERM; its shims and containers keep
// running, as on a device whose containerd is restarted) and starts it
// again on the same root, state and socket.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	d.stopProcess()
	if err := d.startProcess(); err != nil {
		t.Fatal(err)
	}
	d.waitReady(t)
}

// Stop stops containerd (SIGTERM; shims and containers keep running) and
// leaves it stopped until Start: a device whose containerd is down.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	d.stopProcess()
	d.stopped = true
}

// Start starts a containerd that Stop stopped, on the same root, state and
// socket.
func (d *Daemon) Start(t testing.TB) {
	t.Helper()
	if err := d.startProcess(); err != nil {
		t.Fatal(err)
	}
	d.stopped = false
	d.waitReady(t)
}

func (d *Daemon) startProcess() error {
	cmd := exec.Command("containerd", "--config", d.cfgPath)
	cmd.Stdout, cmd.Stderr = d.logf, d.logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd = cmd
	return nil
}

func (d *Daemon) stopProcess() {
	cmd := d.cmd
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// removeAll kills every task and deletes every container of the namespace:
// shims outlive containerd, so what a test started must be stopped here.
func (d *Daemon) removeAll() {
	ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
	defer cancel()
	cs, err := d.Client.Containers(ctx)
	if err != nil {
		return
	}
	// App network namespaces are pinned outside the test's directories and
	// their addresses, NAT and port rules are the host's: release them.
	cni, _ := network.New(nil)
	for _, c := range cs {
		labels, _ := c.Labels(ctx)
		if t, err := c.Task(ctx, nil); err == nil {
			t.Kill(ctx, syscall.SIGKILL)
			if ch, err := t.Wait(ctx); err == nil {
				select {
				case <-ch:
				case <-time.After(5 * time.Second):
				}
			}
			t.Delete(ctx, containerd.WithProcessKill)
		}
		cni.Release(ctx, c.ID(), labels)
		c.Delete(ctx, containerd.WithSnapshotCleanup)
	}
}
