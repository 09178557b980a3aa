"""How far the index must look: candidate recall per transform at smaller probe radii.

    python bench/probe_radius.py [--data /tmp/dedupd-eval] [--workers 2]

The index proposes a stored file when one of three kinds of probe is within
``near_distance`` (10) bits of it (``HashIndex.candidates``): the new file's
pHash against stored pHashes (identity), its seven turned variants against
stored pHashes, and its crop keys against stored pHashes or its pHash against
stored crop keys.  Each probe costs buckets in proportion to its radius (428
buckets at 10 bits, 188 at 8, 52 at 6: docs/benchmarks.md, "Index lookup
latency"), and the variants and crop keys are 16 of a file's 17 probes.

For every copy in a ``bench/dataset.py`` folder, against its source and the
other way round, this takes the three distances and counts, per transform,
the pairs still proposed when the variant and crop probes look less far
(identity stays at 10).  Hashes only: what the verifier then says is
``bench/accuracy.py``'s business.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dedupd.hashing import fingerprint_file, hamming  # noqa: E402
from dedupd.models import Fingerprint  # noqa: E402

#: (identity, variants, crop keys) radii tried; None: that kind of probe is not made
RADII: tuple[tuple[int, int | None, int], ...] = (
    (10, 10, 10), (10, 8, 10), (10, 6, 10), (10, 4, 10), (10, None, 10),
    (10, 10, 8), (10, 10, 6), (10, 8, 8), (10, 6, 6),
)  # fmt: skip


def _fingerprint(path: Path) -> tuple[Path, Fingerprint | None]:
    try:
        return path, fingerprint_file(path)[1]
    except Exception:  # noqa: BLE001 - an unreadable copy is left out, as accuracy.py does
        return path, None


def distances(new: Fingerprint, old: Fingerprint) -> tuple[int, int, int]:
    """(identity, nearest turned variant, nearest crop key either way) in bits."""
    ident = hamming(new.hashes.phash, old.hashes.phash)
    turned = min((hamming(h.phash, old.hashes.phash) for _, h in new.variants), default=64)
    crops = min(
        [hamming(k, old.hashes.phash) for k in new.crop_keys] + [hamming(new.hashes.phash, k) for k in old.crop_keys],
        default=64,
    )
    return ident, turned, crops


def proposed(d: tuple[int, int, int], radii: tuple[int, int | None, int]) -> bool:
    ident, turned, crops = radii
    return d[0] <= ident or (turned is not None and d[1] <= turned) or d[2] <= crops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/dedupd-eval"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    files = sorted(p for p in args.data.iterdir() if p.is_file() and p.suffix != ".json")
    with cf.ProcessPoolExecutor(args.workers) as pool:
        fps = dict(pool.map(_fingerprint, files, chunksize=8))
    sources: dict[str, Fingerprint] = {}
    copies: list[tuple[str, str, Fingerprint]] = []
    for path, fp in fps.items():
        if fp is None:
            continue
        stem, _, kind = path.stem.partition("__")
        if kind:
            copies.append((stem, kind, fp))
        else:
            sources[stem] = fp
    rows: dict[str, list[tuple[int, int, int]]] = collections.defaultdict(list)
    for stem, kind, fp in copies:
        if stem in sources:
            rows[kind] += [distances(fp, sources[stem]), distances(sources[stem], fp)]
    names = ["/".join("-" if r is None else str(r) for r in radii[1:]) for radii in RADII]
    print(f"{len(copies)} copies of {len(sources)} sources, both ways; columns: variant/crop radius (identity 10)")
    print("| transform | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(RADII))
    totals = collections.Counter[int]()
    for kind in sorted(rows):
        found = [sum(proposed(d, radii) for d in rows[kind]) for radii in RADII]
        totals.update(dict(enumerate(found)))
        if len(set(found)) > 1:  # only the transforms some radius loses
            print(f"| {kind} | " + " | ".join(f"{n}/{len(rows[kind])}" for n in found) + " |")
    print("| all pairs | " + " | ".join(str(totals[i]) for i in range(len(RADII))) + " |")


if __name__ == "__main__":
    main()
