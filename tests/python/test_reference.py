"""Tests of the PyTorch reference model (bindings/python/lwfm_ref) against independent
computations written here from the spec (shared/spec/lwfm-spm.md,
shared/spec/peers.md section 1).

Run: PYTHONPATH=bindings/python /usr/bin/python3 -m pytest tests/python -q
"""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lwfm_ref
from lwfm_ref import (LWFMSPM, Conv64F, ResNet18Taps, adaptive_pool_bins, make_config,
                      randomize_bn, solve_assignment)

DN4_DIR = Path("/work/shared/checkpoints/dn4")
DN4_FILES = sorted(DN4_DIR.glob("*.pth*")) if DN4_DIR.is_dir() else []


# ----------------------------------------------------------------------------
# Independent helpers
# ----------------------------------------------------------------------------

def manual_adaptive_pool(x, out):
    """Adaptive average pooling of a (H, W) array by the spec's bin rule."""
    h, w = x.shape
    res = np.zeros((out, out))
    for i in range(out):
        r0, r1 = math.floor(i * h / out), math.ceil((i + 1) * h / out)
        for j in range(out):
            c0, c1 = math.floor(j * w / out), math.ceil((j + 1) * w / out)
            res[i, j] = x[r0:r1, c0:c1].mean()
    return res


def bn_eval(x, sd, prefix):
    return F.batch_norm(x, sd[prefix + ".running_mean"], sd[prefix + ".running_var"],
                        sd[prefix + ".weight"], sd[prefix + ".bias"], False, 0.0, 1e-5)


def functional_resnet18_blocks(x, sd, first_padding=3):
    """All nine block outputs of a ResNet-18 from a state_dict, functionally."""
    out = []
    x = F.conv2d(x, sd["initial_block.conv1.weight"], stride=2, padding=first_padding)
    x = F.max_pool2d(F.relu(bn_eval(x, sd, "initial_block.bn1")), 3, 2, 1)
    out.append(x)
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            stride = 2 if (layer > 1 and block == 0) else 1
            y = F.relu(bn_eval(F.conv2d(x, sd[p + ".conv1.weight"], stride=stride, padding=1),
                               sd, p + ".bn1"))
            y = bn_eval(F.conv2d(y, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2")
            if p + ".downsample.0.weight" in sd:
                sc = bn_eval(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), sd,
                             p + ".downsample.1")
            else:
                sc = x
            x = F.relu(y + sc)
            out.append(x)
    return out


def functional_conv64f_blocks(x, sd):
    out = []
    for i, (conv, bn) in enumerate([(0, 1), (4, 5), (8, 9), (11, 12)]):
        x = F.conv2d(x, sd[f"features.{conv}.weight"], padding=1)
        x = F.leaky_relu(bn_eval(x, sd, f"features.{bn}"), 0.2)
        if i < 2:
            x = F.max_pool2d(x, 2, 2)
        out.append(x)
    return out


def brute_force_assignment(cost):
    """Minimum-cost permutation by enumeration (small P only)."""
    p = cost.shape[0]
    best, best_perm = np.inf, None
    for perm in itertools.permutations(range(p)):
        c = sum(cost[a, perm[a]] for a in range(p))
        if c < best:
            best, best_perm = c, perm
    return np.array(best_perm), best


def np_cos(x, y):
    return float(x @ y) / max(float(np.linalg.norm(x) * np.linalg.norm(y)), 1e-8)


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def plain_episode_logits(model, support, labels, query):
    """Spec section 3, one pair / layer / class at a time, in NumPy float64,
    with brute-force assignment. Independent of lwfm_ref's metric code."""
    cfg = model.config
    s_all = support.detach().double().flatten(2).numpy()
    q_all = query.detach().double().flatten(2).numpy()
    s_all = s_all - s_all.mean(axis=1, keepdims=True)
    q_all = q_all - q_all.mean(axis=1, keepdims=True)
    labels = np.asarray(labels)
    way = labels.max() + 1
    dims = model.feature_extractor.tap_channels()
    offs = np.concatenate([[0], np.cumsum(dims)[:-1]])
    weights = []
    if cfg["matcher_prob"] > 0:
        for m in model.matchers:
            if m.linear is None:
                weights.append(None)
            else:
                weights.append((m.linear[0].weight.detach().double().numpy(),
                                m.linear[2].weight.detach().double().numpy()))

    def g(l, x):
        if weights[l] is None:
            return x
        w1, w2 = weights[l]
        return x + np.maximum(w2 @ np.maximum(w1 @ x, 0), 0)

    n_pos = s_all.shape[2]
    logits = np.zeros((q_all.shape[0], way))
    for qi, qf in enumerate(q_all):
        for c in range(way):
            members = np.nonzero(labels == c)[0]
            s_att_sum = np.zeros(s_all.shape[1:])
            q_att_sum = np.zeros(s_all.shape[1:])
            spm_sum = 0.0
            for j in members:
                sf = s_all[j]
                s_att, q_att = np.zeros_like(sf), np.zeros_like(qf)
                layer_scores = []
                for l, (o, d) in enumerate(zip(offs, dims)):
                    s, t = sf[o:o + d], qf[o:o + d]
                    sn = s / np.sqrt((s ** 2).sum(axis=0) + 1e-6)
                    tn = t / np.sqrt((t ** 2).sum(axis=0) + 1e-6)
                    r = sn.T @ tn
                    rs = (r - r.mean(axis=0)) / np.sqrt(r.var(axis=0, ddof=1) + 1e-5)
                    rq = (r - r.mean(axis=1, keepdims=True)) / np.sqrt(
                        r.var(axis=1, ddof=1, keepdims=True) + 1e-5)
                    ws = np_softmax(rs / cfg["temperature_attn"], axis=0).sum(axis=1)
                    wq = np_softmax(rq / cfg["temperature_attn"], axis=1).sum(axis=0)
                    s_att[o:o + d] = s * ws
                    q_att[o:o + d] = t * wq
                    if cfg["matcher_prob"] > 0:
                        u, v = s_att[o:o + d], q_att[o:o + d]
                        cost = np.array([[1 - np_cos(u[:, a], v[:, b]) for b in range(n_pos)]
                                         for a in range(n_pos)])
                        sigma, _ = brute_force_assignment(cost)
                        ca = sorted((np_cos(g(l, u[:, a]), g(l, v[:, sigma[a]]))
                                     for a in range(n_pos)), reverse=True)
                        layer_scores.append(cfg["matcher_prob"] * sum(ca[:cfg["top_k"]]))
                s_att_sum += s_att
                q_att_sum += q_att
                if layer_scores:
                    spm_sum += max(layer_scores)
            n = len(members)
            base = np_cos((s_att_sum / n).mean(axis=1), (q_att_sum / n).mean(axis=1))
            logits[qi, c] = (base + spm_sum / n) / cfg["temperature"]
    return logits


def random_features(n, channels, fs, gen):
    """Non-negative (post-ReLU-like) features with per-image structure."""
    x = torch.randn(n, channels, fs, fs, generator=gen, dtype=torch.float64)
    return torch.relu(x + 0.3 * torch.randn(n, channels, 1, 1, generator=gen,
                                            dtype=torch.float64))


def make_episode(shots, n_query, channels, fs, seed):
    """Shuffled support labels; ``shots`` is a list of per-class counts."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate(shots)])
    labels = labels[torch.randperm(len(labels), generator=gen)]
    support = random_features(len(labels), channels, fs, gen)
    query = random_features(n_query, channels, fs, gen)
    return support, labels, query


def metric_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = LWFMSPM(make_config(**overrides)).double().eval()
    if model.matchers is not None:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.matchers.parameters():
                # Larger weights than the default init so that g_l matters.
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / math.sqrt(p.shape[1]))
    return model


# ----------------------------------------------------------------------------
# Pooling and backbones
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("size,out", [(21, 3), (11, 3), (6, 3), (3, 3), (3, 5), (6, 5),
                                      (11, 5), (21, 5), (7, 2), (2, 5)])
def test_adaptive_pool_bin_rule(size, out):
    rng = np.random.default_rng(size * 10 + out)
    x = rng.standard_normal((size, size))
    expected = manual_adaptive_pool(x, out)
    got = F.adaptive_avg_pool2d(torch.from_numpy(x)[None, None], out)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    pooled = lwfm_ref.pool_and_concat([torch.from_numpy(x)[None, None]], out)[0, 0].numpy()
    np.testing.assert_allclose(pooled, expected, rtol=0, atol=1e-12)
    bins = adaptive_pool_bins(size, out)
    assert bins == [(math.floor(i * size / out), math.ceil((i + 1) * size / out))
                    for i in range(out)]


def test_resnet18_block_sizes_and_channels():
    net = ResNet18Taps(hyperpixel_ids=range(9), feature_size=3).eval()
    with torch.no_grad():
        maps = net.tap_maps(torch.randn(2, 3, 84, 84))
    assert [m.shape[1] for m in maps] == [64, 64, 64, 128, 128, 256, 256, 512, 512]
    assert [m.shape[2] for m in maps] == [21, 21, 21, 11, 11, 6, 6, 3, 3]
    assert net.tap_channels() == [64, 64, 64, 128, 128, 256, 256, 512, 512]
    default = ResNet18Taps().eval()
    assert default.tap_channels() == [512, 512]
    with torch.no_grad():
        assert default(torch.randn(2, 3, 84, 84)).shape == (2, 1024, 3, 3)
    with pytest.raises(ValueError):
        ResNet18Taps(hyperpixel_ids=(6, 8), feature_size=0)(torch.randn(1, 3, 84, 84))
    with pytest.raises(ValueError):
        ResNet18Taps(hyperpixel_ids=(9,))


def test_resnet18_module_names_match_spec():
    keys = list(ResNet18Taps().state_dict())
    assert keys[:2] == ["initial_block.conv1.weight", "initial_block.bn1.weight"]
    for layer in (2, 3, 4):
        assert f"layer{layer}.0.downsample.0.weight" in keys
        assert f"layer{layer}.0.downsample.1.running_var" in keys
        assert f"layer{layer}.1.downsample.0.weight" not in keys
    assert "layer1.0.downsample.0.weight" not in keys
    assert not any(k.endswith(".bias") and "conv" in k for k in keys)
    n_params = sum(p.numel() for p in ResNet18Taps().parameters())
    assert n_params == 11176512  # torchvision resnet18 without fc (11,689,512 - 513,000)


@pytest.mark.parametrize("first_padding", [3, 1])
def test_resnet18_matches_functional_forward(first_padding):
    net = ResNet18Taps(first_padding=first_padding, hyperpixel_ids=range(9), feature_size=3)
    randomize_bn(net, 3).double().eval()
    x = torch.randn(2, 3, 84, 84, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sd = net.state_dict()
    with torch.no_grad():
        expected = functional_resnet18_blocks(x, sd, first_padding)
        got = net.tap_maps(x)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
        # Taps (3, 8) at fs 5: pooled per tap, concatenated in tap order.
        net2 = ResNet18Taps(first_padding, hyperpixel_ids=(8, 3), feature_size=5).double().eval()
        net2.load_state_dict(sd)
        want = torch.cat([F.adaptive_avg_pool2d(expected[8], 5),
                          F.adaptive_avg_pool2d(expected[3], 5)], 1)
        torch.testing.assert_close(net2(x), want, rtol=1e-10, atol=1e-10)


def test_resnet18_stops_after_last_tap():
    net = ResNet18Taps(hyperpixel_ids=(5, 4), feature_size=3).eval()
    calls = []
    for name in ("layer3", "layer4"):
        for i in range(2):
            getattr(net, name)[i].register_forward_hook(
                lambda m, inp, out, tag=f"{name}.{i}": calls.append(tag))
    with torch.no_grad():
        out = net(torch.randn(1, 3, 84, 84))
    assert calls == ["layer3.0"]
    assert out.shape == (1, 256 + 128, 3, 3)


def test_conv64f_layout_and_forward():
    net = Conv64F(taps=(0, 1, 2, 3), feature_size=3)
    types = [type(m).__name__ for m in net.features]
    assert types == ["Conv2d", "BatchNorm2d", "LeakyReLU", "MaxPool2d"] * 2 + \
        ["Conv2d", "BatchNorm2d", "LeakyReLU"] * 2
    for i in (0, 4, 8, 11):
        assert net.features[i].bias is None and net.features[i].padding == (1, 1)
    assert all(net.features[i].negative_slope == 0.2 for i in (2, 6, 10, 13))
    randomize_bn(net, 5).double().eval()
    x = torch.randn(2, 3, 84, 84, dtype=torch.float64)
    with torch.no_grad():
        expected = functional_conv64f_blocks(x, net.state_dict())
        got = net.tap_maps(x)
        assert [g.shape[-1] for g in got] == [42, 21, 21, 21]
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
        native = Conv64F(taps=(2, 3), feature_size=0).double().eval()
        native.load_state_dict(net.state_dict())
        torch.testing.assert_close(native(x), torch.cat(expected[2:], 1))
    assert sum(p.numel() for p in net.parameters()) == 112832


@pytest.mark.skipif(not DN4_FILES, reason="DN4 checkpoints not available")
@pytest.mark.parametrize("path", DN4_FILES, ids=lambda p: p.name)
def test_conv64f_loads_real_dn4_checkpoint_strictly(path):
    ckpt = torch.load(path, map_location="cpu")
    net = Conv64F().eval()
    assert list(net.state_dict()) == list(ckpt["state_dict"])
    net.load_state_dict(ckpt["state_dict"], strict=True)
    x = torch.rand(2, 3, 84, 84) * 2 - 1
    with torch.no_grad():
        out = net(x)
        expected = functional_conv64f_blocks(x, ckpt["state_dict"])[3]
    assert out.shape == (2, 64, 21, 21)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all() and out.abs().max() > 0


# ----------------------------------------------------------------------------
# Model structure
# ----------------------------------------------------------------------------

def test_lwfm_state_dict_names_and_shapes():
    model = LWFMSPM({"num_classes": 64})
    sd = model.state_dict()
    assert sd["matchers.0.linear.0.weight"].shape == (256, 512)
    assert sd["matchers.1.linear.2.weight"].shape == (512, 256)
    assert sd["fc.weight"].shape == (64, 1024)
    assert sd["feature_extractor.initial_block.conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["feature_extractor.layer4.0.downsample.0.weight"].shape == (512, 256, 1, 1)
    assert len([k for k in sd if k.startswith("matchers.")]) == 4

    m = LWFMSPM({"hyperpixel_ids": [4, 6, 8]})
    assert [tuple(m.state_dict()[f"matchers.{i}.linear.0.weight"].shape) for i in range(3)] == \
        [(64, 128), (128, 256), (256, 512)]
    assert m.fc is None and not any(k.startswith("fc.") for k in m.state_dict())
    assert not any("matchers" in k for k in LWFMSPM({"matcher_prob": 0}).state_dict())
    assert not any("matchers" in k
                   for k in LWFMSPM({"learnable_matcher": False}).state_dict())
    conv = LWFMSPM({"backbone": "conv64f", "hyperpixel_ids": [2, 3], "feature_size": 5})
    assert "feature_extractor.features.11.weight" in conv.state_dict()
    assert conv.tap_dims == [64, 64]
    with pytest.raises(ValueError):
        LWFMSPM({"bogus": 1})


def test_randomize_bn():
    a = randomize_bn(ResNet18Taps(), 7)
    b = randomize_bn(ResNet18Taps(), 7)
    c = randomize_bn(ResNet18Taps(), 8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for k in sa:
        if "bn" in k or "downsample.1" in k:
            if k.endswith("num_batches_tracked"):
                continue
            assert torch.equal(sa[k], sb[k])
            assert not torch.equal(sa[k], sc[k])
            if k.endswith("running_var"):
                assert sa[k].min() >= 0.5 and sa[k].max() <= 2.0
    assert not torch.all(sa["initial_block.bn1.running_mean"] == 0)


# ----------------------------------------------------------------------------
# Assignment
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("p", [2, 3, 4, 5, 6, 7])
def test_assignment_is_optimal(p):
    rng = np.random.default_rng(p)
    for _ in range(20):
        cost = rng.random((p, p))
        sigma = solve_assignment(cost)
        assert sorted(sigma.tolist()) == list(range(p))
        _, best = brute_force_assignment(cost)
        assert cost[np.arange(p), sigma].sum() == pytest.approx(best, abs=1e-12)


def test_assignment_is_optimal_9x9_and_batched():
    rng = np.random.default_rng(9)
    perms = np.array(list(itertools.permutations(range(9))))
    costs = 1 - rng.uniform(-1, 1, size=(3, 9, 9))
    sigmas = lwfm_ref.batched_assignment(torch.from_numpy(costs))
    assert sigmas.shape == (3, 9) and sigmas.dtype == torch.int64
    for cost, sigma in zip(costs, sigmas.numpy()):
        best = cost[np.arange(9), perms].sum(axis=1).min()
        assert cost[np.arange(9), sigma].sum() == pytest.approx(best, abs=1e-12)
        np.testing.assert_array_equal(sigma, solve_assignment(cost))


# ----------------------------------------------------------------------------
# Metric
# ----------------------------------------------------------------------------

PLAIN_CASES = [
    # shots per class, queries, overrides
    ([1, 1, 1], 3, {}),
    ([2, 2, 2], 2, {"top_k": 2}),
    ([1, 3, 2], 3, {"top_k": 3, "temperature_attn": 2.0, "matcher_prob": 1.0}),
    ([2, 1], 2, {"learnable_matcher": False}),
    ([3, 1, 2], 3, {"matcher_prob": 0.0}),
    ([1, 2], 2, {"hyperpixel_ids": [6, 4, 8], "temperature": 0.1}),
]


@pytest.mark.parametrize("shots,n_query,overrides", PLAIN_CASES)
def test_reference_matches_plain_loop(shots, n_query, overrides):
    """fs = 2 (P = 4): small enough for brute-force assignment."""
    model = metric_model(feature_size=2, **overrides)
    support, labels, query = make_episode(shots, n_query, model.out_channels, 2,
                                          seed=len(shots) * 7 + n_query)
    expected = plain_episode_logits(model, support, labels, query)
    with torch.no_grad():
        got = model.episode_logits(support, labels, query)
        fast = model.episode_logits_fast(support, labels, query)
    assert got.dtype == torch.float64 and got.shape == (n_query, len(shots))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fast.numpy(), expected, rtol=0, atol=1e-10)


FAST_CASES = [
    # shots per class, queries, fs, matcher_prob, top_k, learnable
    ([1] * 5, 10, 3, 0.25, 1, True),
    ([5] * 5, 10, 3, 0.25, 3, True),
    ([5] * 5, 6, 5, 1.0, 1, True),
    ([1] * 5, 10, 5, 0.25, 3, True),
    ([1] * 20, 20, 3, 0.25, 1, True),
    ([5] * 20, 8, 3, 1.0, 3, True),
    ([1, 3, 2, 5, 4], 10, 3, 0.25, 1, True),
    ([2, 1, 4, 1, 3], 10, 5, 0.25, 3, True),
    ([5] * 5, 10, 3, 0.0, 1, True),
    ([1, 4, 2, 3, 1], 10, 5, 0.0, 1, True),
    ([5] * 5, 10, 3, 0.25, 1, False),
    ([1] * 20, 20, 5, 1.0, 3, False),
]


@pytest.mark.parametrize("shots,n_query,fs,prob,top_k,learnable", FAST_CASES)
def test_fast_matches_reference(shots, n_query, fs, prob, top_k, learnable):
    model = metric_model(feature_size=fs, matcher_prob=prob, top_k=top_k,
                         learnable_matcher=learnable)
    support, labels, query = make_episode(shots, n_query, model.out_channels, fs,
                                          seed=sum(shots) + fs)
    with torch.no_grad():
        ref = model.episode_logits(support, labels, query)
        fast = model.episode_logits_fast(support, labels, query)
    assert ref.shape == (n_query, len(shots))
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6)
    # Non-trivial: classes are not all scored alike.
    assert (ref.max(dim=1).values - ref.min(dim=1).values).min() > 1e-4


def test_spm_term_is_present():
    """With SPM the logits exceed the SPM-free ones by (M / T) > 0."""
    support, labels, query = make_episode([2, 2, 2], 4, 1024, 3, seed=1)
    with_spm = metric_model(matcher_prob=0.25)
    without = metric_model(matcher_prob=0.0)
    with torch.no_grad():
        a = with_spm.episode_logits(support, labels, query)
        b = without.episode_logits(support, labels, query)
    diff = (a - b) * 0.2 / 0.25        # the mean over shots of max_l top-1 cosines
    assert (diff > 0).all() and (diff <= 1 + 1e-12).all()


def test_label_order_and_relabelling():
    model = metric_model(top_k=2)
    support, labels, query = make_episode([2, 3, 1, 2], 5, model.out_channels, 3, seed=11)
    with torch.no_grad():
        base = model.episode_logits(support, labels, query)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        shuffled = model.episode_logits(support[perm], labels[perm], query)
        torch.testing.assert_close(shuffled, base, rtol=0, atol=1e-12)
        relabel = torch.tensor([2, 0, 3, 1])
        renamed = model.episode_logits(support, relabel[labels], query)
        torch.testing.assert_close(renamed[:, relabel], base, rtol=0, atol=1e-12)
        # One query at a time gives the same rows.
        single = torch.cat([model.episode_logits(support, labels, query[i:i + 1])
                            for i in range(len(query))])
        torch.testing.assert_close(single, base, rtol=0, atol=1e-12)


def test_invalid_episode_inputs():
    model = metric_model()
    support, labels, query = make_episode([1, 1, 1], 2, model.out_channels, 3, seed=2)
    with pytest.raises(ValueError, match="no support"):
        model.episode_logits(support, torch.tensor([0, 2, 2]), query)
    with pytest.raises(ValueError):
        model.episode_logits(support, torch.tensor([0, 1]), query)
    with pytest.raises(ValueError):
        model.episode_logits(support[:, :512], labels, query[:, :512])
    with pytest.raises(ValueError, match="top_k"):
        metric_model(top_k=10).episode_logits(support, labels, query)


def test_forward_from_images_float32_and_float64():
    torch.manual_seed(0)
    model = randomize_bn(LWFMSPM(), 1).eval()
    gen = torch.Generator().manual_seed(3)
    s_img = torch.randn(6, 3, 84, 84, generator=gen)
    q_img = torch.randn(4, 3, 84, 84, generator=gen)
    labels = torch.tensor([1, 0, 2, 2, 0, 1])
    with torch.no_grad():
        out32 = model(s_img, labels, q_img)
        feats = model.features(torch.cat([s_img, q_img]))
        assert feats.shape == (10, 1024, 3, 3)
        split = model.episode_logits(feats[:6], labels, feats[6:])
        model64 = model.double()
        out64 = model64(s_img.double(), labels, q_img.double())
    assert out32.shape == (4, 3) and out32.dtype == torch.float32
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out32, split)
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-4)


def test_gradients_flow_to_backbone_and_matchers():
    model = metric_model(feature_size=2, top_k=2)
    support, labels, query = make_episode([1, 2], 2, model.out_channels, 2, seed=4)
    support.requires_grad_(True)
    logits = model.episode_logits(support, labels, query)
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert support.grad is not None and support.grad.abs().sum() > 0
    for p in model.matchers.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
