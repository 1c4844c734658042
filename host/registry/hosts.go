package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// DefaultHostsDir is where containerd, ctr --hosts-dir and nerdctl look for
// per-registry host configuration (hosts.toml, CA and client certificates).
const DefaultHostsDir = "/etc/containerd/certs.d"

// hostsEntry is one registry's endpoints as last built, and what they were
// built from: the insecure flag and the state of the files in its host
// directories.
type hostsEntry struct {
	insecure bool
	dir      string
	stamp    string
	hosts    []docker.RegistryHost
}

// Hosts is the single place that decides how a registry is reached, for
// resolving (this package) and pulling (containerd's resolver in
// host/pull) alike: the endpoints to try in order (hosts.toml mirrors, then
// the registry itself), their TLS (the system roots plus the host
// directory's CA certificates, client certificates, skip_verify), and their
// scheme. A registry that is not listed as insecure is reached over HTTPS
// only, loopback and private addresses included, and an HTTPS failure is
// never retried over plain HTTP: containerd's own localhost fallback is
// turned off by always giving it a default scheme.
//
// Endpoints are built once per registry and kept (with their connections
// and the tokens their authorizer fetched) until the insecure list, the
// hosts directory or a file in the registry's host directories changes, so
// an edited hosts.toml takes effect at the next request without a restart.
func (c *Client) Hosts(host string) ([]docker.RegistryHost, error) {
	c.mu.Lock()
	insecure, dir := c.insecure[host], c.hostsDir
	e, ok := c.hosts[host]
	c.mu.Unlock()
	stamp := hostDirStamp(dir, host)
	if ok && e.insecure == insecure && e.dir == dir && e.stamp == stamp {
		return e.hosts, nil
	}
	scheme := "https"
	if insecure {
		scheme = "http"
	}
	opts := config.HostOptions{
		Credentials:   c.Credentials,
		DefaultScheme: scheme,
		UpdateClient: func(hc *http.Client) error {
			r := *c.retry
			r.inner = hc.Transport
			hc.Transport = &r
			return nil
		},
	}
	if dir != "" {
		opts.HostDir = config.HostDirFromRoot(dir)
	}
	hosts, err := config.ConfigureHosts(context.Background(), opts)(host)
	if err != nil {
		return nil, fmt.Errorf("registry host configuration for %s (in %s): %w", host, dir, err)
	}
	c.mu.Lock()
	c.hosts[host] = hostsEntry{insecure: insecure, dir: dir, stamp: stamp, hosts: hosts}
	c.mu.Unlock()
	return hosts, nil
}

// hostDirStamp summarises the files containerd's layout would read for host
// under dir (its "host_port_" and "host" directories and "_default"): names,
// sizes and modification times. A few stat calls per request.
func hostDirStamp(dir, host string) string {
	if dir == "" {
		return ""
	}
	var b strings.Builder
	candidates := []string{host, "_default"}
	if i := strings.LastIndex(host, ":"); i > 0 {
		candidates = append([]string{host[:i] + "_" + host[i+1:] + "_"}, candidates...)
	}
	for _, c := range candidates {
		entries, err := os.ReadDir(filepath.Join(dir, c))
		if err != nil {
			continue
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				continue
			}
			fmt.Fprintf(&b, "%s/%s %d %d;", c, e.Name(), info.Size(), info.ModTime().UnixNano())
		}
	}
	return b.String()
}

// Quiet returns ctx with containerd's logger silenced: its registry client
// logs every mirror fallback and retry at info level to stderr, while every
// failure that matters comes back to pullwise as an error, which the agent
// logs once with its context. One silent logger per client, made in New:
// this is on every check's path.
func (c *Client) Quiet(ctx context.Context) context.Context {
	return log.WithLogger(ctx, c.silent)
}

func silentLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
