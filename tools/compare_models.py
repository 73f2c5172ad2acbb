#!/usr/bin/python3
"""Method-against-method table on the same episodes, with paired differences.

    tools/compare_models.py --data ../shared/data/mini-imagenet/test \\
        --row "LWFM-SPM (ours)" models/miniimagenet-conv64f.npz \\
        --row "DN4, authors' weights" dn4_1shot.npz dn4_5shot.npz \\
        [--shots 1 5] [--episodes 600] [--seed 1] [--out table.json]

Every row is a label and one model for every shot, or one model per shot
(in --shots order). Each model is run with `build/lwfm eval --json` on the
same episodes (same seed, way, queries), so the per-episode accuracies can
be paired: the table gives each row's mean ± 95% CI and its difference to
the first row, mean ± 1.96 · std / sqrt(n) of the per-episode differences
(a paired interval is much narrower than the two rows' own intervals, since
both rows see the same hard and easy episodes).
"""

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def evaluate(lwfm: str, model: str, args, shot: int) -> dict:
    cmd = [lwfm, "eval", "--model", model, "--data", args.data, "--way", str(args.way),
           "--shot", str(shot), "--query", str(args.query), "--episodes", str(args.episodes),
           "--seed", str(args.seed), "--json"]
    t0 = time.time()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(f"  {model} {shot}-shot: {res['accuracy']:.2f} ({time.time() - t0:.0f} s)",
          file=sys.stderr, flush=True)
    return res


def paired(a, b) -> str:
    """Mean and 95% CI of the per-episode differences a - b, in points."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(n - 1, 1)
    return f"{mean:+.2f} ± {1.96 * math.sqrt(var / n):.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--row", nargs="+", action="append", required=True,
                    metavar="LABEL MODEL", help="a label, then one model or one per shot")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--out", default=None, help="write every run's JSON here")
    args = ap.parse_args()
    for row in args.row:
        if len(row) not in (2, len(args.shots) + 1):
            ap.error(f"--row {row[0]!r}: give one model, or one per shot ({len(args.shots)})")
    lwfm = str(Path(args.build) / "lwfm")
    results = []
    for label, *models in args.row:
        print(f"== {label}", file=sys.stderr, flush=True)
        per_shot = models if len(models) > 1 else models * len(args.shots)
        results.append({"label": label, "models": per_shot,
                        "runs": [evaluate(lwfm, m, args, s)
                                 for m, s in zip(per_shot, args.shots)]})
    head = "| method |" + "".join(f" {args.way}-way {s}-shot (%) | vs first row |"
                                   for s in args.shots)
    print(f"\n{args.episodes} episodes, {args.query} queries per class, seed {args.seed}\n")
    print(head)
    print("|---|" + "---|---|" * len(args.shots))
    first = results[0]["runs"]
    for i, r in enumerate(results):
        cells = []
        for run, base in zip(r["runs"], first):
            diff = "—" if i == 0 else paired(run["episode_accuracies"],
                                             base["episode_accuracies"])
            cells.append(f" {run['accuracy']:.2f} ± {run['ci95']:.2f} | {diff} |")
        print(f"| {r['label']} |" + "".join(cells))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
