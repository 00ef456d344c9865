#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Every source file of the repository says its licence (LICENSE: Apache-2.0)
# in its first three lines, in the SPDX form packagers read.
set -euo pipefail
cd "${1:?usage: spdx_test.sh SOURCE_DIR}"
missing=()
while IFS= read -r f; do
  grep -q 'SPDX-License-Identifier: Apache-2.0' <<<"$(head -n 3 "$f")" || missing+=("$f")
done < <(git ls-files -- '*.c' '*.h' '*.cpp' '*.hpp' '*.sh' '*.cmake' '*.cmake.in' 'CMakeLists.txt' '*/CMakeLists.txt' '.ci/run')
if [ ${#missing[@]} -gt 0 ]; then
  printf 'no Apache-2.0 SPDX line in the first three lines of:\n' >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi
echo "spdx: every source file says Apache-2.0"
