"""``dedupd apply``: how long the plan takes as the number of groups grows.

    python bench/apply_plan.py [--groups 10000]

Builds, through the store API, a store of N groups (an original and one
exact duplicate each) as a log-only scan leaves it: one ``log done`` audit
row per pair and a few hundred "not duplicates" decisions.  Then times, each
the best of five runs: the whole plan (``apply --dry-run``), the plan of one
group (what the review page asks when a person applies one group), and, as
the baseline in the same run, the daemon's own query for owed actions
(``unacted_matches()``), which ``plan`` reuses with ``logged=True``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dedupd.apply import plan  # noqa: E402
from dedupd.audit import Audit  # noqa: E402
from dedupd.config import ActionSettings, Config  # noqa: E402
from dedupd.models import Action, Distances, FileStat, Fingerprint, Hashes, Match, Orientation, Tier  # noqa: E402
from dedupd.store import Store  # noqa: E402

ROOT = Path("/bench-library")


def build(store: Store, groups: int) -> None:
    audit = Audit(store)
    match = Match(Tier.EXACT, Distances(0, 0, 0.0), 100.0, Orientation.IDENTITY, "identical bytes")
    with store.atomic():
        for g in range(groups):
            fp = Fingerprint(f"{g:064x}", f"px{g:062x}", Hashes(g, g, bytes(48)), 4000, 3000, "JPEG", 40.0)
            ids = []
            for k in range(2):
                path = ROOT / f"d{g % 100:02d}" / f"{g}-{k}.jpg"
                ids.append(store.upsert_file(path, FileStat(1, 2 * g + k + 1, 1_000_000, 1), fp))
            store.set_match(ids[1], ids[0], match, tie=False)
            audit.append(action="log", outcome="done", path=ROOT / f"d{g % 100:02d}" / f"{g}-1.jpg",
                         original=ROOT / f"d{g % 100:02d}" / f"{g}-0.jpg", sha256=fp.sha256,
                         original_sha256=fp.sha256, detail="logged only")
            if g % 50 == 0:
                audit.ignore(fp.sha256, ROOT / "elsewhere.jpg", fp.sha256, ROOT / "other.jpg", "bench")


def best_of(fn: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=10_000)
    args = parser.parse_args()
    config = Config(quarantine_dir=Path("/tmp"), actions=ActionSettings(exact=Action.QUARANTINE))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        started = time.perf_counter()
        build(store, args.groups)
        print(f"built {args.groups} groups in {time.perf_counter() - started:.1f} s")
        one = store.duplicates_of(1) and 1
        assert len(plan(store, config)) == args.groups
        baseline = best_of(store.unacted_matches)
        whole = best_of(lambda: plan(store, config))
        single = best_of(lambda: plan(store, config, group_ids={one}))
        print(f"unacted_matches() (baseline): {baseline * 1000:.1f} ms")
        print(f"plan, all {args.groups} groups:  {whole * 1000:.1f} ms ({whole / baseline:.1f}x baseline)")
        print(f"plan, one group:           {single * 1000:.1f} ms ({single / baseline:.1f}x baseline)")
        store.close()


if __name__ == "__main__":
    main()
