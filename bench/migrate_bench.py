"""``dedupd migrate``: how fast a SQLite store is copied into PostgreSQL.

    python bench/migrate_bench.py [--files 20000]

Builds a SQLite store of N synthetic files through the store API (as
``bench/store_scale.py`` does: every 20th a grouped copy with an audit row),
starts a throwaway PostgreSQL cluster (``tests/pg_cluster.py``: Unix socket,
fsync off) and times ``copy_sqlite_to_postgres``, then checks that the
counters and the owed actions read the same from both stores.  Then the way
back: ``PostgresStore.snapshot``, the private SQLite copy that ``scan
--dry-run`` works on, timed and checked the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parent.parent
for extra in (REPO, REPO / "bench", REPO / "tests"):
    sys.path.insert(0, str(extra))

import pg_cluster  # noqa: E402
import store_scale  # noqa: E402

from dedupd.models import PostgresUrl  # noqa: E402
from dedupd.store.postgres import PostgresStore  # noqa: E402
from dedupd.store.sqlite import Store  # noqa: E402
from dedupd.store.transfer import copy_sqlite_to_postgres  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    bin_dir = pg_cluster.binaries()
    if bin_dir is None:
        sys.exit("no PostgreSQL binaries under /usr/lib/postgresql")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        store_scale.build(path, args.files)
        cluster = pg_cluster.Cluster.start(bin_dir)
        try:
            source = Store.open(path, readonly=True)
            dest = PostgresStore.open(PostgresUrl(cluster.new_database()))
            t0 = time.perf_counter()
            copied = copy_sqlite_to_postgres(source, dest)
            seconds = time.perf_counter() - t0
            same = dest.counts() == source.counts() and dest.unacted_matches() == source.unacted_matches()
            t0 = time.perf_counter()
            back = dest.snapshot(Path(tmp) / "dry-run.db")
            back_seconds = time.perf_counter() - t0
            same_back = back.counts() == source.counts() and back.unacted_matches() == source.unacted_matches()
            back.close()
            source.close()
            dest.close()
        finally:
            cluster.stop()
    print(", ".join(f"{table}: {n:,}" for table, n in copied.items() if n))
    print(f"{seconds:.1f} s, {args.files / seconds:,.0f} files/s; counters and owed actions the same: {same}")
    print(f"back (scan --dry-run's private copy): {back_seconds:.1f} s, {args.files / back_seconds:,.0f} files/s;"
          f" counters and owed actions the same: {same_back}")


if __name__ == "__main__":
    main()
