#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# systemd-analyze verify of the installed units: no warning, no error, and
# ExecStart= names an executable that the install put there. No service
# manager needs to run: the units are checked in a scratch root (--root) that
# holds this tree's install and a copy of the host's own units (the targets
# the units are ordered against, sysinit.target and the others).
# usage: verify_units.sh CMAKE BUILD_DIR
set -euo pipefail
cmake=$1 build=$2
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

DESTDIR=$root "$cmake" --install "$build" >/dev/null
host_units=$(pkg-config --variable=systemdsystemunitdir systemd)
mkdir -p "$root$host_units"
cp -a "$host_units/." "$root$host_units/"

service=$(cd "$root" && find . -path ./"${host_units#/}" -prune -o -name liveupdated.service -print)
socket=$(cd "$root" && find . -path ./"${host_units#/}" -prune -o -name liveupdated.socket -print)
[ -n "$service" ] && [ -n "$socket" ] || { echo "units not installed" >&2; exit 1; }
service=${service#.} socket=${socket#.}

status=0
out=$(systemd-analyze verify --root="$root" --man=no "$service" "$socket" 2>&1) || status=$?
if [ $status -ne 0 ] || [ -n "$out" ]; then
  echo "systemd-analyze verify $service $socket: exit $status" >&2
  echo "$out" >&2
  exit 1
fi
# The service runs what the install put in place.
exec_start=$(sed -n 's/^ExecStart=//p' "$root$service")
[ -x "$root$exec_start" ] || { echo "ExecStart=$exec_start is not installed" >&2; exit 1; }
# A reload is an upgrade, run by the liveupdatectl the install put in place.
exec_reload=$(sed -n 's/^ExecReload=//p' "$root$service")
[ "${exec_reload##* }" = upgrade ] || { echo "ExecReload=$exec_reload is not an upgrade" >&2; exit 1; }
[ -x "$root${exec_reload%% *}" ] || { echo "ExecReload=$exec_reload is not installed" >&2; exit 1; }
echo "ok: $service and $socket verify cleanly; ExecStart=$exec_start; ExecReload=$exec_reload"
