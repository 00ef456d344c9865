#!/usr/bin/env bash
# The main job: builds everything (release, fault injection compiled out),
# starts liveupdated in its default runtime directory, has an agent preserve a
# memfd of data and a listening socket, performs a live update into a new
# daemon instance while a client connects, and checks that everything arrived.
# Usage: scripts/demo.sh [MiB of data, default 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}

scripts/deps.sh
cmake -S . -B build/main -G Ninja -DCMAKE_BUILD_TYPE=Release -DLU_FAULT_INJECTION=OFF \
  -DLU_TESTS=OFF >/dev/null
cmake --build build/main -j "$(nproc)"
bin=build/main

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== starting liveupdated (default runtime directory)"
$bin/src/daemon/liveupdated & pids+=($!)
for _ in $(seq 100); do $bin/tools/liveupdatectl status >/dev/null 2>&1 && break; sleep 0.05; done
$bin/tools/liveupdatectl status

echo "== an agent preserves $mib MiB and a listening socket"
coproc AGENT { exec $bin/examples/memfd-demo preserve "$mib"; }
pids+=($AGENT_PID)
read -r port <&"${AGENT[0]}"
$bin/tools/liveupdatectl status

echo "== will the new binary accept this state? (dry run)"
$bin/tools/liveupdatectl reboot --dry-run

echo "== live update, with a client connecting while it runs"
(exec 3<>/dev/tcp/127.0.0.1/"$port"; cat <&3 | sed 's/^/   client got: /') & pids+=($!)
$bin/tools/liveupdatectl reboot
pids+=("$($bin/tools/liveupdatectl status --json | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')")
$bin/tools/liveupdatectl status

echo "== the next epoch's agent retrieves and checks everything"
$bin/examples/memfd-demo retrieve
sleep 0.2
echo "== done"
