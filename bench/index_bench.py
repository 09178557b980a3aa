"""Index lookup latency at 100k and 1M stored fingerprints (synthetic hashes).

    python bench/index_bench.py [--sizes 100000 1000000] [--queries 200]

Baseline in the same run: a plain Python loop over every stored hash (what a
naive implementation does), measured on fewer queries; the ratio is printed.
Synthetic random 64-bit pHashes are fine here: the cost of a lookup does not
depend on the hash values, only on how many there are. Each query also
plants a few near neighbours, so the result path (sorting hits) is exercised.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tracemalloc
import time

from dedupd.index import HashIndex


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--distance", type=int, default=10)
    args = ap.parse_args()
    rng = random.Random(42)
    for size in args.sizes:
        hashes = [rng.getrandbits(64) for _ in range(size)]
        t0 = time.perf_counter()
        index = HashIndex.build(enumerate(hashes))
        build = time.perf_counter() - t0
        tracemalloc.start()  # a second build, traced: what the index holds (arrays and id map)
        traced = HashIndex.build(enumerate(hashes))
        mem_mib = tracemalloc.get_traced_memory()[0] / 2**20
        tracemalloc.stop()
        del traced
        probes = []
        for _ in range(args.queries):
            base = hashes[rng.randrange(size)]
            probe = base ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64))
            probes.append(probe)
        times = []
        for probe in probes:
            t = time.perf_counter()
            hits = index.search(probe, args.distance)
            times.append(time.perf_counter() - t)
            assert hits, "the planted neighbour must be found"
        baseline = []
        for probe in probes[:5]:
            t = time.perf_counter()
            [i for i, h in enumerate(hashes) if (h ^ probe).bit_count() <= args.distance]
            baseline.append(time.perf_counter() - t)
        med = statistics.median(times) * 1000
        p95 = sorted(times)[int(0.95 * len(times)) - 1] * 1000
        base_med = statistics.median(baseline) * 1000
        print(
            f"{size:>9,} hashes: build {build:.2f}s, query median {med:.2f} ms, p95 {p95:.2f} ms; "
            f"python loop {base_med:.1f} ms ({base_med / med:.0f}x slower); "
            f"8 orientations per file: {8 * med:.1f} ms; index memory {mem_mib:.0f} MiB"
        )


if __name__ == "__main__":
    main()
