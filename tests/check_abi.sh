#!/bin/sh
# ABI check (docs/api-stability.md): the freshly built library against the
# newest recorded release baseline, abi/liblwfm-X.Y.Z.abi (written by
# `make abi-baseline` with abidw). Additions pass; anything else that abidiff
# reports (removed or changed functions, changed public types, enumerator
# values, ...) fails.
#
#   check_abi.sh LIBRARY SOURCE_ROOT
#
# Exit 77 (meson: skipped) when abidiff is not installed (Debian package
# abigail-tools) or no baseline is recorded yet. Without debug info in the
# library (a build without -g) only the exported symbols are compared.
set -u
lib="$1"
root="$2"
if ! command -v abidiff >/dev/null 2>&1; then
  echo "abidiff not found (Debian: apt-get install abigail-tools): ABI check skipped"
  exit 77
fi
baseline=$(ls "$root"/abi/liblwfm-*.abi 2>/dev/null | sort -V | tail -n 1)
if [ -z "$baseline" ]; then
  echo "no baseline in $root/abi: ABI check skipped"
  exit 77
fi
echo "library:  $lib"
echo "baseline: $baseline"
if readelf -S "$lib" 2>/dev/null | grep -q '\.debug_info'; then
  types=yes
else
  types=no
  echo "note: $lib has no debug info (build with -Ddebug=true, as the Makefile does):"
  echo "      only exported symbols are compared, not types"
fi
out=$(abidiff --no-added-syms --headers-dir2 "$root/include/lwfm" --drop-private-types \
      --exported-interfaces-only "$baseline" "$lib" 2>&1)
rc=$?
[ -n "$out" ] && printf '%s\n' "$out"
# abidiff's exit status is a bit field: 1 error, 2 usage error, 4 ABI change,
# 8 incompatible ABI change. Added symbols are filtered out above, so any
# change left is one the policy forbids within a major version.
if [ $((rc & 3)) -ne 0 ]; then
  echo "FAIL: abidiff could not compare (exit status $rc)"
  exit 1
fi
if [ $((rc & 12)) -ne 0 ]; then
  echo "FAIL: the ABI changed against $(basename "$baseline") (abidiff exit status $rc)."
  echo "Within ABI version $(basename "$baseline") only additions are allowed; see docs/api-stability.md."
  exit 1
fi
echo "ABI compatible with $(basename "$baseline") (types compared: $types)"
