#!/usr/bin/env bash
# Installs what building and testing pullwise needs on a Debian machine, as
# root. Idempotent: does nothing that is already done.
#
#   Go 1.26     the toolchain (at /usr/local/go on the project's machines)
#   make, git   the build
#   containerd, runc, docker-registry
#               the integration tests start private instances of these on
#               temporary sockets and loopback ports; no system service is
#               used or needed
#   containernetworking-plugins, iptables
#               app containers get a network namespace of their own on a
#               CNI bridge (bridge, host-local, portmap, loopback plugins)
#   strace      make bench counts the agent's fsyncs with it
#   wabt        wat2wasm builds the hostile and non-Go test modules (WAT)
#   dbus-daemon the link tests run a private bus with a stand-in
#               NetworkManager on it
#   mosquitto   the notification tests start a private MQTT broker on a
#               loopback port (the package's own service is not used)
#   prometheus  the metrics tests have a private Prometheus scrape the
#               agent's endpoint, and promtool check its output
#   Adam        the EVE controller the device-mode tests drive the agent
#               from: v0.1.3, built once from a pinned module into
#               /usr/local/lib/pullwise-test (not installed on PATH)
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

need=()
command -v make >/dev/null || need+=(make)
command -v git >/dev/null || need+=(git)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v docker-registry >/dev/null || need+=(docker-registry)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v strace >/dev/null || need+=(strace)
command -v wat2wasm >/dev/null || need+=(wabt)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v promtool >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null; then
  echo "setup: no Go toolchain found; install Go 1.26 at /usr/local/go" >&2
  exit 1
fi
go version
containerd --version
runc --version | head -1
go mod download
# Adam v0.1.3: `go install ...@v0.1.3` asks for the version list, which is
# not served; a throwaway module that requires the exact version builds it.
adam=/usr/local/lib/pullwise-test/adam-v0.1.3
if [ ! -x "$adam" ]; then
  echo "setup: building Adam v0.1.3 (the EVE controller the device-mode tests use)"
  tmp=$(mktemp -d)
  printf 'module adambuild\n\ngo 1.26\n\nrequire github.com/lf-edge/adam v0.1.3\n' > "$tmp/go.mod"
  (cd "$tmp" && GOFLAGS=-mod=mod go mod download github.com/lf-edge/adam@v0.1.3 && GOFLAGS=-mod=mod go build -o adam github.com/lf-edge/adam)
  install -D -m 0755 "$tmp/adam" "$adam"
  rm -rf "$tmp"
fi
