#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks one man page as its readers get it: man renders it without a single
# warning and, for a tool's page, the page and the tool's --help list the
# same options and the same exit statuses, both ways.
# usage: check_page.sh PAGE [TOOL [SUBCOMMAND...]]
set -euo pipefail
page=$1
shift
export LC_ALL=C.UTF-8 MANWIDTH=80

warnings=$(man -l --warnings=w "$page" 2>&1 >/dev/null)
if [ -n "$warnings" ]; then
  echo "man -l warns about $page:" >&2
  echo "$warnings" >&2
  exit 1
fi
[ $# -eq 0 ] && { echo "ok: $page renders cleanly"; exit 0; }

tool=$1
shift
text=$(man -l "$page" 2>/dev/null)
help=$("$tool" --help)
for sub in "$@"; do help+=$'\n'$("$tool" "$sub" --help); done

# Options: the lines that define one start with it, in --help and in the page.
options() { grep -E '^\s+(-[a-z], ?)?--[a-z]' | grep -oE -- '--[a-z][a-z-]*' | sort -u; }
# Exit statuses: "  N  text" after "Exit status:" in --help; in the page, the
# tags of the EXIT STATUS section.
help_codes() { sed -n '/^Exit status:/,/^$/p' | grep -oE '^\s+[0-9]+\s' | tr -d ' ' | sort -u; }
page_codes() { sed -n '/^EXIT STATUS/,/^[A-Z]/p' | grep -oE '^\s+[0-9]+\s*$' | tr -d ' ' | sort -u; }

status=0
compare() {  # what, from --help, from the page
  if [ "$2" != "$3" ]; then
    echo "$tool: $1 differ between --help and $page:" >&2
    diff <(echo "$2") <(echo "$3") | sed -n 's/^</  only in --help:/p; s/^>/  only in the page:/p' >&2 || true
    status=1
  fi
}
compare options "$(options <<<"$help")" "$(options <<<"$text")"
compare "exit statuses" "$(help_codes <<<"$help")" "$(page_codes <<<"$text")"
[ -n "$(help_codes <<<"$help")" ] || { echo "$tool --help lists no exit status" >&2; status=1; }
[ $status -eq 0 ] && echo "ok: $page and $tool --help agree"
exit $status
