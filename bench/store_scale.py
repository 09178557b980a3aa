"""The store at a million files: ingest cost, daemon start, status, memory.

    python bench/store_scale.py [--files 1000000] [--store /tmp/dedupd-bench-1m.db]

Builds (once; later runs reuse the file) a store of N synthetic fingerprinted
files through the store API, with one in twenty a duplicate of another and
an audit row for each pair, as a library that has been watched a while
looks.  Then, against a baseline in the same run:

- ingest: files per second for 1,000 new files through ``Pipeline.ingest``
  (store, group, match) into the big store and into an empty one; the
  target is a ratio within 1.3x;
- daemon start: seconds from ``dedupd run`` to READY (``daemon_ready``) on
  the big store with an empty root, to the index built in the background
  (``index_built``), and the daemon's peak RSS (VmHWM) then;
- status: ``Store.counts()`` plus the audit action counts, what ``dedupd
  status`` reads, in milliseconds (the CLI adds Python's start-up).

The 1,000 files added to the big store are removed again afterwards, so
the file can be reused.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dedupd.audit import Audit  # noqa: E402
from dedupd.config import Config  # noqa: E402
from dedupd.matching import compare  # noqa: E402
from dedupd.models import FileStat, Fingerprint, Hashes, Tier  # noqa: E402
from dedupd.pipeline import Fingerprinted, Pipeline  # noqa: E402
from dedupd.store import Store  # noqa: E402

ROOT = Path("/bench-library")


def fingerprint(rng: random.Random, n: int) -> Fingerprint:
    phash = rng.getrandbits(64)
    return Fingerprint(
        sha256=f"{n:064x}",
        pixel_digest=f"px{n:062x}",
        hashes=Hashes(phash=phash, dhash=rng.getrandbits(64), colour=rng.randbytes(48)),
        width=4000,
        height=3000,
        format="JPEG",
        detail=40.0,
    )


def build(path: Path, files: int) -> None:
    """N synthetic files; every 20th a near copy (same hashes) of the one before, grouped and audited."""
    rng = random.Random(1)
    store = Store.open(path)
    audit = Audit(store)
    config = Config()
    t0 = time.monotonic()
    batch = 20_000
    for start in range(0, files, batch):
        with store.atomic():
            for n in range(start, min(files, start + batch)):
                fp = fingerprint(rng, n)
                if n % 20 == 19:  # a copy of the previous file: the same hashes, other bytes
                    prev = store.record(prev_id)
                    assert prev is not None and prev.fingerprint is not None
                    fp = Fingerprint(f"{n:064x}", f"px{n:062x}", prev.fingerprint.hashes, 2000, 1500, "JPEG", 40.0)
                file_id = store.upsert_file(ROOT / f"d{n // 1000:04d}" / f"img{n:07d}.jpg", FileStat(1, n + 1, 2_000_000, n), fp)
                if n % 20 == 19:
                    verdict = compare(fp, prev.fingerprint, config.match)
                    assert verdict.match is not None and verdict.match.tier is Tier.NEAR
                    store.set_match(file_id, prev_id, verdict.match, tie=False)
                    audit.append(action="log", outcome="done", path=ROOT / f"img{n}.jpg", detail="logged only",
                                 sha256=fp.sha256, original_sha256=prev.fingerprint.sha256)
                prev_id = file_id
        print(f"  built {min(files, start + batch):,} files ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    store.close()


def ingest_rate(store: Store, count: int, tag: str) -> tuple[float, float]:
    """Files per second through Pipeline.ingest (index built before the clock
    starts), and the same without the time spent in the index lookup."""
    rng = random.Random(2)
    pipeline = Pipeline(store, Config())
    index = pipeline.index  # waits for the build
    lookup = index.candidates
    spent = [0.0]

    def timed(*args: object, **kw: object) -> set[int]:
        t = time.perf_counter()
        try:
            return lookup(*args, **kw)  # type: ignore[arg-type]
        finally:
            spent[0] += time.perf_counter() - t

    index.candidates = timed  # type: ignore[method-assign]
    results = [
        Fingerprinted(Path(f"/bench-new/{tag}/n{i}.jpg"), FileStat(2, i + 1, 1_000_000, i), fingerprint(rng, 10**9 + i))
        for i in range(count)
    ]
    t0 = time.perf_counter()
    for r in results:
        pipeline.ingest(r)
    elapsed = time.perf_counter() - t0
    for r in results:  # leave the store as it was
        pipeline.forget(r.path)
    return count / elapsed, count / (elapsed - spent[0])


def status_ms(path: Path, repeat: int = 20) -> float:
    store = Store.open(path, readonly=True)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        store.counts()
        store.action_counts()
        best = min(best, time.perf_counter() - t0)
    store.close()
    return best * 1000


def daemon_start(path: Path) -> tuple[float, float, float]:
    """Seconds from exec to daemon_ready and to the index built (in the background),
    and the daemon's VmHWM (MiB) then."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        log = Path(tmp) / "log"
        with log.open("wb") as out:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "dedupd", "run", "--watch", str(root), "--db", str(path), "--log-format", "json"],
                stdout=out, stderr=out, cwd=Path(__file__).resolve().parent.parent,
            )
            try:
                while b"daemon_ready" not in log.read_bytes():
                    if proc.poll() is not None:
                        raise SystemExit(f"daemon exited {proc.returncode}:\n{log.read_text()}")
                    time.sleep(0.01)
                ready = time.monotonic() - t0
                while b"index_built" not in log.read_bytes():  # built in the background after READY
                    time.sleep(0.05)
                built = time.monotonic() - t0
                hwm = next(int(line.split()[1]) for line in open(f"/proc/{proc.pid}/status") if line.startswith("VmHWM"))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    return ready, built, hwm / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--store", type=Path, default=Path("/tmp/dedupd-bench-1m.db"))
    parser.add_argument("--new", type=int, default=1000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # quiet
    if not args.store.exists():
        print(f"building {args.files:,} files in {args.store} (once)", file=sys.stderr)
        build(args.store, args.files)
    big = Store.open(args.store)
    stored = big.counts()["files"]
    with tempfile.TemporaryDirectory() as tmp:
        empty = Store.open(Path(tmp) / "empty.db")
        rate_empty, rest_empty = ingest_rate(empty, args.new, "empty")
        empty.close()
    rate_big, rest_big = ingest_rate(big, args.new, "big")
    big.close()
    ready, built, rss = daemon_start(args.store)
    ms = status_ms(args.store)
    print(f"store: {stored:,} files, {args.store.stat().st_size / 2**20:,.0f} MiB")
    print(f"ingest {args.new} new files: empty store {rate_empty:,.0f} files/s, "
          f"{stored:,}-file store {rate_big:,.0f} files/s (ratio {rate_empty / rate_big:.2f}x)")
    print(f"  without the index lookup (a linear scan in index.py): empty {rest_empty:,.0f} files/s, "
          f"{stored:,} {rest_big:,.0f} files/s (ratio {rest_empty / rest_big:.2f}x)")
    print(f"daemon start to READY: {ready:.2f} s; index built at {built:.2f} s; peak RSS then: {rss:,.0f} MiB")
    print(f"status counts: {ms:.2f} ms")


if __name__ == "__main__":
    main()
