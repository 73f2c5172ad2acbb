"""lwfm_support_score_topk(_features) and SupportSet.top_k / predict(top=k):
the k best classes of each query equal the stable argsort of the full logits
row (ties: lower class index first), for every method."""
import ctypes
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

TEST_MODELS = Path(os.environ.get("LWFM_TEST_MODELS") or ROOT / "build" / "tests")


@pytest.fixture(params=["lwfm-spm", "dn4", "mml", "rcn"])
def model_path(request, tmp_path):
    if request.param == "lwfm-spm":
        return ROOT / "models" / "omniglot.npz"   # calibrated: probabilities are not plain softmax
    if request.param == "dn4":
        return TEST_MODELS / "dn4_random.npz"
    if request.param == "rcn":
        return ROOT / "models" / "omniglot-rcn.npz"
    from test_mml import export_mml
    return export_mml(tmp_path, distance="kl")[0]


def gallery(m, rng, shots, n_query, size=28):
    C, fh, fw = m.feature_shape(size, size)
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(shots)]).astype(np.int32)
    rng.shuffle(labels)
    sf = np.abs(rng.standard_normal((len(labels), C, fh, fw), dtype=np.float32))
    qf = np.abs(rng.standard_normal((n_query, C, fh, fw), dtype=np.float32))
    return sf, labels, qf


def test_topk_equals_argsort(lib, model_path):
    rng = np.random.default_rng(1)
    shots = [1, 3, 2, 1, 4, 2, 1, 2, 3]         # unequal shots
    with lib.Model(model_path) as m:
        sf, labels, qf = gallery(m, rng, shots, 6)
        with m.prepare_support(sf, labels, features=True) as s:
            full = s.score(qf)
            probs = m.probabilities(full)
            for k in (1, 4, len(shots)):
                r = s.top_k(qf, k)
                order = np.argsort(-full, axis=1, kind="stable")[:, :k]
                np.testing.assert_array_equal(r.indices, order)
                rows = np.arange(len(qf))[:, None]
                np.testing.assert_array_equal(r.logits, full[rows, order])
                np.testing.assert_allclose(r.probabilities, probs[rows, order], rtol=1e-6,
                                           atol=1e-7)
                assert r.classes == [[s.classes[c] for c in row] for row in order]
            assert (np.diff(s.top_k(qf, len(shots)).logits, axis=1) <= 0).all()


def test_topk_ties_lower_index_first(lib, model_path):
    rng = np.random.default_rng(2)
    with lib.Model(model_path) as m:
        sf, _, qf = gallery(m, rng, [1], 3)
        way = 16    # LWFM-SPM's attention runs 16 supports to a vector: equal lanes, equal logits
        same = np.repeat(sf, way, axis=0)            # every class the same support image
        labels = np.arange(way, dtype=np.int32)
        with m.prepare_support(same, labels, features=True) as s:
            full = s.score(qf)
            assert (full == full[:, :1]).all()       # the precondition: all logits tie
            r = s.top_k(qf, 4)
            np.testing.assert_array_equal(r.indices, np.tile(np.arange(4), (3, 1)))
        # two tied best classes (3 and 1 hold the query itself) among others
        other = np.abs(rng.standard_normal((way,) + sf.shape[1:], dtype=np.float32))
        other[3] = other[1] = qf[0]
        with m.prepare_support(other, labels, features=True) as s:
            full = s.score(qf[:1])
            assert full[0, 1] == full[0, 3]
            order = np.argsort(-full, axis=1, kind="stable")[:, :3]
            np.testing.assert_array_equal(s.top_k(qf[:1], 3).indices, order)
            pos = list(order[0])
            if 1 in pos and 3 in pos:
                assert pos.index(1) < pos.index(3)


def test_topk_k_range_and_untouched_outputs(lib):
    rng = np.random.default_rng(3)
    with lib.Model(ROOT / "models" / "omniglot.npz") as m:
        sf, labels, qf = gallery(m, rng, [1, 2, 1], 2)
        with m.prepare_support(sf, labels, features=True) as s:
            assert s.top_k(qf, 3).indices.shape == (2, 3)     # k = way works
            for k in (0, 4):
                with pytest.raises(ValueError):
                    s.top_k(qf, k)
            lib_c = lib._library()
            h = s._h()
            n, (C, fh, fw) = len(qf), qf.shape[1:]
            for k, cap, status in ((4, 8, "invalid argument"),
                                   (0, 8, "invalid argument"),
                                   (2, 3, "output buffer too small")):
                idx = np.full(8, -7, np.int32)
                lg = np.full(8, -7, np.float32)
                st = lib_c.lwfm_support_score_topk_features(
                    h, qf.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n, C, fh, fw, k,
                    idx.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                    lg.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), None, cap)
                assert lib_c.lwfm_status_string(st).decode() == status
                assert (idx == -7).all() and (lg == -7).all()
            # logits and probabilities are optional
            idx = np.empty(4, np.int32)
            st = lib_c.lwfm_support_score_topk_features(
                h, qf.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n, C, fh, fw, 2,
                idx.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), None, None, 4)
            assert st == 0
            np.testing.assert_array_equal(idx.reshape(2, 2), s.top_k(qf, 2).indices)


def test_topk_images_and_predict(lib):
    rng = np.random.default_rng(4)
    with lib.Model(ROOT / "models" / "omniglot.npz") as m:
        support = rng.random((8, 1, 28, 28), dtype=np.float32)
        query = rng.random((3, 1, 28, 28), dtype=np.float32)
        names = ["a", "b", "c", "d", "a", "b", "c", "d"]
        with m.prepare_support(support, names) as s:
            full = s.score(query)
            r = s.top_k(query, 2)
            np.testing.assert_array_equal(r.indices, np.argsort(-full, 1, kind="stable")[:, :2])
            assert r.classes == [[s.classes[c] for c in row] for row in r.indices]
            every = s.predict(query)
            top = s.predict(query, top=2)
            assert [[p.name for p in row] for row in top] == [[s.classes[c] for c in row]
                                                              for row in r.indices]
            for a, b in zip(top, every):
                np.testing.assert_allclose([p.probability for p in a],
                                           [p.probability for p in b[:2]], rtol=1e-6)
            assert s.predict(query, top=0) == [[], [], []]
            assert len(s.predict(query, top=99)[0]) == 4
