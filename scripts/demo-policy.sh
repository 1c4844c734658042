#!/usr/bin/env bash
# The policy side of pullwise on its own (make demo-policy): the built-in policies, one decision round of the default
# `always` policy for a moving tag, a vendor policy built from source and
# tested in isolation, and the sandbox refusing a broken module.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
pw=./bin/pullwise
[ -x "$pw" ] || go build -o "$pw" ./cmd/pullwise
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Built-in policies (embedded in the binary)"
$pw policy list

step "The default policy, inspected without running it"
$pw policy inspect always

step "App create, image not on disk: always pulls"
cat > "$work/absent.yaml" <<'YAML'
event: create
image: {ref: "registry.local/demo/app:latest", tag: latest}
app: {uuid: 9b2f6c1e-0000-4000-8000-00000000d001, name: demo}
YAML
$pw policy run always --input "$work/absent.yaml"

step "App create, image on disk: always asks for one manifest check first"
cat > "$work/present.yaml" <<'YAML'
event: create
image: {ref: "registry.local/demo/app:latest", tag: latest, localDigest: "sha256:1111111111111111111111111111111111111111111111111111111111111111"}
app: {uuid: 9b2f6c1e-0000-4000-8000-00000000d001, name: demo}
YAML
$pw policy run always --input "$work/present.yaml"

step "The host checked: the tag moved, so always pulls and restarts the app"
cat > "$work/moved.yaml" <<'YAML'
event: refresh
image: {ref: "registry.local/demo/app:latest", tag: latest,
        localDigest: "sha256:1111111111111111111111111111111111111111111111111111111111111111",
        remoteDigest: "sha256:2222222222222222222222222222222222222222222222222222222222222222"}
app: {uuid: 9b2f6c1e-0000-4000-8000-00000000d001, name: demo, counters: {refreshImage: 1}}
YAML
$pw policy run always --input "$work/moved.yaml"

step "The same moment under use-existing: no registry contact"
$pw policy run use-existing --input "$work/present.yaml"

step "A vendor policy built from Go source with the standard toolchain"
$pw policy build examples/policies/maintenance-window -o "$work/maintenance-window.wasm"
$pw policy inspect "$work/maintenance-window.wasm"

step "...and tested in isolation, through the same sandbox the agent uses"
$pw policy test "$work/maintenance-window.wasm" --cases examples/policies/maintenance-window/testdata/cases.yaml

step "A broken module is refused with a clear error (and nothing else is affected)"
head -c 4096 "$work/maintenance-window.wasm" > "$work/broken.wasm"
if $pw policy inspect "$work/broken.wasm"; then echo "demo: a truncated module was accepted" >&2; exit 1; fi

step "Done."
