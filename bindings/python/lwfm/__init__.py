"""Python bindings for libLWFM (ctypes over the C ABI in include/lwfm/lwfm.h).

    import lwfm
    with lwfm.Model("omniglot") as model:      # a bundled model, by name
        support = lwfm.SupportSet.from_folder(model, "shots/")
        for name, p in support.predict(model.preprocess(photos))[0][:3]:
            print(name, p)

The shared library is the one named by the environment variable
``LWFM_LIBRARY`` when it is set, otherwise the one installed with this
package (``meson install``), otherwise ``liblwfm.so.0`` from the system's
library path. It is loaded on first use, so the pure-Python tools of this
package (``python3 -m lwfm.convert``) work without it. Models given by name
are looked for as :func:`find_model` says.
"""

import contextlib
import ctypes
import json
import operator
import os
import pickle
import sys
import threading
import weakref
from collections import namedtuple

import numpy as np

__all__ = ["Error", "Model", "SupportSet", "Prediction", "SkippedFile", "TopK", "find_model",
           "library_version", "linear_assignment", "LIBRARY_ENV", "MODEL_PATH_ENV",
           "__version__"]

# The version of this package: LWFM_VERSION_STRING of lwfm.h, the library's
# lwfm_version() (tests/python/test_packaging.py checks all three agree).
__version__ = "0.1.0"

LIBRARY_ENV = "LWFM_LIBRARY"
MODEL_PATH_ENV = "LWFM_MODEL_PATH"
_SONAME = "liblwfm.so.0"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _installed(name):
    """A path from ``_install.py`` (written by ``meson install``), made
    absolute against this package's folder; None when not installed so."""
    try:
        from . import _install
    except ImportError:
        return None
    return os.path.normpath(os.path.join(_HERE, getattr(_install, name)))


def _model_dirs():
    """The folders searched for a model given by name, in order."""
    dirs = [d for d in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if d]
    installed = _installed("MODELS")
    if installed:
        dirs.append(installed)
    for prefix in (sys.prefix, "/usr/local", "/usr"):
        d = os.path.join(prefix, "share", "lwfm", "models")
        if d not in dirs:
            dirs.append(d)
    return dirs


def find_model(name):
    """The weight file meant by ``name``: ``name`` itself when it is an
    existing file or contains a path separator; otherwise ``NAME`` or
    ``NAME.npz`` in each folder of ``$LWFM_MODEL_PATH``, then in the bundled
    models installed with this package (``PREFIX/share/lwfm/models``), then
    in ``share/lwfm/models`` of ``sys.prefix``, ``/usr/local`` and ``/usr``
    (the ``lwfm`` command searches the same way: ``--model omniglot``).
    Raises FileNotFoundError naming the folders searched."""
    name = os.fspath(name)
    if os.path.isfile(name) or os.sep in name or (os.altsep and os.altsep in name):
        return name
    dirs = _model_dirs()
    for d in dirs:
        for cand in (os.path.join(d, name), os.path.join(d, name + ".npz")):
            if os.path.isfile(cand):
                return cand
    raise FileNotFoundError(f"no model file '{name}' and no installed model of that name "
                            f"(looked in {', '.join(dirs)})")

_PRECISIONS = {"fp32": 0, "bf16": 1, "int8": 2}
_CONVOLUTIONS = {"auto": 0, "direct": 1, "winograd": 2}  # enum lwfm_convolutions


class Error(RuntimeError):
    """A libLWFM call failed. ``status`` is the numeric lwfm_status,
    ``status_name`` its short description, ``str(err)`` the library's detail."""

    def __init__(self, status, status_name, message):
        super().__init__(message or status_name)
        self.status = status
        self.status_name = status_name


_lib = None
_lib_lock = threading.Lock()

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_size = ctypes.c_size_t
_fptr = ctypes.POINTER(ctypes.c_float)


def _declare(lib):
    def fn(name, restype, *argtypes):
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = list(argtypes)

    st = ctypes.c_int
    fn("lwfm_version", ctypes.c_char_p)
    fn("lwfm_status_string", ctypes.c_char_p, st)
    fn("lwfm_last_error", ctypes.c_char_p)
    fn("lwfm_load_options_create", st, ctypes.POINTER(_p))
    fn("lwfm_load_options_destroy", None, _p)
    fn("lwfm_load_options_set_precision", st, _p, ctypes.c_int)
    fn("lwfm_load_options_set_convolutions", st, _p, ctypes.c_int)
    fn("lwfm_load_options_set_max_total_bytes", st, _p, ctypes.c_uint64)
    fn("lwfm_model_load", st, ctypes.POINTER(_p), ctypes.c_char_p, _p)
    fn("lwfm_model_load_from_memory", st, ctypes.POINTER(_p), ctypes.c_char_p, _size, _p)
    fn("lwfm_model_destroy", None, _p)
    fn("lwfm_model_method", ctypes.c_int, _p)
    fn("lwfm_model_fingerprint", st, _p, ctypes.c_char_p, _size)
    fn("lwfm_model_config_json", st, _p, ctypes.c_char_p, _size, ctypes.POINTER(_size))
    fn("lwfm_model_input_shape", st, _p, ctypes.POINTER(_i64), ctypes.POINTER(_i64),
       ctypes.POINTER(_i64))
    fn("lwfm_model_probabilities", st, _p, _fptr, _i64, _i64, _fptr, _size)
    fn("lwfm_model_unknown_threshold", ctypes.c_double, _p)
    fn("lwfm_model_feature_shape", st, _p, _i64, _i64, ctypes.POINTER(_i64),
       ctypes.POINTER(_i64), ctypes.POINTER(_i64))
    fn("lwfm_model_features", st, _p, _fptr, _i64, _i64, _i64, _i64, _fptr, _size)
    fn("lwfm_model_convolutions", _i64, _p)
    fn("lwfm_model_convolution_name", ctypes.c_char_p, _p, _i64)
    fn("lwfm_model_convolution_ranges", st, _p, _fptr, _i64, _i64, _i64, _i64, _fptr, _size)
    fn("lwfm_model_convolution_histograms", st, _p, _fptr, _i64, _i64, _i64, _i64, _fptr, _i64,
       ctypes.POINTER(ctypes.c_uint64), _size)
    fn("lwfm_model_preprocess", st, _p, _p, ctypes.c_int, _i64, _i64, _i64, _i64, _fptr, _size)
    _i32p = ctypes.POINTER(ctypes.c_int32)
    fn("lwfm_episode_score", st, _p, _fptr, _i64, _i32p, _fptr, _i64, _i64, _i64, _i64, _i64,
       _fptr, _size)
    fn("lwfm_episode_score_features", st, _p, _fptr, _i64, _i32p, _fptr, _i64, _i64, _i64, _i64,
       _i64, _fptr, _size)
    fn("lwfm_support_prepare", st, ctypes.POINTER(_p), _p, _fptr, _i64, _i32p, _i64, _i64, _i64,
       _i64)
    fn("lwfm_support_prepare_features", st, ctypes.POINTER(_p), _p, _fptr, _i64, _i32p, _i64,
       _i64, _i64, _i64)
    fn("lwfm_support_destroy", None, _p)
    fn("lwfm_support_way", _i64, _p)
    fn("lwfm_support_count", _i64, _p)
    fn("lwfm_support_score", st, _p, _fptr, _i64, _i64, _i64, _i64, _fptr, _size)
    fn("lwfm_support_score_features", st, _p, _fptr, _i64, _i64, _i64, _i64, _fptr, _size)
    fn("lwfm_support_set_class_names", st, _p, ctypes.POINTER(ctypes.c_char_p), _i64)
    fn("lwfm_support_class_name", ctypes.c_char_p, _p, _i64)
    fn("lwfm_support_from_features", ctypes.c_int, _p)
    fn("lwfm_support_add", st, ctypes.POINTER(_p), _p, _fptr, _i64, _i32p, _i64, _i64, _i64, _i64)
    fn("lwfm_support_add_features", st, ctypes.POINTER(_p), _p, _fptr, _i64, _i32p, _i64, _i64,
       _i64, _i64)
    fn("lwfm_support_save", st, _p, ctypes.c_char_p)
    fn("lwfm_support_save_to_memory", st, _p, ctypes.c_char_p, _size, ctypes.POINTER(_size))
    fn("lwfm_support_load", st, ctypes.POINTER(_p), _p, ctypes.c_char_p)
    fn("lwfm_support_load_from_memory", st, ctypes.POINTER(_p), _p, ctypes.c_char_p, _size)
    for name in ("lwfm_support_score_topk", "lwfm_support_score_topk_features"):
        fn(name, st, _p, _fptr, _i64, _i64, _i64, _i64, _i64, _i32p, _fptr, _fptr, _size)
    fn("lwfm_model_layers", _i64, _p)
    fn("lwfm_lwe_create", st, ctypes.POINTER(_p), _p)
    fn("lwfm_lwe_destroy", None, _p)
    fn("lwfm_lwe_pair", st, _p, _fptr, _fptr, _i64, _i64, _i64, _fptr, _fptr, _size, _fptr)
    fn("lwfm_spm_create", st, ctypes.POINTER(_p), _p)
    fn("lwfm_spm_destroy", None, _p)
    fn("lwfm_spm_pair", st, _p, _fptr, _fptr, _i64, _i64, _i64, ctypes.POINTER(_i64), _fptr,
       _fptr, _size, _fptr)
    fn("lwfm_rcn_create", st, ctypes.POINTER(_p), _p)
    fn("lwfm_rcn_destroy", None, _p)
    fn("lwfm_rcn_pair", st, _p, _fptr, _fptr, _i64, _i64, _i64, _fptr, ctypes.POINTER(_i64),
       _fptr, _size, _fptr)
    fn("lwfm_linear_assignment", st, ctypes.POINTER(ctypes.c_double), _i64,
       ctypes.POINTER(_i64), ctypes.POINTER(ctypes.c_double))


def _library():
    global _lib
    with _lib_lock:
        if _lib is None:
            path = os.environ.get(LIBRARY_ENV)
            if not path:
                installed = _installed("LIBRARY")
                path = installed if installed and os.path.exists(installed) else _SONAME
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                raise OSError(
                    f"cannot load libLWFM from '{path}' ({e}); build it with 'make' and set "
                    f"{LIBRARY_ENV}=/path/to/liblwfm.so, or install it") from None
            _declare(lib)
            _lib = lib
        return _lib


class _Guard:
    """A C handle shared by threads (the calls release the GIL). Every call
    holds it with ``use()``; ``close()`` refuses later calls (ValueError) and
    frees the handle once the calls in flight have returned, on the thread
    that finishes last: closing never frees it under a running call."""

    def __init__(self, handle, destroy, what):
        self._lock = threading.Lock()
        self._handle = handle
        self._destroy = [(destroy, handle)]
        self._users = 0
        self._closed = False
        self._what = what

    @property
    def closed(self):
        return self._closed

    def adopt(self, owner, attr, handle, destroy):
        """Keep `handle` as owner.attr, freed with this one; if another thread
        set owner.attr first, free `handle` and return False."""
        with self._lock:
            if getattr(owner, attr, None) is None:
                setattr(owner, attr, handle)
                self._destroy.insert(0, (destroy, handle))
                return True
        destroy(handle)
        return False

    @contextlib.contextmanager
    def use(self):
        with self._lock:
            if self._closed:
                raise ValueError(f"operation on a closed {self._what}")
            self._users += 1
        try:
            yield self._handle
        finally:
            with self._lock:
                self._users -= 1
                free = self._closed and self._users == 0
            if free:
                self._free()

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            free = self._users == 0
        if free:
            self._free()

    def _free(self):
        with self._lock:
            todo, self._destroy, self._handle = self._destroy, [], None
        for destroy, handle in todo:
            destroy(handle)


def _index(value, name, lo=0, hi=(1 << 63) - 1):
    """An integer argument for the C API (ctypes would wrap it silently)."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not lo <= v <= hi:
        raise OverflowError(f"{name} = {v} is outside [{lo}, {hi}]")
    return v


_LIMIT_WAY = 16384  # LWFM_LIMIT_WAY (lwfm.h)


def _way(value):
    """``way`` for the C API: an integer; over LWFM_LIMIT_WAY it is refused here,
    before a (n_query, way) output array is allocated."""
    way = _index(value, "way", -(1 << 63))
    if way > _LIMIT_WAY:
        raise ValueError(f"way = {way} exceeds LWFM_LIMIT_WAY = {_LIMIT_WAY}")
    return way


def _path(path):
    """A file name for the C API: bytes without NUL (C would stop at it)."""
    b = os.fsencode(path)
    if b"\0" in b:
        raise ValueError(f"path contains a NUL byte: {path!r}")
    return b


def _check(status):
    if status != 0:
        lib = _library()
        detail = lib.lwfm_last_error().decode("utf-8", "replace")
        name = lib.lwfm_status_string(status).decode()
        raise Error(status, name, detail)


def library_version():
    """Run-time version string of the loaded shared library."""
    return _library().lwfm_version().decode()


def _as_images(images, name="images"):
    """float32, C-contiguous, 4-D (a single 3-D image gets a batch axis)."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must be (n, channels, height, width), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _fp(arr):
    return arr.ctypes.data_as(_fptr)


def _as_labels(labels, n):
    """int32 C-contiguous labels, one per support item; way = max + 1."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"support_labels must be a 1-D array of {n} labels, got shape "
                         f"{lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"support_labels must be integers, got dtype {lab.dtype}")
    # checked before the cast to int32, which would wrap (2**32 + 4 -> 4)
    if lab.size and (lab.min() < 0 or lab.max() > np.iinfo(np.int32).max):
        bad = lab.min() if lab.min() < 0 else lab.max()
        raise ValueError(f"support label {bad} is outside 0..{np.iinfo(np.int32).max}")
    lab = np.ascontiguousarray(lab, dtype=np.int32)
    return lab, (int(lab.max()) + 1 if lab.size else 0)


Prediction = namedtuple("Prediction", ["name", "probability"])
Prediction.__doc__ = """One class of a query's prediction: the class's name (its support
label) and its calibrated probability (``Model.probabilities``)."""

TopK = namedtuple("TopK", ["indices", "classes", "logits", "probabilities"])
TopK.__doc__ = """:meth:`SupportSet.top_k`'s result, one row per query, best first:
``indices`` (n_query, k) int32 class indices, ``classes`` their names (a list
of lists, from :attr:`SupportSet.classes`), ``logits`` and calibrated
``probabilities`` (n_query, k) float32."""

SkippedFile = namedtuple("SkippedFile", ["path", "reason"])
SkippedFile.__doc__ = """A file or folder :meth:`SupportSet.from_folder` left out, and why."""


def _encode_labels(labels, way=None):
    """Support labels -> (labels for the C API, class names or None).

    Integer labels are class indices 0..way-1, as the C API takes them (no
    names: None); floats are refused as before (a mistake, not names). Any
    other hashable values (strings, tuples, ...) are class
    names, numbered in order of first appearance: column k of the logits is
    the k-th distinct name."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind not in "OUS":
        return labels, None  # numbers: _as_labels checks them
    items = list(labels)
    if all(isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))
           for x in items):
        return labels, None
    if items and all(isinstance(x, (float, np.floating)) for x in items):
        return labels, None  # numbers, not names: _as_labels refuses non-integers
    numbers = {}
    codes = []
    for x in items:
        if isinstance(x, np.generic):
            x = x.item()
        try:
            codes.append(numbers.setdefault(x, len(numbers)))
        except TypeError:
            raise TypeError(f"support labels must be integers or hashable class names, got "
                            f"{type(x).__name__}") from None
    if way is not None and int(way) != len(numbers):
        raise ValueError(f"way={way} given with {len(numbers)} distinct class names")
    return np.asarray(codes, dtype=np.int32), tuple(numbers)


def _predictions(probs, classes, top):
    """Rows of probabilities -> per row, (name, probability) best first."""
    k = probs.shape[1] if top is None else max(0, min(int(top), probs.shape[1]))
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([Prediction(classes[c], float(row[c])) for c in order])
    return out


class _OneFile:
    """Adapter: decode one path with ``lwfm.episodes.FolderSet.load_one``,
    the decoding ``python3 -m lwfm.evaluate`` shares with the lwfm command."""

    def __init__(self, path):
        self._path = path

    def path(self, c, i):
        return self._path


def _lp(arr):
    return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))


def linear_assignment(cost):
    """Exact minimum-cost assignment of a square cost matrix (libLWFM's
    solver). Returns (assignment, total): assignment[i] is row i's column."""
    c = np.ascontiguousarray(cost, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cost must be a square matrix, got shape {c.shape}")
    out = np.empty(c.shape[0], dtype=np.int64)
    total = ctypes.c_double()
    _check(_library().lwfm_linear_assignment(
        c.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), c.shape[0],
        out.ctypes.data_as(ctypes.POINTER(_i64)), ctypes.byref(total)))
    return out, total.value


class Model:
    """A loaded weight file (``.npz``, see docs/weight-format.md).

    The underlying C model is immutable and thread-safe: one Model may be
    shared by many Python threads; the C calls release the GIL.
    Close it with ``close()``, a ``with`` block, or let it be collected;
    ``close()`` may race with calls on other threads (they finish, later
    calls raise ValueError). A child process forked after use (e.g. by
    ``multiprocessing`` with the "fork" start method) may go on using the
    model; its calls run single-threaded there (docs/api.md, "Threads").

    ``precision``: ``"fp32"`` (default), ``"bf16"`` or ``"int8"``, the
    backbone's arithmetic (bf16 convolutions with f32 accumulation; int8
    convolutions with the calibrated input ranges of the file's ``quant/``
    members, added by ``python3 -m lwfm.quantize``; inputs, features and
    logits stay float32; the metric is float32 in all). Other values raise
    ValueError.

    ``convolutions``: how an fp32 backbone runs its 3x3 stride-1
    convolutions: ``"auto"`` (default: Winograd on AVX2 CPUs without
    AVX-512, where it was measured faster), ``"direct"`` (oneDNN's direct
    convolution: the least memory, e.g. 45 MB of ResNet-18 weights instead of
    113 MB, and a faster load) or ``"winograd"`` (wherever the CPU has AVX2
    and FMA). Results agree to float32 rounding.
    """

    def __init__(self, path, precision="fp32", max_total_bytes=None, convolutions="auto"):
        if isinstance(path, str):
            try:
                path = find_model(path)  # a name like "omniglot": an installed model
            except FileNotFoundError:
                pass  # the library's own message names the path
        c_path = _path(path)
        self._start(lambda lib, out, opts: lib.lwfm_model_load(out, c_path, opts), precision,
                    max_total_bytes, convolutions)
        self.path = str(path)

    @classmethod
    def from_bytes(cls, data, precision="fp32", max_total_bytes=None, convolutions="auto"):
        """A Model from the bytes of a weight file (what ``open(path,
        "rb").read()`` gives); ``path`` is then ``"<memory>"``."""
        data = bytes(data)
        self = cls.__new__(cls)
        self._start(lambda lib, out, opts: lib.lwfm_model_load_from_memory(out, data, len(data),
                                                                           opts),
                    precision, max_total_bytes, convolutions)
        self.path = "<memory>"
        self._weights = data
        return self

    def _start(self, load, precision, max_total_bytes, convolutions):
        lib = _library()
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        if convolutions not in _CONVOLUTIONS:
            raise ValueError(f"convolutions must be one of {sorted(_CONVOLUTIONS)}, "
                             f"got {convolutions!r}")
        opts = _p()
        _check(lib.lwfm_load_options_create(ctypes.byref(opts)))
        try:
            _check(lib.lwfm_load_options_set_precision(opts, _PRECISIONS[precision]))
            _check(lib.lwfm_load_options_set_convolutions(opts, _CONVOLUTIONS[convolutions]))
            if max_total_bytes is not None:
                total = _index(max_total_bytes, "max_total_bytes", 1, (1 << 64) - 1)
                _check(lib.lwfm_load_options_set_max_total_bytes(opts, total))
            handle = _p()
            _check(load(lib, ctypes.byref(handle), opts))
        finally:
            lib.lwfm_load_options_destroy(opts)
        self._guard = _Guard(handle, lib.lwfm_model_destroy, "lwfm.Model")
        self._finalizer = weakref.finalize(self, self._guard.close)
        self.precision = precision
        self.convolutions = convolutions
        self._max_total_bytes = max_total_bytes
        self._config = None
        self._fingerprint = None
        self._weights = None  # the weight file's bytes, once pickling has read them
        self._weights_lock = threading.Lock()

    # -- pickling ---------------------------------------------------------
    def __reduce__(self):
        """Pickled by value: the weight file's bytes and the load options
        (precision, max_total_bytes, convolutions), so that another process or machine
        rebuilds the same model without the file. A model loaded from a file
        reads it at its first pickling and checks it still holds the
        weights the model was loaded with (:attr:`fingerprint`): a file
        changed on disk since raises ``pickle.PicklingError`` rather than
        ship other weights."""
        return (_model_from_pickle,
                (self._weight_bytes(), self.precision, self._max_total_bytes, self.path,
                 self.convolutions))

    def _weight_bytes(self):
        with self._weights_lock:
            if self._weights is not None:
                return self._weights
            want = self.fingerprint
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise pickle.PicklingError(
                    f"cannot pickle lwfm.Model: its weight file {self.path!r} cannot be read "
                    f"({e})") from None
            try:
                with Model.from_bytes(data, self.precision, self._max_total_bytes) as probe:
                    got = probe.fingerprint
            except Error as e:
                got = f"unreadable ({e})"
            if got != want:
                raise pickle.PicklingError(
                    f"cannot pickle lwfm.Model: {self.path!r} changed on disk since the model "
                    f"was loaded (model fingerprint {want}, the file's now {got})")
            self._weights = data
            return data

    @property
    def fingerprint(self):
        """SHA-256 (64 hex digits) of the weight file's arrays as the library
        reads them: names the weights, not the file (``lwfm_model_fingerprint``).
        A saved :class:`SupportSet` is bound to it."""
        with self._use() as h:
            if self._fingerprint is None:
                buf = ctypes.create_string_buffer(65)
                _check(_library().lwfm_model_fingerprint(h, buf, 65))
                self._fingerprint = buf.value.decode()
        return self._fingerprint

    # -- lifetime ---------------------------------------------------------
    def close(self):
        """Release the model (idempotent). Later calls raise ValueError;
        calls running on other threads finish first (the C model is freed
        when the last of them returns)."""
        self._finalizer()

    @property
    def closed(self):
        return self._guard.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _h(self):
        """The handle, for a check only: C calls go through ``_use()``."""
        with self._guard.use() as h:
            return h

    def _use(self):
        """``with self._use() as h:``: the handle, kept open during the call."""
        return self._guard.use()

    def __repr__(self):
        if self.closed:
            return "<lwfm.Model (closed)>"
        c = self.config
        return f"<lwfm.Model {c['method']} / {c['backbone']} from {self.path!r}>"

    # -- information ------------------------------------------------------
    @property
    def config(self):
        """The model's configuration (dict): method, backbone, parameters,
        preprocessing."""
        with self._use() as h:  # raises on a closed model, cached or not
            if self._config is None:
                lib = _library()
                n = _size()
                st = lib.lwfm_model_config_json(h, None, 0, ctypes.byref(n))
                if st not in (0, 12):  # 12: LWFM_ERR_BUFFER_TOO_SMALL, expected when sizing
                    _check(st)
                buf = ctypes.create_string_buffer(n.value + 1)
                _check(lib.lwfm_model_config_json(h, buf, n.value + 1, None))
                self._config = json.loads(buf.value.decode())
        return dict(self._config)

    @property
    def input_shape(self):
        """(channels, height, width) the model was trained on."""
        c, h, w = _i64(), _i64(), _i64()
        with self._use() as m:
            _check(_library().lwfm_model_input_shape(m, ctypes.byref(c), ctypes.byref(h),
                                                     ctypes.byref(w)))
        return (c.value, h.value, w.value)

    @property
    def unknown_threshold(self):
        """The calibrated "none of these" threshold on the top probability
        (0.0 when the model has none; see ``probabilities``)."""
        with self._use() as h:
            return float(_library().lwfm_model_unknown_threshold(h))

    def probabilities(self, logits):
        """Calibrated class probabilities of logits rows ``(n, way)``:
        softmax(logits / T) with the model's fitted ``calibration_temperature``
        (1 for an uncalibrated model). A row whose largest probability is
        below ``unknown_threshold`` is, by the model's measured rates, none of
        the support classes (docs/models.md)."""
        arr = np.ascontiguousarray(logits, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] < 1:
            raise ValueError(f"logits must be (n, way), got shape {arr.shape}")
        out = np.empty_like(arr)
        with self._use() as h:
            _check(_library().lwfm_model_probabilities(h, _fp(arr), arr.shape[0], arr.shape[1],
                                                       _fp(out), out.size))
        return out

    def feature_shape(self, height=None, width=None):
        """(C, fh, fw) of one image's feature map for an input size."""
        _, h0, w0 = self.input_shape
        height = h0 if height is None else _index(height, "height", -(1 << 63))
        width = w0 if width is None else _index(width, "width", -(1 << 63))
        c, fh, fw = _i64(), _i64(), _i64()
        with self._use() as h:
            _check(_library().lwfm_model_feature_shape(
                h, height, width, ctypes.byref(c), ctypes.byref(fh), ctypes.byref(fw)))
        return (c.value, fh.value, fw.value)

    # -- compute ------------------------------------------------------------
    def preprocess(self, images):
        """Decoded images -> normalised model inputs, float32 (n, C, S, S).

        ``images``: one array (H, W) or (H, W, c) with c = 1 (grey), 2 (grey
        + alpha), 3 (RGB) or 4 (RGBA), or a list of such arrays of any sizes;
        uint8, uint16 or bool (True = 255). The preprocessing of the model's
        configuration (resize, centre crop, mean/std), computed by the C
        library (``lwfm_model_preprocess``); it equals
        ``lwfm.episodes.preprocess``."""
        if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
            images = [images]
        c, h, w = self.input_shape
        out = np.empty((len(images), c, h, w), dtype=np.float32)
        lib = _library()
        per_image = c * h * w
        for k, img in enumerate(images):
            a = np.asarray(img)
            if a.dtype == np.bool_:
                a = a.astype(np.uint8) * np.uint8(255)
            if a.dtype not in (np.uint8, np.uint16):
                raise ValueError(f"image {k}: dtype must be uint8, uint16 or bool, got {a.dtype}")
            if a.ndim == 2:
                a = a[:, :, None]
            if a.ndim != 3 or not 1 <= a.shape[2] <= 4:
                raise ValueError(f"image {k}: shape must be (H, W) or (H, W, 1..4), got "
                                 f"{np.asarray(img).shape}")
            # rows may lie apart (a crop of a larger array) as long as each
            # row's pixels are packed; anything else is copied
            hh, ww, cc = a.shape
            packed = ww * cc * a.itemsize
            if a.flags.c_contiguous:
                row = 0
            elif ((cc == 1 or a.strides[2] == a.itemsize) and
                  (ww == 1 or a.strides[1] == cc * a.itemsize) and a.strides[0] >= packed):
                row = a.strides[0]
            else:
                a, row = np.ascontiguousarray(a), 0
            with self._use() as h:
                _check(lib.lwfm_model_preprocess(
                    h, ctypes.c_void_p(a.ctypes.data), 0 if a.dtype == np.uint8 else 1,
                    hh, ww, cc, row, out[k].ctypes.data_as(_fptr), per_image))
        return out

    def features(self, images):
        """Backbone features of normalised images.

        images: (n, channels, height, width) array (any float dtype; converted
        to C-contiguous float32 only if needed). Returns float32
        (n, C, fh, fw)."""
        x = _as_images(images)
        n, c, h, w = x.shape
        C, fh, fw = self.feature_shape(h, w)
        out = np.empty((n, C, fh, fw), dtype=np.float32)
        with self._use() as m:
            _check(_library().lwfm_model_features(m, _fp(x), n, c, h, w, _fp(out), out.size))
        return out

    def convolution_names(self):
        """Weight keys of the backbone's convolutions, in the order it runs
        them (the ``quant/<key>`` members int8 needs)."""
        with self._use() as m:
            lib = _library()
            return [lib.lwfm_model_convolution_name(m, i).decode()
                    for i in range(lib.lwfm_model_convolutions(m))]

    def convolution_ranges(self, images):
        """Per image, the largest |value| each backbone convolution reads:
        float32 (n, len(convolution_names())). The int8 calibration
        (``lwfm.quantize``); the model must be loaded in fp32."""
        x = _as_images(images)
        n, c, h, w = x.shape
        with self._use() as m:
            lib = _library()
            out = np.empty((n, lib.lwfm_model_convolutions(m)), dtype=np.float32)
            _check(lib.lwfm_model_convolution_ranges(m, _fp(x), n, c, h, w, _fp(out), out.size))
        return out

    def convolution_histograms(self, images, limits, bins, counts=None):
        """Histograms of the values each backbone convolution reads: uint64
        (len(convolution_names()), bins), bin b of convolution i counting
        the values in [-limits[i] + 2 b limits[i] / bins, ... + 2 limits[i] / bins)
        (values beyond +-limits[i] in the end bins). ``counts``, when given
        (that shape, uint64, C-contiguous), is added to in place and
        returned: successive batches accumulate. The int8 calibration
        (``lwfm.quantize``); the model must be loaded in fp32."""
        x = _as_images(images)
        n, c, h, w = x.shape
        with self._use() as m:
            lib = _library()
            k = lib.lwfm_model_convolutions(m)
            lim = np.ascontiguousarray(limits, dtype=np.float32)
            if lim.shape != (k,):
                raise ValueError(f"limits: shape {lim.shape}, expected ({k},)")
            bins = int(bins)
            if counts is None:
                counts = np.zeros((k, max(bins, 0)), dtype=np.uint64)
            elif (not isinstance(counts, np.ndarray) or counts.dtype != np.uint64
                  or counts.shape != (k, bins) or not counts.flags.c_contiguous
                  or not counts.flags.writeable):
                raise ValueError(f"counts: must be a writeable C-contiguous uint64 array of "
                                 f"shape ({k}, {bins})")
            ptr = counts.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64))
            _check(lib.lwfm_model_convolution_histograms(m, _fp(x), n, c, h, w, _fp(lim), bins,
                                                         ptr, counts.size))
        return counts

    def episode_score(self, support, support_labels, query, way=None):
        """Logits (n_query, way) float32 of one episode from images.

        support: (n_s, channels, H, W) normalised images; support_labels:
        n_s integers in 0..way-1 (any order, every class at least once);
        query: (n_q, channels, H', W'). ``way`` defaults to max(label) + 1.
        Labels may instead be class names (strings or any hashable): column k
        is then the k-th distinct name in order of appearance
        (:meth:`predict` returns the names with the probabilities)."""
        s, q = _as_images(support, "support"), _as_images(query, "query")
        support_labels, names = _encode_labels(support_labels, way)
        lab, w = _as_labels(support_labels, s.shape[0])
        way = _way(w if way is None else way)
        if q.shape[1] != s.shape[1] or q.shape[2:] != s.shape[2:]:
            # different sizes are fine for the C API's two-call path
            sup = self.prepare_support(s, lab, way)
            try:
                return sup.score(q)
            finally:
                sup.close()
        out = np.empty((q.shape[0], max(way, 0)), dtype=np.float32)
        with self._use() as h:
            _check(_library().lwfm_episode_score(h, _fp(s), s.shape[0], _lp(lab), _fp(q),
                                                 q.shape[0], s.shape[1], s.shape[2], s.shape[3],
                                                 way, _fp(out), out.size))
        return out

    def score_features(self, support_feats, support_labels, query_feats, way=None):
        """Logits (n_query, way) from feature maps as ``features()`` returns
        them: (n, C, fs, fs) float32. Labels as for :meth:`episode_score`."""
        s = _as_images(support_feats, "support_feats")
        q = _as_images(query_feats, "query_feats")
        support_labels, names = _encode_labels(support_labels, way)
        lab, w = _as_labels(support_labels, s.shape[0])
        way = _way(w if way is None else way)
        if q.shape[1:] != s.shape[1:]:
            raise ValueError(f"support features {s.shape[1:]} and query features {q.shape[1:]} "
                             "differ in shape")
        out = np.empty((q.shape[0], max(way, 0)), dtype=np.float32)
        with self._use() as h:
            _check(_library().lwfm_episode_score_features(
                h, _fp(s), s.shape[0], _lp(lab), _fp(q), q.shape[0], s.shape[1], s.shape[2],
                s.shape[3], way, _fp(out), out.size))
        return out

    def _pair_inputs(self, support_feature, query_feature):
        s = _as_images(support_feature, "support_feature")
        q = _as_images(query_feature, "query_feature")
        if s.shape[0] != 1 or q.shape != s.shape:
            raise ValueError("support_feature and query_feature must each be one (C, fh, fw) map "
                             f"of the same shape, got {s.shape[1:]} and {q.shape[1:]}")
        with self._use() as h:
            n_layers = int(_library().lwfm_model_layers(h))
        return s, q, n_layers, s.shape[2] * s.shape[3]

    @contextlib.contextmanager
    def _pair_handle(self, kind):
        """Lazily created LWE / SPM / RCN handle, released with the model;
        held (with the model) for the duration of the call."""
        attr = "_" + kind
        with self._use() as m:
            h = getattr(self, attr, None)
            if h is None:
                lib = _library()
                h = _p()
                _check(getattr(lib, f"lwfm_{kind}_create")(ctypes.byref(h), m))
                if not self._guard.adopt(self, attr, h, getattr(lib, f"lwfm_{kind}_destroy")):
                    h = getattr(self, attr)  # another thread made one meanwhile
            yield h

    def lwe_pair(self, support_feature, query_feature):
        """The LWE fuser on one (support, query) pair of feature maps.

        Returns ``(support_weights, query_weights, global_similarity)``: the
        attention weights per layer and position, (L, fh*fw) float32 each,
        and the cosine of the pair's pooled attended maps."""
        s, q, n_layers, n_pos = self._pair_inputs(support_feature, query_feature)
        ws = np.empty((n_layers, n_pos), np.float32)
        wq = np.empty((n_layers, n_pos), np.float32)
        g = ctypes.c_float()
        with self._pair_handle("lwe") as h:
            _check(_library().lwfm_lwe_pair(h, _fp(s), _fp(q), s.shape[1], s.shape[2],
                                            s.shape[3], _fp(ws), _fp(wq), ws.size,
                                            ctypes.byref(g)))
        return ws, wq, g.value

    def spm_pair(self, support_feature, query_feature):
        """The SPM matcher on one (support, query) pair of feature maps.

        Returns ``(assignment, similarity, layer_scores, score)``:
        assignment[l, a] is the query position matched to support position a
        in layer l (int64), similarity[l, a] the matched cosine, layer_scores
        matcher_prob x top-k sums per layer, score their maximum."""
        s, q, n_layers, n_pos = self._pair_inputs(support_feature, query_feature)
        asg = np.empty((n_layers, n_pos), np.int64)
        sim = np.empty((n_layers, n_pos), np.float32)
        layer = np.empty(n_layers, np.float32)
        score = ctypes.c_float()
        with self._pair_handle("spm") as h:
            _check(_library().lwfm_spm_pair(h, _fp(s), _fp(q), s.shape[1], s.shape[2],
                                            s.shape[3], asg.ctypes.data_as(ctypes.POINTER(_i64)),
                                            _fp(sim), _fp(layer), asg.size, ctypes.byref(score)))
        return asg, sim, layer, score.value

    def rcn_pair(self, support_feature, query_feature):
        """The RCN region comparison on one (support, query) pair of feature maps.

        Returns ``(similarity, match, weight, score)`` over the support's
        fh*fw regions: the best cosine with any query region, that region
        (int64), the meta-learner's weight, and sum(weight * similarity)."""
        s, q, _, n_pos = self._pair_inputs(support_feature, query_feature)
        sim = np.empty(n_pos, np.float32)
        match = np.empty(n_pos, np.int64)
        weight = np.empty(n_pos, np.float32)
        score = ctypes.c_float()
        with self._pair_handle("rcn") as h:
            _check(_library().lwfm_rcn_pair(h, _fp(s), _fp(q), s.shape[1], s.shape[2],
                                            s.shape[3], _fp(sim),
                                            match.ctypes.data_as(ctypes.POINTER(_i64)),
                                            _fp(weight), n_pos, ctypes.byref(score)))
        return sim, match, weight, score.value

    def prepare_support(self, support, support_labels, way=None, features=False):
        """A :class:`SupportSet`: the support side done once, to score any
        number of query batches. ``features=True`` takes feature maps
        instead of images. Labels: class indices or class names."""
        return SupportSet(self, support, support_labels, way, features)

    def predict(self, support, support_labels, query, top=None):
        """Per query, ``[(name, probability), ...]`` best first (``top``: only
        that many), from normalised support and query images; names are the
        support labels (strings or any hashable; integer labels name the
        classes 0..way-1). :class:`Prediction` tuples."""
        with SupportSet(self, support, support_labels) as sup:
            return sup.predict(query, top)


def _model_from_pickle(data, precision, max_total_bytes, path, convolutions="auto"):
    model = Model.from_bytes(data, precision, max_total_bytes, convolutions)
    model.path = path
    return model


def _support_from_pickle(model, data, classes, features, shape):
    out = SupportSet.from_bytes(model, data)
    out.classes = tuple(classes)
    out.features = features
    out.shape = shape
    return out


class SupportSet:
    """A prepared support set (see :meth:`Model.prepare_support` and
    :meth:`from_folder`).

    ``classes``: the class names, column k of the logits being
    ``classes[k]`` (the labels given, in order of first appearance, or
    0..way-1 for integer labels); ``skipped``: the files and folders
    ``from_folder`` left out (:class:`SkippedFile`), else empty.

    ``score(query)`` and ``predict(query)`` are thread-safe: many threads
    may score against one SupportSet at once. Close with ``close()``,
    ``with``, or let it be collected; it keeps its model alive."""

    def __init__(self, model, support, support_labels, way=None, features=False):
        lib = _library()
        s = _as_images(support, "support")
        support_labels, names = _encode_labels(support_labels, way)
        lab, w = _as_labels(support_labels, s.shape[0])
        way = _way(w if way is None else way)
        handle = _p()
        fn = lib.lwfm_support_prepare_features if features else lib.lwfm_support_prepare
        with model._use() as m:
            _check(fn(ctypes.byref(handle), m, _fp(s), s.shape[0], _lp(lab), s.shape[1],
                      s.shape[2], s.shape[3], way))
        self._adopt(model, handle, names, bool(features), tuple(s.shape[1:]))

    def _adopt(self, model, handle, classes, features, shape):
        """Take `handle` (a prepared set of `model`); `classes`: the names, or
        None for 0..way-1 (or the names the C set carries). String names are
        given to the C set, so that they travel in its files."""
        lib = _library()
        self._model = model  # keeps the Python object (and so its handle) alive
        self._guard = _Guard(handle, lib.lwfm_support_destroy, "lwfm.SupportSet")
        self._finalizer = weakref.finalize(self, self._guard.close)
        self.way = int(lib.lwfm_support_way(handle))
        if classes is None:
            named = [lib.lwfm_support_class_name(handle, k) for k in range(self.way)]
            classes = (tuple(n.decode() for n in named) if all(n is not None for n in named)
                       else tuple(range(self.way)))
        elif all(isinstance(c, str) for c in classes):
            arr = (ctypes.c_char_p * len(classes))(*[c.encode() for c in classes])
            st = lib.lwfm_support_set_class_names(handle, arr, len(classes))
            if st:
                self.close()
                _check(st)
        self.classes = tuple(classes)
        self.features = bool(features)
        self.skipped = []
        self.shape = shape

    @classmethod
    def _from_handle_call(cls, model, call, classes=None, features=None, shape=None):
        handle = _p()
        with model._use() as m:
            _check(call(ctypes.byref(handle), m))
        self = cls.__new__(cls)
        if features is None:
            features = _library().lwfm_support_from_features(handle) == 1
        self._adopt(model, handle, classes, features, shape)
        return self

    # -- persistence ------------------------------------------------------
    @classmethod
    def load(cls, model, path):
        """A set saved by :meth:`save`, for ``model``, which must be the
        model that prepared it (same :attr:`Model.fingerprint`, method and
        precision; otherwise :class:`Error` LWFM_ERR_WRONG_KIND). Nothing is
        recomputed: scores are bit-identical to the saved set's."""
        c_path = _path(path)
        return cls._from_handle_call(
            model, lambda out, m: _library().lwfm_support_load(out, m, c_path))

    @classmethod
    def from_bytes(cls, model, data):
        """:meth:`load` from the bytes :meth:`to_bytes` gave."""
        data = bytes(data)
        return cls._from_handle_call(
            model, lambda out, m: _library().lwfm_support_load_from_memory(out, m, data,
                                                                           len(data)))

    def _check_names_travel(self):
        if self.classes != tuple(range(self.way)) and not all(
                isinstance(c, str) for c in self.classes):
            raise TypeError("only string class names (or the integer classes 0..way-1) are "
                            "saved with a support set; pickle it to keep other names")

    def _raw_bytes(self):
        lib = _library()
        n = _size()
        with self._guard.use() as h:
            _check(lib.lwfm_support_save_to_memory(h, None, 0, ctypes.byref(n)))
            buf = ctypes.create_string_buffer(n.value)
            _check(lib.lwfm_support_save_to_memory(h, buf, n.value, ctypes.byref(n)))
        return buf.raw[:n.value]

    def to_bytes(self):
        """The set as bytes (the file :meth:`save` writes,
        docs/support-format.md): prepared buffers, labels, class names (strings
        only: others raise TypeError) and the model's fingerprint."""
        self._check_names_travel()
        return self._raw_bytes()

    def save(self, path):
        """Write the set to ``path`` atomically (a temporary file renamed
        over it: never a partial file). See :meth:`to_bytes`."""
        self._check_names_travel()
        c_path = _path(path)
        with self._guard.use() as h:
            _check(_library().lwfm_support_save(h, c_path))

    def __reduce__(self):
        """Pickled by value with its model (which pickles by value too), its
        classes (any picklable names) and its features flag."""
        return (_support_from_pickle,
                (self._model, self._raw_bytes(), self.classes, self.features, self.shape))

    # -- growing ----------------------------------------------------------
    def add(self, images, labels):
        """A new set: this one's images and the given ones (images, or
        feature maps for a set prepared from features), prepared alone and
        appended; this set is unchanged (and may be scored meanwhile).

        ``labels``: class names (as :attr:`classes`: a known name adds to its
        class, a new one makes a new class, in order of first appearance) or
        class indices (existing ones, or way, way+1, ... for new classes of a
        set whose classes are 0..way-1). Scores equal those of a set
        prepared from all the images at once."""
        x = _as_images(images, "images")
        items = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
        if len(items) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {len(items)} labels")
        numbered = self.classes == tuple(range(self.way))
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
               for v in items):
            codes = [int(v) for v in items]
            top = max(codes, default=-1) + 1
            if top > self.way and not numbered:
                raise ValueError("new classes of a named set need names, not indices")
            classes = tuple(range(max(top, self.way))) if numbered else self.classes
        else:
            index = {c: k for k, c in enumerate(self.classes)}
            try:
                codes = [index.setdefault(v.item() if isinstance(v, np.generic) else v,
                                          len(index)) for v in items]
            except TypeError:
                raise TypeError("labels must be integers or hashable class names") from None
            classes = tuple(index)
        lab = np.asarray(codes, dtype=np.int32)
        new_way = _way(len(classes))
        lib = _library()
        fn = lib.lwfm_support_add_features if self.features else lib.lwfm_support_add
        handle = _p()
        with self._guard.use() as h:
            _check(fn(ctypes.byref(handle), h, _fp(x), x.shape[0], _lp(lab), x.shape[1],
                      x.shape[2], x.shape[3], new_way))
        out = SupportSet.__new__(SupportSet)
        out._adopt(self._model, handle, None if numbered and classes == tuple(range(new_way))
                   else classes, self.features, self.shape)
        return out

    def close(self):
        """Release the set (idempotent). Later calls raise ValueError; scores
        running on other threads finish first."""
        self._finalizer()

    @property
    def closed(self):
        return self._guard.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        with self._guard.use() as h:
            return int(_library().lwfm_support_count(h))

    def _h(self):
        with self._guard.use() as h:
            return h

    def score(self, query):
        """Logits (n_query, way) float32 of query images (or feature maps,
        if the set was prepared from features)."""
        q = _as_images(query, "query")
        out = np.empty((q.shape[0], self.way), dtype=np.float32)
        lib = _library()
        fn = lib.lwfm_support_score_features if self.features else lib.lwfm_support_score
        with self._guard.use() as h:
            _check(fn(h, _fp(q), q.shape[0], q.shape[1], q.shape[2], q.shape[3], _fp(out),
                      out.size))
        return out

    def probabilities(self, query):
        """Calibrated probabilities (n_query, way) of query images (or
        feature maps): ``Model.probabilities`` of :meth:`score`."""
        return self._model.probabilities(self.score(query))

    def top_k(self, query, k):
        """The ``k`` (1..way) best classes of each query image (or feature
        map), best first, as a :class:`TopK` (indices, class names, logits,
        calibrated probabilities over all classes). Ties in logit put the
        lower class index first. The full logits row stays inside the
        library (``lwfm_support_score_topk``). Thread-safe."""
        q = _as_images(query, "query")
        k = operator.index(k)
        if not 1 <= k <= self.way:
            raise ValueError(f"k = {k}: the support set has {self.way} classes, "
                             f"k must be in 1..{self.way}")
        n = q.shape[0]
        idx = np.empty((n, k), dtype=np.int32)
        logits = np.empty((n, k), dtype=np.float32)
        probs = np.empty((n, k), dtype=np.float32)
        lib = _library()
        fn = lib.lwfm_support_score_topk_features if self.features else lib.lwfm_support_score_topk
        with self._guard.use() as h:
            _check(fn(h, _fp(q), n, q.shape[1], q.shape[2], q.shape[3], k, _lp(idx), _fp(logits),
                      _fp(probs), idx.size))
        names = [[self.classes[c] for c in row] for row in idx.tolist()]
        return TopK(idx, names, logits, probs)

    def predict(self, query, top=None):
        """Per query, ``[(name, probability), ...]`` best first, names from
        :attr:`classes`; ``top``: only the first that many (through
        :meth:`top_k`: the library hands back only those). A query whose
        best probability is below ``Model.unknown_threshold`` is, by the
        model's calibration, none of the classes."""
        if top is None:
            return _predictions(self.probabilities(query), self.classes, top)
        k = min(operator.index(top), self.way)
        if k < 1:
            return [[] for _ in range(_as_images(query, "query").shape[0])]
        r = self.top_k(query, k)
        return [[Prediction(name, float(p)) for name, p in zip(names, row)]
                for names, row in zip(r.classes, r.probabilities)]

    @classmethod
    def from_folder(cls, model, path, on_bad="fail"):
        """The support set of a folder holding one sub-folder of images per
        class, read as ``lwfm classify --support`` reads it: the class
        names are the sub-folders' names, sorted; every ``.png``/``.jpg``/
        ``.jpeg`` file (any case) in a class folder is an image of that class
        (sorted by name), decoded as the ``lwfm`` command decodes it and
        preprocessed by the model (``Model.preprocess``). A class folder
        without such files is no class.

        Everything left out is listed in ``skipped`` with its reason: other
        files at the top or in a class folder, folders inside a class
        folder, class folders without images and, with ``on_bad="skip"``,
        images that cannot be decoded (with ``on_bad="fail"``, the default,
        such an image raises ValueError naming it). Fewer than two classes,
        or a class all of whose images are bad, raise ValueError."""
        from .episodes import IMAGE_EXTENSIONS, FolderSet
        if on_bad not in ("fail", "skip"):
            raise ValueError(f"on_bad must be 'fail' or 'skip', got {on_bad!r}")
        root = os.fspath(path)
        kinds = "/".join(IMAGE_EXTENSIONS)

        def entries(folder):  # byte order, as the lwfm command sorts (strcmp)
            return sorted(os.listdir(folder), key=os.fsencode)

        skipped, images, labels = [], [], []
        for name in entries(root):
            folder = os.path.join(root, name)
            if not os.path.isdir(folder):
                skipped.append(SkippedFile(folder, "not a folder: only class folders count"))
                continue
            files, bad = [], []
            for f in entries(folder):
                full = os.path.join(folder, f)
                if os.path.isdir(full):
                    skipped.append(SkippedFile(full, "a folder inside a class folder"))
                elif not f.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append(SkippedFile(full, f"not a {kinds} file"))
                else:
                    files.append(full)
            if not files:
                skipped.append(SkippedFile(folder, f"no {kinds} images: not a class"))
                continue
            for full in files:
                try:
                    pixels = FolderSet.load_one(_OneFile(full), 0, 0)
                    image = model.preprocess(pixels)[0]
                except (OSError, ValueError, Error) as exc:
                    if on_bad == "fail":
                        raise ValueError(f"{full}: cannot read image: {exc} (on_bad='skip' "
                                         "leaves unreadable images out)") from exc
                    skipped.append(SkippedFile(full, f"unreadable image: {exc}"))
                    bad.append(full)
                    continue
                images.append(image)
                labels.append(name)
            if len(bad) == len(files):
                raise ValueError(f"{folder}: no readable support image for class "
                                 f"(all {len(files)} images are bad)")
        n_classes = len(set(labels))
        if n_classes < 2:
            raise ValueError(f"{root}: found {n_classes} class folder"
                             f"{'' if n_classes == 1 else 's'} with images; 2 or more are "
                             f"needed (one sub-folder of {kinds} images per class)")
        out = cls(model, np.stack(images), labels)
        out.skipped = skipped
        return out
