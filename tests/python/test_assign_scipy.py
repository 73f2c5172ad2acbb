"""lwfm_linear_assignment() against scipy.optimize.linear_sum_assignment.

Calls the C function through ctypes on the shared library named by
LWFM_LIBRARY (skipped when unset). For every size 1..64 and several kinds of
square matrices the optimal total must match SciPy's (relative 1e-9; exactly
for integer costs), the assignment must be a permutation and the returned
total must be its row-order sum. Error statuses and untouched outputs on
failure are checked too.
"""
import ctypes
import math
import os

import numpy as np
import pytest

linear_sum_assignment = pytest.importorskip("scipy.optimize").linear_sum_assignment

LWFM_OK = 0
LWFM_ERR_INVALID_ARGUMENT = 1
LWFM_ERR_LIMIT = 8
LWFM_ERR_NONFINITE = 11
MAX_N = 4096

KINDS = ("uniform", "int0..3", "int-50..50", "negative", "cosine", "constant-row", "zero",
         "huge")


@pytest.fixture(scope="module")
def clib():
    path = os.environ.get("LWFM_LIBRARY")
    if not path:
        pytest.skip("LWFM_LIBRARY is not set")
    lib = ctypes.CDLL(path)
    fn = lib.lwfm_linear_assignment
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    lib.lwfm_last_error.restype = ctypes.c_char_p
    lib.lwfm_last_error.argtypes = []
    return lib


def solve(lib, cost, n=None, assignment=True, total=True):
    """Returns (status, assignment array, total) with the output buffers
    pre-filled with sentinels (-7 and -123.0)."""
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if n is None:
        n = cost.shape[0]
    out = np.full(cost.shape[0], -7, dtype=np.int64)  # n may be bogus
    tot = ctypes.c_double(-123.0)
    st = lib.lwfm_linear_assignment(
        cost.ctypes.data, n,
        out.ctypes.data if assignment else None,
        ctypes.addressof(tot) if total else None)
    return st, out, tot.value


def make(kind, n, rng):
    if kind == "uniform":
        return rng.random((n, n))
    if kind == "int0..3":
        return rng.integers(0, 4, (n, n)).astype(np.float64)
    if kind == "int-50..50":
        return rng.integers(-50, 51, (n, n)).astype(np.float64)
    if kind == "negative":
        return -5.0 * rng.random((n, n)) + 1.0
    if kind == "cosine":  # the SPM cost: 1 - cosine similarity of pixel features
        a = rng.standard_normal((n, 16))
        b = rng.standard_normal((n, 16))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        return 1.0 - a @ b.T
    if kind == "constant-row":
        c = rng.integers(0, 10, (n, n)).astype(np.float64)
        c[rng.integers(0, n)] = 4.0
        return c
    if kind == "zero":
        return np.zeros((n, n))
    if kind == "huge":
        return (rng.random((n, n)) * 2.0 - 1.0) * 1e250
    raise ValueError(kind)


@pytest.mark.parametrize("n", range(1, 65))
def test_matches_scipy(clib, n):
    rng = np.random.default_rng(1000 + n)
    for kind in KINDS:
        for rep in range(3):
            c = make(kind, n, rng)
            st, a, total = solve(clib, c)
            assert st == LWFM_OK, (kind, rep, clib.lwfm_last_error())
            assert sorted(a.tolist()) == list(range(n)), (kind, rep, a)
            row_order = 0.0
            for i in range(n):
                row_order += float(c[i, a[i]])
            assert total == row_order, (kind, rep)
            r, col = linear_sum_assignment(c)
            ref = float(c[r, col].sum())
            if kind.startswith("int") or kind in ("constant-row", "zero"):
                assert total == ref, (kind, rep, total, ref)
            else:
                scale = max(abs(ref), n * float(np.abs(c).max()), 1e-300)
                assert abs(total - ref) <= 1e-9 * scale, (kind, rep, total, ref)


def test_larger_sizes(clib):
    rng = np.random.default_rng(7)
    for n in (100, 150, 200):
        for kind in ("uniform", "int0..3", "cosine"):
            c = make(kind, n, rng)
            st, a, total = solve(clib, c)
            assert st == LWFM_OK
            assert sorted(a.tolist()) == list(range(n))
            r, col = linear_sum_assignment(c)
            ref = float(c[r, col].sum())
            assert math.isclose(total, ref, rel_tol=1e-9, abs_tol=1e-9), (n, kind, total, ref)


def test_trivial(clib):
    st, a, total = solve(clib, np.array([[3.5]]))
    assert st == LWFM_OK and a.tolist() == [0] and total == 3.5
    st, a, total = solve(clib, np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert st == LWFM_OK and a.tolist() == [1, 0] and total == 0.0
    # total_cost may be NULL
    st, a, _ = solve(clib, np.array([[2.0, 1.0], [1.0, 2.0]]), total=False)
    assert st == LWFM_OK and a.tolist() == [1, 0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (2, 3), (4, 4)])
def test_nonfinite(clib, bad, where):
    c = np.random.default_rng(0).random((5, 5))
    c[where] = bad
    st, a, total = solve(clib, c)
    assert st == LWFM_ERR_NONFINITE
    assert (a == -7).all() and total == -123.0
    msg = clib.lwfm_last_error().decode()
    assert "cost[%d][%d]" % where in msg, msg


def test_bad_arguments(clib):
    c = np.random.default_rng(0).random((4, 4))
    for n in (0, -1, -(2**40)):
        st, a, total = solve(clib, c, n=n)
        assert st == LWFM_ERR_INVALID_ARGUMENT, n
        assert (a == -7).all() and total == -123.0
    for n in (MAX_N + 1, 2**40):
        st, a, total = solve(clib, c, n=n)
        assert st == LWFM_ERR_LIMIT, n
        assert (a == -7).all() and total == -123.0
    st, a, total = solve(clib, c, assignment=False)
    assert st == LWFM_ERR_INVALID_ARGUMENT
    assert total == -123.0
    out = np.full(4, -7, dtype=np.int64)
    st = clib.lwfm_linear_assignment(None, 4, out.ctypes.data, None)
    assert st == LWFM_ERR_INVALID_ARGUMENT
    assert (out == -7).all()
    # a failure is followed by a clean success (the detail message is cleared)
    st, _, _ = solve(clib, c)
    assert st == LWFM_OK and clib.lwfm_last_error() == b""
