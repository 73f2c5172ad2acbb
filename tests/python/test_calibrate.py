"""Calibrated probabilities and "none of these" (issue 14, item 5):
lwfm_model_probabilities, lwfm.calibrate, `lwfm classify --unknown`."""
import json

import numpy as np
import pytest

from conftest import ROOT
from lwfm import calibrate
from lwfm.weights import load_weights, save_weights
from test_cli import cli, run, tiny, tree  # noqa: F401  (fixtures)

MODELS = ROOT / "models"


def _with_calibration(src, dst, temperature, threshold):
    tensors, config = load_weights(src)
    config = {k: v for k, v in config.items() if k != "format_version"}
    config.update(calibration_temperature=temperature, unknown_threshold=threshold)
    save_weights(dst, tensors, config)
    return dst


def test_probabilities_are_the_tempered_softmax(lib, tiny, tmp_path):  # noqa: F811
    logits = np.random.default_rng(0).normal(0, 3, (7, 5)).astype(np.float32)
    with lib.Model(tiny) as plain:
        p = plain.probabilities(logits)
        assert plain.unknown_threshold == 0.0
        assert "calibration_temperature" not in plain.config
    np.testing.assert_allclose(p, calibrate.softmax(logits, 1.0), rtol=1e-6, atol=1e-7)
    path = _with_calibration(tiny, tmp_path / "cal.npz", 0.25, 0.6)
    with lib.Model(path) as m:
        assert m.config["calibration_temperature"] == pytest.approx(0.25)
        assert m.unknown_threshold == pytest.approx(0.6)
        np.testing.assert_allclose(m.probabilities(logits), calibrate.softmax(logits, 0.25),
                                   rtol=1e-6, atol=1e-7)
        bad = logits.copy()
        bad[2, 1] = np.nan
        with pytest.raises(lib.Error) as err:
            m.probabilities(bad)
        assert "not finite" in str(err.value)


def test_calibration_keys_are_validated(tiny, tmp_path):  # noqa: F811
    from lwfm.weights import WeightFileError
    for t, thr in ((0.0, 0.5), (-1.0, 0.5), (1.0, 1.5), (1.0, -0.1)):
        with pytest.raises(WeightFileError):
            _with_calibration(tiny, tmp_path / "bad.npz", t, thr)


def test_fit_recovers_a_known_temperature():
    """Labels drawn from softmax(z / 0.5): the fitted temperature is ~0.5 and
    the calibrated ECE is small where the uncalibrated one is not."""
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.5, (20000, 5))
    p = calibrate.softmax(z, 0.5)
    labels = np.array([rng.choice(5, p=row) for row in p])
    t = calibrate.fit_temperature(z, labels)
    assert t == pytest.approx(0.5, rel=0.05)
    assert calibrate.expected_calibration_error(calibrate.softmax(z, t), labels) < 0.02
    assert calibrate.expected_calibration_error(calibrate.softmax(z, 1.0), labels) > 0.1
    known, unknown = np.array([0.9, 0.8, 0.95, 0.4]), np.array([0.3, 0.5, 0.85])
    thr = calibrate.fit_threshold(known, unknown)    # 0.8 would cost 1/3 + 1/4
    assert thr == 0.9 and calibrate.rates(known, unknown, thr) == (0.0, 0.5)


@pytest.mark.parametrize("name", ["omniglot", "omniglot-rcn"])
def test_bundled_models_are_calibrated(lib, name):
    with lib.Model(MODELS / f"{name}.npz") as m:
        cfg = m.config
        assert 0.0 < cfg["calibration_temperature"] < 100.0
        assert 0.0 < m.unknown_threshold < 1.0


def test_classify_unknown(cli, tiny, tree, tmp_path):  # noqa: F811
    root = tree[0]
    base = ["classify", "--model", tiny, "--support", root / "support", "--query",
            root / "queries", "--json"]
    plain = json.loads(run(cli, *base, check=0).stdout)["queries"]
    # A threshold above every top probability: every query is none of these.
    out = json.loads(run(cli, *base, "--unknown-threshold", "1", check=0).stdout)["queries"]
    assert all(q["prediction"] is None and q["label"] == -1 for q in out)
    assert [q["probabilities"] for q in out] == [q["probabilities"] for q in plain]
    # The model's own threshold (--unknown), between the queries' top probabilities.
    tops = sorted(max(q["probabilities"]) for q in plain)
    thr = (tops[0] + tops[-1]) / 2
    path = _with_calibration(tiny, tmp_path / "cal.npz", 1.0, thr)
    out = json.loads(run(cli, *base[:2], path, *base[3:], "--unknown", check=0).stdout)
    for q in out["queries"]:
        assert (q["prediction"] is None) == (max(q["probabilities"]) < np.float32(thr))
    text = run(cli, *base[:-1], "--unknown-threshold", "1", check=0).stdout.splitlines()
    assert all(line.split("\t")[1] == "(none of these)" for line in text)
    # --unknown on a model without a threshold, and a bad threshold: usage errors.
    res = run(cli, *base, "--unknown", check=2)
    assert "lwfm.calibrate" in res.stderr
    run(cli, *base, "--unknown-threshold", "1.5", check=2)
