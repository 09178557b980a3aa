"""Index lookup latency at 100k and 1M stored files, multi-index against a
linear scan in the same run.

    python bench/index_bench.py [--sizes 100000 1000000] [--queries 200]
    python bench/index_bench.py --store STORE.db   # the bucket share on real hashes

Each stored file has a pHash and nine crop keys, as a real fingerprint does
(``hashing.CROP_WINDOWS`` and the content box), and each query probes with a
pHash, nine crop keys and seven turned variants (``HashIndex.candidates`` at
the default settings): 17 probes into the pHash table and one into the crop
table, which holds nine entries per file. The baseline is the same index
forced to scan linearly (what dedupd did before the multi-index), so the
ratio is the speed-up at that size.

Synthetic hashes are uniform random, the best case for a multi-index: real
pHashes have biased bits and fill some buckets more than others. ``--store``
measures what that costs on real pictures: it loads every (pHash, crop keys)
of a store made by ``dedupd scan`` and reports the share of the table a
lookup visits in the buckets, against the share for random hashes. The share
does not depend on the size of the table, so it tells how the 1M figures
move for real pictures.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from dedupd.config import MatchSettings
from dedupd.index import HashIndex
from dedupd.models import Fingerprint, Hashes, Orientation

KEYS = 9  # crop keys per file
TURNS = 7  # turned variants per query


def near(value: int, rng: random.Random, bits: int) -> int:
    for bit in rng.sample(range(64), bits):
        value ^= 1 << bit
    return value


def query(rng: random.Random, stored: tuple[int, tuple[int, ...]]) -> Fingerprint:
    """A file near a stored one: its pHash a few bits off, fresh crop keys and variants."""
    hashes = Hashes(near(stored[0], rng, 4), 0, b"\0" * 48)
    variants = tuple((o, Hashes(rng.getrandbits(64), 0, b"")) for o in list(Orientation)[1 : 1 + TURNS])
    crop = tuple(rng.getrandbits(64) for _ in range(KEYS))
    return Fingerprint("s", "p", hashes, 100, 100, "JPEG", 40.0, variants, crop)


def timed(index: HashIndex, queries: list[Fingerprint], expect: list[int]) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread's) seconds of each lookup: on a shared
    machine the wall clock includes the time spent waiting for a core."""
    settings = MatchSettings()
    times, cpu = [], []
    for fp, want in zip(queries, expect, strict=True):
        t, c = time.perf_counter(), time.thread_time()
        found = index.candidates(fp, settings)
        times.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        assert want in found, "the planted neighbour must be found"
    return times, cpu


def synthetic(sizes: list[int], count: int) -> None:
    rng = random.Random(42)
    for size in sizes:
        files = [(rng.getrandbits(64), tuple(rng.getrandbits(64) for _ in range(KEYS))) for _ in range(size)]
        items = [(i, h, keys) for i, (h, keys) in enumerate(files)]
        t0 = time.perf_counter()
        index = HashIndex.build(items)
        build = time.perf_counter() - t0
        linear = HashIndex.build(items, linear_below=2**62)
        tracemalloc.start()  # a third build, traced: what the index holds
        traced = HashIndex.build(items)
        mem_mib = tracemalloc.get_traced_memory()[0] / 2**20
        tracemalloc.stop()
        del traced, items
        picks = [rng.randrange(size) for _ in range(count)]
        queries = [query(rng, files[i]) for i in picks]
        fast, fast_cpu = timed(index, queries, picks)
        slow, slow_cpu = timed(linear, queries[: max(5, count // 10)], picks[: max(5, count // 10)])
        med, base = statistics.median(fast) * 1000, statistics.median(slow) * 1000
        med_cpu, base_cpu = statistics.median(fast_cpu) * 1000, statistics.median(slow_cpu) * 1000
        p95 = sorted(fast)[int(0.95 * len(fast)) - 1] * 1000
        print(
            f"{size:>9,} files ({size * (KEYS + 1):,} keys): build {build:.1f} s; lookup median {med:.2f} ms, "
            f"p95 {p95:.2f} ms; linear scan {base:.1f} ms ({base / med:.0f}x slower); CPU time median "
            f"{med_cpu:.2f} ms against {base_cpu:.1f} ms linear; "
            f"index memory {mem_mib:.0f} MiB ({mem_mib * 2**20 / size:.0f} B per file)"
        )


def share(index: HashIndex, probes: list[int]) -> float:
    """Mean share of the pHash table a lookup reads in its buckets."""
    table = index._main
    limit = MatchSettings().near_distance
    return statistics.mean(table.visited(np.array([p], dtype=np.uint64), limit) / table.live for p in probes)


def real(store_path: Path) -> None:
    from dedupd.store import Store

    store = Store.open(store_path, readonly=True)
    items = list(store.all_hashes())
    store.close()
    keys = [h for _, h, _ in items] + [k for _, _, ks in items for k in ks]
    rng = random.Random(5)
    tuning = {"linear_below": 0, "max_share": float("inf")}
    real_index = HashIndex.build(enumerate(keys), **tuning)  # type: ignore[arg-type]
    random_index = HashIndex.build(((i, rng.getrandbits(64)) for i in range(len(keys))), **tuning)  # type: ignore[arg-type]
    probes = [h for _, h, _ in items]
    r, u = share(real_index, probes), share(random_index, [rng.getrandbits(64) for _ in probes])
    print(f"{len(items):,} real files, {len(keys):,} keys (pHashes and crop keys): a lookup visits "
          f"{100 * r:.3f}% of the table in its buckets, against {100 * u:.3f}% for random hashes "
          f"({r / u:.1f}x); a linear scan visits 100%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--store", type=Path, help="a store made by dedupd scan: measure the bucket share on real hashes")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} at the start (2 cores)")
    if args.store:
        real(args.store)
    else:
        synthetic(args.sizes, args.queries)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
