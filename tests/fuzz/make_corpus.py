#!/usr/bin/python3
"""Write the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/).

    PYTHONPATH=bindings/python /usr/bin/python3 tests/fuzz/make_corpus.py

Deterministic; the files are committed (the whole corpus stays well under
1 MB), so this only needs running again when the formats change.

weights/  small valid weight files of every method (LWFM-SPM and DN4 and MML
          on Conv-64F, RCN on Conv4), written by the PyTorch reference with
          constant weights so that deflate shrinks them to a few hundred
          bytes; stored (uncompressed) members of a small configuration;
          truncations and hand-made hostile archives (zip bomb header, huge
          shapes, bad .npy headers, duplicate names, many members).
image/    tiny PNGs (grey, grey+alpha, RGB, RGBA, palette with tRNS, 1-bit,
          16-bit, interlaced) and JPEGs (grey, RGB, progressive), plus
          truncated copies.
episode/  argument blobs for fuzz_episode.c: each call with valid counts and
          then with zero, negative and over-the-limit values, NaN, NULLs.
support/  support-set files (docs/support-format.md) for fuzz_support.c, after
          its flags byte (1: recompute the CRC): a valid file of each method,
          made by the library from small feature maps for the build's test
          models (build/tests, or $LWFM_FUZZ_MODELS) and the bundled RCN model;
          on the smallest, truncations and a flipped bit in every header field,
          label, name and buffer, with and without the CRC fixed. Needs
          LWFM_LIBRARY; valid only while the test models' weights (their
          fingerprints) stay as tests/make_test_models.py writes them.
"""
import io
import os
import struct
import sys
import zipfile
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(arr, version=(1, 0), header=None):
    b = io.BytesIO()
    if header is None:
        np.lib.format.write_array(b, np.asarray(arr), version=version)
        return b.getvalue()
    h = header.encode()
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + bytes(arr)


def npz(members, compress=True):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(name, data)
    return b.getvalue()


def weights():
    import torch
    import lwfm_ref
    from lwfm_ref import peers
    from lwfm.weights import save_weights
    import tempfile

    def const_state(model):
        sd = {}
        for i, (k, v) in enumerate(model.state_dict().items()):
            a = v.detach().numpy().copy()
            if a.dtype.kind == "f":
                if k.endswith("running_var") or k.endswith(".weight") and a.ndim == 1:
                    a[...] = 1.0
                else:
                    a[...] = 0.01 * ((i % 5) - 2) + 0.001
            sd[k] = a
        return sd

    def write(name, model, config, compressed=True, extra=None):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "m.npz")
            save_weights(p, dict(const_state(model), **(extra or {})), config,
                         compressed=compressed)
            data = open(p, "rb").read()
        out("weights", name, data)
        return data

    torch.manual_seed(1)
    cfg = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[2, 3], feature_size=3,
                               image_size=16, resize=0)
    spm = write("lwfm_spm_conv64f.npz", lwfm_ref.LWFMSPM(cfg).eval(), cfg)
    # int8: one calibrated input range per convolution (docs/weight-format.md)
    write("int8_conv64f.npz", lwfm_ref.LWFMSPM(cfg).eval(), cfg,
          extra={f"quant/feature_extractor.features.{i}.weight": np.float32(2.0)
                 for i in (0, 4, 8, 11)})
    cfg1 = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[3], feature_size=2,
                                image_size=16, resize=20, matcher_prob=0.0,
                                mean=[0.5], std=[0.25])
    m1 = lwfm_ref.LWFMSPM(dict(cfg1, in_channels=1)).eval()
    write("lwfm_nospm_grey.npz", m1, m1.config)
    dn4cfg = dict(lwfm_ref.DN4_CONFIG, image_size=16, resize=0)
    write("dn4_conv64f.npz", lwfm_ref.build_backbone(dn4cfg).eval(), dn4cfg)
    for dist in ("wass", "kl", "w2"):
        mcfg = dict(peers.MML_CONFIG, image_size=16, resize=0, distance=dist)
        write(f"mml_{dist}.npz", peers.MML(mcfg).eval(), mcfg)
    rcfg = dict(peers.RCN_CONFIG, image_size=20, feature_size=2)
    write("rcn_conv4.npz", peers.RCN(rcfg).eval(), rcfg)
    # truncated and bit-flipped copies of the LWFM-SPM file
    for frac in (0.1, 0.5, 0.9):
        out("weights", f"truncated_{int(frac * 100)}.npz", spm[: int(len(spm) * frac)])
    flipped = bytearray(spm)
    flipped[len(flipped) // 3] ^= 0x40
    out("weights", "bitflip.npz", bytes(flipped))

    # hand-made archives
    f4 = npy(np.arange(6, dtype="<f4").reshape(2, 3))
    out("weights", "one_member.npz", npz([("a.npy", f4)]))
    out("weights", "stored.npz", npz([("a.npy", f4), ("b.npy", npy(np.int64(3)))], False))
    out("weights", "npy_v2.npz", npz([("a.npy", npy(np.ones(3, ">f8"), version=(2, 0)))]))
    out("weights", "half.npz", npz([("a.npy", npy(np.ones(4, "<f2")))]))
    out("weights", "huge_shape.npz", npz([("a.npy", npy(b"", header=
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"))]))
    out("weights", "nine_dims.npz", npz([("a.npy", npy(b"", header=
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }"))]))
    out("weights", "fortran.npz", npz([("a.npy", npy(b"\0" * 8, header=
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }"))]))
    out("weights", "nan.npz", npz([("a.npy", npy(np.array([np.nan], "<f4")))]))
    out("weights", "not_npy.npz", npz([("a.txt", b"hello")]))
    out("weights", "many_members.npz",
        npz([(f"m{i}.npy", npy(np.int8(i % 100))) for i in range(40)]))
    # a zip-bomb-like member: 8 MiB of zeros from a few KiB
    out("weights", "bomb.npz", npz([("a.npy", npy(np.zeros(2 << 20, "<f4")))]))
    cfg_only = [("config/format_version.npy", npy(np.int64(1))),
                ("config/method.npy", npy(np.frombuffer(b"dn4", np.uint8))),
                ("config/backbone.npy", npy(np.frombuffer(b"conv4", np.uint8)))]
    out("weights", "config_only.npz", npz(cfg_only))
    out("weights", "empty.zip", npz([]))


def weights_issue15():
    """Variants of lwfm_spm_conv64f.npz for issue 15 (refused at load, or
    loading near a new bound), derived from the committed file so that
    `make_corpus.py weights15` does not rewrite the rest of the corpus."""
    src = os.path.join(HERE, "corpus", "weights", "lwfm_spm_conv64f.npz")
    with np.load(src) as z:
        base = {k: z[k] for k in z.files}

    def variant(name, **changes):
        a = dict(base)
        a.update(changes)
        members = [(k + ".npy", npy(v)) for k, v in sorted(a.items())]
        out("weights", name, npz(members))

    g = base["feature_extractor.features.1.weight"].copy()
    var = base["feature_extractor.features.1.running_var"].copy()
    g[0], var[0] = 3e38, 0.0  # folds to an infinite convolution weight
    variant("issue15_bn_fold_inf.npz", **{"feature_extractor.features.1.weight": g,
                                          "feature_extractor.features.1.running_var": var})
    variant("issue15_std_tiny.npz", **{"config/std": np.full(3, 1e-45, np.float32)})
    variant("issue15_std_bound.npz", **{"config/std": np.full(3, 1e-6, np.float32)})
    variant("issue15_mean_huge.npz", **{"config/mean": np.full(3, 3e38, np.float32)})
    variant("issue15_temperature_f32.npz", **{"config/temperature": np.float32(1e-6)})
    variant("issue15_bool_version.npz", **{"config/format_version": np.bool_(True)})
    variant("issue15_feature_size_17.npz", **{"config/feature_size": np.int32(17)})
    variant("issue15_feature_size_16.npz", **{"config/feature_size": np.int32(16)})
    variant("issue15_bool_members.npz",
            **{f"extra{i}": np.ones(1 << 16, np.bool_) for i in range(4)})
    variant("issue15_half_members.npz", **{"extra": np.ones(1 << 16, np.float16),
                                           "ints": np.arange(-8, 8, dtype=">i2")})


def members():
    """The weight seeds as member lists for fuzz_members.c: per member a flags
    byte, the name without ".npy", the .npy header text and a data pattern
    (the seeds' weights are constant per tensor, so 8 bytes tile them)."""
    d = os.path.join(HERE, "corpus", "weights")
    for fn in sorted(os.listdir(d)):
        try:
            z = zipfile.ZipFile(os.path.join(d, fn))
            names = z.namelist()
        except Exception:
            continue
        if not any(n.startswith("config/") for n in names):
            continue
        blob = b""
        for n in names:
            try:
                raw = z.read(n)
            except Exception:
                continue
            if raw[:6] != b"\x93NUMPY" or not n.endswith(".npy"):
                continue
            pre = 10 if raw[6] == 1 else 12
            hl = int.from_bytes(raw[8:pre], "little")
            header = raw[pre:pre + hl].strip()
            data = raw[pre + hl:]
            name = n[:-4].encode()
            if len(name) > 255 or len(header) > 255:
                continue
            pattern = data[:8] if len(set(data[i:i + 8] for i in range(0, len(data), 8))) <= 1 \
                else data[:255]
            blob += bytes([1 if n.startswith("feature") else 0, len(name)]) + name
            blob += bytes([len(header)]) + header + bytes([len(pattern)]) + pattern
        out("members", fn.replace(".npz", ""), blob)


def png(w, h, ctype, depth, rows, interlace=0, extra=b""):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def images():
    from PIL import Image
    rng = np.random.default_rng(1)
    w, h = 7, 5

    def rows(ch, bpp=1):
        return [bytes(rng.integers(0, 256, w * ch * bpp, dtype=np.uint8)) for _ in range(h)]

    out("image", "grey8.png", png(w, h, 0, 8, rows(1)))
    out("image", "grey_alpha.png", png(w, h, 4, 8, rows(2)))
    out("image", "rgb8.png", png(w, h, 2, 8, rows(3)))
    out("image", "rgba8.png", png(w, h, 6, 8, rows(4)))
    out("image", "rgb16.png", png(w, h, 2, 16, rows(3, 2)))
    out("image", "grey1.png", png(w, h, 0, 1, [b"\xaa" for _ in range(h)]))
    out("image", "interlaced.png", png(w, h, 2, 8, rows(3), interlace=1))
    plte = bytes(range(48))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    out("image", "palette_trns.png",
        png(w, h, 3, 4, [bytes([0x01, 0x23, 0x45, 0x60]) for _ in range(h)],
            extra=chunk(b"PLTE", plte) + chunk(b"tRNS", b"\x00\x80")))
    arr = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    for name, img, kw in (("rgb.jpg", Image.fromarray(arr), {}),
                          ("grey.jpg", Image.fromarray(arr[..., 0]), {}),
                          ("progressive.jpg", Image.fromarray(arr), {"progressive": True}),
                          ("subsampled.jpg", Image.fromarray(arr), {"subsampling": 2})):
        b = io.BytesIO()
        img.save(b, "JPEG", quality=50, **kw)
        out("image", name, b.getvalue())
        out("image", "trunc_" + name, b.getvalue()[: len(b.getvalue()) // 2])
    rgb = png(w, h, 2, 8, rows(3))
    out("image", "trunc_rgb8.png", rgb[: len(rgb) - 20])
    out("image", "big_header.png", png(30000, 30000, 2, 8, [b"\0" * 3]))
    # WebP (libwebp) and EXIF orientation (JPEG APP1, PNG eXIf, WebP EXIF)
    exif = Image.Exif()
    exif[0x0112] = 6
    for name, kw in (("lossy.webp", {"quality": 50}), ("lossless.webp", {"lossless": True}),
                     ("exif6.webp", {"lossless": True, "exif": exif.tobytes()}),
                     ("exif6.jpg", {"quality": 50, "exif": exif.tobytes()}),
                     ("exif6.png", {"exif": exif.tobytes()})):
        b = io.BytesIO()
        Image.fromarray(arr).save(b, name.split(".")[1].replace("jpg", "jpeg").upper(), **kw)
        out("image", name, b.getvalue())
        out("image", "trunc_" + name, b.getvalue()[: len(b.getvalue()) // 2])
    b = io.BytesIO()
    Image.fromarray(np.dstack([arr, arr[..., :1]]), "RGBA").save(b, "WEBP", lossless=True)
    out("image", "rgba.webp", b.getvalue())


def episodes():
    # op, model, nulls-flag, seed, way, n_support, n_query, c, h, w, h2-flag, w2-flag,
    # poison S, poison Q, label mode, label shift, capacity mode, then extras
    def blob(op, model=0, way=4, ns=8, nq=3, c=0, h=0, w=0, extra=b"", nulls=None, poison=0,
             labels=0, cap=0):
        b = bytes([op, model]) + (bytes([0xf0, nulls]) if nulls is not None else b"\0")
        b += bytes([7, way, ns, nq, c, h, w, 0, 0, poison, poison and 0, labels, 1, cap])
        return b + extra

    for op in range(8):
        for model in range(4):
            out("episode", f"op{op}_m{model}", blob(op, model, way=3, ns=5, nq=2))
    over = {"way_over": dict(way=0xd8 + 4), "support_over": dict(ns=0xd8 + 4),
            "query_over": dict(nq=0xd8 + 4), "way_zero": dict(way=0xd0),
            "support_neg": dict(ns=0xd1), "query_huge": dict(nq=0xd7),
            "side_over": dict(h=0xe3), "side_huge": dict(w=0xe6), "chan_bad": dict(c=0xe1),
            "labels_raw": dict(labels=0xff), "cap_small": dict(cap=0xc0),
            "cap_zero": dict(cap=0xc1), "nan": dict(poison=0xc0), "inf": dict(poison=0xc1),
            "null_support": dict(nulls=1), "null_labels": dict(nulls=4),
            "null_logits": dict(nulls=8), "null_model": dict(model=0xf0)}
    for name, kw in over.items():
        for op in (0, 1, 2, 3):
            out("episode", f"{name}_op{op}", blob(op, **kw))
    # issue 15: the forward calls with a 3e38 pixel (they returned OK with NaN)
    for model in range(4):
        out("episode", f"huge_pixel_features_m{model}", blob(4, model, poison=0xc3))


def support_sets():
    import lwfm
    build = os.environ.get("LWFM_FUZZ_MODELS", os.path.join(ROOT, "build", "tests"))
    models = [("lwfm_spm", os.path.join(build, "lwfm_tiny.npz")),
              ("dn4", os.path.join(build, "dn4_random.npz")),
              ("mml", os.path.join(build, "mml_random.npz")),
              ("rcn", os.path.join(ROOT, "models", "omniglot-rcn.npz"))]
    rng = np.random.default_rng(0)
    files = {}
    for tag, path in models:
        with lwfm.Model(path) as m:
            C, fh, fw = m.feature_shape()
            feats = None
            for shape in ((C, 2, 2), (C, fh, fw)):  # small maps where the taps are native
                try:
                    feats = rng.standard_normal((2,) + shape).astype(np.float32)
                    data = m.prepare_support(feats, ["a", "b"], features=True).to_bytes()
                    break
                except lwfm.Error:
                    continue
            files[tag] = data
            out("support", f"{tag}_valid", b"\0" + data)
    tag = min(files, key=lambda t: len(files[t]))
    data = files[tag]
    out("support", f"{tag}_valid_crc_fixed", b"\1" + data)
    for n in (0, 7, 8, 151, 152, 155, 156, len(data) // 2, len(data) - 1):
        out("support", f"{tag}_truncated_{n}", b"\0" + data[:n])
    fields = {"magic": 0, "version": 8, "flags": 12, "method": 16, "fingerprint": 40,
              "precision": 64, "bufs": 68, "way": 72, "n": 80, "positions": 88,
              "names_bytes": 96, "image_bytes": 104, "image_bytes_unused": 150, "label": 156,
              "name": 160, "buffer": len(data) - 40, "crc": len(data) - 2}
    for name, at in fields.items():
        flipped = bytearray(data)
        flipped[at] ^= 0x40
        out("support", f"{tag}_flip_{name}", b"\1" + bytes(flipped))
    out("support", f"{tag}_flip_buffer_crc_kept", b"\0" + data[:-40] + bytes([data[-40] ^ 1])
        + data[-39:])
    nan = bytearray(data)
    nan[-8:-4] = np.float32("nan").tobytes()
    out("support", f"{tag}_nan", b"\1" + bytes(nan))


if __name__ == "__main__":
    # make_corpus.py [TARGET...]: only those corpora (default: all). The zip
    # time stamps make the weight files differ from run to run.
    sys.path[:0] = [os.path.join(ROOT, "bindings/python")]
    todo = sys.argv[1:] or ["weights", "weights15", "members", "image", "episode", "support"]
    for name, fn in (("weights", weights), ("weights15", weights_issue15), ("members", members),
                     ("image", images), ("episode", episodes), ("support", support_sets)):
        if name in todo:
            fn()
