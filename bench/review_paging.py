"""Paging of the review page at 10,000 groups: the first, a middle and the last page.

    python bench/review_paging.py [--groups 10000] [--singles 70000] [--repeat 20]

Builds a store of made-up records (no pictures: a page's HTML does not read
files; thumbnails are separate requests) with ``--groups`` groups of three
files among ``--singles`` files that are in no group, then times, through
Flask's test client and the real application:

- ``GET /groups`` at the first page, the middle one and the last one, as the
  page's own links reach them (keyset cursors on the path index);
- the query behind a page alone, keyset against ``LIMIT/OFFSET`` at the same
  depth (the baseline in the same run: what paging by page number costs).

Medians of ``--repeat`` runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dedupd.config import Config  # noqa: E402
from dedupd.models import Distances, FileStat, Fingerprint, Hashes, Match, Orientation, Tier  # noqa: E402
from dedupd.store.base import _path_key  # noqa: E402
from dedupd.store.sqlite import Store  # noqa: E402
from dedupd.web import security  # noqa: E402
from dedupd.web.app import PAGE, create_app  # noqa: E402


def build(db: Path, groups: int, singles: int) -> list[bytes]:
    """The store; returns the originals' path keys in path order."""
    store = Store.open(db)
    originals = []
    with store.atomic():
        for i in range(groups + singles):
            grouped = i < groups
            folder = f"/photos/{i % 97:02d}/{i:07d}"
            ids = []
            for j in range(3 if grouped else 1):
                fp = Fingerprint(f"{i:032d}{j:032d}", f"p{i}-{j}", Hashes(i, j, bytes(48)), 4000, 3000, "JPEG", 30.0)
                ids.append(store.upsert_file(Path(f"{folder}/{j}.jpg"), FileStat(1, 3 * i + j, 10**6, 1), fp))
            if grouped:
                tier = (Tier.EXACT, Tier.PIXEL, Tier.NEAR)[i % 3]
                for dup in ids[1:]:
                    store.set_match(dup, ids[0], Match(tier, Distances(2, 3, 1.0), 96.9, Orientation.IDENTITY, "made up"), tie=False)
                originals.append(_path_key(Path(f"{folder}/0.jpg")))
    store.close()
    return sorted(originals)


def median_ms(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--singles", type=int, default=70_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dedupd-review-bench-") as tmp:
        db = Path(tmp) / "dedupd.db"
        t0 = time.perf_counter()
        originals = build(db, args.groups, args.singles)
        print(f"store: {args.groups} groups, {args.groups * 3 + args.singles} files, built in {time.perf_counter() - t0:.1f} s")
        app = create_app(Config(), db, security.Guard("127.0.0.1", 8765, None), Path(tmp) / "cache")
        client = app.test_client()
        host = {"Host": "127.0.0.1:8765"}
        middle = originals[len(originals) // 2]
        pages = {
            "first": "/groups",
            "middle": f"/groups?after={middle.hex()}",
            "last": f"/groups?before={(originals[-1] + b'~').hex()}",
            "first, tier near": "/groups?tier=near",
            "last, tier near": f"/groups?tier=near&before={(originals[-1] + b'~').hex()}",
        }
        for name, url in pages.items():
            got = client.get(url, headers=host)
            assert got.status_code == 200 and got.get_data(as_text=True).count('class="group"') == PAGE, name
            print(f"GET {name:<17} {median_ms(lambda: client.get(url, headers=host), args.repeat):7.1f} ms")
        store = Store.open(db, readonly=True)
        depth = len(originals) - PAGE
        keyset = median_ms(lambda: store.review_group_page(after=(originals[depth - 1], 1 << 62), limit=PAGE + 1), args.repeat)
        offset_sql = (
            "SELECT o.id, o.path FROM files o WHERE EXISTS (SELECT 1 FROM matches m WHERE m.original_id = o.id)"
            " ORDER BY o.path LIMIT ? OFFSET ?"
        )
        offset = median_ms(lambda: store.db.execute(offset_sql, [PAGE + 1, depth]).fetchall(), args.repeat)
        first = median_ms(lambda: store.review_group_page(limit=PAGE + 1), args.repeat)
        store.close()
        print(f"query, first page (keyset)         {first:7.2f} ms")
        print(f"query, last page (keyset)          {keyset:7.2f} ms")
        print(f"query, last page (LIMIT/OFFSET)    {offset:7.2f} ms  (baseline; {offset / keyset:.0f}x the keyset query)")


if __name__ == "__main__":
    main()
