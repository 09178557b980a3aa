"""The store at a million files: ingest cost, daemon start, status, memory.

    python bench/store_scale.py [--files 1000000] [--store /tmp/dedupd-bench-1m-v2.db] [--photos DIR]

Builds (once; later runs reuse the file) a store of N synthetic fingerprinted
files through the store API, with one in twenty a duplicate of another and
an audit row for each pair, as a library that has been watched a while
looks. Each fingerprint has what a photo's has: a pHash, seven turned
variants and nine crop keys, so the index holds ten keys per file.  Then, against a baseline in the same run:

- ingest: files per second for 1,000 new synthetic files through
  ``Pipeline.ingest`` (store, group, match) into the big store and into an
  empty one, and the mean index lookup; the target is a ratio within 1.3x.
  Each by the wall clock and by CPU time (on a shared machine the wall
  clock also counts waiting for a core). Then the same with the index not
  asked at all: what the store and grouping cost alone, apart from the
  lookup and what it leaves behind in the CPU's caches.
  The same for the real pictures of ``--photos`` (their fingerprints made
  once, before the clock starts), and what that rate becomes once the time
  to fingerprint them on one core is added: the rate a scan sees;
- daemon start: seconds from ``dedupd run`` to READY (``daemon_ready``) on
  the big store with an empty root, to the index built in the background
  (``index_built``), and the daemon's peak RSS (VmHWM) then; after a clean
  stop (the usual start), and after a kill, when the store is checked
  (``PRAGMA quick_check``) before READY;
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
from dataclasses import dataclass
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dedupd.audit import Audit  # noqa: E402
from dedupd.config import Config  # noqa: E402
from dedupd.hashing import fingerprint_file  # noqa: E402
from dedupd.models import Distances, FileStat, Fingerprint, Hashes, Match, Orientation, Tier  # noqa: E402
from dedupd.pipeline import Fingerprinted, Pipeline  # noqa: E402
from dedupd.store import Store  # noqa: E402

ROOT = Path("/bench-library")


def fingerprint(rng: random.Random, n: int) -> Fingerprint:
    """A synthetic fingerprint shaped like a real one: a pHash, seven turned
    variants and nine crop keys (what ``hashing`` gives a photo)."""
    phash = rng.getrandbits(64)
    return Fingerprint(
        sha256=f"{n:064x}",
        pixel_digest=f"px{n:062x}",
        hashes=Hashes(phash=phash, dhash=rng.getrandbits(64), colour=rng.randbytes(48)),
        width=4000,
        height=3000,
        format="JPEG",
        detail=40.0,
        variants=tuple(
            (o, Hashes(rng.getrandbits(64), rng.getrandbits(64), rng.randbytes(48))) for o in list(Orientation)[1:]
        ),
        crop_keys=tuple(rng.getrandbits(64) for _ in range(9)),
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
                    old = prev.fingerprint
                    fp = Fingerprint(f"{n:064x}", f"px{n:062x}", old.hashes, 2000, 1500, "JPEG", 40.0,
                                     old.variants, old.crop_keys)
                file_id = store.upsert_file(ROOT / f"d{n // 1000:04d}" / f"img{n:07d}.jpg", FileStat(1, n + 1, 2_000_000, n), fp)
                if n % 20 == 19:
                    # as the pixel verifier would judge a resized copy (no pixels here)
                    match = Match(Tier.NEAR, Distances(0, 0, 0.0), 99.0, Orientation.IDENTITY, "resized copy")
                    store.set_match(file_id, prev_id, match, tie=False)
                    audit.append(action="log", outcome="done", path=ROOT / f"img{n}.jpg", detail="logged only",
                                 sha256=fp.sha256, original_sha256=prev.fingerprint.sha256)
                prev_id = file_id
        print(f"  built {min(files, start + batch):,} files ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    store.close()


def synthetic_new(count: int, tag: str) -> list[Fingerprinted]:
    rng = random.Random(2)
    return [
        Fingerprinted(Path(f"/bench-new/{tag}/n{i}.jpg"), FileStat(2, i + 1, 1_000_000, i), fingerprint(rng, 10**9 + i))
        for i in range(count)
    ]


def real_new(photos: Path) -> tuple[list[Fingerprinted], float]:
    """The pictures under ``photos``, fingerprinted once, and the seconds that took."""
    results = []
    t0 = time.perf_counter()
    for n, path in enumerate(sorted(p for p in photos.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})):
        st, fp = fingerprint_file(path)
        results.append(Fingerprinted(Path(f"/bench-real/p{n}{path.suffix}"), FileStat(3, n + 1, st.size, st.mtime_ns), fp))
    return results, time.perf_counter() - t0


@dataclass(frozen=True)
class Rate:
    """Files per second through Pipeline.ingest, by the wall clock and by this
    process's CPU time (on a shared machine the wall clock also counts the
    time spent waiting for a core); the same without the index lookup; and
    the mean lookup in milliseconds, wall and CPU."""

    wall: float
    cpu: float
    wall_rest: float
    cpu_rest: float
    lookup_ms: float
    lookup_cpu_ms: float


def ingest_rate(store: Store, results: list[Fingerprinted], *, lookup_answers: bool = True) -> Rate:
    """Ingest ``results`` (index built before the clock starts), then forget them
    again. ``lookup_answers=False``: the index is not asked at all and finds
    nothing (what the store and grouping cost alone; not dedupd's behaviour)."""
    count = len(results)
    pipeline = Pipeline(store, Config())
    index = pipeline.index  # waits for the build
    lookup = index.candidates
    spent = [0.0, 0.0]

    def timed(*args: object, **kw: object) -> set[int]:
        if not lookup_answers:
            return set()
        t, c = time.perf_counter(), time.process_time()
        try:
            return lookup(*args, **kw)  # type: ignore[arg-type]
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += time.process_time() - c

    index.candidates = timed  # type: ignore[method-assign]
    t0, c0 = time.perf_counter(), time.process_time()
    for r in results:
        pipeline.ingest(r)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    for r in results:  # leave the store as it was
        pipeline.forget(r.path)
    return Rate(count / elapsed, count / cpu, count / (elapsed - spent[0]), count / (cpu - spent[1]),
                1000 * spent[0] / count, 1000 * spent[1] / count)


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


def daemon_start(path: Path, *, kill: bool = False) -> tuple[float, float, float]:
    """Seconds from exec to daemon_ready and to the index built (in the background),
    and the daemon's VmHWM (MiB) then.  Stopped by SIGTERM (a clean stop: the next
    start checks the store beside the start), or with ``kill`` by SIGKILL (the next
    start checks it before READY)."""
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
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                proc.wait(60)
    return ready, built, hwm / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--store", type=Path, default=Path("/tmp/dedupd-bench-1m-v2.db"))
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "photos",
                        help="real pictures to fingerprint and ingest as well (default ../shared/photos)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # quiet
    if not args.store.exists():
        print(f"building {args.files:,} files in {args.store} (once)", file=sys.stderr)
        build(args.store, args.files)
    big = Store.open(args.store)
    stored = big.counts()["files"]
    synthetic = synthetic_new(args.new, "new")
    real, fp_seconds = real_new(args.photos)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        empty = Store.open(Path(tmp) / "empty.db")
        e = ingest_rate(empty, synthetic)
        e_real = ingest_rate(empty, real)
        e_alone = ingest_rate(empty, synthetic, lookup_answers=False)
        empty.close()
    b = ingest_rate(big, synthetic)
    b_real = ingest_rate(big, real)
    b_alone = ingest_rate(big, synthetic, lookup_answers=False)
    big.close()
    first, _, _ = daemon_start(args.store, kill=True)  # a store the daemon never ran on is checked first
    after_kill, _, _ = daemon_start(args.store)  # checked before READY again
    ready, built, rss = daemon_start(args.store)  # after a clean stop: the usual start
    ms = status_ms(args.store)
    per_fp = fp_seconds / len(real)
    e2e_empty, e2e_big = 1 / (per_fp + 1 / e_real.wall), 1 / (per_fp + 1 / b_real.wall)
    print(f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores)")
    print(f"store: {stored:,} files, {args.store.stat().st_size / 2**20:,.0f} MiB")
    print(f"ingest {args.new} new synthetic files: empty store {e.wall:,.0f} files/s, "
          f"{stored:,}-file store {b.wall:,.0f} files/s (ratio {e.wall / b.wall:.2f}x); "
          f"index lookup {e.lookup_ms:.2f} ms vs {b.lookup_ms:.2f} ms")
    print(f"  by CPU time: empty {e.cpu:,.0f} files/s, {stored:,} {b.cpu:,.0f} files/s "
          f"(ratio {e.cpu / b.cpu:.2f}x); index lookup {e.lookup_cpu_ms:.2f} ms vs {b.lookup_cpu_ms:.2f} ms")
    print(f"  without the index lookup: empty {e.wall_rest:,.0f} files/s, "
          f"{stored:,} {b.wall_rest:,.0f} files/s (ratio {e.wall_rest / b.wall_rest:.2f}x); "
          f"by CPU time {e.cpu_rest / b.cpu_rest:.2f}x")
    print(f"  with no index lookup at all (store and grouping alone): empty {e_alone.wall:,.0f} files/s, "
          f"{stored:,} {b_alone.wall:,.0f} files/s (ratio {e_alone.wall / b_alone.wall:.2f}x, "
          f"by CPU time {e_alone.cpu / b_alone.cpu:.2f}x)")
    print(f"ingest {len(real)} real pictures ({args.photos}): empty {e_real.wall:,.0f} files/s, "
          f"{stored:,} {b_real.wall:,.0f} files/s (ratio {e_real.wall / b_real.wall:.2f}x, "
          f"by CPU time {e_real.cpu / b_real.cpu:.2f}x); "
          f"index lookup {e_real.lookup_ms:.2f} ms vs {b_real.lookup_ms:.2f} ms")
    print(f"  with their fingerprinting on one core ({1000 * per_fp:.0f} ms a file): empty {e2e_empty:.1f} files/s, "
          f"{stored:,} {e2e_big:.1f} files/s (ratio {e2e_empty / e2e_big:.2f}x)")
    print(f"daemon start to READY: {ready:.2f} s; index built at {built:.2f} s; peak RSS then: {rss:,.0f} MiB")
    print(f"  with the store checked before READY: after a kill {after_kill:.2f} s; "
          f"the run's first start {first:.2f} s (checked first only on a store file the daemon never ran on)")
    print(f"status counts: {ms:.2f} ms")

if __name__ == "__main__":
    main()
