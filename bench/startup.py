"""The CPU a dedupd process costs before and while it does a small job, against a baseline.

    python bench/startup.py [--runs 10] [--baseline REV]

Most of what a short ``dedupd`` command costs is its imports: the tests
start hundreds of them (the CLI, ``dedupd run``, the daemon's workers).
This times, as real subprocesses on a small real setup (a store holding
three scanned photos, one of them twice), the user+system CPU time
(``getrusage`` of the children) of:

* ``--help``, ``status``, ``groups``, ``audit``: commands that read the store;
* ``scan (unchanged)``: a scan of the same tree, which hashes nothing;
* ``scan (1 new)``: a scan into a fresh store that hashes one photo;
* ``run to ready``: ``dedupd run`` started on that tree with one worker,
  stopped with SIGTERM once it logs ``daemon_ready`` (its main process and
  the children it reaped);
* ``worker start``: what a fingerprinting worker imports and loads before
  its first file (the module its functions come from, then its initializer),
  in the environment it inherits from ``dedupd`` (which sets
  ``OPENBLAS_NUM_THREADS=1`` in this checkout).

each for ``this checkout`` (the code beside this script) and ``baseline``
(``--baseline``, a git revision extracted with ``git archive``; by default
the parent of the commit that made scipy's import lazy), alternating run by
run so that both see the same machine.  The median of ``--runs`` is printed
with the ratio.  Both use this interpreter and its installed libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PHOTOS = next((p for p in (HERE.parent / "shared" / "photos", Path("/work/shared/photos")) if p.is_dir()), None)
#: the commit that made scipy's import lazy, found by its subject (a rebase changes its id)
LAZY_SCIPY = "Start-up: scipy is imported on the first perceptual hash"


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_of(run: Callable[[], None]) -> float:
    before = children_cpu()
    run()
    return children_cpu() - before


def dedupd(code: Path, base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(code), "XDG_STATE_HOME": str(base / "xdg"), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dedupd", *args], cwd=base, env=env, capture_output=True, text=True, check=False
    )


def daemon_to_ready(code: Path, base: Path) -> None:
    """Start ``dedupd run``, wait for daemon_ready, stop it, reap it."""
    env = {**os.environ, "PYTHONPATH": str(code), "XDG_STATE_HOME": str(base / "xdg"), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [sys.executable, "-m", "dedupd", "run", "--config", str(base / "run.yaml"), "--db", str(base / "run.db"),
            "--log-format", "json"]  # fmt: skip
    # the log is on stderr; the pool's helper processes keep the pipe open, so it is read to its end
    # only after the daemon has been reaped
    with subprocess.Popen(argv, cwd=base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as p:
        assert p.stderr is not None
        for line in p.stderr:
            if '"daemon_ready"' in line:
                break
        else:
            raise SystemExit(f"dedupd run exited {p.wait()} before it was ready")
        p.send_signal(signal.SIGTERM)
        if p.wait(timeout=60) != 0:
            raise SystemExit(f"dedupd run exited {p.returncode}")
        p.stderr.read()


def setup(base: Path) -> Path:
    """A tree of three photos (one twice), scanned into base/d.db; returns the tree."""
    assert PHOTOS is not None, "the shared photos are not available"
    root = base / "root"
    root.mkdir(parents=True)
    photos = sorted(PHOTOS.glob("*.jpg"))[:3]
    for p in photos:
        shutil.copyfile(p, root / p.name)
    shutil.copyfile(photos[0], root / f"copy-{photos[0].name}")
    (base / "new").mkdir()
    shutil.copyfile(photos[1], base / "new" / photos[1].name)
    (base / "quarantine").mkdir()
    (base / "run.yaml").write_text(
        json.dumps({"roots": [str(root)], "quarantine_dir": str(base / "quarantine"), "workers": 1,
                    "settle_seconds": 0.5}),
        encoding="utf-8",
    )  # fmt: skip
    return root


def cases(code: Path, base: Path, root: Path) -> dict[str, Callable[[], None]]:
    db = str(base / "d.db")

    def cli(*args: str) -> Callable[[], None]:
        def run() -> None:
            done = dedupd(code, base, *args)
            if done.returncode not in (0, 3):
                raise SystemExit(f"dedupd {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")

        return run

    def scan_new() -> None:
        (base / "new.db").unlink(missing_ok=True)
        cli("scan", str(base / "new"), "--db", str(base / "new.db"), "--workers", "1", "--no-progress")()

    module = "dedupd.worker" if (code / "dedupd" / "worker.py").exists() else "dedupd.pipeline"
    worker = f"import {module}; {module}.worker_init(1 << 30)"

    # the environment a worker inherits from the dedupd that starts it
    inherited = {"OPENBLAS_NUM_THREADS": "1"} if "OPENBLAS_NUM_THREADS" in (code / "dedupd" / "cli.py").read_text() else {}

    def worker_start() -> None:
        env = {**os.environ, **inherited, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run([sys.executable, "-c", worker], cwd=base, env=env, check=True)

    return {
        "--help": cli("--help"),
        "status": cli("status", "--db", db),
        "groups": cli("groups", "--db", db),
        "audit": cli("audit", "--db", db),
        "scan (unchanged)": cli("scan", str(root), "--db", db, "--workers", "1", "--no-progress"),
        "scan (1 new)": scan_new,
        "run to ready": lambda: daemon_to_ready(code, base),
        "worker start": worker_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline", help="a git revision; default: the parent of the commit that made scipy lazy")
    args = parser.parse_args()
    if args.baseline is None:
        found = subprocess.run(["git", "log", "-1", "--format=%h", "--fixed-strings", f"--grep={LAZY_SCIPY}"],
                               cwd=HERE, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        args.baseline = f"{found}^"
    with tempfile.TemporaryDirectory(prefix="dedupd-startup-") as tmp:
        work = Path(tmp)
        old = work / "baseline"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline, "dedupd"], cwd=HERE, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        sides = {"this checkout": HERE, "baseline": old}
        setups: dict[str, dict[str, Callable[[], None]]] = {}
        for name, code in sides.items():
            base = work / name.replace(" ", "-")
            root = setup(base)
            first = dedupd(code, base, "scan", str(root), "--db", str(base / "d.db"), "--workers", "1", "--no-progress")
            assert first.returncode == 0, first.stderr
            setups[name] = cases(code, base, root)
            for run in setups[name].values():  # once, unmeasured: caches warm for both
                run()
        times: dict[str, dict[str, list[float]]] = {name: {case: [] for case in setups[name]} for name in sides}
        for _ in range(args.runs):
            for case in setups["this checkout"]:
                for name in sides:
                    times[name][case].append(cpu_of(setups[name][case]))
    print(f"CPU (user+system) per process, median of {args.runs}; baseline {args.baseline}")
    print(f"{'':18s} {'this checkout':>14s} {'baseline':>10s} {'ratio':>7s}")
    for case in times["this checkout"]:
        new, base_ = (statistics.median(times[n][case]) for n in sides)
        print(f"{case:18s} {new:13.3f}s {base_:9.3f}s {new / base_:7.2f}")


if __name__ == "__main__":
    main()
