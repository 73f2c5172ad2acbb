"""lwfm.distributed on a local Dask cluster of 2 single-threaded worker
processes: classify and eval give what one process gives, class shards merge
into the whole set's logits, a killed worker changes nothing, a worker that
cannot load the model fails the job with its own error."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lwfm
from conftest import ROOT, SHARED, rel_err

distributed = pytest.importorskip("distributed")
import lwfm.distributed as ld  # noqa: E402

MODELS = Path(os.environ.get("LWFM_TEST_MODELS", ROOT / "build" / "tests"))
CLI = os.environ.get("LWFM_CLI", str(ROOT / "build" / "lwfm"))
MINI = SHARED / "data" / "mini-imagenet" / "test"
OMNIGLOT = ROOT / "models" / "omniglot.npz"
needs_mini = pytest.mark.skipif(not MINI.is_dir(), reason="no miniImageNet test split in shared/")


@pytest.fixture(scope="module")
def client():
    with ld.local_client(workers=2, threads=1) as c:
        c.wait_for_workers(2)
        yield c


def _mini_files(classes, first, n):
    """Files first..first+n-1 (sorted) of the first `classes` miniImageNet test classes."""
    out = {}
    for name in sorted(os.listdir(MINI))[:classes]:
        files = sorted(os.listdir(MINI / name))[first:first + n]
        out[name] = [str(MINI / name / f) for f in files]
    return out


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """A 5-way 2-shot support folder (links) and 60 query images of miniImageNet."""
    if not MINI.is_dir():
        pytest.skip("no miniImageNet test split in shared/")
    root = tmp_path_factory.mktemp("mini")
    for name, files in _mini_files(5, 0, 2).items():
        (root / "support" / name).mkdir(parents=True)
        for f in files:
            os.symlink(f, root / "support" / name / os.path.basename(f))
    queries = [f for files in _mini_files(6, 100, 10).values() for f in files]
    return root / "support", queries


def _one_process(model_path, support, queries):
    """Logits of the queries in one process: the support folder as
    SupportSet.from_folder reads it, every query at once."""
    with lwfm.Model(model_path) as model:
        sup = lwfm.SupportSet.from_folder(model, support)
        x = np.stack([model.preprocess(lwfm.episodes.FolderSet.load_one(
            lwfm._OneFile(q), 0, 0))[0] for q in queries])
        logits = sup.score(x)
        return sup.classes, logits, model.probabilities(logits)


@needs_mini
def test_classify_is_one_process(client, mini, tmp_path):
    support, queries = mini
    model = MODELS / "lwfm_tiny.npz"
    classes, logits, probs = _one_process(model, support, queries)
    res = ld.classify(client, str(model), str(support), queries, top=3, chunk=8)
    assert res.paths == queries and res.classes == classes
    # a query's logits do not depend on the queries scored with it: the same bits
    np.testing.assert_array_equal(res.logits, logits)
    np.testing.assert_array_equal(res.probabilities, probs)
    rows = res.rows()
    assert [r.name for r in rows] == [classes[i] for i in logits.argmax(axis=1)]
    assert all(len(r.top) == 3 and r.top[0].probability == r.probability for r in rows)
    res.to_csv(tmp_path / "out.csv")
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "path,class,probability,class_2,probability_2,class_3,probability_3"
    first = lines[1].split(",")
    assert first[0] == queries[0] and first[1] == rows[0].name
    assert np.float32(first[2]) == np.float32(rows[0].probability)


@needs_mini
def test_classify_survives_a_killed_worker(client, mini):
    support, _ = mini
    # 400 queries (100 tasks of 4): the job must outlast the first completed
    # task by far, so that a worker is caught holding tasks
    queries = [f for files in _mini_files(20, 200, 20).values() for f in files]
    model = MODELS / "lwfm_tiny.npz"
    _, logits, _ = _one_process(model, support, queries)
    pids = client.run(os.getpid)
    killed = []

    def kill_once(done, total):
        # a worker that holds running or queued tasks of this job at that moment
        busy = sorted(w for w, keys in client.processing().items() if keys)
        if not killed and busy:
            killed.append(busy[0])
            os.kill(pids[busy[0]], signal.SIGKILL)

    res = ld.classify(client, str(model), str(support), queries, chunk=4, progress=kill_once)
    if not killed:  # a timing race, not a result: say so instead of passing
        pytest.skip("the job ended before a worker could be caught holding tasks")
    victim = killed[0]
    np.testing.assert_array_equal(res.logits, logits)
    client.wait_for_workers(2)
    assert pids[victim] not in client.run(os.getpid).values()  # a new process took its place


@needs_mini
def test_classify_repeated_files(client, mini):
    """The same chunk of files twice is one Dask task (one key): both places
    get its rows, and the progress count reaches the number of chunks."""
    support, queries = mini
    model = MODELS / "lwfm_tiny.npz"
    twice = queries[:8] + queries[:8] + queries[8:11]
    _, logits, _ = _one_process(model, support, twice)
    seen = []
    res = ld.classify(client, str(model), str(support), twice, chunk=4,
                      progress=lambda done, total: seen.append((done, total)))
    assert res.paths == twice
    np.testing.assert_array_equal(res.logits, logits)
    assert seen[-1] == (5, 5)


def test_classify_sharded_merges(client, tmp_path):
    """A gallery of 4 classes in 2 shards, one per worker, against the whole
    set in one process (unequal class sizes)."""
    model = lwfm.Model(str(OMNIGLOT))
    rng = np.random.default_rng(3)
    sizes = (3, 1, 2, 2)
    support = tmp_path / "support"
    queries = []
    from PIL import Image
    for c, n in enumerate(sizes):
        (support / f"c{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8)).save(
                support / f"c{c}" / f"{i}.png")
    for i in range(10):
        queries.append(str(tmp_path / f"q{i}.png"))
        Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8)).save(queries[-1])
    classes, logits, _ = _one_process(OMNIGLOT, support, queries)
    res = ld.classify(client, model, str(support), queries, chunk=4, shards=2)
    assert res.classes == classes
    # the shards' metric runs on fewer supports: float32 rounding differs
    assert rel_err(res.logits, logits) < 1e-6
    np.testing.assert_array_equal(res.logits.argmax(axis=1), logits.argmax(axis=1))


def _batch_statistics_rcn(tmp_path):
    """The bundled rcn model with batch-statistics BatchNorm (query_batch 5)."""
    from lwfm.weights import load_weights, save_weights
    tensors, config = load_weights(str(ROOT / "models" / "omniglot-rcn.npz"))
    save_weights(tmp_path / "rcn_batch.npz", tensors,
                 dict(config, batch_norm="batch", query_batch=5))
    return tmp_path / "rcn_batch.npz"


def test_classify_batch_statistics_model(client, tmp_path):
    """A query's logits depend on its batch: chunks of 3 are cut as one
    process cuts its batches (rounded up to the model's 5)."""
    from PIL import Image
    rng = np.random.default_rng(5)
    support = tmp_path / "support"
    for c in range(3):
        (support / f"c{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8)).save(
                support / f"c{c}" / f"{i}.png")
    queries = []
    for i in range(12):
        queries.append(str(tmp_path / f"q{i:02d}.png"))
        Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8)).save(queries[-1])
    model = _batch_statistics_rcn(tmp_path)
    _, logits, _ = _one_process(model, support, queries)
    res = ld.classify(client, str(model), str(support), queries, chunk=3)
    np.testing.assert_array_equal(res.logits, logits)


def test_payloads_stay_on_every_worker(client, tmp_path):
    """The model stays on both workers after a job (Dask's active memory
    manager, which would drop one copy within its 2 s cycle, is off in
    local_client): nothing is sent again, nothing is lost with one worker."""
    import time
    from PIL import Image
    support = tmp_path / "support"
    for c in range(2):
        (support / f"c{c}").mkdir(parents=True)
        Image.new("L", (28, 28), 90 * c).save(support / f"c{c}" / "a.png")
    Image.new("L", (28, 28), 40).save(tmp_path / "q.png")
    model = lwfm.Model(str(OMNIGLOT))
    ld.classify(client, model, str(support), [str(tmp_path / "q.png")])
    time.sleep(2.5)
    shipped = ld._ship(client, ld._model_payload(model), None)
    assert len(client.who_has(shipped)[shipped.key]) == 2


def test_bad_image_fails_or_is_skipped(client, tmp_path):
    support = tmp_path / "support"
    from PIL import Image
    for c in range(2):
        (support / f"c{c}").mkdir(parents=True)
        Image.new("L", (28, 28), 80 * c).save(support / f"c{c}" / "a.png")
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("L", (28, 28), 40).save(good)
    bad.write_bytes(b"not a png")
    with pytest.raises(ld.WorkerError, match=r"worker tcp://.*bad\.png: cannot read image"):
        ld.classify(client, str(OMNIGLOT), str(support), [str(good), str(bad)])
    res = ld.classify(client, str(OMNIGLOT), str(support), [str(good), str(bad)], on_bad="skip")
    assert res.paths == [str(good)] and [s.path for s in res.skipped] == [str(bad)]


def test_worker_that_cannot_load_the_model_fails_the_job(client, tmp_path):
    """A worker whose library cannot be loaded: the job stops with that
    worker's error (named), it does not wait for a worker that can."""
    addr = sorted(client.scheduler_info()["workers"])[1]

    def break_library():
        import lwfm as lw
        os.environ["LWFM_LIBRARY"] = "/nonexistent/liblwfm.so"
        lw._lib = None

    def mend_library(path):
        import lwfm as lw
        os.environ["LWFM_LIBRARY"] = path
        lw._lib = None

    support = (np.zeros((2, 1, 28, 28), np.float32), ["a", "b"])
    from PIL import Image
    query = tmp_path / "q.png"
    Image.new("L", (28, 28), 40).save(query)
    client.run(break_library, workers=[addr])
    try:
        # a model this worker has not loaded yet in this session
        with pytest.raises(ld.WorkerError) as err:
            ld.classify(client, str(ROOT / "models" / "omniglot-rcn.npz"), support,
                        [str(query)], workers=[addr])
    finally:
        client.run(mend_library, os.environ["LWFM_LIBRARY"], workers=[addr])
    msg = str(err.value)
    assert f"worker {addr}: cannot load the model" in msg and "/nonexistent/liblwfm.so" in msg


def _folder_dataset(root, classes=6, per_class=7, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        base = rng.integers(0, 256, (28, 28), np.uint8)
        for i in range(per_class):
            noise = rng.integers(-40, 40, (28, 28))
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(
                root / f"class{c}" / f"{i:02d}.png")
    return root


def _lwfm_eval(model, data, *args):
    if not os.path.exists(CLI):
        pytest.skip("the lwfm command is not built")
    out = subprocess.run([CLI, "eval", "--model", str(model), "--data", str(data), "--json",
                          "--quiet", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_eval_is_lwfm_eval(client, tmp_path):
    data = _folder_dataset(tmp_path / "data")
    want = _lwfm_eval(OMNIGLOT, data, "--way", "3", "--shot", "2", "--query", "3",
                      "--episodes", "9", "--seed", "7")
    got = ld.evaluate(client, str(OMNIGLOT), str(data), way=3, shot=2, query=3, episodes=9,
                      seed=7, chunk=2)
    assert got["episode_accuracies"] == want["episode_accuracies"]
    assert (got["accuracy"], got["ci95"], got["classes"]) == \
        (want["accuracy"], want["ci95"], want["classes"])


def test_eval_command_prints_lwfm_eval(client, tmp_path):
    data = _folder_dataset(tmp_path / "data", seed=1)
    args = ["--way", "4", "--shot", "1", "--query", "2", "--episodes", "6", "--seed", "-3"]
    if not os.path.exists(CLI):
        pytest.skip("the lwfm command is not built")
    want = subprocess.run([CLI, "eval", "--model", str(OMNIGLOT), "--data", str(data), "--quiet",
                           *args], capture_output=True, text=True, check=True).stdout
    got = subprocess.run([sys.executable, "-m", "lwfm.distributed", "eval", "--scheduler",
                          client.scheduler.address, "--model", str(OMNIGLOT), "--data",
                          str(data), "--quiet", *args],
                         capture_output=True, text=True, check=True).stdout
    assert got == want and got.startswith("accuracy ")


def test_import_needs_no_dask():
    code = ("import sys, lwfm, lwfm.distributed; "
            "assert 'distributed' not in sys.modules and 'dask' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- class shards, per method, in one process ---------------------------------

def _episode(model, sizes, n_query=6, seed=0):
    rng = np.random.default_rng(seed)
    c, h, w = model.input_shape
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)]).astype(np.int32)
    rng.shuffle(labels)
    return (rng.standard_normal((len(labels), c, h, w)).astype(np.float32), labels,
            rng.standard_normal((n_query, c, h, w)).astype(np.float32))


def _check_shards(model, sizes, n_shards):
    support, labels, query = _episode(model, sizes)
    with lwfm.SupportSet(model, support, labels) as whole:
        want = whole.score(query)
    got = ld.score_sharded(model, support, labels, query, n_shards)
    assert rel_err(got, want) < 1e-6, (sizes, n_shards)
    return ld.plan_shards(model, np.bincount(labels), n_shards)


@pytest.mark.parametrize("name", ["omniglot.npz", "omniglot-rcn.npz"])
def test_shards_lwfm_spm_and_rcn(name):
    with lwfm.Model(str(ROOT / "models" / name)) as model:
        for sizes, n in [((2, 2, 2, 2, 2), 2), ((1, 3, 2, 1, 2), 3), ((2, 1, 2), 3)]:
            plan = _check_shards(model, sizes, n)
            assert sum(len(s.classes) for s in plan) == len(sizes)


def test_shards_dn4_keep_the_whole_sets_pooling():
    """Classes of unequal sizes score per image; a shard of equal sizes gets a
    placeholder class of another size, or its classes would pool."""
    with lwfm.Model(str(MODELS / "dn4_random.npz")) as model:
        plan = _check_shards(model, (2, 2, 1, 3), 2)      # shard 0: (2, 2)
        assert plan[0].dummies == [1] and plan[1].dummies == []
        plan = _check_shards(model, (2, 2, 2, 2), 2)      # all pooled: no placeholder
        assert all(s.dummies == [] for s in plan)


def test_shards_mml(tmp_path):
    from test_mml import export_mml
    path, _ = export_mml(tmp_path, image_size=28)
    with lwfm.Model(str(path)) as model:
        # 10 classes: not the fusion layer's 5 slots, so it uses their mean; a
        # shard of 5 classes would use the slots: it gets a sixth
        plan = _check_shards(model, (2,) * 10, 2)
        assert [len(s.classes) + len(s.dummies) for s in plan] == [6, 6]
        # unequal sizes, a shard of 5 equal ones: one placeholder of another
        # size makes it score per image and have 6 classes
        plan = _check_shards(model, (2, 2, 2, 2, 2, 1, 3, 1, 3, 2), 2)
        assert plan[0].classes == [0, 1, 2, 3, 4] and plan[0].dummies == [1]
        with pytest.raises(ValueError, match="class slots"):
            ld.plan_shards(model, [2] * 5, 2)


def test_shards_refused_for_batch_statistics_rcn(tmp_path):
    with lwfm.Model(str(_batch_statistics_rcn(tmp_path))) as model:
        with pytest.raises(ValueError, match="batch-statistics BatchNorm"):
            ld.plan_shards(model, [2, 2, 2], 2)
        assert len(ld.plan_shards(model, [2, 2, 2], 1)) == 1
