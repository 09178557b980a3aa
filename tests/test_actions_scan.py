"""Actions applied by ``dedupd scan``: the action-rate circuit breaker and a scan-time restore."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import helpers as H

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _library(root: Path, originals: int, copies: int) -> list[Path]:
    root.mkdir()
    made = []
    for i in range(originals):
        data = H.encode(H.photo(200 + i), "JPEG", quality=90)
        (root / f"a{i:02d}.jpg").write_bytes(data)
        if i < copies:
            dup = root / f"b{i:02d}.jpg"
            dup.write_bytes(data)
            made.append(dup)
    return made


def test_action_rate_breaker_stops_quarantining(tmp_path: Path, run_cli: RunCli) -> None:
    """With max_actions_per_minute 2, a scan quarantines two duplicates and records the rest as skipped by the breaker."""
    root, quarantine = tmp_path / "lib", tmp_path / "q"
    copies = _library(root, originals=5, copies=5)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"quarantine_dir: {quarantine}\nmax_actions_per_minute: 2\nactions: {{exact: quarantine}}\n"
    )
    result = run_cli("scan", root, "--config", config)
    assert result.returncode == 0, result.stderr
    moved = [c for c in copies if not c.exists()]
    assert len(moved) == 2
    assert len(list(quarantine.rglob("*.jpg"))) == 2
    audit = json.loads(run_cli("audit", "--format", "json").stdout)
    skipped = [r for r in audit if r["outcome"] == "skipped"]
    assert len(skipped) == 3
    assert all("circuit breaker" in r["detail"] for r in skipped)
    assert "circuit_breaker_tripped" in result.stderr


def test_restore_after_scan_brings_bytes_back_and_is_remembered(tmp_path: Path, run_cli: RunCli) -> None:
    """Files a scan quarantined come back byte-identical with restore --all, and a re-scan leaves them alone."""
    root, quarantine = tmp_path / "lib", tmp_path / "q"
    copies = _library(root, originals=3, copies=3)
    before = {c: c.read_bytes() for c in copies}
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{exact: quarantine}}\n")
    assert run_cli("scan", root, "--config", config).returncode == 0
    assert not any(c.exists() for c in copies)
    restored = run_cli("restore", "--all", "--config", config)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert {c: c.read_bytes() for c in copies} == before
    again = run_cli("scan", root, "--config", config)
    assert again.returncode == 0
    assert all(c.exists() for c in copies)
    assert "pair_ignored" in again.stderr


def test_an_original_a_better_copy_demotes_later_in_the_walk_is_moved_not_vanished(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """A scan finds a full-size copy of an indexed half-size picture: the newcomer becomes
    the original and the half-size file, which the walk lists after it, is quarantined.
    When the walk reaches that name the file is in quarantine by the scan's own doing:
    not a 'vanished' error, and the scan exits 0."""
    from PIL import Image  # noqa: PLC0415

    root, quarantine = tmp_path / "lib", tmp_path / "q"
    root.mkdir()
    picture = H.photo(230, size=(1600, 1200))
    small = H.save(picture.resize((800, 600), Image.Resampling.LANCZOS), root / "b_small.jpg", quality=90)
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{exact: quarantine, near: quarantine}}\n")
    assert run_cli("scan", root, "--config", config).returncode == 0
    H.save(picture, root / "a_big.jpg", quality=92)  # sorts first: walked before b_small.jpg
    result = run_cli("scan", root, "--config", config)
    assert not small.exists() and (quarantine / small.name).exists(), result.stdout + result.stderr
    assert "vanished" not in result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
