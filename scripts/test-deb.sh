#!/usr/bin/env bash
# Installs a built pullwise package on this machine (as root), checks what
# it installed, and purges it. CI runs it after make test (make test-deb).
set -euo pipefail
deb=${1:?usage: test-deb.sh PACKAGE.deb}
if dpkg -s pullwise >/dev/null 2>&1; then
  echo "test-deb: a pullwise package is already installed here; not touching it" >&2
  exit 1
fi
if [ -e /etc/pullwise ] || [ -e /var/lib/pullwise ]; then
  echo "test-deb: /etc/pullwise or /var/lib/pullwise exists (a make install?); the purge would remove it, so not running here" >&2
  exit 1
fi
trap 'dpkg --purge pullwise >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb"
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }
/usr/bin/pullwise version
/usr/bin/pullwise config validate /etc/pullwise/config.yaml
[ "$(stat -c %a /var/lib/pullwise)" = 700 ] || fail "/var/lib/pullwise is not 0700"
[ "$(stat -c %a /etc/pullwise/config.yaml)" = 600 ] || fail "/etc/pullwise/config.yaml is not 0600"
grep -q '^ExecStart=/usr/bin/pullwise agent' /lib/systemd/system/pullwise.service || fail "the unit does not run /usr/bin/pullwise"
[ -s /usr/share/bash-completion/completions/pullwise ] || fail "no bash completion"
[ -s /usr/share/zsh/vendor-completions/_pullwise ] || fail "no zsh completion"
[ -s /usr/share/fish/vendor_completions.d/pullwise.fish ] || fail "no fish completion"
[ -s /usr/share/man/man1/pullwise-refresh.1.gz ] || fail "no man page for refresh"
# The installed example validates against the schema at the path it names.
ex=/usr/share/doc/pullwise/examples/config/device.yaml
schema=$(sed -n 's/^# yaml-language-server: \$schema=//p' "$ex")
[ -s "$(dirname "$ex")/$schema" ] || fail "the example names $schema, which is not installed"
dpkg-query -W -f='${Conffiles}\n' pullwise | grep -q /etc/pullwise/config.yaml || fail "the configuration is not a conffile"
# Removal keeps the configuration and the state; purge removes them.
echo "# edited" >> /etc/pullwise/config.yaml
dpkg -r pullwise
[ -f /etc/pullwise/config.yaml ] && [ -d /var/lib/pullwise ] || fail "removal did not keep the configuration and the state"
[ ! -e /usr/bin/pullwise ] || fail "removal left the binary"
dpkg --purge pullwise
[ ! -e /etc/pullwise ] && [ ! -e /var/lib/pullwise ] || fail "purge left /etc/pullwise or /var/lib/pullwise"
trap - EXIT
echo "test-deb: the package installs, validates its configuration, removes and purges"
