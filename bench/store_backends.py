"""SQLite against PostgreSQL: the same work through the same store API, in one run.

    python bench/store_backends.py [--files 2000] [--url postgresql://...]

Without ``--url`` a throwaway PostgreSQL cluster is started in a temporary
directory, as the tests do (``tests/pg_cluster.py``: Debian's binaries, a Unix
socket, fsync off), so the figures say what the backend's SQL and its round
trips cost, not what a disk costs.  For each backend, into an empty store:

- ingest: files per second for N synthetic fingerprints through
  ``Pipeline.ingest`` (one transaction per file: store, group, match), every
  20th an exact copy of the one before (a group);
- index load: seconds to build the in-memory index from the store
  (``hash_batches``), what a daemon start waits for in the background;
- status: ``counts()`` plus ``action_counts()`` in milliseconds (best of 20).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from dedupd.config import Config  # noqa: E402
from dedupd.index import HashIndex  # noqa: E402
from dedupd.models import FileStat, PostgresUrl, StoreLocation  # noqa: E402
from dedupd.pipeline import Fingerprinted, Pipeline  # noqa: E402
from dedupd.store import open_store  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from store_scale import fingerprint  # noqa: E402


def results(count: int) -> list[Fingerprinted]:
    rng = random.Random(3)
    out: list[Fingerprinted] = []
    for i in range(count):
        fp = fingerprint(rng, i)
        if i % 20 == 19:  # an exact copy of the one before (grouped without pixels to verify)
            fp = out[-1].fingerprint
        out.append(Fingerprinted(Path(f"/bench/d{i // 500}/img{i:06d}.jpg"), FileStat(1, i + 1, 2_000_000, i), fp))
    return out


def measure(location: StoreLocation, work: list[Fingerprinted]) -> tuple[float, float, float, int]:
    store = open_store(location)
    pipeline = Pipeline(store, Config())
    pipeline.index  # noqa: B018 - built (empty) before the clock starts
    t0 = time.perf_counter()
    for r in work:
        pipeline.ingest(r)
    rate = len(work) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    index = HashIndex.load(store.hash_batches())
    load = time.perf_counter() - t0
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        store.counts()
        store.action_counts()
        best = min(best, time.perf_counter() - t)
    groups = store.counts()["groups"]
    del index
    store.close()
    return rate, load, best * 1000, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    work = results(args.files)
    cluster = None
    if args.url is None:
        import pg_cluster  # noqa: PLC0415

        bin_dir = pg_cluster.binaries()
        if bin_dir is None:
            sys.exit("no PostgreSQL binaries under /usr/lib/postgresql; give --url")
        cluster = pg_cluster.Cluster.start(bin_dir)
    try:
        url = args.url or cluster.new_database()  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory() as tmp:
            rows = [("sqlite", measure(Path(tmp) / "s.db", work)), ("postgres", measure(PostgresUrl(url), work))]
    finally:
        if cluster is not None:
            cluster.stop()
    base = rows[0][1][0]
    print(f"{args.files:,} files, one transaction each (Pipeline.ingest)")
    print(f"{'backend':<10} {'files/s':>9} {'vs sqlite':>10} {'index load s':>13} {'status ms':>10} {'groups':>7}")
    for name, (rate, load, status, groups) in rows:
        print(f"{name:<10} {rate:>9.0f} {rate / base:>9.2f}x {load:>13.3f} {status:>10.2f} {groups:>7}")


if __name__ == "__main__":
    main()
