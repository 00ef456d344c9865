# SPDX-License-Identifier: Apache-2.0
# Sourced by scripts/demo.sh and bench/kvcache_compare.sh.
# Waiting without a fork per poll (on 2 busy CPUs a fork costs milliseconds,
# which would count in the times measured): `read -t` on a pipe nobody writes
# is a sleep, a log is read through one open fd, /proc tells a process' state.
exec {nap_fd}<> <(:)
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }
wait_log() {  # file text seconds: a line of the file containing text, within the time
  local fd line deadline=$((SECONDS + $3))
  exec {fd}<"$1" || return 1
  while :; do
    while :; do
      if IFS= read -r line <&"$fd"; then
        [[ $line == *"$2"* ]] && { exec {fd}<&-; return 0; }
      else
        [[ $line == *"$2"* ]] && { exec {fd}<&-; return 0; }
        break
      fi
    done
    [ $SECONDS -lt "$deadline" ] || { exec {fd}<&-; return 1; }
    nap 0.0005
  done
}
wait_exit() {  # pid seconds: gone (or a zombie: our child) within the time
  local st deadline=$((SECONDS + $2))
  while :; do
    st=""
    { read -r _ _ st _ <"/proc/$1/stat"; } 2>/dev/null || return 0
    [ "$st" = Z ] && return 0
    [ $SECONDS -lt "$deadline" ] || return 1
    nap 0.0005
  done
}
