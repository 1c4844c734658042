package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// One agent per state directory and per containerd namespace. Two agents
// on one namespace (a second started with the wrong --state, say) each
// take the other's containers for their own: the second adopts and
// restarts them, the first sees them exit, and their network rules end up
// pointing at the wrong addresses. So an agent holds a lock in its state
// directory for as long as it runs, and marks the namespace with that
// directory; a second agent refuses to start, naming the first.

// LockName is the agent's lock file in its state directory; it holds the
// agent's pid.
const LockName = "agent.lock"

// LabelOwner is the containerd namespace label naming the state directory
// of the agent that runs the namespace's apps.
const LabelOwner = "pullwise.agent/state"

// claim is an agent's hold on its state directory and namespace.
type claim struct {
	lock *os.File
}

// release ends the hold (the namespace's label stays: it names a state
// directory whose lock is free, which the next agent may take over).
func (c *claim) release() {
	if c != nil && c.lock != nil {
		c.lock.Close() // closing drops the flock
	}
}

// claimState locks the state directory's agent.lock and writes our pid in
// it. Another agent holding it is named in the error.
func claimState(dir string) (*claim, error) {
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking the state directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another pullwise agent%s runs on the state directory %s: stop it first (systemctl stop pullwise), or give this one another --state",
			holder(path), dir)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &claim{lock: f}, nil
}

// holder is " (pid N)" from a lock file, or "" when it cannot be read.
func holder(lockPath string) string {
	b, err := os.ReadFile(lockPath)
	if pid := strings.TrimSpace(string(b)); err == nil && pid != "" {
		return " (pid " + pid + ")"
	}
	return ""
}

// held reports whether an agent holds the lock of the state directory dir.
func held(dir string) bool {
	f, err := os.Open(filepath.Join(dir, LockName))
	if err != nil {
		return false // no lock file: no agent has run there, or it is gone
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// claimNamespace marks the namespace as run by the agent on stateDir,
// unless a running agent on another state directory has it.
func claimNamespace(ctx context.Context, client *containerd.Client, ns, stateDir string) error {
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	svc := client.NamespaceService()
	labels, err := svc.Labels(ctx, ns)
	if errdefs.IsNotFound(err) {
		err = svc.Create(ctx, ns, map[string]string{LabelOwner: dir})
		if err == nil {
			return nil
		}
		if !errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("creating containerd namespace %s: %w", ns, err)
		}
		labels, err = svc.Labels(ctx, ns) // another agent created it meanwhile
	}
	if err != nil {
		return fmt.Errorf("reading containerd namespace %s: %w", ns, err)
	}
	if other := labels[LabelOwner]; other != "" && other != dir && held(other) {
		return fmt.Errorf("the containerd namespace %s is run by the pullwise agent%s on the state directory %s: stop that agent first, or give this one another --namespace (two agents on one namespace take each other's apps)",
			ns, holder(filepath.Join(other, LockName)), other)
	}
	if err := svc.SetLabel(ctx, ns, LabelOwner, dir); err != nil {
		return fmt.Errorf("claiming containerd namespace %s: %w", ns, err)
	}
	return nil
}
