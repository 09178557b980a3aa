"""What narrower or fewer index probes would buy: the ingest ratio at a million files.

    python bench/probe_trade.py [--store /tmp/bench-1m.db] [--rounds 2]

Not dedupd's behaviour: each variant replaces ``HashIndex.candidates`` in this
process only, to show what a trade of recall for speed would gain against the
1.3x target of "ingest cost flat in store size".  The store is the one
``bench/store_scale.py`` builds (use a copy: 1,000 files are added and removed
again).  Baseline in the same run: the same 1,000 synthetic files into an
empty store.  Variants:

- ``current``: the pHash, its seven turned variants and nine crop keys probe
  the whole-picture table at ``near_distance`` (10 bits), the pHash the crop
  table;
- ``no_turns``: without the turned variants (rotated and mirrored copies
  would no longer be proposed);
- ``extra_r6``: the turned variants and crop keys at 6 bits instead of 10
  (rotated, padded or cropped copies that were also edited would be missed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import store_scale  # noqa: E402

from dedupd.index import HashIndex  # noqa: E402
from dedupd.store import Store  # noqa: E402

CURRENT = HashIndex.candidates


def variant(mode: str) -> Callable[..., set[int]]:
    def candidates(self: HashIndex, fp: Any, settings: Any) -> set[int]:
        if mode == "current":
            return CURRENT(self, fp, settings)
        limit = settings.near_distance
        if fp.detail < settings.min_detail:
            return set()
        extra = [*fp.crop_keys]
        if mode != "no_turns":
            extra += [h.phash for _, h in fp.variants]
        main = [
            self._main.within(np.array([fp.hashes.phash], dtype=np.uint64), limit),
            self._main.within(np.unique(np.array(extra, dtype=np.uint64)), 6 if mode == "extra_r6" else limit),
        ]
        crops = self._crops.within(np.array([fp.hashes.phash], dtype=np.uint64), limit)
        owners = np.concatenate([self._main.owners[np.concatenate(main)], self._crops.owners[crops]])
        return set(owners.tolist())

    return candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("/tmp/bench-1m.db"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    synthetic = store_scale.synthetic_new(1000, "new")
    big = Store.open(args.store)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Store.open(Path(tmp) / "empty.db")
        for _ in range(args.rounds):
            for mode in ("current", "no_turns", "extra_r6"):
                HashIndex.candidates = variant(mode)  # type: ignore[method-assign]
                e = store_scale.ingest_rate(empty, synthetic)
                b = store_scale.ingest_rate(big, synthetic)
                print(f"{mode:9s} ratio by CPU {e.cpu / b.cpu:.2f}x, by the wall clock {e.wall / b.wall:.2f}x; "
                      f"lookup CPU {e.lookup_cpu_ms:.2f} ms (empty) vs {b.lookup_cpu_ms:.2f} ms (1M); "
                      f"{1000 / b.cpu:.2f} ms a file at 1M", flush=True)
        empty.close()
    big.close()


if __name__ == "__main__":
    main()
