"""Models and prepared support sets that persist (issue 18): the model
fingerprint, pickling by value, saved support sets."""
import hashlib
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

# the build's test models (tests/make_test_models.py), next to the library
BUILD_TESTS = (Path(os.environ["LWFM_LIBRARY"]).resolve().parent / "tests"
               if os.environ.get("LWFM_LIBRARY") else ROOT / "build" / "tests")
SMALL = BUILD_TESTS / "lwfm_small.npz"
TINY = BUILD_TESTS / "lwfm_tiny.npz"


def canonical_fingerprint(path):
    """The fingerprint as docs/weight-format.md defines it, from NumPy alone."""
    h = hashlib.sha256(b"lwfm-weights-v1\0")
    with np.load(path) as z:
        for name in sorted(z.files, key=lambda k: k.encode()):
            a = z[name]
            h.update(name.encode() + b"\0")
            floating = a.dtype.kind == "f"
            h.update(b"f" if floating else b"i")
            h.update(struct.pack("<I", a.ndim) + b"".join(struct.pack("<q", d) for d in a.shape))
            h.update(np.ascontiguousarray(a, "<f4" if floating else "<i8").tobytes())
    return h.hexdigest()


@pytest.fixture
def small(lib):
    if not SMALL.exists():
        pytest.skip("build/tests/lwfm_small.npz is made by the build")
    return SMALL


def test_fingerprint_is_the_documented_digest_of_the_arrays(lib, small, tmp_path):
    """The fingerprint is the SHA-256 of the arrays as docs/weight-format.md
    says: NumPy reproduces it; the same arrays re-saved compressed keep it,
    one changed value changes it."""
    with lib.Model(small) as m:
        fp = m.fingerprint
    assert len(fp) == 64 and fp == canonical_fingerprint(small)
    with np.load(small) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(tmp_path / "same.npz", **arrays)
    with lib.Model(tmp_path / "same.npz") as m:
        assert m.fingerprint == fp
    key = next(k for k in sorted(arrays) if arrays[k].dtype == np.float32 and arrays[k].size)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] += 1.0
    np.savez(tmp_path / "other.npz", **arrays)
    with lib.Model(tmp_path / "other.npz") as m:
        assert m.fingerprint != fp
        assert m.fingerprint == canonical_fingerprint(tmp_path / "other.npz")


def test_model_pickles_by_value(lib, small, tmp_path):
    """A pickled model carries the file's bytes and its precision: it loads
    after the file is gone, with the same fingerprint and the same logits."""
    shutil.copy(small, tmp_path / "w.npz")
    rng = np.random.default_rng(0)
    with lib.Model(tmp_path / "w.npz") as m:
        c, h, w = m.input_shape
        s = rng.standard_normal((4, c, h, w)).astype(np.float32)
        q = rng.standard_normal((3, c, h, w)).astype(np.float32)
        want = m.episode_score(s, [0, 1, 0, 1], q)
        data = pickle.dumps(m)
        fp = m.fingerprint
    (tmp_path / "w.npz").unlink()
    m2 = pickle.loads(data)
    assert m2.fingerprint == fp and m2.precision == "fp32"
    assert np.array_equal(m2.episode_score(s, [0, 1, 0, 1], q), want)
    assert pickle.loads(pickle.dumps(m2)).fingerprint == fp  # again, without the file


def test_model_pickling_refuses_a_file_changed_on_disk(lib, small, tmp_path):
    """Weights replaced on disk after loading: pickling refuses, naming both
    fingerprints, instead of shipping other weights; a vanished file too."""
    if not TINY.exists():
        pytest.skip("build/tests/lwfm_tiny.npz is made by the build")
    shutil.copy(small, tmp_path / "w.npz")
    m = lib.Model(tmp_path / "w.npz")
    shutil.copy(TINY, tmp_path / "w.npz")
    with pytest.raises(pickle.PicklingError, match="changed on disk") as e:
        pickle.dumps(m)
    assert m.fingerprint in str(e.value)
    (tmp_path / "w.npz").unlink()
    with pytest.raises(pickle.PicklingError, match="cannot be read"):
        pickle.dumps(m)


def test_model_pickle_loads_in_a_fresh_process(lib, small, tmp_path):
    with lib.Model(small) as m:
        (tmp_path / "m.pickle").write_bytes(pickle.dumps(m))
        fp = m.fingerprint
    code = ("import pickle, sys; m = pickle.load(open(sys.argv[1], 'rb')); "
            "print(m.fingerprint, m.precision)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pickle")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [fp, "fp32"]


# --------------------------------------------------------------------------
# Prepared support sets: save, load, pickle, grow (every method)

DN4 = BUILD_TESTS / "dn4_random.npz"
RCN = ROOT / "models" / "omniglot-rcn.npz"
OMNIGLOT = ROOT / "models" / "omniglot.npz"


@pytest.fixture(params=["lwfm-spm", "lwfm-spm-omniglot", "lwfm-spm-no-matcher", "dn4", "mml",
                        "rcn"])
def method_model(request, lib, tmp_path):
    """A model of each method: the build's test models, an MML model with
    random weights (tests/python/test_mml.py), an LWFM-SPM model with SPM
    off (two prepared buffers instead of four) and the bundled RCN model."""
    if request.param == "mml":
        from test_mml import export_mml
        path = export_mml(tmp_path)[0]
    elif request.param == "lwfm-spm-no-matcher":
        import lwfm_ref
        from conftest import export
        path = export(tmp_path, lwfm_ref.make_config(
            backbone="conv64f", hyperpixel_ids=[2, 3], feature_size=3, image_size=32, resize=0,
            matcher_prob=0.0))[0]
    else:
        path = {"lwfm-spm": SMALL, "lwfm-spm-omniglot": OMNIGLOT, "dn4": DN4,
                "rcn": RCN}[request.param]
    if not path.exists():
        pytest.skip(f"{path} is made by the build")
    with lib.Model(path) as m:
        yield m


def episode(m, shots=(2, 1, 3), n_query=4, seed=0):
    rng = np.random.default_rng(seed)
    c, h, w = m.input_shape
    labels = np.repeat(np.arange(len(shots)), shots).astype(np.int32)
    rng.shuffle(labels)
    support = rng.standard_normal((len(labels), c, h, w)).astype(np.float32)
    query = rng.standard_normal((n_query, c, h, w)).astype(np.float32)
    return support, labels, query


def test_saved_sets_score_bit_identically(method_model, tmp_path):
    """save -> load and to_bytes -> from_bytes give the same logits, bit for
    bit, from images and from features; class names and the features flag
    travel."""
    m = method_model
    support, labels, query = episode(m)
    names = np.array(["cat", "dog", "emu"])[labels]
    sup = m.prepare_support(support, names)
    want = sup.score(query)
    sup.save(tmp_path / "s.lwfmsup")
    back = type(sup).load(m, tmp_path / "s.lwfmsup")
    assert np.array_equal(back.score(query), want)
    assert back.classes == sup.classes and sorted(sup.classes) == ["cat", "dog", "emu"]
    assert back.features is False and len(back) == len(labels)
    assert (tmp_path / "s.lwfmsup").read_bytes() == sup.to_bytes()
    feats, qfeats = m.features(support), m.features(query)
    fsup = m.prepare_support(feats, labels, features=True)
    fback = type(sup).from_bytes(m, fsup.to_bytes())
    assert fback.features is True and fback.classes == (0, 1, 2)
    assert np.array_equal(fback.score(qfeats), fsup.score(qfeats))


def test_grown_sets_equal_sets_prepared_whole(method_model):
    """add == prepare from scratch, bit for bit: images to existing classes
    and to new ones, unequal shots, images and features."""
    m = method_model
    support, labels, query = episode(m, shots=(3, 1, 2, 2), seed=1)
    order = {}  # classes numbered in order of appearance: the first images' are 0..k-1
    labels = np.array([order.setdefault(int(v), len(order)) for v in labels], np.int32)
    whole = m.prepare_support(support, labels).score(query)
    base = m.prepare_support(support[:4], labels[:4])
    assert base.way < 4  # the rest adds new classes and images to old ones
    grown = base.add(support[4:], labels[4:])
    assert grown.way == 4 and len(grown) == len(labels) and len(base) == 4
    assert np.array_equal(grown.score(query), whole)
    feats, qfeats = m.features(support), m.features(query)
    fbase = m.prepare_support(feats[:4], labels[:4], features=True)
    fwhole = m.prepare_support(feats, labels, features=True).score(qfeats)
    assert np.array_equal(fbase.add(feats[4:], labels[4:]).score(qfeats), fwhole)
    one = fbase.add(feats[4:5], labels[4:5])  # one image at a time
    for j in range(5, len(labels)):
        one = one.add(feats[j:j + 1], labels[j:j + 1])
    assert np.array_equal(one.score(qfeats), fwhole)


def test_pickled_set_loads_in_a_fresh_process(method_model, tmp_path):
    """A pickled SupportSet carries its model: a fresh process scores it to
    the same logits, with its classes and features flag."""
    m = method_model
    support, labels, query = episode(m)
    sup = m.prepare_support(support, np.array(["a", "b", ("c", 1)], dtype=object)[labels])
    want = sup.score(query)
    (tmp_path / "s.pickle").write_bytes(pickle.dumps(sup))
    np.save(tmp_path / "q.npy", query)
    code = ("import pickle, sys, numpy as np; s = pickle.load(open(sys.argv[1], 'rb')); "
            "np.save(sys.argv[3], s.score(np.load(sys.argv[2]))); print(repr(s.classes), s.features)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.pickle"),
                          str(tmp_path / "q.npy"), str(tmp_path / "l.npy")],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"{sup.classes!r} False"
    assert np.array_equal(np.load(tmp_path / "l.npy"), want)


def test_set_is_refused_by_another_model(lib, small):
    """A set saved with one model: another model of the same method (other
    weights) and one of another method refuse it, naming both fingerprints."""
    if not TINY.exists() or not DN4.exists():
        pytest.skip("the test models are made by the build")
    with lib.Model(small) as m:
        support, labels, _ = episode(m)
        data = m.prepare_support(support, labels).to_bytes()
        fp = m.fingerprint
    for other in (TINY, DN4):
        with lib.Model(other) as o:
            with pytest.raises(lib.Error) as e:
                lib.SupportSet.from_bytes(o, data)
            assert e.value.status_name == "wrong kind of model" or e.value.status == 10
            assert fp in str(e.value) and o.fingerprint in str(e.value)


def test_damaged_bytes_are_refused(lib, small, tmp_path):
    """Truncated, bit-flipped or padded bytes: lwfm.Error with a message that
    says what is wrong; a file that is not there: an I/O error."""
    with lib.Model(small) as m:
        support, labels, _ = episode(m)
        data = m.prepare_support(support, labels).to_bytes()
        for cut in (0, 10, 155, len(data) // 2, len(data) - 1):
            with pytest.raises(lib.Error, match="truncated|not a libLWFM") as e:
                lib.SupportSet.from_bytes(m, data[:cut])
            assert e.value.status == 4  # LWFM_ERR_FORMAT
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 1
        with pytest.raises(lib.Error, match="CRC"):
            lib.SupportSet.from_bytes(m, bytes(flipped))
        with pytest.raises(lib.Error, match="trailing"):
            lib.SupportSet.from_bytes(m, data + b"\0")
        (tmp_path / "cut.lwfmsup").write_bytes(data[:-1])
        with pytest.raises(lib.Error, match="truncated"):
            lib.SupportSet.load(m, tmp_path / "cut.lwfmsup")
        with pytest.raises(lib.Error) as e:
            lib.SupportSet.load(m, tmp_path / "missing.lwfmsup")
        assert e.value.status == 3  # LWFM_ERR_IO


def test_names_travel_and_grow(lib, small, tmp_path):
    """String names travel in files; other names only by pickle (save refuses
    them); add() takes names, and new names make new classes."""
    with lib.Model(small) as m:
        support, labels, query = episode(m, shots=(2, 2, 1, 1))
        names = np.array(["ant", "bee", "cow", "doe"])[labels]
        order = list(dict.fromkeys(names[:4]))
        whole = m.prepare_support(support, names)
        base = m.prepare_support(support[:4], names[:4])
        grown = base.add(support[4:], list(names[4:]))
        assert base.classes == tuple(order)
        assert grown.classes == whole.classes
        assert np.array_equal(grown.score(query), whole.score(query))
        back = lib.SupportSet.from_bytes(m, grown.to_bytes())
        assert back.classes == whole.classes
        odd = m.prepare_support(support[:2], [("a", 1), ("b", 2)])
        with pytest.raises(TypeError, match="string class names"):
            odd.save(tmp_path / "odd.lwfmsup")
        assert pickle.loads(pickle.dumps(odd)).classes == (("a", 1), ("b", 2))
        numbered = m.prepare_support(support[:2], [0, 1])
        assert numbered.add(support[2:3], [2]).classes == (0, 1, 2)
        with pytest.raises(ValueError, match="need names"):
            base.add(support[4:5], [len(base.classes)])


def test_prepared_sets_do_not_depend_on_threads_or_batch(method_model, tmp_path):
    """A set's prepared bytes are the same on 1 and 2 OpenMP threads, and an
    image's prepared values do not depend on the images prepared with it
    (13 images grown one at a time equal the 13 prepared whole): oneDNN's
    GEMM rounds rows by how many share a call, so per-image work must not
    share calls across images (the LWFM-SPM matcher did)."""
    m = method_model
    support, labels, _ = episode(m, shots=(5, 4, 4), seed=2)
    order = {}  # classes numbered in order of appearance, so that any prefix is a set
    labels = np.array([order.setdefault(int(v), len(order)) for v in labels], np.int32)
    (tmp_path / "m.pickle").write_bytes(pickle.dumps((m, support, labels)))
    code = ("import hashlib, pickle, sys; m, s, l = pickle.load(open(sys.argv[1], 'rb')); "
            "print(hashlib.sha256(m.prepare_support(s, l).to_bytes()).hexdigest())")
    digests = set()
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        digests.add(subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pickle")],
                                   capture_output=True, text=True, check=True,
                                   env=env).stdout.strip())
    assert len(digests) == 1
    whole = m.prepare_support(support, labels).to_bytes()
    one = m.prepare_support(support[:3], labels[:3])
    for j in range(3, len(labels)):
        one = one.add(support[j:j + 1], labels[j:j + 1])
    assert one.to_bytes() == whole


def test_logits_do_not_depend_on_threads_or_query_batch(method_model, tmp_path):
    """A query's logits against a prepared set are the same bits whether it
    is scored alone, in odd batches or all at once, on 1 and 2 OpenMP
    threads (a Dask job or a stream cuts queries anywhere)."""
    m = method_model
    support, labels, _ = episode(m, shots=(3, 2, 2), seed=4)
    # 30 queries: at this size oneDNN's sgemm, which the correlations used,
    # rounded some logits of a query scored alone differently
    query = np.random.default_rng(5).standard_normal((30,) + m.input_shape).astype(np.float32)
    sup = m.prepare_support(support, labels)
    whole = sup.score(query)
    alone = np.concatenate([sup.score(query[i:i + 1]) for i in range(len(query))])
    odd = np.concatenate([sup.score(query[i:i + 7]) for i in range(0, len(query), 7)])
    assert np.array_equal(alone, whole) and np.array_equal(odd, whole)
    (tmp_path / "q.pickle").write_bytes(pickle.dumps((sup, query)))
    code = ("import pickle, sys; s, q = pickle.load(open(sys.argv[1], 'rb')); "
            "sys.stdout.write(s.score(q).tobytes().hex())")
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "q.pickle")],
                             capture_output=True, text=True, check=True, env=env).stdout
        assert bytes.fromhex(out) == whole.tobytes(), f"{threads} thread(s)"


def test_int8_sets_save_load_and_are_bound_to_their_precision(lib, tmp_path):
    """A set prepared by an int8 model (the bundled Omniglot model has its
    quant/ members) saves and loads bit-identically and pickles; the same
    weights at fp32 refuse it, naming both precisions."""
    m8 = lib.Model(OMNIGLOT, precision="int8")
    support, labels, query = episode(m8)
    sup = m8.prepare_support(support, labels)
    back = type(sup).from_bytes(m8, sup.to_bytes())
    assert np.array_equal(back.score(query), sup.score(query))
    assert np.array_equal(pickle.loads(pickle.dumps(sup)).score(query), sup.score(query))
    with lib.Model(OMNIGLOT) as m32:
        with pytest.raises(lib.Error, match="int8 precision; this model runs at fp32"):
            type(sup).from_bytes(m32, sup.to_bytes())
