#!/usr/bin/python3
"""`make demo`: real few-shot tasks with the bundled model and the `lwfm` tool.

    make demo                                    # builds, then runs this
    LWFM_DATA=../shared/data/omniglot/images_evaluation.npz make demo

1. `lwfm info` on the bundled model (models/omniglot.npz: LWFM-SPM on a
   Conv-64F backbone trained on the Omniglot background alphabets).
2. A task made at run time (the repository carries no third-party data):
   characters of several writing systems rendered from the machine's DejaVu
   fonts with random rotation, scale and shift (examples/glyphs.py); one
   drawing per class is the support set. `lwfm classify` names the class of
   a few other drawings; `lwfm eval` then measures 5-way and 20-way 1-shot
   accuracy over many such episodes.
3. With LWFM_DATA (or --data) pointing at Omniglot's images_evaluation.npz
   or any folder-per-class image tree, `lwfm eval` runs on that instead.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import glyphs  # noqa: E402


def run(cmd, capture=False):
    shown = " ".join(str(c) if " " not in str(c) else repr(str(c)) for c in cmd)
    print(f"\n$ {shown}", flush=True)
    res = subprocess.run([str(c) for c in cmd], text=True,
                         stdout=subprocess.PIPE if capture else None)
    if res.returncode != 0:
        sys.exit(f"demo: command failed with status {res.returncode}")
    return res.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", default=str(ROOT / "models" / "omniglot.npz"))
    ap.add_argument("--data", default=os.environ.get("LWFM_DATA"),
                    help="Omniglot .npz or folder-per-class tree to evaluate on")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    tool = ROOT / args.build / "lwfm"
    if not tool.exists():
        sys.exit(f"demo: {tool} not found: build first (make build)")
    if not Path(args.model).exists():
        sys.exit(f"demo: model {args.model} not found")
    model = ["--model", args.model]

    run([tool, "info", *model])

    with tempfile.TemporaryDirectory(prefix="lwfm-demo-") as tmp:
        data = Path(tmp) / "glyphs"
        classes = glyphs.render(data, per_class=10, seed=args.seed)
        print(f"\nrendered {len(classes)} characters x 10 drawings of "
              f"{len({c.split('-')[0] for c in classes})} writing systems into {data}")

        # One 5-way 1-shot task: a character from each of five scripts.
        scripts = list(dict.fromkeys(c.split("-")[0] for c in classes))
        if len(scripts) < 5 or len(classes) < 20:
            sys.exit("demo: too few characters rendered; are fonts-dejavu-core and "
                     "fonts-dejavu-extra installed?")
        picked = [next(c for c in classes if c.startswith(s + "-")) for s in scripts[:5]]
        support = Path(tmp) / "support"
        queries = []
        for name in picked:
            (support / name).mkdir(parents=True)
            os.link(data / name / "00.png", support / name / "00.png")
            queries += [data / name / "05.png", data / name / "08.png"]
        print(f"\n5-way 1-shot task: one drawing each of {', '.join(picked)}; "
              f"two other drawings of each are the queries")
        run([tool, "classify", *model, "--support", support, "--query", *queries])

        for way in (5, 20):
            run([tool, "eval", *model, "--data", data, "--way", way, "--shot", 1,
                 "--query", 5, "--episodes", args.episodes, "--seed", args.seed])

    if args.data:
        run([tool, "eval", *model, "--data", args.data, "--way", 5, "--shot", 1,
             "--query", 15, "--episodes", args.episodes, "--seed", args.seed])
    else:
        print("\n(set LWFM_DATA=.../omniglot/images_evaluation.npz to evaluate on Omniglot)")


if __name__ == "__main__":
    main()
