"""Fingerprinting throughput and peak memory, against imagehash in the same run.

    python bench/throughput.py [--photos ../shared/photos] [--repeat 3]

Data sets:
  baseline-jpeg  every photo of --photos re-encoded once as a baseline
                 (non-progressive) JPEG, quality 90, at its full size
  all-photos     every image under --photos as published (JPEG, most of them
                 progressive, and PNG)

Baseline: ``imagehash.phash(Image.open(path))`` on the same files, one
process. dedupd: the full fingerprint the daemon and scan compute (SHA-256,
pixel digest, pHash + dHash + colour grid, and the seven orientation
variants) via ``dedupd.pipeline.fingerprint_job``, with 1 worker (inline) and
2 workers (a process pool, as ``dedupd scan`` uses). Peak memory: the
maximum resident set size of a fresh process doing each job once over the set.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imagehash
from PIL import Image

from dedupd.hashing import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from dedupd.pipeline import fingerprint_batch, fingerprint_job
from dedupd.scan import batches


def baseline(paths: list[Path]) -> None:
    for p in paths:
        imagehash.phash(Image.open(p))


def dedupd_one(paths: list[Path]) -> None:
    for p in paths:
        fingerprint_job(p, DEFAULT_MAX_PIXELS, DEFAULT_MAX_BYTES)


def dedupd_pool(paths: list[Path], workers: int, pool: cf.ProcessPoolExecutor) -> None:
    """As ``dedupd scan`` does it: small files batched per worker task, large ones alone."""
    groups = list(batches((p, p.stat().st_size) for p in paths))
    n = len(groups)
    list(pool.map(fingerprint_batch, groups, [DEFAULT_MAX_PIXELS] * n, [DEFAULT_MAX_BYTES] * n))


def best_of(repeat: int, fn, *args) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return min(times)


def peak_rss_mb(job: str, paths: list[Path]) -> float:
    """Run one job in a fresh interpreter and return its peak RSS in MiB.

    Read from VmHWM, the high-water mark of the process's own memory map:
    ru_maxrss would also count this (larger) parent's, which Linux carries
    across fork and exec.
    """
    code = (
        "import sys, resource; from pathlib import Path; sys.path.insert(0, %r); import throughput as t;"
        "paths=[Path(p) for p in sys.argv[1:]]; getattr(t, %r)(paths);"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    ) % (str(Path(__file__).parent), job)
    out = subprocess.run([sys.executable, "-c", code, *map(str, paths)], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def make_baseline_jpegs(photos: Path, out: Path) -> list[Path]:
    paths = []
    for src in sorted(photos.glob("*.jpg")):
        dst = out / src.name
        Image.open(src).convert("RGB").save(dst, "JPEG", quality=90, progressive=False)
        paths.append(dst)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "photos")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "baseline-jpeg": make_baseline_jpegs(args.photos, Path(tmp)),
            "all-photos": sorted(
                p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
            ),
        }
        ctx = multiprocessing.get_context("forkserver")
        with cf.ProcessPoolExecutor(2, mp_context=ctx) as pool:
            dedupd_pool(sets["all-photos"][:4], 2, pool)  # start the workers before timing
            baseline(sets["all-photos"][:2])
            dedupd_one(sets["all-photos"][:2])
            for name, paths in sets.items():
                mp = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in paths) / 1e6
                t_base = best_of(args.repeat, baseline, paths)
                t_one = best_of(args.repeat, dedupd_one, paths)
                t_two = best_of(args.repeat, dedupd_pool, paths, 2, pool)
                r = {
                    "files": len(paths),
                    "megapixels": round(mp, 1),
                    "baseline_files_per_s": round(len(paths) / t_base, 1),
                    "dedupd_1_worker_files_per_s": round(len(paths) / t_one, 1),
                    "dedupd_2_workers_files_per_s": round(len(paths) / t_two, 1),
                    "ratio_1_worker_vs_baseline": round(t_base / t_one, 2),
                    "ratio_2_workers_vs_1_worker": round(t_one / t_two, 2),
                    "peak_rss_mib_baseline": round(peak_rss_mb("baseline", paths), 1),
                    "peak_rss_mib_dedupd": round(peak_rss_mb("dedupd_one", paths), 1),
                }
                results[name] = r
                print(
                    f"{name:<14} {r['files']:>3} files, {r['megapixels']:>6} MP: baseline {r['baseline_files_per_s']:>6}/s, "
                    f"dedupd 1 worker {r['dedupd_1_worker_files_per_s']:>6}/s ({r['ratio_1_worker_vs_baseline']}x), "
                    f"2 workers {r['dedupd_2_workers_files_per_s']:>6}/s ({r['ratio_2_workers_vs_1_worker']}x of 1 worker); "
                    f"peak RSS baseline {r['peak_rss_mib_baseline']} MiB, dedupd {r['peak_rss_mib_dedupd']} MiB"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
