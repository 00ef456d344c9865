#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs libliveupdate into a temporary prefix and builds a tiny C program
# against it the two documented ways: pkg-config and find_package(liveupdate).
# A C++ consumer that asks for no standard, and one that asks for C++14,
# both get the standard the C++ layer needs from the exported target.
# usage: install_consumers.sh CMAKE BUILD_DIR C_COMPILER CXX_COMPILER
set -euo pipefail
cmake=$1 build=$2 cc=$3 cxx=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for c in libliveupdate libliveupdate-dev; do
  "$cmake" --install "$build" --prefix "$tmp/prefix" --component "$c" >/dev/null
done

mkdir -p "$tmp/src"
cat >"$tmp/src/main.c" <<'C'
#include <liveupdate/client.h>
#include <stdio.h>
int main(void) {
    char dir[128];
    return lu_runtime_dir(dir, sizeof(dir)) == 0 && puts(dir) >= 0 ? 0 : 1;
}
C
cat >"$tmp/src/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(liveupdate REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE liveupdate::liveupdate)
CM

# The library may be built with ASan; the consumer is not.
export ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0
export LIVEUPDATE_RUNTIME_DIR=/tmp/lu-consumer-check

# 1. pkg-config (which adds no RPATH: hence LD_LIBRARY_PATH to run it)
pcdir=$(dirname "$(find "$tmp/prefix" -name liveupdate.pc)")
flags=$(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs liveupdate)
libdir=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir liveupdate)
# shellcheck disable=SC2086
"$cc" -Wall -Werror -o "$tmp/pc-consumer" "$tmp/src/main.c" $flags
[ "$(LD_LIBRARY_PATH=$libdir "$tmp/pc-consumer")" = "$LIVEUPDATE_RUNTIME_DIR" ]

# 2. CMake
"$cmake" -S "$tmp/src" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_C_COMPILER="$cc" >/dev/null
"$cmake" --build "$tmp/cm" >/dev/null
[ "$(LD_LIBRARY_PATH=$libdir "$tmp/cm/consumer")" = "$LIVEUPDATE_RUNTIME_DIR" ]

# 3. C++ through CMake: the RAII layer (std::string_view) in a project that
# asks for no standard, and in one that asks for C++14, which is raised.
cat >"$tmp/src/main.cpp" <<'CPP'
#include <liveupdate/client.hpp>
#include <cstdio>
static_assert(__cplusplus >= 201703L, "the target did not raise the standard");
int main() {
    try {
        liveupdate::Orchestrator lu = liveupdate::Orchestrator::open();
        (void)lu.create_session(std::string_view("consumer"));
        return 1;  // no daemon runs in the check's runtime directory
    } catch (const std::system_error& e) {
        return e.code().value() == ENOENT ? 0 : 1;
    }
}
CPP
for std in none 14; do
  mkdir -p "$tmp/cxx-$std"
  cp "$tmp/src/main.cpp" "$tmp/cxx-$std/"
  {
    echo 'cmake_minimum_required(VERSION 3.16)'
    echo 'project(cxxconsumer CXX)'
    [ "$std" = none ] || echo "set(CMAKE_CXX_STANDARD $std)"
    echo 'find_package(liveupdate REQUIRED)'
    echo 'add_executable(cxxconsumer main.cpp)'
    echo 'target_link_libraries(cxxconsumer PRIVATE liveupdate::liveupdate)'
  } >"$tmp/cxx-$std/CMakeLists.txt"
  "$cmake" -S "$tmp/cxx-$std" -B "$tmp/cxx-$std/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
    -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
  "$cmake" --build "$tmp/cxx-$std/b" >/dev/null
  LD_LIBRARY_PATH=$libdir "$tmp/cxx-$std/b/cxxconsumer"
done

# The SONAME is versioned, and only the C API is exported.
grep -q 'SONAME.*libliveupdate\.so\.[0-9]' <<<"$(readelf -d "$libdir/libliveupdate.so")"
if [ -n "$(nm -D --defined-only "$libdir/libliveupdate.so" | awk '{print $3}' | grep -v '^lu_' || true)" ]; then
  echo "unexpected exported symbols:" >&2
  nm -D --defined-only "$libdir/libliveupdate.so" | grep -v ' lu_' >&2
  exit 1
fi
echo "ok: pkg-config, CMake and C++ consumers build and run against $tmp/prefix"
