"""``dedupd restore --all``: the time to put back N quarantined files, against a baseline.

    python bench/restore_all.py [--files 500] [--runs 3] [--baseline REV]

Builds a real setup under a temporary directory on the disk that holds
``--dir`` (default: the system's temporary directory; a tmpfs would hide
the cost of fsync): N distinct small JPEGs, each with a byte-identical copy
in a second directory, and a real ``dedupd scan`` with ``exact: quarantine``
that moves the N copies into the quarantine (store, audit rows, intents,
the record beside each quarantined file).  That state is saved, and
``dedupd restore --all`` (the real CLI, a subprocess) is timed on identical
copies of it, alternating:

* ``this checkout``: the code beside this script;
* ``baseline``: the code of ``--baseline`` (a git revision, extracted with
  ``git archive``; by default the parent of the commit that made restores
  go in batches), the same CLI run the same way.

Each restore must put back all N files.  The best of ``--runs`` is kept for
each (the machine's other work only adds time), and printed with the
ratio.  ``dedupd restore --help`` is timed too, for each: the cost of
starting the CLI (the imports), part of both totals.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent.parent


def build(base: Path, files: int) -> None:
    """N pictures in root/a, their copies in root/b, and a scan that quarantines the copies."""
    root, quarantine, state = base / "root", base / "quarantine", base / "state"
    for d in (root / "a", root / "b", quarantine, state):
        d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(files):
        cells = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(cells).resize((128, 96), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=90)
        for side in ("a", "b"):  # a first: the original by first_seen; b/ is another directory
            (root / side / f"{i:05d}.jpg").write_bytes(buf.getvalue())
    (base / "dedupd.yaml").write_text(
        f"roots: [{root}]\nquarantine_dir: {quarantine}\nmax_actions_per_minute: 1000000\n"
        "actions: {exact: quarantine}\n",
        encoding="utf-8",
    )
    done = dedupd(HERE, "scan", str(root), "--no-progress", base=base)
    moved = sum(1 for p in (quarantine / "b").iterdir() if p.suffix == ".jpg")
    if done.returncode != 0 or moved != files:
        raise SystemExit(f"the scan quarantined {moved} of {files} copies:\n{done.stdout}\n{done.stderr}")


def dedupd(code: Path, *args: str, base: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m dedupd ARGS`` with the package at ``code`` (and the setup's config and store)."""
    extra = [] if base is None else ["--config", str(base / "dedupd.yaml"), "--db", str(base / "state" / "dedupd.db")]
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dedupd", *args, *extra, "--log-format", "json"],
        capture_output=True, text=True, env=env, cwd=code, check=False,
    )  # fmt: skip


def timed_restore(code: Path, saved: Path, work: Path, files: int) -> float:
    """Copy the saved state to ``work`` (same paths every time), then time ``restore --all``."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(saved, work, symlinks=True)
    subprocess.run(["sync"], check=True)  # the copy's own writes are not the restore's to flush
    start = time.perf_counter()
    done = dedupd(code, "restore", "--all", base=work)
    took = time.perf_counter() - start
    back = sum(1 for p in (work / "root" / "b").iterdir() if p.suffix == ".jpg")
    if done.returncode != 0 or back != files:
        raise SystemExit(f"{code}: restored {back} of {files}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took


def baseline_rev() -> str:
    """The parent of the commit that made restores go in batches (restore.BATCH)."""
    found = subprocess.run(
        ["git", "log", "--format=%H", "-S", "BATCH = 100", "--reverse", "--", "dedupd/restore.py"],
        capture_output=True, text=True, cwd=HERE, check=True,
    ).stdout.split()  # fmt: skip
    if not found:
        raise SystemExit("no commit adds restore.BATCH here: give --baseline REV")
    return f"{found[0]}^"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", help="git revision to compare with (default: before batched restores)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    rev = args.baseline or baseline_rev()
    with tempfile.TemporaryDirectory(prefix="dedupd-restore-bench-", dir=args.dir) as tmp:
        top = Path(tmp)
        old_code = top / "baseline"
        old_code.mkdir()
        archive = subprocess.run(["git", "archive", rev], capture_output=True, cwd=HERE, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_code)], input=archive, check=True)
        saved, work = top / "saved", top / "setup"
        print(f"building: {args.files} pictures and their copies, a scan that quarantines the copies ...", flush=True)
        start = time.perf_counter()
        # the store and the config name files by path: built where every run restores
        build(work, args.files)
        print(f"  built in {time.perf_counter() - start:.1f} s")
        shutil.copytree(work, saved, symlinks=True)
        times: dict[str, list[float]] = {"baseline": [], "this checkout": []}
        for _ in range(args.runs):
            times["baseline"].append(timed_restore(old_code, saved, work, args.files))
            times["this checkout"].append(timed_restore(HERE, saved, work, args.files))
        start_times: dict[str, list[float]] = {"baseline": [], "this checkout": []}
        for _ in range(args.runs):
            for name, code in (("baseline", old_code), ("this checkout", HERE)):
                start = time.perf_counter()
                dedupd(code, "restore", "--help")
                start_times[name].append(time.perf_counter() - start)
    old, new = min(times["baseline"]), min(times["this checkout"])
    print(f"dedupd restore --all of {args.files} quarantined files (best of {args.runs}; all runs in brackets)")
    for name, values in times.items():
        every = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:14s} {min(values):6.2f} s  {1000 * min(values) / args.files:5.1f} ms/file  [{every}]")
    print(f"  baseline: {rev}")
    print(f"  ratio baseline / this checkout: {old / new:.2f}x")
    print("starting the CLI (dedupd restore --help), best of the same runs:")
    for name, values in start_times.items():
        print(f"  {name:14s} {min(values):6.2f} s")


if __name__ == "__main__":
    main()
