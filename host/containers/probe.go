package containers

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/network"
)

// Probe runs one health probe of the app: a command in its container
// (exec: exit 0 is healthy), or a TCP connection or HTTP GET to the app's
// port on its own loopback, from inside its network namespace (so it
// needs no address and works whatever the network mode). nil is healthy.
func (m *Manager) Probe(ctx context.Context, id string, p config.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	if len(p.Exec) > 0 {
		return m.probeExec(ctx, id, p.Exec)
	}
	port := p.TCPPort
	if p.HTTPPort != 0 {
		port = p.HTTPPort
	}
	conn, err := m.dialApp(ctx, id, port)
	if err != nil {
		return err
	}
	defer conn.Close()
	if p.HTTPPort == 0 {
		return nil
	}
	// The request is written by hand on the connection made in the app's
	// namespace: an http.Client would dial from another thread, in the
	// agent's namespace.
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	req, _ := http.NewRequest(http.MethodGet, "http://localhost"+p.HTTPPath, nil)
	req.Header.Set("User-Agent", "pullwise-healthcheck")
	req.Close = true
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http probe: GET %s answered %s", p.HTTPPath, resp.Status)
	}
	return nil
}

// dialApp connects to 127.0.0.1:port in the app's network namespace (the
// host's for network host).
func (m *Manager) dialApp(ctx context.Context, id string, port int) (net.Conn, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var d net.Dialer
	c, err := m.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", id, err)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", id, err)
	}
	path := labels[network.LabelNetNS]
	if path == "" {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("tcp probe: %w", err)
		}
		return conn, nil
	}
	var conn net.Conn
	err = ns.WithNetNSPath(path, func(ns.NetNS) error {
		// The socket is made on this (locked) thread, in the app's
		// namespace, and stays there.
		var derr error
		conn, derr = d.DialContext(ctx, "tcp", addr)
		return derr
	})
	if err != nil {
		return nil, fmt.Errorf("tcp probe of port %d in the app's network: %w", port, err)
	}
	return conn, nil
}

// probeExec runs args in the app's container, as its process runs.
func (m *Manager) probeExec(ctx context.Context, id string, args []string) error {
	c, err := m.client.LoadContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("app %s: %w", id, err)
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return fmt.Errorf("app %s: %w", id, err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return fmt.Errorf("app %s: %w", id, err)
	}
	proc := *spec.Process
	proc.Args, proc.Terminal = args, false
	b := make([]byte, 6)
	rand.Read(b)
	p, err := t.Exec(ctx, "health-"+hex.EncodeToString(b), &proc, cio.NullIO)
	if err != nil {
		return fmt.Errorf("exec probe: %w", err)
	}
	defer p.Delete(context.WithoutCancel(ctx))
	exit, err := p.Wait(ctx)
	if err != nil {
		return fmt.Errorf("exec probe: %w", err)
	}
	if err := p.Start(ctx); err != nil {
		return fmt.Errorf("exec probe %q: %w", args[0], err)
	}
	select {
	case st := <-exit:
		if code := st.ExitCode(); code != 0 {
			return fmt.Errorf("exec probe %q exited with code %d", args[0], code)
		}
		return nil
	case <-ctx.Done():
		p.Kill(context.WithoutCancel(ctx), 9)
		select {
		case <-exit:
		case <-time.After(5 * time.Second):
		}
		return fmt.Errorf("exec probe %q: no answer in time", args[0])
	}
}
