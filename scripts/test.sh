#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds everything twice (release with -Werror, and ASan+UBSan) and runs
# every test in both. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

jobs=$(nproc)
build() {  # build DIR [cmake args...]
  local dir=$1; shift
  # ccache: a second build of the same sources (the other build type, a
  # rerun, another checkout) costs little on a 2-core machine.
  cmake -S . -B "$dir" -G Ninja -DLU_WERROR=ON -DCMAKE_C_COMPILER_LAUNCHER=ccache \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

build build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
build build/asan -DCMAKE_BUILD_TYPE=Debug -DLU_SANITIZE=ON -DLU_BENCH=OFF

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for dir in build/release build/asan; do
  echo "== tests in $dir"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" || status=1
done
exit $status
