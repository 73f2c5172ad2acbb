#!/usr/bin/python3
"""Render a few-shot character dataset from the machine's fonts.

    examples/glyphs.py OUT_DIR [--per-class 10] [--seed 1]

Writes OUT_DIR/<script>-<codepoint>/NN.png: one folder per character of
several writing systems (Greek, Cyrillic, Armenian, Georgian, Hebrew,
Canadian syllabics, Tifinagh, N'Ko, Runic, ...) and, in each, the character
drawn in the DejaVu Sans faces that have it (regular, oblique, condensed,
extra-light, mono), each time with a small random rotation, scale and shift: black ink on white paper, 105x105 like Omniglot. The
repository carries no third-party data; this is the demo's task, made at
run time. Needs python3-pil and fonts-dejavu-core (+ fonts-dejavu-extra).
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype")
# The DejaVu Sans family: one letterform per character, drawn in six styles
# (serif faces change the letterforms themselves, more than handwriting does).
FACES = ("DejaVuSans.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansCondensed.ttf",
         "DejaVuSans-ExtraLight.ttf", "DejaVuSansMono.ttf", "DejaVuSansCondensed-Oblique.ttf")

# (script, first codepoint, last codepoint): letters of writing systems that
# DejaVu covers. Codepoints a face lacks are skipped for that face.
SCRIPTS = (
    ("greek", 0x03B1, 0x03C9),
    ("cyrillic", 0x0431, 0x044F),
    ("armenian", 0x0531, 0x0556),
    ("georgian", 0x10D0, 0x10F0),
    ("hebrew", 0x05D0, 0x05EA),
    ("syllabics", 0x1401, 0x1432),
    ("tifinagh", 0x2D30, 0x2D65),
    ("nko", 0x07CA, 0x07EA),
    ("runic", 0x16A0, 0x16EA),
)


def _fonts():
    for d in FONT_DIRS:
        if all(os.path.exists(os.path.join(d, f)) for f in FACES[:3]):
            return [os.path.join(d, f) for f in FACES if os.path.exists(os.path.join(d, f))]
    raise SystemExit("glyphs.py: DejaVu fonts not found (apt-get install fonts-dejavu-core "
                     "fonts-dejavu-extra)")


def _raster(font, ch, size=105):
    from PIL import Image, ImageDraw
    img = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(img).text((size // 2, size // 2), ch, fill=255, font=font)
    return np.asarray(img)


def _has_glyph(font, ch, missing):
    ink = _raster(font, ch)
    return ink.any() and not np.array_equal(ink, missing)


def render(out_dir, per_class=10, seed=1, max_per_script=12, size=105):
    """Render the dataset; returns the list of class folder names."""
    from PIL import Image, ImageFont
    rng = np.random.default_rng(seed)
    paths = _fonts()
    fonts = [ImageFont.truetype(p, 64) for p in paths]
    missing = [_raster(f, "\uE000") for f in fonts]   # private use: the .notdef box
    out = Path(out_dir)
    classes = []
    for script, lo, hi in SCRIPTS:
        chosen = 0
        cps = list(range(lo, hi + 1))
        rng.shuffle(cps)
        for cp in cps:
            if chosen >= max_per_script:
                break
            ch = chr(cp)
            faces = [i for i, f in enumerate(fonts) if _has_glyph(f, ch, missing[i])]
            if len(faces) < 3:
                continue
            name = f"{script}-{cp:04x}"
            (out / name).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                face = fonts[faces[k % len(faces)]]
                ink = Image.fromarray(_raster(face, ch, size))
                ink = ink.crop(ink.getbbox())
                scale = rng.uniform(0.55, 0.8) * size / max(ink.size)
                ink = ink.resize((max(1, int(ink.size[0] * scale)),
                                  max(1, int(ink.size[1] * scale))), Image.BILINEAR)
                ink = ink.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR, expand=True)
                canvas = Image.new("L", (size, size), 0)
                x = (size - ink.size[0]) // 2 + int(rng.integers(-6, 7))
                y = (size - ink.size[1]) // 2 + int(rng.integers(-6, 7))
                canvas.paste(ink, (x, y))
                paper = 255 - np.asarray(canvas)          # black ink on white paper
                Image.fromarray(paper.astype(np.uint8)).save(out / name / f"{k:02d}.png")
            classes.append(name)
            chosen += 1
    return classes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    classes = render(args.out_dir, args.per_class, args.seed)
    print(f"{len(classes)} characters x {args.per_class} drawings in {args.out_dir}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
