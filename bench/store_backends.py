"""SQLite against PostgreSQL: the same work through the same store API, in one run.

    python bench/store_backends.py [--files 2000] [--url postgresql://...] [--rtt MS]

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

``--rtt MS`` puts a network between dedupd and PostgreSQL: a proxy on a local
TCP port that hands each message of the client's to the server MS later (the
answers come back at once), as a server one round trip of MS away would.
Time spent there is round trips, whatever else loads the machine: at 2 ms,
(time per file) / 2 ms is about how often a file waits for the server.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import queue
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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


class DelayProxy:
    """A TCP port in front of a PostgreSQL Unix socket that delays what the client
    sends by ``delay`` seconds (order kept; what the server sends passes at once)."""

    def __init__(self, socket_path: str, delay: float) -> None:
        self.socket_path, self.delay = socket_path, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        # a process of its own: in this one, its threads would wait for the GIL
        # while dedupd runs Python, and add that to every round trip
        self.process = multiprocessing.get_context("fork").Process(target=self._accept, daemon=True)
        self.process.start()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.socket_path)
            late: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._read, args=(client, late), daemon=True).start()
            threading.Thread(target=self._deliver, args=(late, server), daemon=True).start()
            threading.Thread(target=self._pass, args=(server, client), daemon=True).start()

    def _read(self, client: socket.socket, late: queue.Queue[tuple[float, bytes]]) -> None:
        while data := client.recv(65536):
            late.put((time.monotonic() + self.delay, data))
        late.put((0.0, b""))

    @staticmethod
    def _deliver(late: queue.Queue[tuple[float, bytes]], server: socket.socket) -> None:
        while True:
            due, data = late.get()
            if not data:
                server.close()
                return
            time.sleep(max(0.0, due - time.monotonic()))
            server.sendall(data)

    @staticmethod
    def _pass(server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        client.close()

    def url(self, url: str) -> str:
        """``url`` (a Unix-socket URL) through this proxy."""
        parts = urlsplit(url)
        return f"postgresql://{parts.username}@127.0.0.1:{self.port}{parts.path}"


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
    parser.add_argument("--rtt", type=float, default=0.0, help="milliseconds between dedupd and a throwaway cluster")
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
        if args.rtt and cluster is not None:
            query = parse_qs(urlsplit(url).query)
            proxy = DelayProxy(f"{query['host'][0]}/.s.PGSQL.{query['port'][0]}", args.rtt / 1000)
            url = proxy.url(url)
        with tempfile.TemporaryDirectory() as tmp:
            rows = [("sqlite", measure(Path(tmp) / "s.db", work)), ("postgres", measure(PostgresUrl(url), work))]
    finally:
        if cluster is not None:
            cluster.stop()
    base = rows[0][1][0]
    rtt = f", PostgreSQL {args.rtt:g} ms away" if args.rtt else ""
    print(f"{args.files:,} files, one transaction each (Pipeline.ingest){rtt}")
    print(f"{'backend':<10} {'files/s':>9} {'vs sqlite':>10} {'index load s':>13} {'status ms':>10} {'groups':>7}")
    for name, (rate, load, status, groups) in rows:
        print(f"{name:<10} {rate:>9.0f} {rate / base:>9.2f}x {load:>13.3f} {status:>10.2f} {groups:>7}")


if __name__ == "__main__":
    main()
