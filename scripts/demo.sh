#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job: a memcached-protocol cache (examples/kvcache) holding a data
# set goes through a live update to its next version while clients use it,
# and none of them sees an error or a wrong value.
#
#   scripts/demo.sh [--data-mib N] [--duration S]
#
# It installs what it needs (Debian 12), builds everything in Release with
# fault injection compiled out (build/main), starts liveupdated in its
# default runtime directory (/run/liveupdate for root), starts kvcache v1,
# loads N MiB of values (default 1024: about N x 1024 items of ~1 KiB, each
# value derived from its key, so that any read can be verified), then runs,
# for S seconds (default 20), two clients at once:
#   - memcslap (libmemcached-tools), an unmodified load generator, in a loop;
#   - kvcheck (examples/kvcache/kvcheck.cpp), 4 persistent connections, gets
#     of the data set and gets/sets of its own keys, checking every value and
#     timing every request;
# and half-way hands kvcache off to its next version, inside the running
# daemon (docs/handoff.md): first a v2 that fails (--fail-next) after taking
# the session, which rolls back, v1 serving on; then a v2 started in advance
# (--takeover v1's pid: loaded, it asks v1 to hand off and waits), so that
# the time nobody serves is the hand-off itself; `version` must answer v2.
# Meanwhile another LUO client (memfd-demo hold) keeps a session of its own,
# which must come out of it undisturbed. Then it prints what the clients
# saw, and exits non-zero if any request failed or any value was wrong or
# lost.
set -euo pipefail
cd "$(dirname "$0")/.."

data_mib=1024
duration=20
value_size=1024
conns=4
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --data-mib) data_mib=${2:?}; shift 2 ;;
    --duration) duration=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    [0-9]*) data_mib=$1; shift ;;  # the former "scripts/demo.sh MiB"
    *) echo "demo.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done
[[ $data_mib =~ ^[0-9]+$ && $data_mib -ge 1 ]] || { echo "--data-mib: a number of MiB" >&2; exit 2; }
[[ $duration =~ ^[0-9]+$ && $duration -ge 4 ]] || { echo "--duration: 4 seconds at least" >&2; exit 2; }

scripts/deps.sh memcached libmemcached-tools
cmake -S . -B build/main -G Ninja -DCMAKE_BUILD_TYPE=Release -DLU_FAULT_INJECTION=OFF \
  -DLU_TESTS=OFF >/dev/null
cmake --build build/main -j "$(nproc)"
bin=build/main
ctl=$bin/tools/liveupdatectl
kvcheck=$bin/examples/kvcache/kvcheck
kvcache=$bin/examples/kvcache/kvcache
memfd_demo=$bin/examples/memfd-demo
unset LIVEUPDATE_RUNTIME_DIR  # the daemon's default runtime directory

items=$(( data_mib * 1048576 / value_size ))
# The arena: the items take ~1.25 x their values (64-byte headers, keys, size
# classes 1.25 apart), kvcheck's own keys little, memcslap ~10 MiB a second
# (each run stores new random keys): nothing is ever evicted.
memory=$(( data_mib * 13 / 10 + 64 + 12 * duration ))

work=$(mktemp -d /tmp/kvcache-demo.XXXXXX)
daemon_pids=() kv_pids=() client_pids=() slap_loop="" bystander=""
ok=0
cleanup() {
  trap - EXIT INT TERM
  local logs=0
  [ -n "$(ls -A "$work")" ] && logs=1
  touch "$work/stop"
  # The clients, then the caches, then the daemon (its current instance
  # too: a live update replaces its pid).
  [ -n "$slap_loop" ] && { pkill -TERM -P "$slap_loop" 2>/dev/null || true; kill "$slap_loop" 2>/dev/null || true; }
  for p in "${client_pids[@]}" "${kv_pids[@]}" $bystander; do kill "$p" 2>/dev/null || true; done
  if [ ${#daemon_pids[@]} -gt 0 ]; then  # only a liveupdated we started, and its next instances
    local cur
    cur=$("$ctl" status --json 2>/dev/null | sed -n 's/^  "pid": *\([0-9]*\).*/\1/p' || true)
    for p in "${daemon_pids[@]}" $cur; do
      [ "$(cat "/proc/$p/comm" 2>/dev/null)" = liveupdated ] && kill "$p" 2>/dev/null || true
    done
  fi
  wait 2>/dev/null || true
  if [ $ok = 1 ] || [ $logs = 0 ]; then rm -rf "$work"; else echo "   (logs kept in $work)"; fi
}
trap cleanup EXIT
trap 'echo; echo "interrupted" >&2; exit 130' INT TERM

fail() { echo; echo "FAILED: $*" >&2; exit 1; }
stamp() { echo "$1 $EPOCHREALTIME" >>"$work/events"; }
source scripts/lib/wait.sh  # nap, wait_log, wait_exit
# A single updating line on a terminal; a line every 5 s otherwise.
tty=0; [ -t 1 ] && tty=1
show() {  # seconds label
  local end=$((SECONDS + $1)) next=$((SECONDS + 1)) line
  while [ $SECONDS -lt "$end" ]; do
    line="   [$2] $(cat "$work/status" 2>/dev/null || echo "starting"); memcslap runs: $(ls "$work"/slap.*.out 2>/dev/null | wc -l)"
    if [ $tty = 1 ]; then printf '\r\033[K%s' "$line"; elif [ $SECONDS -ge $next ]; then echo "$line"; next=$((SECONDS + 5)); fi
    nap 0.25
  done
  [ $tty = 1 ] && echo
  return 0
}
kv() { sed -n "s/^$1=//p" "$work/report"; }
kv1() { printf '%.1f' "$(kv "$1")"; }  # one decimal

echo "== liveupdated, in its default runtime directory"
if "$ctl" status >/dev/null 2>&1; then
  fail "a liveupdated already serves the default runtime directory: stop it first ($ctl status)"
fi
$bin/src/daemon/liveupdated >"$work/liveupdated.log" 2>&1 &
daemon_pids+=($!)
for _ in $(seq 200); do "$ctl" status >/dev/null 2>&1 && break; sleep 0.05; done
"$ctl" status | sed 's/^/   /'

echo "== another LUO client: memfd-demo holds its own session through it all"
: >"$work/bystander.log"  # wait_log reads it from the start
"$memfd_demo" hold 16 >"$work/bystander.out" 2>>"$work/bystander.log" &
bystander=$!
wait_log "$work/bystander.log" "preserved" 30 || fail "memfd-demo: $(cat "$work/bystander.log")"
sed 's/^/   /' "$work/bystander.log"

port=$("$kvcheck" freeport)
echo "== kvcache v1 on 127.0.0.1 port $port, --memory $memory (MiB)"
"$kvcache" --port "$port" --memory "$memory" --version-tag v1 2>"$work/kvcache-v1.log" &
v1=$!; kv_pids+=($v1)
"$kvcheck" wait --port "$port" --timeout 30 || fail "kvcache v1 does not serve: $(cat "$work/kvcache-v1.log")"
sed 's/^/   /' "$work/kvcache-v1.log"

echo "== loading the data set: $items items, ~$value_size-byte values ($data_mib MiB)"
"$kvcheck" load --port "$port" --items "$items" --value-size "$value_size" >"$work/load.out" ||
  fail "loading the data set: $(cat "$work/load.out")"
sed 's/^/   /' "$work/load.out"

echo "== load: memcslap (loop of runs: 2 threads, 2000 keys each) and kvcheck ($conns connections, every value checked)"
( i=0
  while [ ! -e "$work/stop" ]; do
    i=$((i + 1))
    echo "start $EPOCHREALTIME" >"$work/slap.$i.time"
    rc=0
    memcslap --servers="127.0.0.1:$port" --concurrency=2 --test=get --execute-number=2000 --tcp-nodelay \
      >"$work/slap.$i.out" 2>"$work/slap.$i.err" || rc=$?
    echo "end $EPOCHREALTIME rc $rc" >>"$work/slap.$i.time"
  done ) &
slap_loop=$!
"$kvcheck" run --port "$port" --items "$items" --value-size "$value_size" --conns "$conns" \
  --status "$work/status" --report "$work/report" --events "$work/events" --tag demo >"$work/kvcheck.out" 2>&1 &
checker=$!; client_pids+=($checker)
show $((duration / 2)) "v1"

echo "== hand-off of kvcache to a v2 that fails: it rolls back, v1 serves on"
stamp failing
"$kvcache" --port "$port" --memory "$memory" --version-tag v2 --takeover "$v1" --fail-next \
  2>"$work/kvcache-v2-failing.log" && fail "the failing v2 did not fail"
wait_log "$work/kvcache-v1.log" "rolled back" 30 || fail "kvcache v1 did not roll back: $(cat "$work/kvcache-v1.log")"
stamp rolledback
sed -n 's/^kvcache: \(--fail-next.*\)/   failing v2: \1/p' "$work/kvcache-v2-failing.log"
sed -n 's/^kvcache: \(hand-off.*rolled back.*\)/   v1: \1/p' "$work/kvcache-v1.log"
version=$("$kvcheck" version --port "$port")
[ "$version" = "1.6.0-kvcache+v1" ] || fail "after the rollback, version answers $version, not v1"
show 2 "v1"

echo "== hand-off of kvcache: v1 -> v2, started in advance"
stamp down
: >"$work/kvcache-v2.log"
"$kvcache" --port "$port" --memory "$memory" --version-tag v2 --takeover "$v1" 2>>"$work/kvcache-v2.log" &
v2=$!; kv_pids+=($v2)
wait_log "$work/kvcache-v2.log" "serving on" 30 || fail "kvcache v2 does not serve: $(cat "$work/kvcache-v2.log")"
stamp serving
version=$("$kvcheck" version --port "$port")
# v1 exits by itself once the hand-off committed
wait_exit "$v1" 10 || fail "kvcache v1 did not exit after the hand-off"
v1_status=0; wait "$v1" || v1_status=$?
stamp ready
sed -n 's/^kvcache: \(handed off.*\)/   v1: \1/p' "$work/kvcache-v1.log"
sed -n 's/^kvcache: \(serving.*\)/   v2: \1/p' "$work/kvcache-v2.log"
echo "   version now answers: $version (v1 exited with status $v1_status)"
[ "$version" = "1.6.0-kvcache+v2" ] || fail "version answers $version, not 1.6.0-kvcache+v2"
[ "$v1_status" = 0 ] || fail "kvcache v1 exited with status $v1_status"
show $((duration - duration / 2)) "v2"

echo "== stopping the load"
touch "$work/stop"
kill -TERM "$checker"
checker_rc=0; wait "$checker" || checker_rc=$?
wait "$slap_loop" || true
slap_loop=""
[ -s "$work/report" ] || fail "kvcheck gave no report: $(cat "$work/kvcheck.out")"
# memcslap: every run, its failures, and the run that spanned the update.
down=$(sed -n 's/^down //p' "$work/events")
slap_runs=0 slap_failures=0 slap_bad_rc=0 slap_gets=0 across=""
for t in "$work"/slap.*.time; do
  n=${t%.time}; n=${n##*.}
  read -r _ start <"$t"
  end_line=$(sed -n 's/^end //p' "$t")
  [ -n "$end_line" ] || continue
  read -r end _ rc <<<"$end_line"
  slap_runs=$((slap_runs + 1))
  [ "$rc" = 0 ] || slap_bad_rc=$((slap_bad_rc + 1))
  slap_failures=$((slap_failures + $(grep -ci "fail" "$work/slap.$n.err" || true)))
  g=$(sed -n 's/^Time to get *\([0-9]*\) keys.*/\1/p' "$work/slap.$n.out"); slap_gets=$((slap_gets + ${g:-0}))
  awk -v s="$start" -v e="$end" -v d="$down" 'BEGIN { exit !(s <= d && d <= e) }' && across=$n
done

failed=$(kv failed) wrong=$(kv wrong) lost=$(kv lost)
echo
echo "== result ($data_mib MiB data set, $items items; $duration s of load, the update half-way)"
printf '   %-28s %s\n' \
  "kvcheck requests sent" "$(kv requests) on $conns persistent connections ($(kv reconnects) reconnections)" \
  "  failed" "$failed" \
  "  wrong values" "$wrong" \
  "  lost writes" "$lost" \
  "memcslap" "$slap_runs runs, $slap_gets gets, $slap_failures failures reported, $slap_bad_rc runs exited non-zero" \
  "longest gap in replies" "$(kv1 longest_gap_around_ms) ms around the update ($(kv1 longest_gap_ms) ms in the whole run)" \
  "longest stall (one request)" "$(kv1 max_latency_around_ms) ms around the update ($(kv1 max_latency_ms) ms in the whole run)" \
  "hit rate (data-set gets)" "$(kv1 hit_before_pct)% before, $(kv1 hit_after_pct)% after" \
  "  per second" "$(kv hit_per_second)" \
  "the hand-off, from v2's start" "v2 serving at $(kv1 event_serving_ms) ms, v1 gone at $(kv1 event_ready_ms) ms; the failing v2 rolled back at $(kv1 event_rolledback_ms) ms"
printf '   %-28s %s\n' "kvcache v2 stats" "$(
  "$kvcheck" stat --port "$port" curr_items evictions live_updates | paste -sd' ' |
    awk '{ printf "%s items, %s evictions, %s live updates", $1, $2, $3 }')"
if [ -n "$across" ]; then
  echo "   memcslap's summary of its run across the update:"
  sed 's/^/      /' "$work/slap.$across.out"
fi
grep -h "^problem_" "$work/report" | sed 's/^problem_[0-9]*=/   kvcheck: /' || true
grep -hi "fail" "$work"/slap.*.err 2>/dev/null | head -5 | sed 's/^/   memcslap: /' || true

echo "== the other LUO client"
kill -TERM "$bystander"
bystander_rc=0; wait "$bystander" || bystander_rc=$?
bystander=""
sed 's/^/   /' "$work/bystander.out"
[ "$bystander_rc" = 0 ] || fail "memfd-demo's session was disturbed: $(cat "$work/bystander.log")"

if [ "$failed" != 0 ] || [ "$wrong" != 0 ] || [ "$lost" != 0 ] || [ "$slap_failures" != 0 ] ||
   [ "$slap_bad_rc" != 0 ] || [ "$checker_rc" != 0 ]; then
  fail "requests failed or values were wrong"
fi
ok=1
echo "== done: no request failed, every value read was right"
