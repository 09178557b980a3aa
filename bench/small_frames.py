"""Small pictures: look-alike video frames downscaled, and edited copies of small photos.

    python bench/small_frames.py [--lookalikes ../shared/lookalikes] [--photos ../shared/photos] [--sources 14]

At a small size (a video frame of 160x120, a thumbnail) one pixel of the
verifier's tolerance is over 1% of the frame, and the motion between two
frames of a clip can fall inside it.  This runs every pair of frames of the
look-alike families (video frames, stereo views, re-shoots, viewpoints),
each reduced to a longer side of 160 and 100 px and the new one scaled to
100%, 75% and 50% of that, and for each of the first ``--sources`` photos
reduced to 64-160 px, 16 edits (re-encodes, resizes, a 5% crop, a 3°
rotation, mild photometric edits, blur, sharpening) against the photo.

Each pair is judged twice in the same run: *before*, the verifier without
the small-frame checks (``SMALL_FRAME = 0``, ``MIN_SIDE = 24``, as it was),
and *after*, at the defaults.  Look-alike pairs judged ``near`` are false
positives (pairs inside one true-duplicates set are copies and counted
apart); copies of photos not judged ``near`` are misses, counted apart when the
smaller picture of the pair is under ``MIN_SIDE`` (56 px) on its shorter side.
"""

from __future__ import annotations

import argparse
import collections
import io
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from dedupd import hashing, verify
from dedupd.config import MatchSettings
from dedupd.matching import compare
from dedupd.models import Fingerprint

SETTINGS = MatchSettings()
FAMILIES = ("video-frames", "stereo", "reshoot", "viewpoint")


def encode(im: Image.Image, fmt: str = "PNG", **kw: object) -> tuple[Fingerprint, np.ndarray]:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    data = buf.getvalue()
    return hashing.fingerprint_bytes(data), hashing.verification_pixels_of(data)


def reduce(im: Image.Image, side: int) -> Image.Image:
    f = min(1.0, side / max(im.size))
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.LANCZOS)


def scale(im: Image.Image, f: float) -> Image.Image:
    return im if f == 1.0 else im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.LANCZOS)


def judge(a: tuple[Fingerprint, np.ndarray], b: tuple[Fingerprint, np.ndarray]) -> tuple[str, str]:
    """(before, after) tiers of the pair, 'different' for None."""
    out = []
    for small_frame, min_side in ((0, 24), (verify.SMALL_FRAME, verify.MIN_SIDE)):
        saved = verify.SMALL_FRAME, verify.MIN_SIDE
        verify.SMALL_FRAME, verify.MIN_SIDE = small_frame, min_side
        try:
            v = compare(a[0], b[0], SETTINGS, (a[1], b[1]))
        finally:
            verify.SMALL_FRAME, verify.MIN_SIDE = saved
        out.append(v.match.tier.value if v.match else "different")
    return out[0], out[1]


EDITS: dict[str, Callable[[Image.Image], tuple[Image.Image, str, dict[str, object]]]] = {
    "jpeg_q90": lambda im: (im, "JPEG", {"quality": 90}),
    "jpeg_q75": lambda im: (im, "JPEG", {"quality": 75}),
    "jpeg_q50": lambda im: (im, "JPEG", {"quality": 50}),
    "webp_q80": lambda im: (im, "WEBP", {"quality": 80}),
    "scale_075": lambda im: (scale(im, 0.75), "PNG", {}),
    "scale_050": lambda im: (scale(im, 0.5), "PNG", {}),
    "scale_075_q75": lambda im: (scale(im, 0.75), "JPEG", {"quality": 75}),
    "scale_050_q75": lambda im: (scale(im, 0.5), "JPEG", {"quality": 75}),
    "upscale_150": lambda im: (im.resize((round(im.width * 1.5), round(im.height * 1.5)), Image.Resampling.BICUBIC), "PNG", {}),
    "crop_5pct_all": lambda im: (im.crop((round(im.width * 0.05), round(im.height * 0.05), round(im.width * 0.95), round(im.height * 0.95))), "PNG", {}),
    "rotate_3deg": lambda im: (im.rotate(3, resample=Image.Resampling.BICUBIC), "PNG", {}),
    "brightness_up10": lambda im: (ImageEnhance.Brightness(im).enhance(1.1), "PNG", {}),
    "gamma_090": lambda im: (im.point(lambda x: round(255 * (x / 255) ** 0.9)), "PNG", {}),
    "blur_r1": lambda im: (im.filter(ImageFilter.GaussianBlur(1)), "PNG", {}),
    "sharpen": lambda im: (im.filter(ImageFilter.UnsharpMask(2, 100, 3)), "PNG", {}),
    "to_png": lambda im: (im, "PNG", {"compress_level": 1}),
}


def lookalikes(root: Path) -> None:
    dup_dirs = [d for d in (root / "true-duplicates").iterdir() if d.is_dir()]
    families = sorted(d for d in root.iterdir() if d.is_dir() and d.name.split("_")[0] in FAMILIES) + sorted(dup_dirs)
    counts: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    fps = []
    for fam in families:
        kind = "copies" if fam in dup_dirs else "look-alikes"
        files = sorted(p for p in fam.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        pictures = {p: ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in files}
        for side in (160, 100):
            stored = {p: encode(reduce(im, side)) for p, im in pictures.items()}
            for a, b in itertools.permutations(files, 2):
                for f in (1.0, 0.75, 0.5):
                    new = scale(reduce(pictures[a], side), f)
                    before, after = judge(encode(new), stored[b])
                    if kind == "copies" and min(*new.size, *stored[b][1].shape[:2]) < verify.MIN_SIDE:
                        kind_here = "copies under 56 px"
                    else:
                        kind_here = kind
                    counts[(kind_here, "before")][before] += 1
                    counts[(kind_here, "after")][after] += 1
                    if kind == "look-alikes" and after == "near":
                        fps.append(f"{fam.name}: {a.name} at {new.width}x{new.height} vs {b.name} reduced to {side} px")
    for kind in ("look-alikes", "copies", "copies under 56 px"):
        for when in ("before", "after"):
            c = counts[(kind, when)]
            print(f"{kind:<18} {when:<6} {sum(c.values()):>4} pairs: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    for line in fps:
        print("  near after:", line)


def photos(root: Path, sources: int) -> None:
    paths = sorted(root.glob("*.jpg"))[:sources]
    near: dict[tuple[str, str], list[bool]] = collections.defaultdict(list)
    lost = []
    for p in paths:
        with Image.open(p) as im:
            im.draft("RGB", (640, 640))
            full = ImageOps.exif_transpose(im).convert("RGB")
        for side in (64, 80, 100, 128, 160):
            base = reduce(full, side)
            stored = encode(base)
            for name, edit in EDITS.items():
                im, fmt, kw = edit(base)
                before, after = judge(encode(im, fmt, **kw), stored)
                # the verifier compares in the smaller picture's frame
                bucket = "under 56 px" if min(*base.size, *im.size) < verify.MIN_SIDE else "56-160 px"
                near[(bucket, "before")].append(before in ("near", "exact", "pixel"))
                near[(bucket, "after")].append(after in ("near", "exact", "pixel"))
                if before in ("near", "exact", "pixel") and after not in ("near", "exact", "pixel") and bucket != "under 56 px":
                    lost.append(f"{p.name} at {base.width}x{base.height}, {name}: {after}")
    for bucket in ("56-160 px", "under 56 px"):
        for when in ("before", "after"):
            v = near[(bucket, when)]
            if v:
                print(f"copies of photos, compared at {bucket:<12} {when:<6} near+ {sum(v)}/{len(v)} = {sum(v) / len(v):.3f}")
    for line in lost:
        print("  no longer near:", line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parents[2] / "shared"
    ap.add_argument("--lookalikes", type=Path, default=here / "lookalikes")
    ap.add_argument("--photos", type=Path, default=here / "photos")
    ap.add_argument("--sources", type=int, default=14)
    args = ap.parse_args()
    lookalikes(args.lookalikes)
    photos(args.photos, args.sources)


if __name__ == "__main__":
    main()
