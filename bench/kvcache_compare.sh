#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Side by side: what clients of a memcached-protocol cache see when the
# service is replaced, with the same data set and the same load each time.
#
#   bench/kvcache_compare.sh [--data-mib N] [--runs K] [--pre S] [--post S]
#
#   1. hand-off: kvcache v(n) -> v(n+1) inside liveupdated (docs/handoff.md),
#      as scripts/demo.sh: v(n+1) started in advance with --takeover v(n)'s
#      pid; loaded, it asks v(n) (SIGUSR2 carrying its request), which hands
#      its session over; the commit is v(n+1)'s FINISH. The stop request is
#      that ask, stamped by v(n+1) right before sigqueue (--events);
#   2. live update through a reboot of the daemon, the older way, still
#      supported: kvcache v(n) -> v(n+1) through liveupdated (SIGUSR2,
#      "ready", liveupdatectl reboot, the next kvcache started then);
#   3. cold restart: kvcache without liveupdated, stopped (SIGTERM), a fresh
#      one started, the data set reloaded from a dump file on disk (written
#      once; streamed with sendfile as pipelined noreply sets: the fastest way
#      in through the protocol);
#   4. memcached 1.6 restartable: -e on a tmpfs file, stopped with SIGUSR1
#      (woken at once by a connection, as it notices the signal only at its
#      next event), restarted in the next wall-clock second (it starts empty
#      otherwise: that wait counts as not serving), checked warm;
#   5. the floor: liveupdatectl reboot of a liveupdated holding no session.
#
# Data set: N MiB of ~1 KiB values (default 1024), loaded once per server.
# Load during each measured run: memcslap in a loop (2 threads, 2000 keys a
# run) and kvcheck (4 persistent connections, 60% data-set gets, 40% gets and
# sets of its own keys, every value checked, every request timed), S seconds
# before the event (default 4) and S seconds after the service is back
# (default 4). Each of 1-4 is measured K times (default 1): medians, and
# the max of the time not serving.
#
# Figures, per scenario:
#   not serving     from the stop request (the hand-off's ask, SIGUSR2,
#                   SIGTERM, SIGUSR1) until served again with the data:
#                   hand-off, live update and memcached: the first request
#                   kvcheck got answered by the new process; cold restart:
#                   the end of the reload
#   longest stall   the longest single kvcheck request around the event
#                   (reconnection included when its connection broke)
#   hit rate back   from the stop request until the data-set gets of the
#                   next 100 ms hit as often as before (less 1 point)
#   failed          kvcheck requests that failed / memcslap failure lines
#   lost writes     kvcheck's own writes missing afterwards
#   peak memory     sampled every 20 ms: the servers' private resident memory
#                   (RssAnon + RssFile of kvcache or memcached, and of
#                   liveupdated) + the allocated size of the shared memory
#                   holding the data (the kvcache arena memfd, memcached's
#                   tmpfs file), counted once however many processes map it
set -euo pipefail
cd "$(dirname "$0")/.."

data_mib=1024 runs=1 pre=4 post=4 value_size=1024 conns=4 keep=0 only=""
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1; shift ;;            # keep the logs and traces (printed: where)
    --only) only=${2:?}; shift 2 ;;     # handoff, live, cold, memcached, floor (comma-separated)
    --data-mib) data_mib=${2:?}; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --pre) pre=${2:?}; shift 2 ;;
    --post) post=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,50p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kvcache_compare.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in data_mib runs pre post; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || { echo "--${v/_/-}: a positive number" >&2; exit 2; }
done

scripts/deps.sh memcached libmemcached-tools
cmake -S . -B build/main -G Ninja -DCMAKE_BUILD_TYPE=Release -DLU_FAULT_INJECTION=OFF \
  -DLU_TESTS=OFF >/dev/null
# Only what runs here: the rest of the project is not measured.
nice cmake --build build/main -j "$(nproc)" --target liveupdated liveupdatectl kvcache kvcheck |
  { grep -v '^\[' || true; }
bin=$PWD/build/main
ctl=$bin/tools/liveupdatectl
kvcheck=$bin/examples/kvcache/kvcheck
kvcache=$bin/examples/kvcache/kvcache
liveupdated=$bin/src/daemon/liveupdated
memcached_bin=$(command -v memcached)

items=$(( data_mib * 1048576 / value_size ))
memory=$(( data_mib * 13 / 10 + 64 + 12 * (pre + post + 10) * runs ))  # as demo.sh: never evicts
work=$(mktemp -d /tmp/kvcache-compare.XXXXXX)
shm=/dev/shm/kvcache-compare.$$
export LIVEUPDATE_RUNTIME_DIR=$work/rt  # a liveupdated of our own, whatever else runs here

pids=()        # every server process started, to end at exit
slap_loop="" checker="" watcher="" run="" floor_rss=nan
cleanup() {
  trap - EXIT INT TERM
  stop_load 2>/dev/null || true
  stop_memwatch 2>/dev/null || true
  local cur
  cur=$("$ctl" status --json 2>/dev/null | sed -n 's/^  "pid": *\([0-9]*\).*/\1/p' || true)
  for p in "${pids[@]}" $cur; do
    case $(cat "/proc/$p/comm" 2>/dev/null) in kvcache|memcached|liveupdated) kill "$p" 2>/dev/null || true ;; esac
  done
  wait 2>/dev/null || true
  rm -f "$shm" "$shm.meta"
  if [ $keep = 1 ]; then rm -f "$work/dataset.dump"; echo "   (logs kept in $work)"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'echo; echo "interrupted" >&2; exit 130' INT TERM
fail() { echo; echo "FAILED: $*" >&2; exit 1; }

tty=0; [ -t 1 ] && tty=1
# Shows kvcheck's status for S seconds (one updating line on a terminal).
show() {  # seconds label
  local end=$((SECONDS + $1)) next=$((SECONDS + 1)) line
  while [ $SECONDS -lt "$end" ]; do
    line="   [$2] $(cat "$run/status" 2>/dev/null || echo starting)"
    if [ $tty = 1 ]; then printf '\r\033[K%s' "${line:0:150}"; elif [ $SECONDS -ge $next ]; then echo "$line"; next=$((SECONDS + 5)); fi
    nap 0.25
  done
  [ $tty = 1 ] && printf '\r\033[K'
  return 0
}
stamp() { echo "$1 $EPOCHREALTIME" >>"$run/events"; }
source scripts/lib/wait.sh  # nap, wait_log, wait_exit
get() { sed -n "s/^$2=//p" "$1" 2>/dev/null || true; }

# The servers' pids, for the memory sampler (re-read at every sample).
watch_pids() { printf '%s\n' "$@" >"$work/pids.tmp"; mv "$work/pids.tmp" "$work/pids"; }
start_memwatch() {  # [--file PATH]
  : >"$work/pids"
  "$kvcheck" memwatch --pidfile "$work/pids" --report "$1" "${@:2}" &
  watcher=$!
}
stop_memwatch() { [ -n "$watcher" ] && { kill "$watcher"; wait "$watcher" || true; watcher=""; }; }

# The same load for every scenario: memcslap in a loop, kvcheck.
start_load() {  # port tag
  mkdir -p "$run"
  rm -f "$run/stop"
  ( i=0
    while [ ! -e "$run/stop" ]; do
      i=$((i + 1))
      echo "start $EPOCHREALTIME" >"$run/slap.$i.time"
      rc=0
      memcslap --servers="127.0.0.1:$1" --concurrency=2 --test=get --execute-number=2000 --tcp-nodelay \
        >"$run/slap.$i.out" 2>"$run/slap.$i.err" || rc=$?
      echo "end $EPOCHREALTIME rc $rc" >>"$run/slap.$i.time"
      [ $rc = 0 ] || sleep 0.05  # while the server is down
    done ) &
  slap_loop=$!
  "$kvcheck" run --port "$1" --items "$items" --value-size "$value_size" --conns "$conns" --tag "$2" \
    --status "$run/status" --report "$run/report" --events "$run/events" --trace "$run/trace" \
    >"$run/kvcheck.out" 2>&1 &
  checker=$!
}
stop_load() {
  [ -n "$run" ] && touch "$run/stop"
  if [ -n "$checker" ]; then kill -TERM "$checker" 2>/dev/null || true; wait "$checker" || true; checker=""; fi
  if [ -n "$slap_loop" ]; then
    # bounded: a memcslap run takes about a second
    for _ in $(seq 100); do kill -0 "$slap_loop" 2>/dev/null || break; nap 0.1; done
    pkill -TERM -P "$slap_loop" 2>/dev/null || true
    kill "$slap_loop" 2>/dev/null || true
    wait "$slap_loop" 2>/dev/null || true
    slap_loop=""
  fi
}
# memcslap's failure lines in the runs that overlapped [down, end of run].
slap_failures() {
  local down n=0 t start end_line end
  down=$(sed -n 's/^down //p' "$run/events")
  for t in "$run"/slap.*.time; do
    read -r _ start <"$t"
    end_line=$(sed -n 's/^end //p' "$t"); end=${end_line%% *}
    [ -n "$end" ] || continue
    if awk -v e="$end" -v d="$down" 'BEGIN { exit !(e >= d) }'; then
      n=$((n + $(grep -ci "fail" "${t%.time}.err" || true)))
    fi
  done
  echo $n
}
# One measured run's figures, appended to results.tsv:
# scenario run not_serving stall back failed slap_failed lost hit_before hit_after
record() {  # scenario not_serving_ms
  [ -s "$run/report" ] || fail "kvcheck gave no report: $(cat "$run/kvcheck.out")"
  local wrong; wrong=$(get "$run/report" wrong)
  [ "$wrong" = 0 ] && [ "$(get "$run/report" requests)" -gt 0 ] || fail "$1: $wrong wrong values ($run/report)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$r" "$2" \
    "$(get "$run/report" max_latency_around_ms)" "$(get "$run/report" hit_back_ms)" \
    "$(get "$run/report" failed)" "$(slap_failures)" "$(get "$run/report" lost)" \
    "$(get "$run/report" hit_before_pct)" "$(get "$run/report" hit_after_pct)" >>"$work/results.tsv"
  printf '   run %s: not serving %.1f ms, longest stall %.1f ms, hit rate back after %.1f ms (%.1f%% before, %.1f%% after); %s failed, %s memcslap failures, %s lost writes, %s requests\n' \
    "$r" "$2" "$(get "$run/report" max_latency_around_ms)" "$(get "$run/report" hit_back_ms)" \
    "$(get "$run/report" hit_before_pct)" "$(get "$run/report" hit_after_pct)" "$(get "$run/report" failed)" \
    "$(slap_failures)" "$(get "$run/report" lost)" "$(get "$run/report" requests)"
}
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) * 1000 }'; }
event() { sed -n "s/^$1 //p" "$run/events"; }

echo "== $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB, kernel $(uname -r); data set: $items items, ~$value_size-byte values ($data_mib MiB); $runs run(s) each"

# ------------------------------------------------------------------ 1. hand-off
scenario_handoff() {
  echo "== 1. hand-off: kvcache + liveupdated, the next version started in advance (--takeover)"
  export LIVEUPDATE_RUNTIME_DIR=$work/rt-handoff
  run=$work/handoff.load
  start_memwatch "$work/mem.handoff"
  "$liveupdated" >"$work/liveupdated-handoff.log" 2>&1 &
  pids+=($!); daemon=$!
  for _ in $(seq 200); do "$ctl" status >/dev/null 2>&1 && break; sleep 0.05; done
  port=$("$kvcheck" freeport)
  "$kvcache" --port "$port" --memory "$memory" --version-tag h0 --events "$work/kvcache-h0.events" \
    2>"$work/kvcache-h0.log" &
  kv=$!; pids+=($kv)
  watch_pids "$daemon" "$kv"
  "$kvcheck" wait --port "$port" --timeout 30 || fail "kvcache: $(cat "$work/kvcache-h0.log")"
  "$kvcheck" load --port "$port" --items "$items" --value-size "$value_size" | sed 's/^/   /'
  for r in $(seq "$runs"); do
    run=$work/handoff.$r
    start_load "$port" "handoff$r"
    show "$pre" "hand-off $r: before"
    : >"$work/kvcache-h$r.log"  # wait_log reads it from the start
    # The previous version serves until the next one, loaded, asks: the
    # process start is not the clients' time. Each kvcache stamps its steps
    # of the hand-off (--events): the ask, the commit (FINISH), ...
    "$kvcache" --port "$port" --memory "$memory" --version-tag "h$r" --takeover "$kv" \
      --events "$work/kvcache-h$r.events" 2>>"$work/kvcache-h$r.log" &
    old=$kv; kv=$!; pids+=($kv)
    watch_pids "$daemon" "$kv" "$old"
    wait_log "$work/kvcache-h$r.log" "serving on" 30 || fail "kvcache h$r: $(cat "$work/kvcache-h$r.log")"
    stamp serving
    grep -q "warm start.*taken over from pid $old" "$work/kvcache-h$r.log" ||
      fail "kvcache h$r did not take over: $(cat "$work/kvcache-h$r.log")"
    [ "$("$kvcheck" version --port "$port")" = "1.6.0-kvcache+h$r" ] || fail "version is not h$r"
    wait_exit "$old" 10 || fail "the previous kvcache did not exit"
    stamp gone
    wait "$old" || fail "the previous kvcache exited with status $?"
    watch_pids "$daemon" "$kv"
    # kvcheck reads its events when it stops: the ask is the stop request.
    asked=$(sed -n 's/^asked //p' "$work/kvcache-h$r.events")
    finished=$(sed -n 's/^finished //p' "$work/kvcache-h$r.events")
    printf 'down %s\nfinished %s\n' "$asked" "$finished" >>"$run/events"
    show "$post" "hand-off $r: after"
    stop_load
    # The first request answered after the commit is the new version's (it
    # serves only after FINISH, and the previous one stopped at the ask).
    record handoff "$(get "$run/report" first_done_after_finished_ms)"
    echo "     $(sed -n 's/^kvcache: \(handed off.*\)/previous: \1/p' "$work/kvcache-h$((r - 1)).log")"
    echo "     $(sed -n 's/^kvcache: \(serving.*\)/next: \1/p' "$work/kvcache-h$r.log")"
    # Where the time went, from the ask: each step as the side that took it
    # stamped it (the previous version's ask_received .. committed, the next
    # one's retrieved .. serving), then kvcheck's first answer.
    line="" tsv="$r"
    for st in h$((r - 1)):ask_received h$((r - 1)):conns_preserved h$((r - 1)):offered h$r:retrieved \
              h$r:adopted h$r:finished h$((r - 1)):committed h$r:serving h$r:preserved; do
      t=$(sed -n "s/^${st#*:} //p" "$work/kvcache-${st%%:*}.events" | tail -1)
      d=$([ -n "$t" ] && ms_between "$asked" "$t" || echo nan)
      line+=" ${st#*:} $d,"; tsv+=$'\t'$d
    done
    printf '%s\t%s\n' "$tsv" "$(get "$run/report" first_done_after_finished_ms)" >>"$work/phases.tsv"
    echo "     ms from the ask:$line answered $(get "$run/report" first_done_after_finished_ms), previous version gone (seen by this script) $(ms_between "$asked" "$(event gone)")"
  done
  stop_memwatch
  kill "$kv" "$daemon"; wait "$kv" 2>/dev/null || true
  wait_exit "$daemon" 10 || true
}

# ---------------------------------------------------------------- 2. live update
scenario_live() {
  echo "== 2. live update through a reboot of liveupdated: kvcache + liveupdated"
  export LIVEUPDATE_RUNTIME_DIR=$work/rt
  run=$work/live.load
  start_memwatch "$work/mem.live"
  "$liveupdated" >"$work/liveupdated.log" 2>&1 &
  pids+=($!); daemon=$!
  for _ in $(seq 200); do "$ctl" status >/dev/null 2>&1 && break; sleep 0.05; done
  port=$("$kvcheck" freeport)
  "$kvcache" --port "$port" --memory "$memory" --version-tag v0 2>"$work/kvcache-v0.log" &
  kv=$!; pids+=($kv)
  watch_pids "$daemon" "$kv"
  "$kvcheck" wait --port "$port" --timeout 30 || fail "kvcache: $(cat "$work/kvcache-v0.log")"
  "$kvcheck" load --port "$port" --items "$items" --value-size "$value_size" | sed 's/^/   /'
  for r in $(seq "$runs"); do
    run=$work/live.$r
    start_load "$port" "live$r"
    show "$pre" "live update $r: before"
    "$kvcheck" signal --pid "$kv" --signal USR2 --events "$run/events" --name down
    wait_log "$work/kvcache-v$((r - 1)).log" "ready for live update" 30 || fail "kvcache never got ready"
    stamp ready
    "$ctl" reboot >"$run/reboot.out" 2>&1 || fail "liveupdatectl reboot: $(cat "$run/reboot.out")"
    stamp rebooted
    "$kvcache" --port "$port" --memory "$memory" --version-tag "v$r" 2>"$work/kvcache-v$r.log" &
    old=$kv; kv=$!; pids+=($kv)
    daemon=$("$ctl" status --json | sed -n 's/^  "pid": *\([0-9]*\).*/\1/p')
    pids+=($daemon)
    watch_pids "$daemon" "$kv" "$old"
    "$kvcheck" wait --port "$port" --timeout 30 || fail "kvcache v$r: $(cat "$work/kvcache-v$r.log")"
    stamp serving
    [ "$("$kvcheck" version --port "$port")" = "1.6.0-kvcache+v$r" ] || fail "version is not v$r"
    wait_exit "$old" 10 || fail "the previous kvcache did not exit"
    wait "$old" || fail "the previous kvcache exited with status $?"
    show "$post" "live update $r: after"
    stop_load
    record live "$(get "$run/report" first_done_after_rebooted_ms)"
    echo "     $(sed -n 's/^kvcache: \(ready.*\)/\1/p' "$work/kvcache-v$((r - 1)).log")"
    echo "     $(cat "$run/reboot.out")"
    echo "     $(sed -n 's/^kvcache: \(serving.*\)/\1/p' "$work/kvcache-v$r.log")"
  done
  stop_memwatch
  kill "$kv" "$daemon"; wait "$kv" 2>/dev/null || true
  wait_exit "$daemon" 10 || true
}

# --------------------------------------------------------------- 3. cold restart
scenario_cold() {
  echo "== 3. cold restart: kvcache without liveupdated, reloaded from a dump file on disk"
  export LIVEUPDATE_RUNTIME_DIR=$work/no-daemon
  dump=$work/dataset.dump  # /tmp: on disk here (check: df /tmp)
  t0=$EPOCHREALTIME
  "$kvcheck" dump --items "$items" --value-size "$value_size" --file "$dump" | sed 's/^/   /'
  echo "   (written in $(ms_between "$t0" "$EPOCHREALTIME") ms, once; on $(df --output=source "$dump" | tail -1))"
  start_memwatch "$work/mem.cold"
  port=$("$kvcheck" freeport)
  "$kvcache" --port "$port" --memory "$memory" 2>"$work/kvcache-cold0.log" &
  kv=$!; pids+=($kv)
  watch_pids "$kv"
  "$kvcheck" wait --port "$port" --timeout 30 || fail "kvcache: $(cat "$work/kvcache-cold0.log")"
  "$kvcheck" load --port "$port" --items "$items" --value-size "$value_size" | sed 's/^/   /'
  for r in $(seq "$runs"); do
    run=$work/cold.$r
    start_load "$port" "cold$r"
    show "$pre" "cold restart $r: before"
    "$kvcheck" signal --pid "$kv" --signal TERM --events "$run/events" --name down
    wait_exit "$kv" 30 || fail "kvcache did not stop"
    wait "$kv" || true
    stamp ready
    "$kvcache" --port "$port" --memory "$memory" 2>"$work/kvcache-cold$r.log" &
    kv=$!; pids+=($kv)
    watch_pids "$kv"
    "$kvcheck" wait --port "$port" --timeout 30 || fail "kvcache: $(cat "$work/kvcache-cold$r.log")"
    stamp serving
    "$kvcheck" reload --port "$port" --file "$dump" >"$run/reload.out" || fail "reload"
    stamp warm
    show "$post" "cold restart $r: after"
    stop_load
    record cold "$(ms_between "$(event down)" "$(event warm)")"
    echo "     new process answering (empty) after $(ms_between "$(event down)" "$(event serving)") ms; $(cat "$run/reload.out")"
  done
  stop_memwatch
  kill "$kv"; wait "$kv" 2>/dev/null || true
}

# ----------------------------------------------------------- 4. memcached -e
scenario_memcached() {
  echo "== 4. memcached $("$memcached_bin" -V | awk '{ print $2 }') restartable (-e $shm, tmpfs)"
  rm -f "$shm" "$shm.meta"
  port=$("$kvcheck" freeport)
  mc_args=(-u root -l 127.0.0.1 -p "$port" -m "$memory" -c 4096 -e "$shm")
  start_memwatch "$work/mem.memcached" --file "$shm"
  "$memcached_bin" "${mc_args[@]}" >"$work/memcached0.log" 2>&1 &
  mc=$!; pids+=($mc)
  watch_pids "$mc"
  "$kvcheck" wait --port "$port" --timeout 30 || fail "memcached: $(cat "$work/memcached0.log")"
  "$kvcheck" load --port "$port" --items "$items" --value-size "$value_size" | sed 's/^/   /'
  for r in $(seq "$runs"); do
    run=$work/memcached.$r
    start_load "$port" "memcached$r"
    show "$pre" "memcached restart $r: before"
    # SIGUSR1, then a connection at once to wake its event loop
    "$kvcheck" signal --pid "$mc" --signal USR1 --poke "$port" --events "$run/events" --name down
    wait_exit "$mc" 60 || fail "memcached did not stop on SIGUSR1"
    wait "$mc" || true
    stamp ready
    # It restores only if started in a later wall-clock second than it stopped.
    now=$EPOCHREALTIME; us=$((1001000 - 10#${now#*.}))  # to 1 ms into the next second
    nap "$((us / 1000000)).$(printf '%06d' $((us % 1000000)))"
    stamp started
    "$memcached_bin" "${mc_args[@]}" >"$work/memcached$r.log" 2>&1 &
    mc=$!; pids+=($mc)
    watch_pids "$mc"
    "$kvcheck" wait --port "$port" --timeout 60 || fail "memcached: $(cat "$work/memcached$r.log")"
    stamp serving
    n=$("$kvcheck" stat --port "$port" curr_items)
    [ "${n:-0}" -ge "$items" ] || fail "memcached came back with $n items, not warm ($(cat "$work/memcached$r.log"))"
    show "$post" "memcached restart $r: after"
    stop_load
    record memcached "$(get "$run/report" first_done_after_started_ms)"
    echo "     stopped in $(ms_between "$(event down)" "$(event ready)") ms, waited $(ms_between "$(event ready)" "$(event started)") ms for the next second, serving $(ms_between "$(event started)" "$(event serving)") ms after its start, warm: $n items"
  done
  stop_memwatch
  kill "$mc"; wait "$mc" 2>/dev/null || true
  rm -f "$shm" "$shm.meta"
}

# -------------------------------------------------------------------- 5. floor
scenario_floor() {
  echo "== 5. the floor: liveupdatectl reboot with no session"
  export LIVEUPDATE_RUNTIME_DIR=$work/rt-floor
  run=$work/floor
  mkdir -p "$run"
  "$liveupdated" >"$work/liveupdated-floor.log" 2>&1 &
  daemon=$!; pids+=($daemon)
  for _ in $(seq 200); do "$ctl" status >/dev/null 2>&1 && break; sleep 0.05; done
  floor_runs=$((runs > 5 ? runs : 5))
  for r in $(seq "$floor_runs"); do
    t0=$EPOCHREALTIME
    out=$("$ctl" reboot) || fail "liveupdatectl reboot: $out"
    t1=$EPOCHREALTIME
    blackout=$(sed -n 's/.*blackout \([0-9]*\) us.*/\1/p' <<<"$out")
    printf 'floor\t%s\t%s\t%s\n' "$r" "$(awk -v b="$blackout" 'BEGIN { printf "%.3f", b / 1000 }')" \
      "$(ms_between "$t0" "$t1")" >>"$work/floor.tsv"
    pids+=("$("$ctl" status --json | sed -n 's/^  "pid": *\([0-9]*\).*/\1/p')")
  done
  floor_rss=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/${pids[-1]}/status")
  echo "   blackout_us (ms) and wall time of the command (ms), $floor_runs updates:"
  awk -F'\t' '{ printf "     %s: blackout %.3f ms, liveupdatectl reboot %.1f ms\n", $2, $3, $4 }' "$work/floor.tsv"
}

want() { [ -z "$only" ] || [[ ,$only, == *,$1,* ]]; }
: >"$work/results.tsv"; : >"$work/floor.tsv"; : >"$work/phases.tsv"
for s in handoff live cold memcached floor; do want $s && scenario_$s; done

# -------------------------------------------------------------------- the table
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$work/results.tsv" | median; }
sum() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { n += $c } END { print n + 0 }' "$work/results.tsv"; }
ran() { awk -F'\t' -v s="$1" '$1 == s { n++ } END { exit !n }' "$work/results.tsv"; }
# "value unit (xratio against the live update)"
cell() {  # value reference unit
  awk -v v="$1" -v r="$2" -v u="$3" 'BEGIN {
    if (v == "nan" || v == "") { printf "-"; exit }
    printf ((v >= 100) ? "%.0f" : (v >= 10) ? "%.1f" : "%.2f") " %s", v, u
    if (r != "nan" && r + 0 > 0) { x = v / r; printf " (x%s)", (x >= 10) ? sprintf("%.0f", x) : sprintf("%.2g", x) }
  }'
}
pct() { awk -v v="$1" 'BEGIN { if (v == "" || v == "nan") printf "-"; else printf "%.1f%%", v }'; }
mx() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s && (m == "" || $c + 0 > m + 0) { m = $c } END { print (m == "" ? "nan" : m) }' "$work/results.tsv"; }
# (xN): against the hand-off, the way kvcache upgrades now (the live update
# through a reboot when the hand-off did not run).
ref=handoff; ran handoff || ref=live
ref_ns=$(col $ref 3) ref_st=$(col $ref 4) ref_bk=$(col $ref 5) ref_mem=$(get "$work/mem.$ref" peak_mib)
[ -n "$ref_mem" ] || ref_mem=nan
echo
echo "== $data_mib MiB data set ($items items), $conns kvcheck connections + memcslap; medians of $runs run(s); (xN): against the $ref"
{
  printf 'scenario\tnot serving\tmax\tlongest stall\thit rate back\tfailed: kvcheck / memcslap\tlost writes\thit rate before / after\tpeak memory (of which shared)\n'
  for s in handoff live cold memcached; do
    ran $s || continue
    case $s in
      handoff) name="1. hand-off (kvcache + liveupdated)" ;;
      live) name="2. live update through reboot" ;;
      cold) name="3. cold restart + reload from disk" ;;
      memcached) name="4. memcached -e restart (tmpfs)" ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t%s / %s\t%s\t%s / %s\t%s (%s)\n' "$name" \
      "$(cell "$(col $s 3)" "$ref_ns" ms)" "$(cell "$(mx $s 3)" "" ms)" \
      "$(cell "$(col $s 4)" "$ref_st" ms)" "$(cell "$(col $s 5)" "$ref_bk" ms)" \
      "$(sum $s 6)" "$(sum $s 7)" "$(sum $s 8)" "$(pct "$(col $s 9)")" "$(pct "$(col $s 10)")" \
      "$(cell "$(get "$work/mem.$s" peak_mib)" "$ref_mem" MiB)" "$(cell "$(get "$work/mem.$s" peak_shared_mib)" "" MiB)"
  done
  if [ -s "$work/floor.tsv" ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "5. floor: reboot, no session: blackout_us" \
      "$(cell "$(awk -F'\t' '{ print $3 }' "$work/floor.tsv" | median)" "$ref_ns" ms)" "-" "-" "-" "-" "-" "-" \
      "$(cell "$floor_rss" "$ref_mem" MiB) (VmHWM)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "   wall time of liveupdatectl reboot" \
      "$(cell "$(awk -F'\t' '{ print $4 }' "$work/floor.tsv" | median)" "$ref_ns" ms)" "" "" "" "" "" "" ""
  fi
} | column -t -s $'\t' | sed 's/^/   /'
if ran handoff; then
  echo
  echo "   hand-off, not serving per run (ms): $(awk -F'\t' '$1 == "handoff" { printf "%s%s", sep, $3; sep = ", " }' "$work/results.tsv")"
  echo "   hand-off, ms from the ask (medians of $runs run(s)):"
  c=2
  for st in "previous version gets the ask (signalfd)" "previous: connections preserved" \
            "previous: session offered (lu_handoff)" "next: session retrieved" "next: arena, listener, connections adopted" \
            "next: FINISH (the commit)" "previous: learns the commit" "next: serving (carried requests pumped)" \
            "next: session created, files preserved again" "first kvcheck request answered"; do
    printf '     %-48s %s\n' "$st" "$(awk -F'\t' -v c=$c '{ print $c }' "$work/phases.tsv" | median)"
    c=$((c + 1))
  done
fi
cat <<EOF

   not serving: hand-off: from the next version's ask to the first kvcheck request answered by it;
   live update, memcached: from the stop request (SIGUSR2, SIGUSR1) to the first kvcheck request
   answered by the new process; cold restart: from SIGTERM to the end of the reload (the new
   process answers, with misses, from its start). max: the longest of the runs.
   Longest stall: one kvcheck request, around the event.
   Hit rate back: from the stop request until 100 ms of data-set gets hit as often as before (less 1 point).
   Peak memory: sampled every 20 ms, RssAnon + RssFile of the server processes (and liveupdated) + the
   allocated blocks of the shared memory holding the items (kvcache's arena memfd, memcached's tmpfs file),
   counted once. Cold restart: plus, not counted, the dump file on disk (in the page cache).
   Floor: blackout_us as the next liveupdated reports it; memory: its VmHWM.
EOF
for s in handoff live; do
  if ran $s && { [ "$(sum $s 6)" != 0 ] || [ "$(sum $s 7)" != 0 ] || [ "$(sum $s 8)" != 0 ]; }; then
    fail "requests failed or writes were lost across the $s"
  fi
done
