package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/network"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

// TestRegistryTrustFollowsTheConfiguration: an app on a plain-HTTP registry
// that is not listed as insecure fails with the fix in its hint, and the
// registry receives nothing (no request, so no credentials); listing it
// makes the app run, without restarting the agent.
func TestRegistryTrustFollowsTheConfiguration(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	e.writeConfig("apps:\n" + e.web())
	e.proxy.Reset()
	e.startAgent()
	st := e.status("web refused", func(st agent.Status) bool {
		s, _ := appState(st, "web")
		return s == "ERROR"
	})
	for _, a := range st.Info.Apps {
		if !strings.Contains(a.LastError, "plain HTTP") || !strings.Contains(a.Hint, "insecureRegistries") {
			t.Fatalf("web: error %q, hint %q: want the plain-HTTP refusal and its fix", a.LastError, a.Hint)
		}
	}
	if got := e.proxy.Requests(); len(got) != 0 {
		t.Fatalf("the unlisted plain-HTTP registry received %q", got)
	}
	e.configure(e.web())
	e.waitRunning(1)
}

// TestAppContainersAreHardened reads each app's runtime spec back from
// containerd and checks what the configuration asked for and what every app
// gets (seccomp, no new privileges), and that an app on the bridge cannot
// reach a service on the host's loopback while a host-network app can.
func TestAppContainersAreHardened(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	probe := "127.0.0.1:" + e.registry[strings.LastIndex(e.registry, ":")+1:]
	limited := app("0a7c3b1e-0000-4000-8000-0000000000d1", "limited", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", "") +
		fmt.Sprintf("    env: [PROBE=%s, \"LISTEN=:8080\"]\n    ports: [\"18080:8080\"]\n    limits: {memory: 64Mi, cpus: 0.5, pids: 64}\n    readOnlyRootfs: true\n    user: \"1000:1000\"\n", probe)
	hostNet := app("0a7c3b1e-0000-4000-8000-0000000000d2", "hostnet", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", "") +
		fmt.Sprintf("    env: [PROBE=%s]\n    network: host\n", probe)
	isolated := app("0a7c3b1e-0000-4000-8000-0000000000d3", "isolated", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", "") +
		"    network: none\n"
	e.configure(limited, hostNet, isolated)
	e.startAgent()
	e.waitRunning(3)

	ctx := e.d.Context()
	spec := func(id string) *specs.Spec {
		c, err := e.d.Client.LoadContainer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Spec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	netns := func(s *specs.Spec) (string, bool) {
		for _, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				return ns.Path, true
			}
		}
		return "", false
	}
	for _, id := range []string{"0a7c3b1e-0000-4000-8000-0000000000d1", "0a7c3b1e-0000-4000-8000-0000000000d2", "0a7c3b1e-0000-4000-8000-0000000000d3"} {
		s := spec(id)
		if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno || !s.Process.NoNewPrivileges {
			t.Errorf("%s: seccomp %v, noNewPrivileges %v: want containerd's default profile and no new privileges", id, s.Linux.Seccomp != nil, s.Process.NoNewPrivileges)
		}
	}
	s := spec("0a7c3b1e-0000-4000-8000-0000000000d1")
	r := s.Linux.Resources
	if r.Memory == nil || *r.Memory.Limit != 64<<20 || r.CPU == nil || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 ||
		r.Pids == nil || r.Pids.Limit == nil || *r.Pids.Limit != 64 || !s.Root.Readonly || s.Process.User.UID != 1000 || s.Process.User.GID != 1000 {
		t.Errorf("limited: resources %+v, readonly root %v, user %+v", r, s.Root.Readonly, s.Process.User)
	}
	if p, ok := netns(s); !ok || !strings.HasPrefix(p, network.DefaultNetNSDir+"/") {
		t.Errorf("limited: network namespace %q: want one of its own, pinned", p)
	}
	if _, ok := netns(spec("0a7c3b1e-0000-4000-8000-0000000000d2")); ok {
		t.Error("hostnet: has a network namespace of its own; network: host shares the host's")
	}
	if p, ok := netns(spec("0a7c3b1e-0000-4000-8000-0000000000d3")); !ok || p == "" {
		t.Error("isolated: no network namespace of its own")
	}

	// From inside: the bridge app cannot reach the registry on the host's
	// loopback; the host-network app can.
	probed := func(id string) string {
		path := filepath.Join(e.state, "volumes", id, "drive1", "probe.log")
		deadline := time.Now().Add(30 * time.Second)
		for {
			if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
				return string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s wrote no probe result", id)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got := probed("0a7c3b1e-0000-4000-8000-0000000000d1"); !strings.Contains(got, "unreachable") {
		t.Errorf("bridge app reaching the host's loopback: %q", got)
	}
	if got := probed("0a7c3b1e-0000-4000-8000-0000000000d2"); !strings.Contains(got, "reached") {
		t.Errorf("host-network app reaching the host's loopback: %q", got)
	}
	// The published port reaches the bridge app's listener.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:18080", time.Second)
		if err == nil {
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			c.Close()
			if strings.Contains(string(buf[:n]), "testapp") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("published port 18080: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Modes: the state directory and what is in it are the agent's alone.
	for path, want := range map[string]os.FileMode{
		e.state:                                 0o700,
		filepath.Join(e.state, "pullwise.sock"): 0o600,
		filepath.Join(e.state, "logs", "0a7c3b1e-0000-4000-8000-0000000000d3.log"):          0o600,
		filepath.Join(e.state, "volumes", "0a7c3b1e-0000-4000-8000-0000000000d3", "drive1"): 0o700,
	} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %#o", path, fi.Mode().Perm(), err, want)
		}
	}
}

// TestHostileConfigurationStrings: a display name with control characters,
// a mount path that climbs out and an id that is not a UUID are refused,
// named by field; the other apps run.
func TestHostileConfigurationStrings(t *testing.T) {
	e := newE2E(t)
	regtest.PushImage(t, e.registry+"/demo/web:latest", regtest.AppImage(t, "v1", false))
	spoof := app("0a7c3b1e-0000-4000-8000-0000000000e1", "\"evil\\x1b[2K\\nweb RUNNING\"", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", "")
	climb := strings.Replace(app("0a7c3b1e-0000-4000-8000-0000000000e2", "climb", "6f1e0c1e-0000-4000-8000-00000000e2e1", e.registry+"/demo/web:latest", ""),
		"mountPath: /data", "mountPath: /../../etc", 1)
	notUUID := app("db", "db", "6f1e0c1e-0000-4000-8000-0000000000db", e.registry+"/demo/web:latest", "")
	e.configure(e.web(), spoof, climb, notUUID)
	out, err := e.cli("config", "validate", e.config)
	if err == nil || !strings.Contains(out, "apps[1].displayName") || !strings.Contains(out, "control characters") ||
		!strings.Contains(out, "apps[2].drives[1].mountPath") || !strings.Contains(out, `apps[3].uuid: "db" is not a UUID`) ||
		strings.Contains(out, "\x1b") {
		t.Fatalf("config validate: %v\n%s", err, out)
	}
	e.startAgent()
	e.waitRunning(1)
	st := e.status("db refused", func(st agent.Status) bool { return strings.Contains(st.Agent.ConfigError, "is not a UUID") })
	if s, _ := appState(st, "db"); s == "RUNNING" {
		t.Fatal("an app with uuid db runs")
	}
	out, _ = e.cli("status")
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "\x1b") || strings.HasPrefix(line, "web RUNNING") {
			t.Fatalf("status printed the raw name (a forged row):\n%s", out)
		}
	}
}
