#!/usr/bin/python3
"""Accuracy table of a model card: `lwfm eval` and the PyTorch reference on
the same episodes.

    tools/model_card.py --model models/omniglot.npz \\
        --data ../shared/data/omniglot/images_evaluation.npz \\
        [--settings 5x1 5x5 20x1 20x5] [--reference 5x1 20x1] [--episodes 600]

For every WAYxSHOT setting it runs `build/lwfm eval --json` (15 queries per
class, --seed); for the settings listed after --reference it also runs
`python3 -m lwfm.evaluate --backend torch` on the same episodes and reports
how many episodes' accuracies differ. Prints a Markdown table and writes the
raw results to --out (JSON).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_json(cmd, env):
    t0 = time.time()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_seconds"] = time.time() - t0
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--settings", nargs="+", default=["5x1", "5x5", "20x1", "20x5"])
    ap.add_argument("--reference", nargs="*", default=["5x1", "20x1"])
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / 'bindings/python')
    env.setdefault("LWFM_LIBRARY", str(Path(args.build) / "liblwfm.so"))
    rows, raw = [], {}
    for setting in args.settings:
        way, shot = (int(v) for v in setting.split("x"))
        common = ["--model", args.model, "--data", args.data, "--way", str(way), "--shot",
                  str(shot), "--query", str(args.query), "--episodes", str(args.episodes),
                  "--seed", str(args.seed), "--json"]
        print(f"== {way}-way {shot}-shot: lwfm eval", file=sys.stderr, flush=True)
        lib = run_json([str(Path(args.build) / "lwfm"), "eval", *common], env)
        ref = None
        if setting in args.reference:
            print(f"== {way}-way {shot}-shot: PyTorch reference", file=sys.stderr, flush=True)
            ref = run_json(["/usr/bin/python3", "-m", "lwfm.evaluate", "--backend", "torch",
                            *common], env)
        raw[setting] = {"lwfm": lib, "reference": ref}
        if ref:
            differ = sum(abs(a - b) > 1e-9 for a, b in
                         zip(lib["episode_accuracies"], ref["episode_accuracies"]))
            ref_txt = f"{ref['accuracy']:.2f} ± {ref['ci95']:.2f} | {differ}"
        else:
            ref_txt = "— | —"
        rows.append(f"| {way}-way {shot}-shot | {lib['accuracy']:.2f} ± {lib['ci95']:.2f} | "
                    f"{ref_txt} | {lib['wall_seconds']:.0f} s |")
    print(f"\n{args.episodes} episodes, {args.query} queries per class, seed {args.seed}\n")
    print("| setting | lwfm eval (%) | PyTorch reference (%) | episodes that differ | "
          "lwfm eval time |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(raw, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
