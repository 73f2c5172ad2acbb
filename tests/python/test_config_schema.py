"""One configuration schema (issue 16): the library's table of config keys,
lwfm_config_schema_json(), is what lwfm.weights checks against, and the two
accept and refuse exactly the same configurations.

The drift test builds, from the schema itself (no bound is written here), a
configuration just inside and just outside every bound and rule of every
key, for a model of each method, and checks that Python's writer
(lwfm.weights.config_to_arrays, used by save_weights) and the library's
reader (the same arrays loaded from memory) agree on each one."""
import ctypes
import io
import math
from pathlib import Path

import numpy as np
import pytest

import lwfm_ref
from lwfm import weights

FORMAT, UNSUPPORTED, LIMIT = 4, 9, 8


@pytest.fixture
def lib_text(lib):
    text = weights._library_schema_text()
    assert text is not None, "lwfm_config_schema_json() not found in LWFM_LIBRARY"
    return text


@pytest.fixture
def schema(lib_text):
    import json
    return json.loads(lib_text)


def keys_of(schema):
    return {k["name"]: k for k in schema["keys"] if k["stored"]}


# ----------------------------------------------------------------------------
# The schema, its fallback copy and the module constants
# ----------------------------------------------------------------------------

def test_fallback_copy_is_the_librarys(lib_text):
    """lwfm/_schema.py (used when the library cannot be loaded) is the
    library's schema; regenerate it with `python3 -m lwfm.weights
    --write-schema` (LWFM_LIBRARY set) when the table in lib/config.c changes."""
    from lwfm import _schema
    assert _schema.SCHEMA_JSON == lib_text, (
        "bindings/python/lwfm/_schema.py is stale: run PYTHONPATH=bindings/python "
        "LWFM_LIBRARY=build/liblwfm.so python3 -m lwfm.weights --write-schema")
    with open(_schema.__file__, encoding="utf-8") as fh:
        assert fh.read() == weights._schema_module_text(lib_text)


def test_weights_use_the_librarys_schema(lib_text, schema):
    assert weights.config_schema() == schema
    assert weights.FORMAT_VERSION == schema["format_version"]
    assert weights.METHODS == tuple(schema["methods"])
    assert weights.BACKBONES == tuple(schema["backbones"])
    keys = keys_of(schema)
    assert keys["method"]["values"] == schema["methods"]
    assert keys["backbone"]["values"] == schema["backbones"]
    assert set(weights.FILE_ONLY_KEYS) == {"format_version"} | {
        n for n, k in keys.items() if k.get("calibration")}


def test_schema_is_well_formed(schema):
    keys = {k["name"]: k for k in schema["keys"]}
    for k in schema["keys"]:
        assert k["type"] in ("int", "bool", "float", "string", "int_list", "float_list"), k
        assert set(k["methods"]) <= set(schema["methods"])
        assert set(k["backbones"]) <= set(schema["backbones"])
        if k["required"] or not k["stored"]:
            assert k["default"] is None, k["name"]
            continue
        over = schema["backbones"] if k["default_by"] == "backbone" else schema["methods"]
        assert sorted(k["default"]) == sorted(over), k["name"]
        for value in k["default"].values():   # the defaults obey the bounds
            weights._check_value(k, value)
        for name, value in (k.get("when") or {}).items():
            assert value in keys[name]["values"]
    for r in schema["rules"]:
        assert r["key"] in keys and r.get("other", r["key"]) in keys, r
        assert set(r["methods"]) <= set(schema["methods"])


def test_library_defaults_are_what_a_bare_file_gets(lib, schema):
    """default_config(method, backbone) is the configuration the library
    reports for a file holding only the required keys (and, for lwfm-spm,
    no matcher MLPs: the base model has none)."""
    for method, (tensors, config) in make_bases().items():
        bare = {"format_version": 1, "method": method, "backbone": config["backbone"]}
        if method == "lwfm-spm":
            bare["learnable_matcher"] = 0
        arrays = dict(tensors)
        arrays.update(encode(bare))
        status, got = c_load(lib, arrays)
        assert status == 0, got
        want = weights.default_config(method, config["backbone"])
        assert set(want) == set(got) - {"format_version", "input_channels"}, method
        for key, value in want.items():
            if key == "learnable_matcher" and method == "lwfm-spm":
                continue
            if isinstance(value, (str, bool)):
                assert got[key] == value, (method, key)
            else:
                assert got[key] == pytest.approx(value, rel=1e-6), (method, key)


# ----------------------------------------------------------------------------
# The drift test
# ----------------------------------------------------------------------------

BASES_CACHE = {}


def make_bases():
    """One valid configuration per method (3 input channels, no resize, so
    that the bounds of image_size can be reached), with its tensors."""
    if BASES_CACHE:
        return BASES_CACHE
    import torch
    torch.manual_seed(0)
    common = {"image_size": 84, "resize": 0, "mean": [0.5] * 3, "std": [0.25] * 3}
    models = {
        # no matcher MLPs: the tensors do not depend on hyperpixel_ids
        "lwfm-spm": lwfm_ref.LWFMSPM(dict(lwfm_ref.DEFAULT_CONFIG, backbone="conv64f",
                                          hyperpixel_ids=[2, 3], learnable_matcher=False,
                                          **common)),
        "dn4": lwfm_ref.DN4(dict(common)),
        "mml": lwfm_ref.MML(dict(common), train_way=5),
        "rcn": lwfm_ref.RCN(dict(common, backbone="conv4")),
    }
    for method, model in models.items():
        tensors = weights.normalize_tensor_names(
            {k: v.detach().numpy() for k, v in model.state_dict().items()})
        config = {k: v for k, v in model.config.items() if k not in ("num_classes", "in_channels")}
        config["method"] = method
        config["format_version"] = 1
        BASES_CACHE[method] = (tensors, config)
    return BASES_CACHE


def encode(config):
    """The config arrays as a writer stores them, without any check (so that
    the library can be shown configurations Python refuses)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, str):
            arr = np.frombuffer(value.encode(), np.uint8)
        elif isinstance(value, (list, tuple)):
            floats = any(isinstance(v, float) for v in value)
            arr = np.array(value, np.float32 if floats else np.int32)
            if not floats and not value:
                arr = np.zeros(0, np.int32)
        elif isinstance(value, float):
            arr = np.float32(value)
        else:
            arr = np.int32(value)
        out["config/" + key] = arr
    return out


def c_load(lib, arrays):
    """(status, config dict or message) of the library loading the arrays."""
    import json
    clib = lib._library()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    h = ctypes.c_void_p()
    st = clib.lwfm_model_load_from_memory(ctypes.byref(h), data, len(data), None)
    if st:
        return st, clib.lwfm_last_error().decode()
    try:
        n = ctypes.c_size_t()
        clib.lwfm_model_config_json(h, None, 0, ctypes.byref(n))
        out = ctypes.create_string_buffer(n.value + 1)
        assert clib.lwfm_model_config_json(h, out, n.value + 1, None) == 0
        return 0, json.loads(out.value.decode())
    finally:
        clib.lwfm_model_destroy(h)


def c_accepts_config(lib, tensors, config):
    """Whether the library's configuration reader accepts the config. A
    refusal for the tensors or the backbone (a block id the backbone lacks, a
    matcher the file does not hold) is not the reader's: its messages name
    'config' (or the format version), the tensors' do not."""
    arrays = dict(tensors)
    arrays.update(encode(config))
    status, detail = c_load(lib, arrays)
    if status == 0:
        return True, "loaded"
    refused = isinstance(detail, str) and ("config" in detail or "format version" in detail)
    if refused:
        assert status in (FORMAT, UNSUPPORTED, LIMIT), (status, detail)
    return not refused, detail


def complete(config):
    """The keys a writer must store that the change left out (another method
    or backbone needs other keys), with the library's defaults: the writer
    requires what the reader would default, and that asymmetry is by design."""
    if config.get("method") in weights.METHODS and config.get("backbone") in weights.BACKBONES:
        defaults = weights.default_config(config["method"], config["backbone"])
        return dict(defaults, **config)
    return config


def py_accepts(config):
    try:
        weights.config_to_arrays(config)
    except weights.WeightFileError as exc:
        return False, str(exc)
    return True, "written"


def f32_below(x):
    return float(np.nextafter(np.float32(x), np.float32(-np.inf)))


def f32_above(x):
    return float(np.nextafter(np.float32(x), np.float32(np.inf)))


def key_cases(key, base):
    """(label, changes, expected to be inside) for every bound of one key,
    from its schema entry."""
    name, kind = key["name"], key["type"]
    if kind == "string":
        for v in key["values"]:
            yield f"{name}={v}", {name: v}, None   # inside unless a rule says no
        yield f"{name}=bogus", {name: "bogus"}, False
        return
    lo, hi = key["min"], key["max"]
    if kind in ("int", "bool"):
        for v, inside in ((lo - 1, False), (lo, True), (hi, True), (hi + 1, False)):
            yield f"{name}={v}", {name: v}, inside
    elif kind == "float":
        for v, inside in ((f32_below(lo), False), (float(np.float32(lo)), True),
                          (float(np.float32(hi)), True), (f32_above(hi), False)):
            yield f"{name}={v!r}", {name: v}, inside
    elif kind == "int_list":
        for v, inside in (([lo - 1], False), ([lo], True), ([hi], True), ([hi + 1], False)):
            yield f"{name}={v}", {name: v}, inside
        n = key["max_length"]
        yield f"{name} x{n}", {name: list(range(lo, lo + n))}, True
        yield f"{name} x{n + 1}", {name: list(range(lo, lo + n + 1))}, False
        yield f"{name} empty", {name: []}, False
        if key["increasing"]:
            yield f"{name} equal", {name: [lo + 1, lo + 1]}, False
            yield f"{name} decreasing", {name: [lo + 2, lo + 1]}, False
            yield f"{name} increasing", {name: [lo + 1, lo + 2]}, True
    elif kind == "float_list":
        # lists of the same length in every float-list key (mean and std
        # must agree), so that the length alone decides
        others = [k for k, v in base.items() if isinstance(v, list) and k != name
                  and all(isinstance(x, float) for x in v)]
        lengths = key.get("lengths") or range(key["min_length"], key["max_length"] + 1)
        mid = float(np.float32(max(lo, min(hi, 0.5))))
        for n in range(0, key["max_length"] + 2):
            changes = {name: [mid] * n}
            changes.update({o: [base[o][0]] * n for o in others})
            yield f"{name} x{n}", changes, n in lengths
        for v, inside in ((f32_below(lo), False), (float(np.float32(lo)), True),
                          (float(np.float32(hi)), True), (f32_above(hi), False)):
            yield f"{name}=[{v!r}]*3", {name: [v] * 3}, inside


def rule_cases(rule, keys, method):
    """Configurations at a rule's edge (for the model of `method`)."""
    kind, name = rule["rule"], rule["key"]
    applies = method in rule["methods"]
    if kind == "value_only_for":
        yield f"{name}={rule['value']}", {name: rule["value"]}, applies
        return
    cases = []
    if kind == "zero_or_at_least":
        other = rule["other"]
        cases += [(f"{name}=0", {name: 0, other: 84}, True),
                  (f"{name}={other}", {name: 84, other: 84}, True),
                  (f"{name}={other}-1", {name: 83, other: 84}, not applies)]
    elif kind == "square_at_most":
        edge = math.isqrt(rule["max"])
        cases += [(f"{name}={edge}", {name: edge}, True),
                  (f"{name}={edge + 1}", {name: edge + 1}, not applies)]
    elif kind == "at_least":
        cases += [(f"{name}={rule['min']}", {name: rule["min"]}, True),
                  (f"{name}={rule['min'] - 1}", {name: rule["min"] - 1}, not applies)]
    elif kind == "same_length":
        other = rule["other"]
        cases += [(f"{name} 1 / {other} 3", {name: [0.5], other: [0.25] * 3}, not applies),
                  (f"{name} 1 / {other} 1", {name: [0.5], other: [0.25]}, True)]
    elif kind == "at_most_square_of":
        other = rule["other"]
        cases += [(f"{name}={other}^2", {name: 9, other: 3}, True),
                  (f"{name}={other}^2+1", {name: 10, other: 3}, not applies)]
    else:
        pytest.fail(f"no cases for schema rule {kind!r}: add them here")
    for label, changes, inside in cases:
        if "if_positive" in rule:   # on, and off: then the rule does not apply
            on, off = rule["if_positive"], {rule["if_positive"]: 0.0}
            yield f"{label}, {on} on", dict(changes, **{on: 0.25}), inside
            yield f"{label}, {on}=0", dict(changes, **off), None
        else:
            yield label, changes, inside


@pytest.mark.parametrize("method", ["lwfm-spm", "dn4", "mml", "rcn"])
def test_python_and_library_accept_the_same_configs(lib, schema, method):
    tensors, base = make_bases()[method]
    keys = keys_of(schema)
    cases = [c for k in keys.values() for c in key_cases(k, base)]
    cases += [c for r in schema["rules"] for c in rule_cases(r, keys, method)]
    assert len(cases) > 80
    disagree, wrong = [], []
    for label, changes, expect in cases:
        config = complete(dict(base, **changes))
        py, py_why = py_accepts(config)
        c, c_why = c_accepts_config(lib, tensors, config)
        if py != c:
            disagree.append(f"{label}: python {'accepts' if py else 'refuses'} ({py_why}), "
                            f"library {'accepts' if c else 'refuses'} ({c_why})")
        # the edge cases are where the schema says (rules may refuse more)
        elif expect is False and c or expect is True and not c and not _rule_says_no(
                schema, config):
            wrong.append(f"{label}: both {'accept' if c else 'refuse'} ({c_why})")
    assert not disagree, "\n".join(disagree)
    assert not wrong, "\n".join(wrong)


def _rule_says_no(schema, config):
    """A configuration inside every key's bounds may still break a rule
    (feature_size 64 for lwfm-spm, image_size 4096 with a resize)."""
    try:
        for rule in schema["rules"]:
            weights._check_rule(rule, config)
    except weights.WeightFileError:
        return True
    return False


def test_every_bound_is_reached(lib, schema):
    """Each key's inside edge is accepted by the library for some method
    (so the drift test does not pass by refusing everything)."""
    bases = make_bases()
    for key in keys_of(schema).values():
        for label, changes, expect in key_cases(key, next(iter(bases.values()))[1]):
            if expect is not True:
                continue
            ok = [m for m, (t, b) in bases.items()
                  if c_accepts_config(lib, t, complete(dict(b, **changes)))[0]
                  and py_accepts(complete(dict(b, **changes)))[0]]
            assert ok, label


def test_refused_hyperpixel_ids_cannot_be_written(lib, tmp_path):
    """What the library refuses, save_weights no longer writes (Python used
    to check only 'distinct and >= 0')."""
    tensors, base = make_bases()["dn4"]
    for ids in ([3, 2], [2, 2], [65], [-1], list(range(17)), []):
        with pytest.raises(weights.WeightFileError, match="hyperpixel_ids"):
            weights.save_weights(tmp_path / "w.npz", tensors, dict(base, hyperpixel_ids=ids))
        assert not (tmp_path / "w.npz").exists()
    weights.save_weights(tmp_path / "w.npz", tensors, dict(base, hyperpixel_ids=[2, 3]))
    with lib.Model(tmp_path / "w.npz") as m:
        assert m.config["hyperpixel_ids"] == [2, 3]


def test_without_the_library_the_copy_is_used(tmp_path):
    """The trainer and the converter need no library: with LWFM_LIBRARY
    pointing nowhere lwfm.weights falls back to lwfm/_schema.py."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    pkg = Path(weights.__file__).resolve().parents[1]
    code = ("import lwfm.weights as w, lwfm._schema as s, json; "
            "assert w._library_schema_text() is None; "
            "assert w.config_schema() == json.loads(s.SCHEMA_JSON); "
            "import lwfm_ref; w.config_to_arrays(lwfm_ref.DEFAULT_CONFIG); "
            "c = dict(lwfm_ref.DEFAULT_CONFIG, hyperpixel_ids=[8, 7]); "
            "exec('try:\\n w.config_to_arrays(c)\\nexcept w.WeightFileError: pass\\n"
            "else:\\n raise SystemExit(\"accepted\")')")
    env = dict(os.environ, PYTHONPATH=str(pkg), LWFM_LIBRARY=str(tmp_path / "none.so"))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + res.stdout


# ----------------------------------------------------------------------------
# docs/weight-format.md: the table of bounds and defaults is the schema's
# ----------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "weight-format.md"
BEGIN, END = "<!-- config-schema: begin -->", "<!-- config-schema: end -->"
STATUS_NAMES = {4: "LWFM_ERR_FORMAT", 8: "LWFM_ERR_LIMIT", 9: "LWFM_ERR_UNSUPPORTED"}


def _num(x):
    return f"{x:g}" if isinstance(x, float) else str(x)


def _val(x):
    if isinstance(x, list):
        return "[" + ", ".join(_num(float(v)) if isinstance(v, float) else str(v)
                               for v in x) + "]"
    if isinstance(x, bool):
        return "true" if x else "false"
    return f"`{x}`" if isinstance(x, str) else _num(x)


def _used(k, schema):
    parts = []
    if k["methods"] != schema["methods"]:
        parts.append(", ".join(k["methods"]))
    if k["backbones"] != schema["backbones"]:
        parts.append(", ".join(k["backbones"]) + " models")
    for name, value in (k.get("when") or {}).items():
        parts.append(f"with `{name}` `{value}`")
    if k.get("calibration"):
        parts.append("calibrated models")
    return " ".join(parts) or "all"


def _bounds(k):
    kind = k["type"]
    if kind == "string":
        return ", ".join(f"`{v}`" for v in k["values"])
    rng = f"{_num(k['min'])} .. {_num(k['max'])}"
    if not kind.endswith("_list"):
        return rng
    lengths = k.get("lengths")
    n = (" or ".join(map(str, lengths)) if lengths
         else f"{k['min_length']} .. {k['max_length']}")
    inc = ", strictly increasing" if k.get("increasing") else ""
    return f"{n} entries, each {rng}{inc}"


def _defaults(k, schema):
    if k["required"]:
        return "required"
    over = k["backbones"] if k["default_by"] == "backbone" else k["methods"]
    values = {}
    for name in over:
        values.setdefault(_val(k["default"][name]), []).append(name)
    if len(values) == 1:
        return next(iter(values))
    return "; ".join(f"{', '.join(names)}: {v}" for v, names in values.items())


def _rule(r, schema):
    who = "" if r["methods"] == schema["methods"] else ", ".join(r["methods"])
    if "if_positive" in r:
        who += f" with `{r['if_positive']}` > 0"
    kind, key, other = r["rule"], f"`{r['key']}`", f"`{r.get('other')}`"
    text = {"value_only_for": f"{key} `{r.get('value')}` only for {', '.join(r['methods'])} "
                              "models",
            "same_length": f"{key} and {other} have the same length (an absent {other} "
                           f"takes {key}'s)",
            "zero_or_at_least": f"{key} is 0 or at least {other}",
            "square_at_most": f"{key}² at most {r.get('max')}",
            "at_least": f"{key} at least {r.get('min')}",
            "at_most_square_of": f"{key} at most {other}²"}[kind]
    if kind != "value_only_for" and who:
        text = f"{who.strip()}: {text}"
    why = f" ({r['why']})" if "why" in r else ""
    return f"- {text}{why}: `{STATUS_NAMES.get(r['status'], r['status'])}`"


def schema_markdown(schema):
    """The generated part of docs/weight-format.md section 4."""
    lines = [BEGIN,
             "| Key | Type | Bounds | Used by | Default when absent |",
             "|---|---|---|---|---|"]
    for k in schema["keys"]:
        if k["stored"]:
            lines.append(f"| `{k['name']}` | {k['type'].replace('_', ' ')} | {_bounds(k)} | "
                         f"{_used(k, schema)} | {_defaults(k, schema)} |")
    lines += ["", "Rules between keys, checked after the keys, in this order:", ""]
    lines += [_rule(r, schema) for r in schema["rules"]]
    lines.append(END)
    return "\n".join(lines)


def test_weight_format_doc_has_the_schema(schema):
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    got = text[text.index(BEGIN):text.index(END) + len(END)]
    assert got == schema_markdown(schema), (
        "docs/weight-format.md section 4 differs from lwfm_config_schema_json(): run "
        "PYTHONPATH=bindings/python LWFM_LIBRARY=build/liblwfm.so python3 "
        "tests/python/test_config_schema.py --write-docs")


if __name__ == "__main__":
    import json
    import sys
    if sys.argv[1:] != ["--write-docs"]:
        sys.exit("usage: test_config_schema.py --write-docs")
    text = DOC.read_text(encoding="utf-8")
    table = schema_markdown(json.loads(weights._library_schema_text()))
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + table + text[text.index(END) + len(END):]
    else:
        sys.exit(f"no {BEGIN} in {DOC}: add the markers where the table goes")
    DOC.write_text(text, encoding="utf-8")
