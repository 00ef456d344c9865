#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Debian packages, end to end: cpack builds them from this build tree,
# dpkg installs them into a scratch root, the installed binaries run (against
# the installed library, through their $ORIGIN rpath), and lintian finds no
# error in either package (warnings are allowed).
# usage: deb_test.sh CPACK BUILD_DIR
set -euo pipefail
cpack=$1 build=$2
tmp=$(mktemp -d)
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. Build both packages.
"$cpack" -G DEB -B "$tmp/out" --config "$build/CPackConfig.cmake" >"$tmp/cpack.log" 2>&1 ||
  { cat "$tmp/cpack.log" >&2; fail "cpack"; }
deb=$(ls "$tmp"/out/liveupdate_*.deb)
dev=$(ls "$tmp"/out/libliveupdate-dev_*.deb)

# 2. What each holds, and the dependencies dpkg-shlibdeps found.
contents=$(dpkg-deb -c "$deb")
for f in usr/sbin/liveupdated usr/bin/liveupdatectl usr/lib/.*libliveupdate.so.0 \
         usr/lib/.*libliveupdate-compat.so usr/lib/systemd/system/liveupdated.service \
         usr/lib/systemd/system/liveupdated.socket usr/share/man/man8/liveupdated.8.gz \
         usr/share/man/man3/libliveupdate.3.gz usr/share/doc/liveupdate/copyright \
         usr/share/doc/liveupdate/changelog.Debian.gz; do
  grep -qE "\./$f\$|\./$f " <<<"$contents" || fail "liveupdate lacks $f"
done
contents=$(dpkg-deb -c "$dev")
for f in usr/include/liveupdate/client.h usr/include/liveupdate/client.hpp \
         usr/lib/.*pkgconfig/liveupdate.pc usr/lib/.*cmake/liveupdate/liveupdateConfig.cmake \
         usr/share/doc/libliveupdate-dev/copyright; do
  grep -qE "\./$f\$" <<<"$contents" || fail "libliveupdate-dev lacks $f"
done
depends=$(dpkg-deb -f "$deb" Depends)
grep -q 'libc6 (>= ' <<<"$depends" || fail "liveupdate Depends has no shlibdeps result: $depends"
[ "$(dpkg-deb -f "$dev" Depends)" = "liveupdate (= $(dpkg-deb -f "$deb" Version))" ] ||
  fail "libliveupdate-dev does not depend on this liveupdate"

# 3. Install into a scratch root. --unpack, not -i: configuring would run the
# postinst (ldconfig) on this machine rather than in the root, and the
# libraries the packages depend on are the host's, not the root's
# (--force-depends).
root=$tmp/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
dpkg --root="$root" --force-not-root --force-script-chrootless --force-depends \
  --no-triggers --unpack "$deb" "$dev" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg --unpack"; }
# (Each listing is read whole before grep: with pipefail, a grep -q that
# stops early would fail the pipeline by SIGPIPE, now and then.)
grep -qx /usr/sbin/liveupdated <<<"$(dpkg --root="$root" -L liveupdate)" || fail "dpkg does not list liveupdated"

# 4. The installed binaries run against the installed library.
grep -qF "libliveupdate.so.0 => $root/usr/" <<<"$(ldd "$root/usr/sbin/liveupdated")" ||
  fail "installed liveupdated does not load the installed library: $(ldd "$root/usr/sbin/liveupdated")"
version=$("$root/usr/sbin/liveupdated" --version)
[ "$version" = "liveupdated $(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')" ] || fail "--version: $version"
[ "$(sed -n 's/^ExecStart=//p' "$root/usr/lib/systemd/system/liveupdated.service")" = /usr/sbin/liveupdated ] ||
  fail "the unit does not run /usr/sbin/liveupdated"

run=$tmp/run
"$root/usr/sbin/liveupdated" --runtime-dir "$run" 2>"$tmp/daemon.log" &
daemon=$!
status=1
for _ in $(seq 1000); do  # a liveness bound; it serves in milliseconds
  if out=$("$root/usr/bin/liveupdatectl" --runtime-dir "$run" status 2>&1); then status=0; break; fi
  kill -0 "$daemon" 2>/dev/null || break
  sleep 0.01
done
[ $status -eq 0 ] || { cat "$tmp/daemon.log" >&2; fail "installed liveupdatectl status: $out"; }
grep -q "epoch 0" <<<"$out" || fail "status: $out"
kill "$daemon"
wait "$daemon" || fail "the installed daemon did not stop cleanly: $?"
daemon=""

# 5. lintian: no error in either package.
lintian_out=$(lintian "$deb" "$dev" 2>&1) || true
if grep -q '^E: ' <<<"$lintian_out"; then
  echo "$lintian_out" >&2
  fail "lintian reports errors"
fi
echo "ok: $(basename "$deb") and $(basename "$dev") install, run and pass lintian"
