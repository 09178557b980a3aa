"""One host against two sharing one PostgreSQL store, in one run.

    python bench/hosts.py [--files 2000] [--runs 3] [--feed-rows N]
    python bench/hosts.py --daemons [--files 300] [--runs 1]

A throwaway PostgreSQL cluster is started in a temporary directory, as the tests
do (``tests/pg_cluster.py``: Debian's binaries, a Unix socket, fsync off).  The
same N synthetic fingerprints (``bench/store_backends.py``'s: every 20th an
exact copy of the one before) go through ``Pipeline.ingest``, one transaction
per file (store, catch up with the other host, group, match), into an empty
database each time:

- one host: one process ingests all N;
- two hosts: two processes (hosts alpha and beta) ingest N/2 each, at the same
  time, into the same database; each file's copy may land on the other host.

Printed: files per second for each (all N over the wall time from the first
file to the last), and the ratio.  On this 2-core machine the two processes
and the server share the cores, so the ratio says what sharing one store costs
(the store's write lock, which every placement takes, and the feed), not what
two machines would gain: their fingerprinting, the bulk of a real file's cost,
runs on each host's own CPUs.  Then what a host's look at the feed costs
(``changes_after``, which every placement runs) when the feed holds
``--feed-rows`` rows (an hour of a busy site's writes): best of 200 with nothing
new, and with 10 new rows of another host's.

``--daemons``: the same comparison with real daemons, whole: N distinct JPEG
files (384x288, every 10th a copy of the one before) are put in the roots
first, and the clock runs from the daemons' start until the store holds all N
(their catch-up walks find them: read, fingerprinted, grouped, logged).  One
daemon (host alpha, ``workers: 2``) with all of them in its root, against two
(alpha and beta, ``workers: 1`` each: the same two cores) with every other
file each.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from dedupd.config import Config  # noqa: E402
from dedupd.models import PostgresUrl  # noqa: E402
from dedupd.pipeline import Fingerprinted, Pipeline  # noqa: E402
from dedupd.store.postgres import PostgresStore  # noqa: E402
from store_backends import results  # noqa: E402


def ingest(url: str, host: str, items: list[Fingerprinted], start: object, done: object) -> None:
    store = PostgresStore.open(PostgresUrl(url), host=host)
    store.lock_writer()
    pipeline = Pipeline(store, Config())
    pipeline.index  # noqa: B018 - read (empty) before the clock starts
    start.wait()  # type: ignore[attr-defined]
    for item in items:
        pipeline.ingest(item)
    done.put(time.perf_counter())  # type: ignore[attr-defined]
    store.close()


def run(url: str, shares: dict[str, list[Fingerprinted]]) -> float:
    """Seconds from the start to the last host's last file."""
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Barrier(len(shares) + 1), ctx.Queue()
    procs = [ctx.Process(target=ingest, args=(url, host, items, start, done)) for host, items in shares.items()]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    ends = [done.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
        assert p.exitcode == 0, p.exitcode
    return max(ends) - t0


def feed(url: str, rows: int) -> None:
    alpha = PostgresStore.open(PostgresUrl(url), host="alpha")
    beta = PostgresStore.open(PostgresUrl(url), host="beta")
    try:
        beta._x(
            "INSERT INTO file_changes (file_id, host, kind, by_host) SELECT g, 'beta', 'file', 'beta'"
            " FROM generate_series(1, %s) g",
            [rows],
        )
        beta._x("ANALYZE file_changes")

        def best(runs: int, before: object = None) -> float:
            out = float("inf")
            for _ in range(runs):
                mark = alpha.feed_mark()
                if before is not None:
                    before()  # type: ignore[operator]
                t = time.perf_counter()
                found = alpha.changes_after(mark)
                out = min(out, time.perf_counter() - t)
                assert found is not None
            return out * 1000

        def ten() -> None:
            beta._x(
                "INSERT INTO file_changes (file_id, host, kind, by_host) SELECT g, 'beta', 'file', 'beta'"
                " FROM generate_series(1, 10) g"
            )

        print(f"feed of {rows} rows: a look with nothing new {best(200):.3f} ms, with 10 new rows {best(200, ten):.3f} ms")
    finally:
        alpha.close()
        beta.close()


def daemons(cluster: object, files: int, runs: int) -> None:
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import yaml  # noqa: PLC0415
    from helpers import encode, photo  # noqa: PLC0415

    pictures: list[bytes] = []
    for i in range(files):
        pictures.append(pictures[-1] if i % 10 == 9 else encode(photo(1000 + i), "JPEG"))

    def run_daemons(base: Path, shares: dict[str, list[int]], workers: int) -> float:
        url = cluster.new_database()  # type: ignore[attr-defined]
        procs = []
        for host, numbers in shares.items():
            root = base / host
            root.mkdir()
            for n in numbers:
                (root / f"img{n:05d}.jpg").write_bytes(pictures[n])
            config = base / f"{host}.yaml"
            config.write_text(yaml.safe_dump({"host": host, "roots": [str(root)], "workers": workers,
                                              "settle_seconds": 0.5, "db": url}))  # fmt: skip
        t0 = time.perf_counter()
        for host in shares:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dedupd", "run", "--config", str(base / f"{host}.yaml"), "--log-format", "json"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
            ))  # fmt: skip
        watch = None
        try:
            while True:
                if watch is None:
                    try:
                        watch = PostgresStore.open(PostgresUrl(url), readonly=True, host="bench")
                    except Exception:  # noqa: BLE001 - not created yet
                        time.sleep(0.1)
                        continue
                if watch.counts()["files"] >= files:
                    return time.perf_counter() - t0
                if any(p.poll() is not None for p in procs):
                    raise SystemExit(f"a daemon exited: {[p.poll() for p in procs]}")
                time.sleep(0.1)
        finally:
            if watch is not None:
                watch.close()
            for p in procs:
                p.terminate()
                p.wait(timeout=60)

    one, two = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            one.append(run_daemons(Path(tmp), {"alpha": list(range(files))}, 2))
        with tempfile.TemporaryDirectory() as tmp:
            two.append(run_daemons(Path(tmp), {"alpha": list(range(0, files, 2)), "beta": list(range(1, files, 2))}, 1))
    best_one, best_two = min(one), min(two)
    print(f"daemons, {files} files, best of {runs}, from the start until all are stored")
    print(f"one daemon (2 workers):  {files / best_one:6.1f} files/s  ({best_one:.2f} s)")
    print(f"two daemons (1 worker):  {files / best_two:6.1f} files/s  ({best_two:.2f} s)")
    print(f"two / one: {best_one / best_two:.2f}x the rate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--feed-rows", type=int, default=1_000_000)
    parser.add_argument("--daemons", action="store_true", help="real daemons, real files (see above)")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    import pg_cluster  # noqa: PLC0415

    bin_dir = pg_cluster.binaries()
    if bin_dir is None:
        sys.exit("PostgreSQL binaries not found under /usr/lib/postgresql")
    cluster = pg_cluster.Cluster.start(bin_dir)
    try:
        if args.daemons:
            daemons(cluster, args.files, args.runs)
            return
        items = results(args.files)
        one, two = [], []
        for _ in range(args.runs):
            one.append(run(cluster.new_database(), {"alpha": items}))
            # interleaved: consecutive files (a file and its copy) on different hosts
            two.append(run(cluster.new_database(), {"alpha": items[0::2], "beta": items[1::2]}))
        best_one, best_two = min(one), min(two)
        print(f"{args.files} files, best of {args.runs}")
        print(f"one host:  {args.files / best_one:7.1f} files/s  ({best_one:.2f} s)")
        print(f"two hosts: {args.files / best_two:7.1f} files/s  ({best_two:.2f} s)")
        print(f"two / one: {best_one / best_two:.2f}x the rate")
        feed(cluster.new_database(), args.feed_rows)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
