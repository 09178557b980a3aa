"""Actions applied by ``dedupd scan``: the action-rate circuit breaker and a scan-time restore."""

from __future__ import annotations

import json
import os
import subprocess
import time
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
    quarantine.mkdir()
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
    quarantine.mkdir()
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
    quarantine.mkdir()
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


def _config(tmp_path: Path, quarantine: Path, actions: str) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{{actions}}}\n")
    return config


def test_a_file_given_as_the_scan_path_is_quarantined_inside_the_quarantine(tmp_path: Path, run_cli: RunCli) -> None:
    """``dedupd scan lib/b.jpg`` (a file, not a directory) moves a duplicate into the
    quarantine directory under its name, not beside the directory (``q.1``); nested
    roots on one command line keep the whole tree below the outermost."""
    from PIL import Image  # noqa: PLC0415

    root, quarantine = tmp_path / "lib", tmp_path / "q"
    quarantine.mkdir()
    picture = H.photo(231, size=(768, 576))
    H.save(picture, root / "a_full.jpg", quality=92)
    config = _config(tmp_path, quarantine, "exact: quarantine, near: quarantine")
    assert run_cli("scan", root, "--config", config).returncode == 0
    half = H.save(picture.resize((384, 288), Image.Resampling.LANCZOS), root / "b_half.jpg", quality=90)
    result = run_cli("scan", half, "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not half.exists() and (quarantine / "b_half.jpg").is_file(), sorted(tmp_path.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("q")) == ["q"]
    nested = H.save(picture.resize((400, 300), Image.Resampling.LANCZOS), root / "sub" / "c.jpg", quality=90)
    result = run_cli("scan", root / "sub", root, "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not nested.exists() and (quarantine / "sub" / "c.jpg").is_file(), list(quarantine.rglob("*"))


def test_symlinks_to_an_original_a_better_copy_demotes_follow_to_the_new_original(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """An exact copy replaced by a symlink to its original; then a full-size version of
    the picture arrives and the old original is quarantined as its near copy. The
    symlink is re-pointed at the new original: it never dangles, and it restores."""
    root, quarantine = tmp_path / "lib", tmp_path / "q"
    quarantine.mkdir()
    picture = H.photo(232, size=(1024, 768))
    from PIL import Image  # noqa: PLC0415

    old = H.save(picture.resize((768, 576), Image.Resampling.LANCZOS), root / "a_full.jpg", quality=92)
    copy = root / "c_copy.jpg"
    copy.write_bytes(old.read_bytes())
    copy_bytes = copy.read_bytes()
    config = _config(tmp_path, quarantine, "exact: symlink, near: quarantine")
    assert run_cli("scan", root, "--config", config).returncode == 0
    assert copy.is_symlink() and copy.resolve() == old.resolve()
    big = H.save(picture, root / "0_big.png")
    result = run_cli("scan", root, "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not old.exists(), result.stdout + result.stderr  # demoted, quarantined
    assert copy.is_symlink() and copy.exists() and copy.resolve() == big.resolve(), os.readlink(copy)
    assert "original_moved_links_repaired" in result.stderr
    restored = run_cli("restore", "--all", "--config", config)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert not copy.is_symlink() and copy.read_bytes() == copy_bytes and old.exists()


def test_a_scan_that_follows_a_renamed_original_repoints_its_symlinks(tmp_path: Path, run_cli: RunCli) -> None:
    """The original of a symlink is moved into a subdirectory between two scans; the
    second scan follows the rename and the symlink with it (as the daemon does)."""
    root, quarantine = tmp_path / "lib", tmp_path / "q"
    quarantine.mkdir()
    original = H.save(H.photo(233, size=(640, 480)), root / "a_full.jpg", quality=92)
    copy = root / "c_copy.jpg"
    copy.write_bytes(original.read_bytes())
    config = _config(tmp_path, quarantine, "exact: symlink")
    assert run_cli("scan", root, "--config", config).returncode == 0
    assert copy.is_symlink()
    moved = root / "2024" / "a_full.jpg"
    moved.parent.mkdir()
    os.rename(original, moved)
    result = run_cli("scan", root, "--config", config)
    assert result.returncode == 0 and "1 renamed" in result.stdout, result.stdout + result.stderr
    assert copy.exists() and copy.resolve() == moved.resolve(), os.readlink(copy)


def test_a_scan_refuses_a_missing_quarantine_rather_than_create_it(tmp_path: Path, run_cli: RunCli) -> None:
    """With a move configured and no quarantine directory (a disk not mounted), scan
    exits 78 before touching anything, as apply and check-config do; a dry run and a
    log-only config still scan."""
    root, quarantine = tmp_path / "lib", tmp_path / "q"
    copies = _library(root, originals=2, copies=2)
    config = _config(tmp_path, quarantine, "exact: quarantine")
    result = run_cli("scan", root, "--config", config)
    assert result.returncode == 78 and "quarantine_dir" in result.stdout + result.stderr, result.stdout + result.stderr
    assert not quarantine.exists() and all(c.exists() for c in copies)
    assert run_cli("scan", root, "--config", config, "--dry-run").returncode == 0
    assert run_cli("scan", root, "--config", _config(tmp_path, quarantine, "exact: log")).returncode == 0
    assert not quarantine.exists() and all(c.exists() for c in copies)


def test_a_copy_judged_while_its_original_was_being_renamed_is_judged_again(tmp_path: Path, run_cli: RunCli) -> None:
    """Between two scans a half-size picture is renamed and its full-size version
    arrives, walked first: the full-size file is compared with the half-size one at
    its old name, which cannot be read (similar at most). Once the walk follows the
    rename, the pair is judged again on the pixels: near, and the half-size copy is
    quarantined in that same scan."""
    from PIL import Image  # noqa: PLC0415

    root, quarantine = tmp_path / "lib", tmp_path / "q"
    quarantine.mkdir()
    picture = H.photo(234, size=(768, 576))
    half = H.save(picture.resize((384, 288), Image.Resampling.LANCZOS), root / "b_half.jpg", quality=90)
    config = _config(tmp_path, quarantine, "near: quarantine")
    assert run_cli("scan", root, "--config", config, "--workers", "1").returncode == 0
    renamed = root / "c_half.jpg"
    os.rename(half, renamed)
    H.save(picture, root / "a_full.jpg", quality=92)
    result = run_cli("scan", root, "--config", config, "--workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "near: 1" in result.stdout and not renamed.exists(), result.stdout + result.stderr
    assert (quarantine / "c_half.jpg").is_file()


def test_a_dry_run_reports_what_the_scan_then_does(tmp_path: Path, run_cli: RunCli) -> None:
    """Two half-size copies walked before the full-size picture: the full-size one takes
    over as the original. The dry run reports each copy once, as many as the real scan
    then moves (a copy that 'would move' is not reported again by the takeover)."""
    from PIL import Image  # noqa: PLC0415

    root, quarantine = tmp_path / "lib", tmp_path / "q"
    quarantine.mkdir()
    picture = H.photo(235, size=(768, 576))
    half = picture.resize((384, 288), Image.Resampling.LANCZOS)
    H.save(half, root / "a_half.jpg", quality=90)
    H.save(half, root / "c_half.jpg", quality=60)
    H.save(picture, root / "z_full.jpg", quality=92)
    config = _config(tmp_path, quarantine, "near: quarantine")
    dry = run_cli("scan", root, "--config", config, "--dry-run", "--workers", "1")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    real = run_cli("scan", root, "--config", config, "--workers", "1")
    assert real.returncode == 0, real.stdout + real.stderr
    assert "quarantine_done: 2" in real.stdout, real.stdout
    assert "near: 2" in dry.stdout and "quarantine_dry_run: 2" in dry.stdout, dry.stdout
    assert sorted(p.name for p in quarantine.glob("*.jpg")) == ["a_half.jpg", "c_half.jpg"]



def test_a_new_file_saved_where_the_scan_just_moved_one_is_indexed(
    tmp_path: Path, run_cli: RunCli, cli_env: dict[str, str], db_path: Path
) -> None:
    """The scan quarantines a demoted original the walk has listed but not reached; a
    different picture is saved at that name meanwhile. The walk skips only the file it
    moved: the new one is read and indexed."""
    import threading  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    root, quarantine = tmp_path / "lib", tmp_path / "q"
    quarantine.mkdir()
    picture = H.photo(237, size=(1024, 768))
    small = H.save(picture.resize((512, 384), Image.Resampling.LANCZOS), root / "b_small.jpg", quality=90)
    config = _config(tmp_path, quarantine, "near: quarantine")
    assert run_cli("scan", root, "--config", config).returncode == 0
    H.save(picture, root / "a_big.png")  # walked first: b_small.jpg is demoted and moved
    # the move held 4 s after it took the file; a new picture is saved at its name meanwhile
    def save_once_taken() -> None:
        deadline = time.monotonic() + 60
        while not ((quarantine / "b_small.jpg").exists() and not small.exists()) and time.monotonic() < deadline:
            time.sleep(0.02)
        H.save(H.photo(238, size=(640, 480)), small, quality=90)

    writer = threading.Thread(target=save_once_taken)
    writer.start()
    result = H.run_dedupd("scan", root, "--config", config, "--workers", "1", db=db_path,
                          env={**cli_env, "DEDUPD_FAULT": "quarantine.after_unlink:sleep=4:b_small*"}, cwd=tmp_path)
    writer.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (quarantine / "b_small.jpg").is_file() and small.is_file()
    assert "2 files seen, 2 fingerprinted" in result.stdout, result.stdout
