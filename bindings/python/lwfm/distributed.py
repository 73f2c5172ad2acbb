"""Few-shot classification and evaluation spread over a Dask cluster.

    python3 -m lwfm.distributed classify --scheduler tcp://HOST:8786 \\
        --model M.npz --support shots/ --query photos/ --top 5 --csv out.csv
    python3 -m lwfm.distributed eval --scheduler tcp://HOST:8786 \\
        --model M.npz --data ../shared/data/mini-imagenet/test --episodes 600 --seed 1

Without ``--scheduler`` a local cluster of ``--workers`` single-threaded
worker processes is started (and stopped) for the run. From Python:

    import lwfm, lwfm.distributed as ld
    with ld.local_client(workers=2) as client:
        table = ld.classify(client, "model.npz", "shots/", ["photos/"], top=5)
        table.to_csv("out.csv")
        print(ld.evaluate(client, "model.npz", "data/", episodes=600, seed=1)["accuracy"])

What is shipped, and where the work is done:

- the model and the support set are sent once to every worker
  (``client.scatter(..., broadcast=True)``) as bytes with a digest: the
  model pickled (``lwfm.Model`` pickles by value: its weight file), the
  support set prepared once on the client and shipped as its prepared
  buffers (``SupportSet.to_bytes``: no worker recomputes it, the scores are
  the same bits). A worker turns them into an :class:`lwfm.Model` /
  :class:`lwfm.SupportSet` on first use and keeps them (a small cache keyed
  by the digest), so later tasks of the job, and later jobs with the same
  model and set, reuse them;
- ``classify`` sends each task a chunk of image *paths*: the worker reads,
  decodes and preprocesses the images itself (the paths must name the same
  files on every worker: a shared or copied file system), scores them and
  returns their logits; the client computes the probabilities and the top
  classes from the logits, as one process does;
- ``evaluate`` draws every episode on the client with
  :class:`lwfm.episodes.EpisodeSampler` (the sampler of ``lwfm eval``) and
  sends each task a chunk of episodes as ``(class, example)`` indices; the
  worker reads the dataset (the same path on every worker) and returns one
  accuracy per episode;
- ``classify(..., shards=S)`` splits the support set by class into S
  shards, shipped as images and prepared by the worker that scores them
  (the prepared gallery is never held in one place); every chunk's backbone features are computed once and scored
  against each shard, and the columns are merged into the logits one process
  computes (:func:`plan_shards` says how each method is split, and refuses
  the configurations whose logits of one class depend on the others).

A worker killed in the middle of a job changes nothing: Dask runs its tasks
again elsewhere (the payloads live on every worker). A task that fails on a
worker (a model it cannot load, an unreadable image) fails the job at once
with :class:`WorkerError`, whose message names the worker. See
docs/distributed.md.

Dask (Debian's ``python3-distributed``) is imported only when a cluster is
used: ``import lwfm`` and :func:`plan_shards` work without it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import pickle
import sys
import threading
import time
import weakref
from collections import OrderedDict, namedtuple
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import Error, Model, SkippedFile, SupportSet
# private helpers of the package, shared with SupportSet.from_folder / predict
from . import (_encode_labels, _OneFile, _predictions,  # type: ignore[attr-defined]
               _support_from_pickle)
from .episodes import IMAGE_EXTENSIONS, EpisodeSampler, FolderSet, open_dataset

__all__ = ["WorkerError", "ClassifyResult", "Row", "Shard", "local_client", "classify",
           "evaluate", "plan_shards", "score_sharded", "list_images", "main"]

_PROG = "python3 -m lwfm.distributed"


class WorkerError(RuntimeError):
    """A task failed on a worker. The message names the worker (its address)
    and what failed there: loading the model or the support set, reading an
    image, scoring."""


def _dask():
    """The ``distributed`` package, or ImportError saying how to install it."""
    try:
        import distributed
    except ImportError as e:
        raise ImportError("lwfm.distributed needs Dask's distributed scheduler: "
                          "apt install python3-distributed") from e
    return distributed


def local_client(workers: int = 2, threads: int = 1):
    """A ``distributed.Client`` on a new local cluster of ``workers`` worker
    processes, each one task at a time with ``threads`` OpenMP threads (the
    library's threads), and Dask's active memory manager off (see
    docs/distributed.md); closing the client (``with`` block) stops the
    cluster. From a script, call it under ``if __name__ == "__main__":``
    (the workers are spawned processes that import the script)."""
    d = _dask()
    import dask
    # Dask's active memory manager drops the replicas of scattered data that no
    # waiting task needs: the model and set would then live on one worker
    # between jobs, be sent again, and be lost with that worker (the scheduler
    # cannot recompute scattered data); off for the clusters made here
    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
        return d.Client(n_workers=int(workers), threads_per_worker=1, processes=True,
                        dashboard_address=None, env={"OMP_NUM_THREADS": str(int(threads))})


# ---- payloads: what crosses the network once per worker ----------------------

class _Shipped:
    """Bytes a worker turns into an object with ``build(data)`` (a model) or
    ``build(data, model)`` (a support set), once: the object is cached on the
    worker under ``digest``."""

    def __init__(self, digest: str, data: bytes, build: Callable[..., Any]) -> None:
        self.digest, self.data, self.build = digest, data, build

    def __len__(self) -> int:
        return len(self.data)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _model_payload(model: Model) -> _Shipped:
    """What is shipped for ``model``: the model pickled (by value: its weight
    file's bytes and load options), named by its fingerprint and the load
    options that change its bits (a worker keeps one model per name)."""
    data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    return _Shipped(f"{model.fingerprint}/{model.precision}/{model.convolutions}", data,
                    pickle.loads)


def _support_from_prepared(data: bytes, model: Model) -> SupportSet:
    raw, classes, features, shape = pickle.loads(data)
    return _support_from_pickle(model, raw, classes, features, shape)


def _support_payload(model_payload: _Shipped, support: SupportSet) -> _Shipped:
    """What is shipped for a prepared support set: its bytes
    (``SupportSet.to_bytes``, the prepared buffers: nothing is recomputed on
    the worker and the scores are the same bits) and its class names, without
    its model (shipped once, apart)."""
    raw = support._raw_bytes()
    data = pickle.dumps((raw, support.classes, support.features, support.shape),
                        protocol=pickle.HIGHEST_PROTOCOL)
    return _Shipped(_digest(model_payload.digest.encode(), data), data, _support_from_prepared)


def _shard_from_images(data: bytes, model: Model) -> SupportSet:
    images, labels = pickle.loads(data)
    return SupportSet(model, model.features(images), labels, features=True)


def _shard_payload(model_payload: _Shipped, images: np.ndarray, labels: Any) -> _Shipped:
    """What is shipped for one shard of a support set: its preprocessed images
    and labels; the worker that scores the shard computes their features and
    prepares it (the whole gallery is never prepared in one place)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    data = pickle.dumps((images, np.asarray(labels, np.int32)), protocol=pickle.HIGHEST_PROTOCOL)
    return _Shipped(_digest(model_payload.digest.encode(), data), data, _shard_from_images)


_shipped: "weakref.WeakKeyDictionary[Any, Dict[Any, Any]]" = weakref.WeakKeyDictionary()


def _warn_amm(client) -> None:
    """A warning when the scheduler's active memory manager runs (see
    :func:`local_client`): the job still gives the same results, but the
    payloads may be sent again per job, and a job fails if the one worker
    left holding them dies before another has fetched them."""
    try:
        running = client.amm.running()
    except Exception:   # an older or newer scheduler without the proxy
        return
    if running:
        import warnings
        warnings.warn("Dask's active memory manager is running on this scheduler: it drops the "
                      "copies of the model and support set that no waiting task needs, so they "
                      "may be sent again and be lost with a worker; start dask-scheduler with "
                      "DASK_DISTRIBUTED__SCHEDULER__ACTIVE_MEMORY_MANAGER__START=False "
                      "(docs/distributed.md)", RuntimeWarning, stacklevel=4)


def _ship(client, payload: _Shipped, workers: Optional[Sequence[str]]):
    """A future of ``payload`` on every worker (or on ``workers``): scattered
    once per client; a later job with the same payload reuses the future, so
    the bytes do not cross the network again (a worker that joins later gets
    them from a peer when a task needs them)."""
    key = (payload.digest, tuple(workers) if workers else None)
    if client not in _shipped:
        _warn_amm(client)
    known = _shipped.setdefault(client, {})
    fut = known.get(key)
    if fut is None or fut.status != "finished":
        [fut] = client.scatter([payload], broadcast=True, workers=workers)
        known[key] = fut
    return fut


# ---- the worker side -----------------------------------------------------------

_cache: "OrderedDict[Any, Any]" = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_ENTRIES = 16           # models, support sets, datasets
_image_cache: "OrderedDict[Any, np.ndarray]" = OrderedDict()
_IMAGE_CACHE_BYTES = 256 << 20
_image_cache_bytes = 0


def _worker_name() -> str:
    try:
        return _dask().get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()} (not a Dask worker)"


def _cached(key: Any, build: Callable[[], Any]) -> Any:
    """The worker's object for ``key``, built on first use (under a lock, so
    a worker with several threads builds it once)."""
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        value = build()
        _cache[key] = value
        while len(_cache) > _CACHE_ENTRIES:
            _cache.popitem(last=False)
        return value


def _fail(what: str, exc: BaseException) -> WorkerError:
    if isinstance(exc, WorkerError):
        return exc
    return WorkerError(f"worker {_worker_name()}: {what}: {type(exc).__name__}: {exc}")


def _worker_model(payload: _Shipped) -> Model:
    try:
        return _cached(("model", payload.digest), lambda: payload.build(payload.data))
    except Exception as e:
        raise _fail("cannot load the model", e) from None


def _worker_support(model: Model, payload: _Shipped) -> SupportSet:
    try:
        return _cached(("support", payload.digest), lambda: payload.build(payload.data, model))
    except Exception as e:
        raise _fail("cannot prepare the support set", e) from None


def _read_images(model: Model, paths: Sequence[str], on_bad: str):
    """Decoded, preprocessed images of ``paths``: (array, indices kept,
    [(path, reason)] left out)."""
    images, kept, bad = [], [], []
    for i, path in enumerate(paths):
        try:
            pixels = FolderSet.load_one(_OneFile(path), 0, 0)
            images.append(model.preprocess(pixels)[0])
        except (OSError, ValueError, Error) as e:
            if on_bad == "fail":
                raise WorkerError(f"worker {_worker_name()}: {path}: cannot read image: {e} "
                                  "(on_bad='skip' leaves unreadable images out)") from None
            bad.append((path, f"unreadable image: {e}"))
            continue
        kept.append(i)
    c, h, w = model.input_shape
    arr = np.stack(images) if images else np.empty((0, c, h, w), np.float32)
    return arr, kept, bad


def _classify_chunk(model_p: _Shipped, support_p: _Shipped, paths: Sequence[str], on_bad: str):
    """Task: logits of a chunk of image paths against the whole support set."""
    model = _worker_model(model_p)
    support = _worker_support(model, support_p)
    try:
        x, kept, bad = _read_images(model, paths, on_bad)
        logits = support.score(x) if len(x) else np.empty((0, support.way), np.float32)
    except Exception as e:
        raise _fail("cannot classify", e) from None
    return kept, logits, bad


def _features_chunk(model_p: _Shipped, paths: Sequence[str], on_bad: str):
    """Task: backbone features of a chunk of image paths (sharded galleries)."""
    model = _worker_model(model_p)
    try:
        x, kept, bad = _read_images(model, paths, on_bad)
        if len(x):
            feats = model.features(x)
        else:
            feats = np.empty((0,) + model.feature_shape(), np.float32)
    except Exception as e:
        raise _fail("cannot compute features", e) from None
    return kept, feats, bad


def _score_shard(model_p: _Shipped, shard_p: _Shipped, n_own: int, chunk):
    """Task: logits of a chunk's features against one shard, its own classes'
    columns only (dummy classes come after them)."""
    model = _worker_model(model_p)
    support = _worker_support(model, shard_p)
    kept, feats, bad = chunk
    try:
        logits = support.score(feats) if len(feats) else np.empty((0, support.way), np.float32)
    except Exception as e:
        raise _fail("cannot score a shard", e) from None
    return np.ascontiguousarray(logits[:, :n_own])


def _chunk_head(chunk):
    """Task: a features chunk's (kept, bad), without its features."""
    return chunk[0], chunk[2]


def _dataset_image(model: Model, data: str, item: Tuple[int, int]) -> np.ndarray:
    """A preprocessed dataset example, kept in a bounded per-worker cache."""
    global _image_cache_bytes
    key = (data, id(model), item)
    with _cache_lock:
        if key in _image_cache:
            _image_cache.move_to_end(key)
            return _image_cache[key]
    ds = _cached(("data", data), lambda: open_dataset(data))
    c, i = item
    pixels = ds.load_one(c, i) if isinstance(ds, FolderSet) else ds.load([item])[0]
    x = model.preprocess(pixels)[0]
    with _cache_lock:
        _image_cache[key] = x
        _image_cache_bytes += x.nbytes
        while _image_cache_bytes > _IMAGE_CACHE_BYTES and _image_cache:
            _image_cache_bytes -= _image_cache.popitem(last=False)[1].nbytes
    return x


def _eval_chunk(model_p: _Shipped, data: str, episodes: Sequence[tuple]) -> List[float]:
    """Task: the accuracy (percent) of each episode of a chunk, scored with
    ``lwfm_episode_score`` as ``lwfm eval`` scores it."""
    model = _worker_model(model_p)
    out = []
    for sup, s_lab, qry, q_lab in episodes:
        try:
            xs = np.stack([_dataset_image(model, data, it) for it in sup])
            xq = np.stack([_dataset_image(model, data, it) for it in qry])
            logits = model.episode_score(xs, np.asarray(s_lab, np.int32), xq)
        except Exception as e:
            raise _fail(f"cannot score an episode of {data}", e) from None
        correct = int((logits.argmax(axis=1) == np.asarray(q_lab)).sum())
        out.append(correct / len(q_lab) * 100.0)
    return out


# ---- class shards -------------------------------------------------------------

Shard = namedtuple("Shard", ["classes", "dummies"])
Shard.__doc__ = """One shard of a support set: ``classes``, the global class
indices it scores (its first columns, in this order), and ``dummies``, the
image counts of the placeholder classes appended after them so that the
shard's method works in the same mode as the whole set (their columns are
dropped)."""


def _mml_slots(model: Model) -> int:
    """The ways MML's fusion layer was trained for (its BatchNorm has 3 per way)."""
    with np.load(model.path, allow_pickle=False) as z:
        return int(z["classifier.Norm_layer.weight"].shape[0]) // 3


def plan_shards(model: Model, counts: Any, n_shards: int) -> List[Shard]:
    """Split a support set with ``counts[c]`` images of class c into
    ``n_shards`` shards of consecutive classes (balanced by images) whose
    logits, column by column, are those of the whole set.

    Per method (lib/methods, peers.md):

    - lwfm-spm: a class's logit is the cosine of its pooled attended support
      maps with the query's, plus its SPM matching score: its own supports
      only. Any split.
    - rcn (running BatchNorm): the mean over the class's supports of the
      weighted region similarities: any split. With batch-statistics
      BatchNorm (``batch_norm: 'batch'``) the region weights depend on every
      pair of the query batch: refused.
    - dn4: image-to-class top-k sums of the class's own descriptors, but
      pooled over the class's images only when *every* class has as many
      images, else per image and averaged: a shard whose classes happen to
      be equal while the set's are not gets a placeholder class of another
      size, so it scores per image too. Any split.
    - mml: as dn4 for the pixel and part levels, and the fusion layer's
      BatchNorm uses per-class-slot statistics when the set has exactly as
      many classes as the layer was trained for (then a class's logit
      depends on its position: refused), else their mean (a shard of that
      many classes gets a placeholder class more). Any split otherwise.

    Other methods are refused (one shard, the whole set, is always
    accepted). ValueError on refusal or bad arguments."""
    counts = [int(n) for n in counts]
    way, n_shards = len(counts), int(n_shards)
    if n_shards < 1 or n_shards > way:
        raise ValueError(f"{n_shards} shards for {way} classes: give 1 to {way}")
    if n_shards == 1:
        return [Shard(list(range(way)), [])]
    cfg = model.config
    method = cfg["method"]
    if method == "rcn" and cfg.get("batch_norm") == "batch":
        raise ValueError("this rcn model uses batch-statistics BatchNorm (batch_norm 'batch'): "
                         "a class's logits depend on every support and query of the batch, so "
                         "its support set cannot be split by class; score it in one piece "
                         "(shards=1)")
    if method not in ("lwfm-spm", "rcn", "dn4", "mml"):
        raise ValueError(f"no sharding rule for method '{method}': score it in one piece "
                         "(shards=1)")
    slots = _mml_slots(model) if method == "mml" else 0
    if method == "mml" and way == slots:
        raise ValueError(f"this mml model's fusion layer normalises each of its {slots} class "
                         f"slots with its own statistics when the support set has {slots} "
                         "classes: a class's logits depend on its position in the whole set, so "
                         "the set cannot be split by class; score it in one piece (shards=1)")
    # consecutive classes, each shard about total / n_shards images
    bounds, total, acc = [0], sum(counts), 0
    for c, n in enumerate(counts):
        acc += n
        left_c, left_s = way - (c + 1), n_shards - len(bounds)
        if left_s > 0 and (acc >= total * len(bounds) / n_shards or left_c == left_s):
            bounds.append(c + 1)
    bounds.append(way)
    pooled = len(set(counts)) == 1   # dn4 / mml: one pool per class, else per image
    shards = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        own = counts[lo:hi]
        dummies: List[int] = []
        if method in ("dn4", "mml") and not pooled and len(set(own)) == 1:
            dummies.append(1 if own[0] != 1 else 2)
        filler = counts[0] if pooled else 1   # keeps the mode either way
        if method == "mml" and len(own) + len(dummies) == slots:
            dummies.append(filler)
        if len(own) + len(dummies) < 2:      # a support set has two classes at least
            dummies.append(filler if method in ("dn4", "mml") else 1)
        shards.append(Shard(list(range(lo, hi)), dummies))
    return shards


def _shard_images(images: np.ndarray, labels: np.ndarray, shard: Shard):
    """The shard's support images and labels 0.. (own classes, then its
    placeholder classes, each the shard's first image repeated)."""
    xs, ls = [], []
    for k, c in enumerate(shard.classes):
        sel = np.flatnonzero(labels == c)
        xs.append(images[sel])
        ls += [k] * len(sel)
    for j, n in enumerate(shard.dummies):
        xs.append(np.repeat(xs[0][:1], n, axis=0))
        ls += [len(shard.classes) + j] * n
    return np.concatenate(xs), np.asarray(ls, np.int32)


def score_sharded(model: Model, images: np.ndarray, labels: Any, queries: np.ndarray,
                  n_shards: int) -> np.ndarray:
    """Logits of ``queries`` against the support set split into ``n_shards``
    (:func:`plan_shards`), in this process: what the workers of
    ``classify(..., shards=n)`` compute, shard by shard, from the queries'
    features."""
    labels = np.asarray(labels, np.int64)
    way = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=way)
    feats = model.features(queries)
    out = np.empty((len(queries), way), np.float32)
    for shard in plan_shards(model, counts, n_shards):
        x, lab = _shard_images(images, labels, shard)
        with SupportSet(model, model.features(x), lab, features=True) as sup:
            out[:, shard.classes] = sup.score(feats)[:, :len(shard.classes)]
    return out


# ---- classify -----------------------------------------------------------------

def list_images(paths: Sequence[str]) -> List[str]:
    """Image files named by ``paths``: a file stands for itself; a folder for
    every ``.png``/``.jpg``/``.jpeg``/``.webp`` file (any case) below it, not
    hidden, folder by folder, each sorted by name (byte order)."""
    out: List[str] = []
    for p in paths:
        p = os.fspath(p)
        if not os.path.isdir(p):
            if not os.path.exists(p):
                raise FileNotFoundError(f"{p}: no such file or folder")
            out.append(p)
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=os.fsencode)
            out += [os.path.join(root, f) for f in sorted(files, key=os.fsencode)
                    if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return out


Row = namedtuple("Row", ["path", "name", "probability", "top"])
Row.__doc__ = """One classified image: its path, the predicted class's name, its
probability, and the top classes (:class:`lwfm.Prediction`), best first."""


class ClassifyResult:
    """The table :func:`classify` returns: one row per classified image, in
    the order the paths were given.

    ``paths``; ``classes`` (column k of the logits is ``classes[k]``);
    ``logits`` and ``probabilities``, float32 (n, way); ``skipped``: the
    images left out (:class:`lwfm.SkippedFile`)."""

    def __init__(self, paths, classes, logits, probabilities, skipped, top) -> None:
        self.paths = list(paths)
        self.classes = tuple(classes)
        self.logits = logits
        self.probabilities = probabilities
        self.skipped = list(skipped)
        self.top = top

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self, top: Optional[int] = None) -> List[Row]:
        """Per image: path, class, probability and the ``top`` best classes
        (default: the ``top`` given to :func:`classify`)."""
        k = self.top if top is None else top
        preds = _predictions(self.probabilities, self.classes, k)
        return [Row(p, t[0].name, t[0].probability, t) for p, t in zip(self.paths, preds)]

    def to_csv(self, file, top: Optional[int] = None) -> None:
        """Write ``path,class,probability,class_2,probability_2,...`` (a
        header, then one line per image) to a path or an open text file;
        probabilities in the shortest form that reads back as the float32."""
        k = min(self.top if top is None else top, len(self.classes))
        own = not hasattr(file, "write")
        fh = open(file, "w", newline="", encoding="utf-8") if own else file
        try:
            w = csv.writer(fh)
            head = ["path", "class", "probability"]
            for i in range(2, k + 1):
                head += [f"class_{i}", f"probability_{i}"]
            w.writerow(head)
            for row in self.rows(k):
                line = [row.path]
                for pred in row.top:
                    line += [pred.name, str(np.float32(pred.probability))]
                w.writerow(line)
        finally:
            if own:
                fh.close()


def _support_arrays(model: Model, support) -> Tuple[np.ndarray, np.ndarray, Any, list]:
    """(images, integer labels, class names, skipped) of a support folder
    (read as ``SupportSet.from_folder`` reads it) or of ``(images, labels)``."""
    if isinstance(support, (str, os.PathLike)):
        root = os.fspath(support)
        names = sorted((d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                        and not d.startswith(".")), key=os.fsencode)
        images: List[np.ndarray] = []
        labels: List[int] = []
        classes: List[str] = []
        for name in names:
            files = sorted((f for f in os.listdir(os.path.join(root, name))
                            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")),
                           key=os.fsencode)
            if not files:
                continue
            for f in files:
                pixels = FolderSet.load_one(_OneFile(os.path.join(root, name, f)), 0, 0)
                images.append(model.preprocess(pixels)[0])
                labels.append(len(classes))
            classes.append(name)
        if len(classes) < 2:
            raise ValueError(f"{root}: found {len(classes)} class folders with images; 2 or more "
                             "are needed (one sub-folder of images per class)")
        return np.stack(images), np.asarray(labels, np.int32), tuple(classes), []
    images, labels = support
    codes, names = _encode_labels(labels)
    codes = np.asarray(codes, np.int32)
    way = int(codes.max()) + 1
    return (np.ascontiguousarray(images, np.float32), codes,
            names if names is not None else tuple(range(way)), [])


def _transductive(model: Model) -> bool:
    """rcn with batch-statistics BatchNorm: a query's logits depend on its
    batch (eval draws queries in the authors' interleaved class order, as lwfm
    eval and lwfm.evaluate; classify cuts chunks at batch boundaries)."""
    return model.config.get("batch_norm") == "batch"


def _as_model(model) -> Model:
    return model if isinstance(model, Model) else Model(model)


def _run(client, futures, progress) -> list:
    """Results of ``futures`` in order; the first task error is raised at
    once (the others are cancelled). ``progress(done, total)`` after each."""
    d = _dask()
    # equal tasks (the same chunk of files twice) share one key, and Dask
    # runs and reports them once: each key fills every place it holds
    index: Dict[Any, List[int]] = {}
    for i, f in enumerate(futures):
        index.setdefault(f.key, []).append(i)
    out: List[Any] = [None] * len(futures)
    done = 0
    try:
        for fut in d.as_completed(list({f.key: f for f in futures}.values())):
            result = fut.result()
            for i in index[fut.key]:
                out[i] = result
            done += len(index[fut.key])
            if progress:
                progress(done, len(futures))
    except BaseException:
        client.cancel(futures)
        raise
    return out


def classify(client, model, support, images: Sequence[str], *, top: int = 5, chunk: int = 32,
             shards: int = 1, on_bad: str = "fail", workers: Optional[Sequence[str]] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> ClassifyResult:
    """Classify image files on the workers of ``client``.

    ``model``: a weight file, a model's name or an :class:`lwfm.Model`;
    ``support``: a folder of class sub-folders (as
    ``SupportSet.from_folder``) or ``(images, labels)`` of preprocessed
    images; ``images``: files and folders (:func:`list_images`), read on the
    workers, ``chunk`` per task (for a model with batch-statistics
    BatchNorm, rounded up to a multiple of its ``query_batch``, so that the
    queries are batched as in one process). ``shards`` > 1 splits the support set by
    class (:func:`plan_shards`). ``on_bad``: ``"fail"`` (an unreadable image
    fails the job) or ``"skip"`` (left out, listed in ``skipped``).
    ``workers``: run only on these worker addresses. The logits are those of
    ``SupportSet.score`` in one process."""
    if on_bad not in ("fail", "skip"):
        raise ValueError(f"on_bad must be 'fail' or 'skip', got {on_bad!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    model = _as_model(model)
    paths = list_images(images)
    if not paths:
        raise ValueError("no images to classify")
    if _transductive(model):
        # each batch of query_batch queries is its own BatchNorm batch: the
        # chunks must cut the queries where one process's batches do
        qb = int(model.config.get("query_batch", 25))
        chunk = -(-chunk // qb) * qb
    s_images, s_labels, classes, skipped = _support_arrays(model, support)
    way = len(classes)
    model_p = _model_payload(model)
    model_f = _ship(client, model_p, workers)
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    opts = {"workers": workers, "allow_other_workers": False} if workers else {}
    if shards <= 1:
        with SupportSet(model, s_images, s_labels) as prepared:
            support_p = _support_payload(model_p, prepared)
        support_f = _ship(client, support_p, workers)
        futs = [client.submit(_classify_chunk, model_f, support_f, c, on_bad, **opts)
                for c in chunks]
        parts = _run(client, futs, progress)
    else:
        parts = _classify_sharded(client, model_f, model_p, model, s_images, s_labels, way,
                                  chunks, shards, on_bad, workers, progress)
    kept_paths, logits, bad = [], [], []
    for c, (kept, lg, b) in zip(chunks, parts):
        kept_paths += [c[i] for i in kept]
        logits.append(lg)
        bad += [SkippedFile(p, r) for p, r in b]
    logits = np.concatenate(logits) if logits else np.empty((0, way), np.float32)
    probs = model.probabilities(logits) if len(logits) else logits.copy()
    return ClassifyResult(kept_paths, classes, logits, probs, skipped + bad, top)


def _classify_sharded(client, model_f, model_p, model, s_images, s_labels, way, chunks, n_shards,
                      on_bad, workers, progress) -> list:
    """Per chunk, (kept, logits merged over the shards, bad)."""
    counts = np.bincount(s_labels, minlength=way)
    plan = plan_shards(model, counts, n_shards)
    pool = list(workers) if workers else sorted(client.scheduler_info()["workers"])
    shard_fs = []
    for k, shard in enumerate(plan):
        x, lab = _shard_images(s_images, s_labels, shard)
        # to the shard's worker and the next one (a spare copy: scattered
        # data lost with its last holder cannot be recomputed), not to all
        holders = sorted({pool[k % len(pool)], pool[(k + 1) % len(pool)]})
        shard_fs.append(_ship(client, _shard_payload(model_p, x, lab), holders))
    only = {"workers": workers, "allow_other_workers": False} if workers else {}
    heads, scores = [], []
    for c in chunks:
        fc = client.submit(_features_chunk, model_f, c, on_bad, **only)
        heads.append(client.submit(_chunk_head, fc, **only))
        # shard k's tasks prefer worker k (its set is prepared there), and go
        # elsewhere when that worker is gone
        scores.append([client.submit(_score_shard, model_f, shard_fs[k], len(shard.classes), fc,
                                     workers=[pool[k % len(pool)]],
                                     allow_other_workers=not workers)
                       for k, shard in enumerate(plan)])
    flat = [f for row in scores for f in row]
    results = _run(client, heads + flat, progress)
    heads, tails = results[:len(chunks)], results[len(chunks):]
    out = []
    for i, (kept, bad) in enumerate(heads):
        merged = np.empty((len(kept), way), np.float32)
        for k, shard in enumerate(plan):
            merged[:, shard.classes] = tails[i * len(plan) + k]
        out.append((kept, merged, bad))
    return out


# ---- evaluate -----------------------------------------------------------------

def evaluate(client, model, data: str, way: int = 5, shot: int = 1, query: int = 15,
             episodes: int = 600, seed: int = 1, *, chunk: int = 10,
             workers: Optional[Sequence[str]] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """N-way K-shot accuracy over ``episodes`` episodes of ``data`` (an
    Omniglot ``.npz`` or a folder tree, at the same path on every worker),
    ``chunk`` episodes per task. The episodes are those of ``lwfm eval
    --seed seed`` (:class:`lwfm.episodes.EpisodeSampler`), scored as it scores
    them, so the accuracies, their mean and the 95% CI (``1.96 std /
    sqrt(E)``, ddof 0, summed in episode order) are the same. Returns the
    keys of ``lwfm eval --json``."""
    t0 = time.time()
    if chunk < 1 or episodes < 1:
        raise ValueError("chunk and episodes must be >= 1")
    model = _as_model(model)
    ds = open_dataset(data)
    sampler = EpisodeSampler(ds.class_sizes, way, shot, query, seed)
    interleave = _transductive(model)
    drawn = []
    for _ in range(episodes):
        sup, s_lab, qry, q_lab = sampler.episode()
        if interleave:   # c0, c1, ..., c0, c1, ... (query per class)
            order = np.arange(len(qry)).reshape(way, query).T.ravel()
            qry, q_lab = [qry[i] for i in order], [q_lab[i] for i in order]
        drawn.append((sup, s_lab, qry, q_lab))
    model_p = _model_payload(model)
    model_f = _ship(client, model_p, workers)
    opts = {"workers": workers, "allow_other_workers": False} if workers else {}
    data = os.path.abspath(data)
    futs = [client.submit(_eval_chunk, model_f, data, drawn[i:i + chunk], **opts)
            for i in range(0, episodes, chunk)]
    accs = [a for part in _run(client, futs, progress) for a in part]
    mean = 0.0
    for a in accs:            # in episode order, as lwfm eval sums
        mean += a
    mean /= len(accs)
    var = 0.0
    for a in accs:
        var += (a - mean) * (a - mean)
    ci95 = 1.96 * math.sqrt(var / len(accs)) / math.sqrt(len(accs))
    return {"accuracy": mean, "ci95": ci95, "episodes": episodes, "way": way, "shot": shot,
            "query": query, "seed": seed, "model": model.path, "data": data,
            "backend": "lwfm-distributed", "seconds": time.time() - t0,
            "classes": len(sampler.eligible), "skipped": [], "episode_accuracies": accs}


# ---- the command --------------------------------------------------------------

def _progress_printer(what: str, quiet: bool) -> Optional[Callable[[int, int], None]]:
    if quiet:
        return None
    t0 = time.time()
    last = [-1]

    def show(done: int, total: int) -> None:
        step = done * 10 // total
        if step != last[0] or done == total:
            last[0] = step
            rate = done / max(time.time() - t0, 1e-9)
            print(f"{what} {done}/{total} tasks  {rate:.1f}/s", file=sys.stderr, flush=True)
    return show


def _client(args):
    if args.scheduler:
        return _dask().Client(args.scheduler)
    return local_client(args.workers, args.threads)


def _cmd_classify(args) -> int:
    with _client(args) as client:
        res = classify(client, args.model, args.support, args.query, top=args.top,
                       chunk=args.chunk, shards=args.shards, on_bad=args.on_bad,
                       progress=_progress_printer("classify", args.quiet))
    for s in res.skipped:
        print(f"{_PROG}: skipping unreadable image ({s.path}): {s.reason}", file=sys.stderr)
    if args.csv:
        res.to_csv(args.csv)
        if not args.quiet:
            print(f"{_PROG}: {len(res)} images classified, written to {args.csv}",
                  file=sys.stderr)
    else:
        out = io.StringIO()
        for row in res.rows():
            out.write("\t".join([row.path, str(row.name)] +
                                [f"{p.name}={p.probability:.4f}" for p in row.top]) + "\n")
        sys.stdout.write(out.getvalue())
    return 0


def _cmd_eval(args) -> int:
    ds = open_dataset(args.data)
    for c, n in enumerate(ds.class_sizes):
        if n < args.shot + args.query:
            print(f"{_PROG}: class '{ds.names[c]}' has {n} examples, fewer than shot + query "
                  f"= {args.shot + args.query}: left out of the episodes", file=sys.stderr)
    del ds
    with _client(args) as client:
        res = evaluate(client, args.model, args.data, args.way, args.shot, args.query,
                       args.episodes, args.seed, chunk=args.chunk,
                       progress=_progress_printer("eval", args.quiet))
    if args.json:
        import json
        print(json.dumps(res))
    else:
        print(f"accuracy {res['accuracy']:.2f}% +- {res['ci95']:.2f}% (95% CI, "
              f"{args.episodes} episodes, {args.way}-way {args.shot}-shot)")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(q):
        q.add_argument("--scheduler", metavar="ADDR",
                       help="a running Dask scheduler (tcp://HOST:8786); default: start a "
                            "local cluster for the run")
        q.add_argument("--workers", type=int, default=2,
                       help="worker processes of the local cluster (default 2)")
        q.add_argument("--threads", type=int, default=1,
                       help="OpenMP threads per local worker (default 1)")
        q.add_argument("--model", required=True, help="weight file or installed model's name")
        q.add_argument("--quiet", action="store_true", help="no progress on stderr")

    c = sub.add_parser("classify", help="classify image files against a support folder")
    common(c)
    c.add_argument("--support", required=True, help="one sub-folder of images per class")
    c.add_argument("--query", required=True, nargs="+", metavar="PATH",
                   help="image files or folders (searched below)")
    c.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    c.add_argument("--csv", metavar="FILE", help="write the table here instead of stdout")
    c.add_argument("--chunk", type=int, default=32, help="images per task (default 32)")
    c.add_argument("--shards", type=int, default=1,
                   help="split the support set by class over this many workers")
    c.add_argument("--on-bad", choices=("fail", "skip"), default="fail")
    e = sub.add_parser("eval", help="N-way K-shot accuracy, the episodes of lwfm eval")
    common(e)
    e.add_argument("--data", required=True, help="Omniglot .npz or folder-per-class tree")
    e.add_argument("--way", type=int, default=5)
    e.add_argument("--shot", type=int, default=1)
    e.add_argument("--query", type=int, default=15)
    e.add_argument("--episodes", type=int, default=600)
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--chunk", type=int, default=10, help="episodes per task (default 10)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _cmd_classify(args) if args.command == "classify" else _cmd_eval(args)
    except (WorkerError, Error, OSError, ValueError, ImportError) as e:
        print(f"{_PROG}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # run the module's own functions (by reference, as the workers import
    # them), not copies defined in __main__
    from lwfm.distributed import main as _main
    sys.exit(_main())
