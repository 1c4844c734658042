#!/usr/bin/env bash
# Installs what building and testing pullwise needs on a Debian machine.
# Idempotent: does nothing that is already done.
#
# Today the tests need the Go toolchain (1.26, at /usr/local/go on the
# project's machines) and make; Go modules come from the module proxy.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

need_apt=()
command -v make >/dev/null || need_apt+=(make)
command -v git >/dev/null || need_apt+=(git)
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v go >/dev/null; then
  echo "setup: no Go toolchain found; install Go 1.26 (https://go.dev/dl) at /usr/local/go" >&2
  exit 1
fi
go version
go mod download
