"""What finding the owed actions costs at start: ``Store.unacted_matches()``.

    python bench/unacted_start.py [--matches 50000] [--owed 10]

Builds a store through the store API (files with fingerprints, a match for
each duplicate, a ``done`` audit row for every match but ``--owed`` of them,
as after a long run) and times, in the same run:

* ``pass``: the query before m014, a correlated look into the audit for every
  match (the baseline);
* ``flag``: ``unacted_matches()`` as it is, through the partial index on
  ``matches.owed`` that the triggers of m014 keep.

Both must return the same ids; the median of five runs each is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dedupd.audit import Audit  # noqa: E402
from dedupd.models import Distances, FileStat, Fingerprint, Hashes, Match, Orientation, Tier  # noqa: E402
from dedupd.store import Store  # noqa: E402

PASS = (
    "SELECT m.file_id FROM matches m JOIN files d ON d.id = m.file_id JOIN files o ON o.id = m.original_id"
    " WHERE COALESCE((SELECT a.outcome = 'failed' OR (a.outcome = 'skipped' AND ("
    "    a.detail LIKE 'circuit breaker%' OR a.detail LIKE 'actions on this root are paused%'))"
    "  FROM audit a WHERE a.sha256 = d.sha256 AND a.original_sha256 = o.sha256 AND a.path = d.path"
    "  ORDER BY a.id DESC LIMIT 1), 1)"
    " AND NOT EXISTS (SELECT 1 FROM decisions k WHERE k.kind = 'keep' AND k.sha_a = d.sha256 AND k.path_a = d.path)"
    " ORDER BY m.file_id"
)


def _fp(n: int) -> Fingerprint:
    return Fingerprint(f"{n:064x}", f"px{n}", Hashes(n, n, bytes(48)), 10, 10, "JPEG", 30.0)


def build(db: Path, matches: int, owed: int) -> None:
    store = Store.open(db)
    audit = Audit(store)
    match = Match(Tier.EXACT, Distances(0, 0, 0.0), 100.0, Orientation.IDENTITY, "same bytes")
    with store.atomic():
        for n in range(matches):
            a, b = Path(f"/photos/{n}.jpg"), Path(f"/photos/{n} copy.jpg")
            original = store.upsert_file(a, FileStat(1, 2 * n + 1, 10, 1), _fp(n))
            dup = store.upsert_file(b, FileStat(1, 2 * n + 2, 10, 1), _fp(n))
            store.set_match(dup, original, match, tie=False)
            if n >= owed:
                audit.append(action="log", outcome="done", path=b, detail="logged", original=a,
                             sha256=_fp(n).sha256, original_sha256=_fp(n).sha256)
    store.close()


def median_time(fn: object) -> tuple[float, list[int]]:
    times, out = [], []
    for _ in range(5):
        t = time.perf_counter()
        out = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matches", type=int, default=50_000)
    parser.add_argument("--owed", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "s.db"
        t = time.perf_counter()
        build(db, args.matches, args.owed)
        print(f"built {args.matches} matches, {args.owed} owed, in {time.perf_counter() - t:.1f} s")
        store = Store.open(db)
        base, expected = median_time(lambda: [r[0] for r in store.db.execute(PASS)])
        flag, found = median_time(store.unacted_matches)
        store.close()
    assert found == expected, (len(found), len(expected))
    print(f"pass over every match: {base * 1000:.1f} ms")
    print(f"owed flag and index:   {flag * 1000:.2f} ms  ({base / flag:.0f}x faster), {len(found)} owed")


if __name__ == "__main__":
    main()
