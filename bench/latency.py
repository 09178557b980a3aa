"""Time from a file's arrival (complete) to its action, with the real daemon.

    python bench/latency.py [--files 20] [--settle 2.0]

Starts ``dedupd run`` as a subprocess on a temporary root (actions: exact
duplicates quarantined), writes one original, then delivers exact copies one
at a time (written in full and closed, as ``cp`` does) and measures, for each,
the time from the moment its writer closed it to the moment it is gone from
the root and its copy is in quarantine. Two observers in the same run: inotify (the
file is complete on close-after-write, plus a 0.5 s grace) and polling (the
file is complete when size and mtime held still for settle_seconds): the
ratio shows what close-after-write buys over waiting for quiet.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)


def run(observer: str, files: int, settle: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, quarantine = base / "root", base / "q"
        root.mkdir()
        quarantine.mkdir()  # dedupd never creates the directory it moves files into
        config = base / "c.yaml"
        config.write_text(
            f"roots: [{root}]\nquarantine_dir: {quarantine}\nsettle_seconds: {settle}\n"
            f"polling: {'true' if observer == 'polling' else 'false'}\npoll_interval: 0.5\n"
            "workers: 1\nactions: {exact: quarantine}\n"
        )
        original = root / "original.jpg"
        picture(1).save(original, quality=90)
        data = original.read_bytes()
        log = open(base / "log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dedupd", "run", "--config", str(config), "--db", str(base / "db"), "--log-format", "json"],
            stderr=log, stdout=log,
        )
        try:
            deadline = time.monotonic() + 30
            while b"catch_up_finished" not in (base / "log").read_bytes():
                if time.monotonic() > deadline:
                    raise SystemExit("daemon did not start")
                time.sleep(0.05)
            times = []
            for i in range(files):
                target = root / f"copy{i}.jpg"
                with open(target, "wb") as f:
                    f.write(data)
                closed = time.monotonic()
                # done: gone from the root and its copy in quarantine (the file
                # leaves the root when it is taken, before it is verified and placed)
                while target.exists() or not (quarantine / target.name).exists():
                    time.sleep(0.005)
                    if time.monotonic() - closed > 60:
                        raise SystemExit(f"{target} was not acted on")
                times.append(time.monotonic() - closed)
            return times
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--settle", type=float, default=2.0)
    args = ap.parse_args()
    results = {}
    for observer in ("inotify", "polling"):
        t = run(observer, args.files, args.settle)
        results[observer] = statistics.median(t)
        print(
            f"{observer:<8} settle_seconds={args.settle}: arrival to action median {statistics.median(t):.2f} s, "
            f"max {max(t):.2f} s over {len(t)} files"
        )
    print(f"close-after-write is {results['polling'] / results['inotify']:.1f}x faster than waiting for quiet")


if __name__ == "__main__":
    main()
