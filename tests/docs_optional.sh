#!/bin/sh
# meson test `docs-optional`: `meson setup -Ddocs=true` on a machine without
# doxygen configures (with a message) instead of failing. Skipped (77) where
# doxygen is installed (it is not among the Makefile's DEPS).
#   docs_optional.sh SOURCE_DIR
set -eu
src=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lwfm-docs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if command -v doxygen >/dev/null 2>&1; then
  echo "doxygen is installed: nothing to check"; exit 77
fi
if ! meson setup "$tmp/b" "$src" -Ddocs=true -Dtests=false \
     -Dexamples=false -Dcli=disabled >"$tmp/log" 2>&1; then
  cat "$tmp/log"; echo "FAIL: meson setup -Ddocs=true fails without doxygen"; exit 1
fi
grep -q "doxygen not found" "$tmp/log" || { cat "$tmp/log"; echo "FAIL: no message"; exit 1; }
echo "PASS: -Ddocs=true without doxygen configures, with: $(grep 'doxygen not found' "$tmp/log")"
