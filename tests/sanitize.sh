#!/bin/sh
# Sanitizer stage of CI (`make test-sanitize`, .ci/run), in build dirs of its
# own so that the normal build is untouched:
#
#  1. build-asan: the whole project with AddressSanitizer + UndefinedBehavior-
#     Sanitizer (UBSan fatal: -fno-sanitize-recover=all). Runs every C test of
#     the meson suite (all tests but the Python ones and valgrind, which cannot
#     run ASan binaries) with leak checking on, then a chosen set of Python
#     tests with the ASan runtime preloaded into /usr/bin/python3 (leak
#     checking off there: CPython and PyTorch keep memory by design).
#  2. build-tsan: the library without OpenMP (-Dopenmp=disabled) under
#     ThreadSanitizer; runs the concurrency test (tests/c/test_concurrency.c).
#     oneDNN and its libgomp are not instrumented: they run single-threaded
#     inside each of the test's threads (OMP_NUM_THREADS=1), and
#     tests/tsan.supp names the few reports from uninstrumented system code.
#
# Environment: ASAN_BUILD, TSAN_BUILD (build dirs), SANITIZE_PYTHON_TESTS
# (pytest arguments replacing the default selection below).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ASAN_BUILD=${ASAN_BUILD:-build-asan}
TSAN_BUILD=${TSAN_BUILD:-build-tsan}
PYTHON=/usr/bin/python3

# Python tests run under ASan: the bindings and every public call they wrap
# (test_api), the episode API's parity with the PyTorch reference
# (test_episode_parity), the per-pair views, weight files (incl. defective
# ones), the assignment solver against SciPy, preprocessing, the DN4 and MML
# heads. Left out for time (about 10 more minutes on 2 cores under ASan):
# backbone parity (the convolutions run in oneDNN, which is not instrumented),
# the RCN and ResNet-12 heads, the trainer, the CLI and converter suites, and
# the reference's own tests, which do not load the library.
PY_TESTS=${SANITIZE_PYTHON_TESTS:-"tests/python/test_api.py tests/python/test_episode_parity.py
  tests/python/test_model_load.py tests/python/test_pair.py tests/python/test_assign_scipy.py
  tests/python/test_preprocess.py tests/python/test_dn4.py tests/python/test_mml.py
  tests/python/test_reliability.py"}

stamp() { date -u +%H:%M:%S; }

# GCC 12's sanitizer runtimes cannot place their shadow memory when the kernel
# randomises mmap with more than 28 bits (the default of some newer kernels):
# there, run the instrumented programs without address randomisation.
norand=
if [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)" -gt 28 ] &&
   setarch "$(uname -m)" -R true 2>/dev/null; then
  norand="setarch $(uname -m) -R"
  echo "vm.mmap_rnd_bits > 28: sanitized programs run under '$norand'"
fi
t0=$(date +%s)

# ---------------------------------------------------------------- ASan+UBSan
echo "== $(stamp) ASan+UBSan build in $ASAN_BUILD"
if [ ! -f "$ASAN_BUILD/build.ninja" ]; then
  meson setup "$ASAN_BUILD" --buildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args=-fno-sanitize-recover=all -Dcpp_args=-fno-sanitize-recover=all
fi
ninja -C "$ASAN_BUILD"

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# LSan on: the C tests must not leak. oneDNN's and libgomp's caches stay
# reachable (not reported).
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1

# Left out: Python suites (run below, with the runtime preloaded) and the
# suites that drive the library or the lwfm tool from uninstrumented programs
# (python3, cmake's consumer build): cli, cli-photos, install, consumers.
c_tests=$(meson test -C "$ASAN_BUILD" --no-rebuild --list 2>/dev/null |
  grep -v -e '^python' -e '^cli$' -e '^cli-photos$' -e '^install$' -e '^consumers$' \
    -e '^examples-valgrind$' | tr '\n' ' ')
echo "== $(stamp) C tests under ASan+UBSan: $c_tests"
# shellcheck disable=SC2086
$norand meson test -C "$ASAN_BUILD" --no-rebuild --print-errorlogs --num-processes 2 \
  --timeout-multiplier 3 $c_tests

echo "== $(stamp) Python tests under ASan+UBSan (libasan preloaded)"
asan_rt=$(gcc -print-file-name=libasan.so)
[ -f "$asan_rt" ] || { echo "libasan.so not found ($asan_rt)"; exit 1; }
# shellcheck disable=SC2086
$norand env LD_PRELOAD="$asan_rt" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
  LWFM_LIBRARY="$root/$ASAN_BUILD/liblwfm.so" \
  PYTHONPATH="$root/bindings/python" \
  OMP_NUM_THREADS=2 \
  "$PYTHON" -m pytest -q -p no:cacheprovider $PY_TESTS

# ---------------------------------------------------------------------- TSan
echo "== $(stamp) ThreadSanitizer build in $TSAN_BUILD (OpenMP off)"
if [ ! -f "$TSAN_BUILD/build.ninja" ]; then
  meson setup "$TSAN_BUILD" --buildtype=debugoptimized -Dopenmp=disabled \
    -Db_sanitize=thread -Dcli=disabled
fi
ninja -C "$TSAN_BUILD" tests/test_concurrency tests/lwfm_small.npz

echo "== $(stamp) concurrency test under ThreadSanitizer"
$norand env OMP_NUM_THREADS=1 \
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$root/tests/tsan.supp" \
  LWFM_CONCURRENCY_ROUNDS=3 \
  "$TSAN_BUILD/tests/test_concurrency" "$TSAN_BUILD/tests/lwfm_small.npz" \
  "$TSAN_BUILD/tests/dn4_random.npz"

echo "== $(stamp) sanitizers: all clean ($(( $(date +%s) - t0 )) s)"
