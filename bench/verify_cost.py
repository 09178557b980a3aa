"""What the pixel verifier and the crop keys cost: time per pair, memory per file, lookup time.

    python bench/verify_cost.py [--lookalikes ../shared/lookalikes] [--files 100000]

* Verifier, per candidate pair, on every pair of the look-alike folder that the
  index proposes (real captures: the hard case) and on copies of the same
  pictures resized to 50% (the easy case): the re-read of one file
  (``verification_pixels``, as ``verdict_for`` does for each side, the new
  file's usually from its cache) and the verification itself (``compare`` with
  pixels), median and p95.
* Index, per lookup and per file, with synthetic random keys (a lookup's cost
  does not depend on the values): ``candidates()`` with the crop keys (about
  ten per file, as real pictures have) against the same index without them,
  in the same run, and the bytes of the arrays per file.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from dedupd.config import MatchSettings
from dedupd.hashing import fingerprint_file, verification_pixels
from dedupd.index import HashIndex
from dedupd.matching import compare
from dedupd.models import Fingerprint, Hashes, Orientation


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def verifier(root: Path) -> None:
    settings = MatchSettings()
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".png", ".webp"} and p.name != "contact.png")
    fps = {p: fingerprint_file(p)[1] for p in paths}
    index = HashIndex()
    pairs = []
    for i, p in enumerate(paths):
        pairs += [(p, paths[j]) for j in index.candidates(fps[p], settings)]
        index.add_fingerprint(i, fps[p])
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        for p in paths[::3]:
            with Image.open(p) as im:
                small = im.convert("RGB").resize((max(1, im.width // 2), max(1, im.height // 2)))
            q = Path(tmp) / f"{p.stem}_half.jpg"
            small.save(q, quality=90)
            fps[q] = fingerprint_file(q)[1]
            copies.append((q, p))
        for name, group in (("look-alike pairs the index proposes", pairs), ("copies resized to 50%", copies)):
            reads, checks = [], []
            tiers: dict[str, int] = {}
            for new, old in group:
                t0 = time.perf_counter()
                px_old = verification_pixels(old)
                t1 = time.perf_counter()
                px_new = verification_pixels(new)
                t2 = time.perf_counter()
                v = compare(fps[new], fps[old], settings, (px_new, px_old))
                t3 = time.perf_counter()
                reads.append(t1 - t0)
                checks.append(t3 - t2)
                tier = v.match.tier.value if v.match else "different"
                tiers[tier] = tiers.get(tier, 0) + 1
            print(f"{name}: {len(group)} pairs ({', '.join(f'{k} {v}' for k, v in sorted(tiers.items()))})")
            print(f"  re-read one file: median {1000 * statistics.median(reads):.0f} ms, p95 {1000 * pct(reads, 0.95):.0f} ms")
            print(f"  verify (align + compare): median {1000 * statistics.median(checks):.0f} ms, p95 {1000 * pct(checks, 0.95):.0f} ms")
    keys = [len(f.crop_keys) for f in fps.values()]
    print(f"crop keys per file: mean {statistics.mean(keys):.1f}, max {max(keys)} ({8 * statistics.mean(keys):.0f} bytes in the store)")


def index_cost(files: int) -> None:
    rng = random.Random(7)
    settings = MatchSettings()

    def fp(crops: int) -> Fingerprint:
        h = Hashes(rng.getrandbits(64), 0, bytes(48))
        variants = tuple((o, Hashes(rng.getrandbits(64), 0, bytes(48))) for o in Orientation if o is not Orientation.IDENTITY)
        return Fingerprint("", "", h, 1, 1, "PNG", 50.0, variants, tuple(rng.getrandbits(64) for _ in range(crops)))

    for crops in (0, 9):
        index = HashIndex()
        for i in range(files):
            index.add_fingerprint(i, fp(crops))
        times = []
        for _ in range(100):
            probe = fp(crops)
            t0 = time.perf_counter()
            index.candidates(probe, settings)
            times.append(time.perf_counter() - t0)
        label = "whole-picture pHash only" if crops == 0 else f"with {crops} crop keys per file"
        print(f"index of {files:,} files, {label}: lookup median {1000 * statistics.median(times):.1f} ms, "
              f"p95 {1000 * pct(times, 0.95):.1f} ms; arrays {index.nbytes / files:.0f} bytes per file")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lookalikes", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "lookalikes")
    ap.add_argument("--files", type=int, default=100_000)
    args = ap.parse_args()
    if not args.lookalikes.is_dir():
        sys.exit(f"no such folder: {args.lookalikes}")
    verifier(args.lookalikes)
    index_cost(args.files)


if __name__ == "__main__":
    main()
