"""What each kind of dedupd process imports: scipy only where pictures are hashed,
numpy not for reading the store.

Importing scipy's FFT package costs about 0.4 s of CPU and numpy about 0.2 s
(docs/benchmarks.md, "Start-up of a dedupd process"), paid by every process
that imports them; the commands that read the store, the daemon's main
process and its workers' start-up must not bring them back by a top-level
import.  Each case is a real interpreter, started fresh, so nothing the
test process imported counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import helpers as H

TIMEOUT = 60
HEAVY = ("scipy", "numpy", "sqlite_utils", "dedupd.grouping", "dedupd.store", "structlog", "yaml")


def loaded_after(steps: list[str], env: dict[str, str], cwd: Path) -> list[dict[str, bool]]:
    """Run each of ``steps`` in turn in one fresh interpreter; which of HEAVY it holds after each."""
    probe = "import json, sys\n" + "".join(
        f"{step}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))\n" for step in steps
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def imported_by_cli(tmp_path: Path, db: Path, cli_env: dict[str, str], *args: str) -> set[str]:
    """The modules a real ``python -m dedupd ARGS`` imported while it ran (``-X importtime``)."""
    env = {**cli_env, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = H.run_dedupd(*args, db=db, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert lines, "no -X importtime output"
    return {line.rsplit("|", 1)[1].strip() for line in lines}


def test_scipy_is_imported_by_a_scan_that_hashes_and_by_no_command_that_does_not(
    tmp_path: Path, db_path: Path, cli_env: dict[str, str]
) -> None:
    """A scan that hashes a new picture imports scipy; ``status``, ``groups`` and a scan
    of the same, unchanged tree do not, and ``status`` and ``groups`` not numpy either."""
    photos = tmp_path / "photos"
    photos.mkdir()
    H.photo(1, (64, 48)).save(photos / "a.jpg")
    assert "scipy" in imported_by_cli(tmp_path, db_path, cli_env, "scan", str(photos))
    for args in (("status",), ("groups",), ("scan", str(photos))):
        modules = imported_by_cli(tmp_path, db_path, cli_env, *args)
        assert "dedupd.store" in modules, args  # the command read the store
        assert "scipy" not in modules, args
        assert args[0] == "scan" or "numpy" not in modules, args


def test_the_daemons_main_process_does_not_import_scipy(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The CLI reads the store without numpy, which imports as usual after it; the modules of
    ``dedupd run``'s main process (its workers hash) do not import scipy."""
    cli, daemon = loaded_after(["import dedupd.cli", "import dedupd.daemon, dedupd.pipeline"], cli_env, tmp_path)
    assert cli["sqlite_utils"]
    assert not cli["numpy"]
    assert daemon["numpy"]
    assert daemon["dedupd.grouping"]  # the probe sees what is imported
    assert not daemon["scipy"]


def test_a_worker_imports_the_hashing_libraries_and_not_the_store(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """A fingerprinting worker's module holds no store, grouping, config or logging; its
    initializer loads scipy before it measures the memory the worker holds."""
    before, after = loaded_after(["import dedupd.worker", "dedupd.worker.worker_init(0)"], cli_env, tmp_path)
    assert before == {m: m == "numpy" for m in HEAVY}, before
    assert after["scipy"]
    assert not after["sqlite_utils"]
    assert not after["dedupd.grouping"]


def test_pipeline_hands_workers_the_functions_of_the_worker_module() -> None:
    """The functions a pool pickles are found in dedupd.worker, so a worker imports only it."""
    from dedupd import pipeline  # noqa: PLC0415 - the test process may import anything

    for function in (pipeline.fingerprint_job, pipeline.fingerprint_batch, pipeline.worker_init):
        assert function.__module__ == "dedupd.worker"


def test_the_cli_runs_blas_on_one_thread_unless_told_otherwise(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """``dedupd`` sets OPENBLAS_NUM_THREADS=1 before numpy loads (its workers inherit it); a value
    already in the environment is kept."""
    probe = (
        "import os, sys\nimport dedupd.cli\nloaded = 'numpy' in sys.modules\nsys.argv = ['dedupd', '--version']\n"
        "try:\n    dedupd.cli.main()\nexcept SystemExit:\n    pass\n"
        "print(loaded, os.environ.get('OPENBLAS_NUM_THREADS'))"
    )
    for given, expected in ((None, "False 1"), ("3", "False 3")):
        env = {k: v for k, v in cli_env.items() if k != "OPENBLAS_NUM_THREADS"}
        if given is not None:
            env["OPENBLAS_NUM_THREADS"] = given
        proc = subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == expected
