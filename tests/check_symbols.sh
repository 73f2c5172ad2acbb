#!/bin/sh
# Only the public lwfm_* symbols (lwfm_ and a letter; lwfm__* names are
# internal) are exported by the shared library: lib/liblwfm.map.
set -eu
lib="$1"
syms=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDBRVWi]/ {print $3}' | sed 's/@.*//')
[ -n "$syms" ] || { echo "no exported symbols found in $lib"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -v '^lwfm_[a-z]' | grep -v '^_init$' | grep -v '^_fini$' || true)
if [ -n "$bad" ]; then
  echo "symbols exported outside the lwfm_ namespace:"; printf '%s\n' "$bad"; exit 1
fi
echo "$(printf '%s\n' "$syms" | grep -c '^lwfm_[a-z]') lwfm_* symbols exported, nothing else"
