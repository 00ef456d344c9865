#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the libFuzzer targets (clang, build/fuzz) and runs each for SECONDS
# (default 60) from a scratch copy of its committed corpus (fuzz/corpus/), so
# the repository is not modified. Prints a table and exits non-zero if any
# target crashed, leaked or timed out; the artifacts are kept and their
# directory printed. fuzz/README.md says what each target checks.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-60}
targets=(handover_fuzz journal_fuzz dispatch_fuzz)

scripts/deps.sh
CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DLU_TESTS=OFF -DLU_BENCH=OFF >/dev/null
cmake --build build/fuzz --target "${targets[@]}"

scratch=$(mktemp -d /tmp/lu-fuzz.XXXXXX)
status=0
rows=()
for t in "${targets[@]}"; do
  dir=$scratch/$t
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp fuzz/corpus/"$t"/* "$dir/corpus/"
  echo "== $t for ${seconds}s (log: $dir/log)"
  (cd "$dir" && "$root/build/fuzz/fuzz/$t" -max_total_time="$seconds" -timeout=25 \
      -print_final_stats=1 -artifact_prefix=artifacts/ corpus >log 2>&1) || true
  execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$dir/log")
  rate=$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$dir/log")
  crashes=$(find "$dir/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' \
      -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  if [ -z "$execs" ]; then  # no final stats: it did not run to the end
    tail -n 30 "$dir/log"
    crashes="$crashes (no stats)"
    status=1
  fi
  [ "$crashes" = 0 ] || status=1
  rows+=("$(printf '%-16s %14s %10s %8s' "$t" "${execs:--}" "${rate:--}" "$crashes")")
done

printf '\n%-16s %14s %10s %8s\n' target executions exec/s crashes
printf '%s\n' "${rows[@]}"
if [ $status -ne 0 ]; then
  echo "artifacts and logs kept in $scratch (replay: build/fuzz/fuzz/TARGET FILE)"
else
  rm -rf "$scratch"
fi
exit $status
