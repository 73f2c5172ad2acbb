#!/bin/sh
# `meson install` as a user gets it (meson test `install` and `consumers`).
#
#   install_check.sh install|consumers BUILD_DIR SOURCE_DIR PREFIX PYTHON_DIR VERSION
#
# Installs the build into a fresh DESTDIR, then, as the acceptance of issue 17
# asks, with no PYTHONPATH, LWFM_LIBRARY or LWFM_MODEL_PATH:
#   install    python3 -c "import lwfm; print(lwfm.__version__)", every module's
#              --help (lwfm.convert needs lwfm_ref), lwfm.Model("omniglot"),
#              `lwfm info --model omniglot`, the man page;
#   consumers  a C program built with CMake's find_package(lwfm) and with
#              pkg-config, each run on the installed omniglot model.
# As root, where `unshare --mount` works (developer machines, the fresh-machine
# CI root), DESTDIR/PREFIX is bind-mounted over PREFIX in a private mount
# namespace: the commands then see a real install at PREFIX, nothing else
# changes, and nothing outside the namespace sees it. Otherwise the same
# commands run against DESTDIR/PREFIX with the few variables that stand in
# for the prefix (PATH, PYTHONPATH, CMAKE_PREFIX_PATH, PKG_CONFIG_*): weaker,
# said on stdout (LWFM_INSTALL_CHECK_NO_NAMESPACE=1 forces this way).
set -eu
mode=$1 build=$2 src=$3 prefix=$4 pydir=$5 version=$6
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lwfm-$mode.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest

meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; echo "FAIL: meson install"; exit 1; }

# What the install must hold (relative to the prefix).
libdir=$(cd "$dest$prefix" && find lib* -name liblwfm.so.0 2>/dev/null | head -1)
[ -n "$libdir" ] || { echo "FAIL: no liblwfm.so.0 installed; installed:";
                      (cd "$dest" && find . -type f | head -40); exit 1; }
libdir=${libdir%/liblwfm.so.0}
for f in bin/lwfm include/lwfm/lwfm.h "$libdir/pkgconfig/lwfm.pc" \
         "$libdir/cmake/lwfm/lwfmConfig.cmake" "$libdir/cmake/lwfm/lwfmConfigVersion.cmake" \
         share/man/man1/lwfm.1 share/lwfm/models/omniglot.npz share/lwfm/models/omniglot-rcn.npz \
         "$pydir/lwfm/py.typed" "$pydir/lwfm/__init__.pyi" "$pydir/lwfm_ref/__init__.py"; do
  [ -e "$dest$prefix/$f" ] || { echo "FAIL: $prefix/$f not installed"; exit 1; }
done
for m in "$src"/bindings/python/lwfm/*.py "$src"/bindings/python/lwfm_ref/*.py; do
  rel=$(basename "$(dirname "$m")")/$(basename "$m")
  [ -e "$dest$prefix/$pydir/$rel" ] || { echo "FAIL: $pydir/$rel not installed"; exit 1; }
done
echo "ok: installed files (library in $prefix/$libdir, Python package in $prefix/$pydir)"

# The package lies where Debian's python3 searches for this prefix.
if [ "$pydir" != "${pydir#lib/python}" ]; then
  /usr/bin/python3 -c 'import site, sys; sys.exit(sys.argv[1] not in site.getsitepackages())' \
      "$prefix/$pydir" ||
    { echo "FAIL: $prefix/$pydir is not on /usr/bin/python3's search path"; exit 1; }
  echo "ok: $prefix/$pydir is on python3's search path"
fi

# The checks themselves, as a user runs them after `meson install`.
cat >"$tmp/checks.sh" <<'CHECKS'
set -eu
mode=$1 src=$2 tmp=$3 version=$4 prefix=$5
cd "$tmp"
if [ "$mode" = install ]; then
  got=$(python3 -c "import lwfm; print(lwfm.__version__)")
  [ "$got" = "$version" ] || { echo "FAIL: lwfm.__version__ = '$got', header says $version"; exit 1; }
  echo "ok: python3 -c 'import lwfm; print(lwfm.__version__)' -> $got"
  for m in convert evaluate calibrate train; do
    python3 -m lwfm.$m --help >/dev/null || { echo "FAIL: python3 -m lwfm.$m --help"; exit 1; }
  done
  echo "ok: python3 -m lwfm.convert|evaluate|calibrate|train --help"
  python3 -c "
import lwfm
with lwfm.Model('omniglot') as m:
    assert m.input_shape == (1, 28, 28), m.input_shape
    assert lwfm.library_version() == lwfm.__version__
    print('ok: lwfm.Model(\"omniglot\") from', m.path)
"
  lwfm info --model omniglot >"$tmp/info.txt" || { echo "FAIL: lwfm info --model omniglot"; exit 1; }
  grep -q "lwfm-spm" "$tmp/info.txt" || { cat "$tmp/info.txt"; echo "FAIL: lwfm info output"; exit 1; }
  echo "ok: lwfm info --model omniglot ($(command -v lwfm))"
  mkdir -p "$tmp/mine" && cp "$prefix/share/lwfm/models/omniglot-rcn.npz" "$tmp/mine/pick.npz"
  LWFM_MODEL_PATH="$tmp/nothing:$tmp/mine" lwfm info --model pick | grep -q "rcn" ||
    { echo "FAIL: lwfm info --model pick with LWFM_MODEL_PATH"; exit 1; }
  if lwfm info --model no-such-model 2>"$tmp/err.txt"; then echo "FAIL: unknown model accepted"; exit 1; fi
  grep -q "share/lwfm/models" "$tmp/err.txt" || { cat "$tmp/err.txt"; echo "FAIL: no search path in the message"; exit 1; }
  echo "ok: LWFM_MODEL_PATH, and an unknown name's message names the folders searched"
  grep -q '^\.TH LWFM 1' "$prefix/share/man/man1/lwfm.1" || { echo "FAIL: man page"; exit 1; }
  echo "ok: man page lwfm.1"
else
  mkdir cm && cd cm
  cmake -S "$src/tests/consumer" -B b -DCMAKE_BUILD_TYPE=Release >cmake.log 2>&1 ||
    { cat cmake.log; echo "FAIL: cmake configure (find_package(lwfm))"; exit 1; }
  cmake --build b >>cmake.log 2>&1 || { cat cmake.log; echo "FAIL: cmake build"; exit 1; }
  ./b/consumer "$prefix/share/lwfm/models/omniglot.npz" || { echo "FAIL: CMake consumer"; exit 1; }
  echo "ok: CMake find_package(lwfm) consumer"
  cd "$tmp"
  cc -std=c99 -Wall -Werror $(pkg-config --cflags lwfm) "$src/tests/consumer/consumer.c" -o pc \
     $(pkg-config --libs lwfm) -Wl,-rpath,"$(pkg-config --variable=libdir lwfm)" ||
    { echo "FAIL: pkg-config consumer build"; exit 1; }
  ./pc "$prefix/share/lwfm/models/omniglot.npz" || { echo "FAIL: pkg-config consumer"; exit 1; }
  echo "ok: pkg-config consumer"
fi
CHECKS

clean="env -u PYTHONPATH -u LWFM_LIBRARY -u LWFM_MODEL_PATH -u LD_LIBRARY_PATH -u CMAKE_PREFIX_PATH -u PKG_CONFIG_PATH"
# the probe does the real bind mount: unshare alone may work where mount does not
if [ -z "${LWFM_INSTALL_CHECK_NO_NAMESPACE:-}" ] && [ "$(id -u)" = 0 ] && [ -d "$prefix" ] &&
   unshare --mount --propagation private sh -c 'mount --bind "$1" "$2"' sh "$dest$prefix" \
     "$prefix" 2>/dev/null; then
  echo "== $mode: DESTDIR bind-mounted over $prefix in a private mount namespace, no variables"
  $clean PATH="$prefix/bin:/usr/bin:/bin" unshare --mount --propagation private \
    sh -c 'mount --bind "$1" "$2" && shift 2 && exec sh "$@"' sh "$dest$prefix" "$prefix" \
    "$tmp/checks.sh" "$mode" "$src" "$tmp" "$version" "$prefix"
else
  echo "== $mode: not root or no mount namespace: DESTDIR with PATH/PYTHONPATH/CMAKE_PREFIX_PATH/PKG_CONFIG_*"
  $clean PATH="$dest$prefix/bin:/usr/bin:/bin" PYTHONPATH="$dest$prefix/$pydir" \
    CMAKE_PREFIX_PATH="$dest$prefix" PKG_CONFIG_PATH="$dest$prefix/$libdir/pkgconfig" \
    PKG_CONFIG_SYSROOT_DIR="$dest" \
    sh "$tmp/checks.sh" "$mode" "$src" "$tmp" "$version" "$dest$prefix"
fi
echo "PASS: $mode"
