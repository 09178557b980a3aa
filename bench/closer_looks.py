"""The verifier's two closer looks: pages with small print, and watermarks.

    python bench/closer_looks.py [--photos ../shared/photos] [--sources 43]

Each pair is judged twice in the same run, as ``verdict_for`` judges two
stored files (both re-read): *without* the closer looks (``compare`` given
no way to re-read the files larger) and *with* them (the defaults).  It
prints each kind of pair's verdicts, both ways, and the time per pair.

* **Pages** (A4 at 300 dpi, 2480x3508, 40 priced lines and a total in a
  10 pt font, drawn here): copies that must stay ``near`` (JPEG q50, half
  size, a 5% crop, a 3% black pad, turned 1° and 90°, GIF, grey) and
  changes that must not be (the total 1,250.00 against 7,250.00, at 300 and
  at 150 dpi; one word; one line).
* **Watermarks**, on the first ``--sources`` photos of ``--photos`` at their
  own size, saved as JPEG q90: the benchmark's text watermark
  (``bench/transforms.py``: white at 67% opacity, outlined at 47%) and a
  plain white one at 43%, which must be ``near``; in the same place, opaque
  white words, the same outlined in black, and the watermark beside a small
  red disc elsewhere, and a patch of the photo pasted elsewhere, which must
  not be.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dedupd import hashing
from dedupd.config import MatchSettings
from dedupd.matching import compare

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import transforms  # noqa: E402  (bench/transforms.py: the benchmark's own watermark)
from helpers import corner_words, encode, invoice, pasted  # noqa: E402  (tests/helpers.py: the tests' pages and words)

SETTINGS = MatchSettings()
Edit = Callable[[Image.Image], Image.Image]


def judge(new: bytes, old: bytes, closer: bool) -> tuple[str, float]:
    """The tier (or "different") of ``new`` against ``old``, and the seconds it took (re-reads included)."""
    a, b = hashing.fingerprint_bytes(new), hashing.fingerprint_bytes(old)
    t = time.perf_counter()  # the fingerprints are made at arrival, not by the verifier
    pixels = (hashing.verification_pixels_of(new), hashing.verification_pixels_of(old))

    def again(side: int) -> tuple[np.ndarray, np.ndarray]:
        return hashing.verification_pixels_of(new, side=side), hashing.verification_pixels_of(old, side=side)

    v = compare(a, b, SETTINGS, pixels, again if closer else None)
    return (v.match.tier.value if v.match else "different"), time.perf_counter() - t


def pages() -> list[tuple[str, bool, bytes, bytes]]:
    """(kind, should be near, new, old)."""
    page = invoice("1,250.00")
    old = encode(page, "PNG")
    w, h = page.size
    padded = Image.new("RGB", (w + 2 * 105, h + 2 * 105))
    padded.paste(page, (105, 105))
    copies: dict[str, tuple[Image.Image, str, dict[str, object]]] = {
        "page: JPEG q50": (page, "JPEG", {"quality": 50}),
        "page: half size": (page.resize((w // 2, h // 2), Image.Resampling.LANCZOS), "JPEG", {"quality": 85}),
        "page: crop 5%": (page.crop((124, 175, w - 124, h - 175)), "JPEG", {"quality": 90}),
        "page: pad 3%": (padded, "PNG", {}),
        "page: turned 1°": (page.rotate(1, resample=Image.Resampling.BICUBIC, fillcolor=(252, 252, 250)), "JPEG", {"quality": 90}),
        "page: turned 90°": (page.transpose(Image.Transpose.ROTATE_90), "JPEG", {"quality": 90}),
        "page: GIF": (page.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "GIF", {}),
        "page: grey": (page.convert("L"), "PNG", {}),
    }
    changed = invoice("7,250.00")
    changes: dict[str, tuple[Image.Image, str, dict[str, object]]] = {
        "page changed: total, 300 dpi": (changed, "JPEG", {"quality": 90}),
        "page changed: total, 150 dpi copy": (changed.resize((w // 2, h // 2), Image.Resampling.LANCZOS), "JPEG", {"quality": 90}),
        "page changed: one word": (invoice("1,250.00", "11  consulting days, rate 50.00"), "JPEG", {"quality": 90}),
        "page changed: one line": (invoice("1,250.00", "11  travel to the site and back"), "JPEG", {"quality": 90}),
    }
    out = [(k, True, encode(im, fmt, **p), old) for k, (im, fmt, p) in copies.items()]
    out += [(k, False, encode(im, fmt, **p), old) for k, (im, fmt, p) in changes.items()]
    return out


def with_disc(im: Image.Image) -> Image.Image:
    out = transforms._text_watermark(im)
    w, h = im.size
    ImageDraw.Draw(out).ellipse((w // 4, h // 4, w // 4 + h // 25, h // 4 + h // 25), fill=(200, 40, 40))
    return out


WATERMARK_EDITS: dict[str, tuple[bool, Edit]] = {
    "watermark: the benchmark's text": (True, transforms._text_watermark),
    "watermark: plain white, 43%": (True, lambda im: corner_words(im, (255, 255, 255, 110), None)[0]),
    "not a watermark: opaque white words": (False, lambda im: corner_words(im, (255, 255, 255, 255), None)[0]),
    "not a watermark: opaque words, outlined": (False, lambda im: corner_words(im, (255, 255, 255, 255), (0, 0, 0, 255))[0]),
    "not a watermark: the watermark and a red disc": (False, with_disc),
    "not a watermark: a patch pasted": (False, pasted),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("../shared/photos"))
    ap.add_argument("--sources", type=int, default=43)
    args = ap.parse_args()
    counts: dict[str, dict[bool, collections.Counter[str]]] = collections.defaultdict(
        lambda: {False: collections.Counter(), True: collections.Counter()}
    )
    times: dict[str, dict[bool, list[float]]] = collections.defaultdict(lambda: {False: [], True: []})
    expected: dict[str, bool] = {}
    cases = pages()
    sources = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in {".jpg", ".png"})[: args.sources]
    for path in sources:
        with Image.open(path) as im:
            photo = im.convert("RGB")
        old = encode(photo, "PNG")
        for kind, (near, edit) in WATERMARK_EDITS.items():
            cases.append((kind, near, encode(edit(photo), "JPEG", quality=90), old))
    for kind, near, new, old in cases:
        expected[kind] = near
        for closer in (False, True):
            tier, seconds = judge(new, old, closer)
            counts[kind][closer][tier] += 1
            times[kind][closer].append(seconds)
    print(f"{'pair':48} {'should':8} {'without the closer looks':28} {'with them':28} ms/pair without, with")
    for kind in counts:
        def said(c: collections.Counter[str]) -> str:
            return ", ".join(f"{t} {n}" for t, n in sorted(c.items()))
        ms = [1000 * statistics.median(times[kind][c]) for c in (False, True)]
        print(f"{kind:48} {'near' if expected[kind] else 'not near':8} {said(counts[kind][False]):28} "
              f"{said(counts[kind][True]):28} {ms[0]:.0f}, {ms[1]:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
