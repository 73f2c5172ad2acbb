#!/bin/sh
# Only lwfm_* symbols are exported by the shared library.
set -eu
lib="$1"
syms=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDBRVW]/ {print $3}' | sed 's/@.*//')
[ -n "$syms" ] || { echo "no exported symbols found in $lib"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -v '^lwfm_' | grep -v '^_init$' | grep -v '^_fini$' || true)
if [ -n "$bad" ]; then
  echo "symbols exported outside the lwfm_ namespace:"; printf '%s\n' "$bad"; exit 1
fi
echo "$(printf '%s\n' "$syms" | grep -c '^lwfm_') lwfm_* symbols exported, nothing else"
