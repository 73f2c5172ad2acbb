#!/usr/bin/python3
"""Write the weight files the C tests and examples run on (build time).

    make_test_models.py SOURCE_ROOT OUTDIR

writes, into OUTDIR:
  lwfm_small.npz   LWFM-SPM, ResNet-18 taps [7, 8], fs 3, random weights and
                   randomised BatchNorm statistics (fixed seeds)
  lwfm_tiny.npz    LWFM-SPM on Conv-64F, taps [2, 3], fs 3, 32x32 input (resize
                   0): the same code paths for a fraction of the work, for the
                   runs under valgrind
  dn4_random.npz   DN4 (Conv-64F, the DN4 checkpoints' configuration),
                   random weights, randomised BatchNorm (fixed seeds)
  mml_random.npz   MML (Conv-64F, the reference's defaults), random weights,
                   randomised BatchNorm (fixed seeds)

Both are made by the PyTorch reference (bindings/python/lwfm_ref) and written with
lwfm.weights.save_weights, as tests/python/conftest.py does. Stored
uncompressed: faster to write and to load, and the build dir is local.
"""
import os
import sys


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(f"usage: {argv[0]} SOURCE_ROOT OUTDIR\n")
        return 2
    root, outdir = argv[1], argv[2]
    for sub in ("bindings/python",):
        sys.path.insert(0, os.path.join(root, sub))

    import torch
    import lwfm_ref
    from lwfm.weights import save_weights

    torch.set_num_threads(1)

    def save(model, config, name):
        tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        save_weights(os.path.join(outdir, name), tensors, config, compressed=False)

    # LWFM-SPM, ResNet-18 taps [7, 8], fs 3 (the defaults).
    torch.manual_seed(1234)
    cfg = lwfm_ref.make_config(hyperpixel_ids=[7, 8], feature_size=3)
    model = lwfm_ref.LWFMSPM(cfg).eval()
    lwfm_ref.randomize_bn(model, seed=1235)
    save(model, model.config, "lwfm_small.npz")

    # LWFM-SPM, Conv-64F on 32x32 images: small enough for valgrind.
    torch.manual_seed(2345)
    cfg = lwfm_ref.make_config(backbone="conv64f", hyperpixel_ids=[2, 3], feature_size=3,
                               image_size=32, resize=0)
    model = lwfm_ref.LWFMSPM(cfg).eval()
    lwfm_ref.randomize_bn(model, seed=2346)
    save(model, model.config, "lwfm_tiny.npz")

    # DN4: the backbone alone with the DN4 configuration (as the converter
    # writes it for the released checkpoints).
    torch.manual_seed(4321)
    dn4 = lwfm_ref.build_backbone(dict(lwfm_ref.DN4_CONFIG)).eval()
    lwfm_ref.randomize_bn(dn4, seed=4322)
    save(dn4, lwfm_ref.DN4_CONFIG, "dn4_random.npz")

    # MML with the reference's defaults (tests/python/test_mml.py).
    torch.manual_seed(5432)
    mml = lwfm_ref.MML({}, train_way=5).eval()
    lwfm_ref.randomize_bn(mml, seed=5433)
    save(mml, mml.config, "mml_random.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
