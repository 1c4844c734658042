#!/usr/bin/env bash
# make demo: pullwise end to end on this machine, as root.
#
# Installs containerd, runc and docker-registry if missing; starts private
# instances of containerd (temporary socket) and of the registry (a loopback
# port); pushes a demo image; starts the agent with the built-in default
# policy; shows the app running and its resolved digest; moves the tag;
# runs `pullwise refresh`; shows the new digest and exactly one restart; then
# cleans up everything it started. Nothing touches a system containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" != 0 ]; then echo "make demo needs root (containerd and runc do)" >&2; exit 1; fi
./scripts/setup.sh >/dev/null
go build -o bin/pullwise ./cmd/pullwise
go build -o bin/demoimage ./internal/cmd/demoimage
pw="$PWD/bin/pullwise"

work=$(mktemp -d /tmp/pullwise-demo.XXXXXX)
ns=pullwise-demo
pids=()
cleanup() {
  set +e
  if [ -n "${agent_pid:-}" ] && kill -0 "$agent_pid" 2>/dev/null; then
    # The agent removes the app itself: its container, and its network
    # namespace, address and NAT rules on the host.
    printf 'device:\n  insecureRegistries: ["%s"]\napps: []\n' "${reg:-}" > "$work/config.yaml"
    for _ in $(seq 1 100); do
      "$pw" status --state "$work/state" -o json 2>/dev/null | grep -q '"uuid"' || break
      sleep 0.2
    done
    kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  fi
  if [ -S "$work/ctrd/c.sock" ]; then
    for c in $(ctr -a "$work/ctrd/c.sock" -n $ns containers ls -q 2>/dev/null); do
      ctr -a "$work/ctrd/c.sock" -n $ns task kill -s SIGKILL "$c" >/dev/null 2>&1
      sleep 0.3
      ctr -a "$work/ctrd/c.sock" -n $ns task rm -f "$c" >/dev/null 2>&1
      ctr -a "$work/ctrd/c.sock" -n $ns containers rm "$c" >/dev/null 2>&1
    done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  grep -o " $work[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"
  echo "demo: cleaned up"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() { # wait_for DESCRIPTION COMMAND...
  local what=$1; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "demo: timed out waiting for $what" >&2; [ -f "$work/agent.log" ] && tail -30 "$work/agent.log" >&2; return 1
}

step "Starting a private containerd and a registry on loopback"
mkdir -p "$work/ctrd"
cat > "$work/ctrd/config.toml" <<TOML
version = 2
root = "$work/ctrd/root"
state = "$work/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/ctrd/c.sock"
[ttrpc]
  address = "$work/ctrd/c.sock.ttrpc"
[debug]
  address = "$work/ctrd/debug.sock"
TOML
containerd --config "$work/ctrd/config.toml" >"$work/containerd.log" 2>&1 &
pids+=($!)
port=$(shuf -i 20000-60000 -n 1)
reg="127.0.0.1:$port"
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry/data}}
http: {addr: $reg}
YAML
docker-registry serve "$work/registry/config.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
wait_for containerd test -S "$work/ctrd/c.sock"
wait_for "the registry" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
echo "containerd: $work/ctrd/c.sock    registry: http://$reg"

step "Pushing the demo image, version v1, as $reg/demo/app:latest"
./bin/demoimage --ref "$reg/demo/app:latest" --version v1

step "The configuration the agent runs (the built-in default policy: always)"
cat > "$work/config.yaml" <<YAML
device:
  insecureRegistries: ["$reg"]
apps:
  - uuid: 9b2f6c1e-0000-4000-8000-00000000d001
    displayName: demo
    drives:
      - kind: container
        image: {uuid: 6f1e0c1e-0000-4000-8000-00000000d001, name: "$reg/demo/app:latest"}
      - kind: volume
        mountPath: /data
YAML
cat "$work/config.yaml"

step "Starting the agent"
echo "$pw agent --config $work/config.yaml --state $work/state --containerd $work/ctrd/c.sock --namespace $ns"
"$pw" agent --config "$work/config.yaml" --state "$work/state" --containerd "$work/ctrd/c.sock" --namespace $ns >"$work/agent.log" 2>&1 &
agent_pid=$!
running() { "$pw" status --state "$work/state" -o json | grep -q '"state": "RUNNING"'; }
wait_for "the app to run" running

step "The app runs on the image the tag resolved to"
"$pw" status --state "$work/state"
first=$("$pw" status --state "$work/state" -o json | sed -n 's/.*"sha256": "\(sha256:[0-9a-f]*\)".*/\1/p' | head -1)
echo "resolved sha256: $first"
echo "what the app recorded in its volume:"; cat "$work/state/volumes/9b2f6c1e-0000-4000-8000-00000000d001/drive1/starts.log"

step "Moving the tag: v2 is pushed as $reg/demo/app:latest (the device does not notice by itself)"
./bin/demoimage --ref "$reg/demo/app:latest" --version v2
"$pw" refresh demo --dry-run --state "$work/state"

step "pullwise refresh demo (increases the refreshImage counter, as a controller would)"
"$pw" refresh demo --state "$work/state"

step "The new digest, and exactly one restart"
"$pw" status --state "$work/state"
second=$("$pw" status --state "$work/state" -o json | sed -n 's/.*"sha256": "\(sha256:[0-9a-f]*\)".*/\1/p' | head -1)
restarts=$("$pw" status --state "$work/state" -o json | sed -n 's/.*"restarts": \([0-9]*\).*/\1/p' | head -1)
echo "resolved sha256: $first -> $second; restarts: $restarts"
echo "what the app recorded in its volume (kept across the image change):"
cat "$work/state/volumes/9b2f6c1e-0000-4000-8000-00000000d001/drive1/starts.log"
if [ "$first" = "$second" ] || [ "$restarts" != 1 ]; then echo "demo: FAILED: expected a new digest and one restart" >&2; exit 1; fi

step "A refresh with nothing new: one manifest request, no restart"
"$pw" refresh demo --state "$work/state"

step "What the app printed (pullwise logs; capped and rotated by the agent)"
"$pw" logs demo --tail 4 --state "$work/state"

step "What happened, as events (pullwise events; -o json for scripts, device.notify for webhooks and MQTT)"
"$pw" events demo --state "$work/state"
if ! "$pw" events demo -o json --state "$work/state" | grep -q '"kind":"image.changed"'; then echo "demo: FAILED: no image.changed event" >&2; exit 1; fi

step "One app's report as YAML (-o json and -o yaml on every command that prints)"
"$pw" status demo -o yaml --state "$work/state" | sed -n '1,12p'

step "Demo done; cleaning up"
