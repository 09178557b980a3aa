"""``dedupd apply``: acting later, on request, on duplicates a log-only scan recorded."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers as H
from daemon_helpers import Env, files_under, sha256, wait_until

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _library(root: Path) -> dict[str, Path]:
    """Three pictures, two exact copies and one resized (near) copy, and one picture alone."""
    files = {}
    for i in range(3):
        data = H.encode(H.photo(300 + i), "JPEG", quality=90)
        files[f"a{i}"] = _put(root / f"a{i}.jpg", data)
    files["copy0"] = _put(root / "sub" / "copy0.jpg", (root / "a0.jpg").read_bytes())
    files["copy1"] = _put(root / "copy1.jpg", (root / "a1.jpg").read_bytes())
    files["small2"] = _put(root / "small2.jpg", H.encode(H.photo(302).resize((192, 144)), "JPEG", quality=90))
    files["alone"] = _put(root / "alone.jpg", H.encode(H.photo(399), "JPEG", quality=90))
    return files


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _config(path: Path, quarantine: Path, **extra: Any) -> Path:
    quarantine.mkdir(exist_ok=True)
    body = {"quarantine_dir": str(quarantine), "actions": {"exact": "quarantine", "pixel": "quarantine", "near": "symlink"}}
    path.write_text(json.dumps(body | extra))  # JSON is YAML
    return path


def _apply(run_cli: RunCli, *args: str | Path) -> tuple[int, dict[str, Any]]:
    done = run_cli("apply", "--format", "json", *args)
    assert done.returncode in (0, 3), done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, out


def test_dry_run_then_apply_moves_exactly_the_plan(tmp_path: Path, run_cli: RunCli) -> None:
    """After a log-only scan, apply --dry-run lists the three duplicates and moves nothing;
    apply then moves exactly those (quarantine for exact, a symlink for near), audited as
    decided by the CLI, and a second apply has nothing left to do."""
    root, q = tmp_path / "lib", tmp_path / "q"
    files = _library(root)
    assert run_cli("scan", root).returncode == 0
    before = files_under(root)
    config = _config(tmp_path / "c.yaml", q)

    rc, dry = _apply(run_cli, "--dry-run", "--config", config)
    assert rc == 0 and dry["dry_run"] is True
    planned = {Path(a["path"]): a for a in dry["actions"]}
    assert set(planned) == {files["copy0"], files["copy1"], files["small2"]}
    assert {p: (a["action"], a["tier"]) for p, a in planned.items()} == {
        files["copy0"]: ("quarantine", "exact"),
        files["copy1"]: ("quarantine", "exact"),
        files["small2"]: ("symlink", "near"),
    }
    assert planned[files["small2"]]["original"] == str(files["a2"])
    assert dry["total"]["bytes_freed"] == sum(before[p] and p.stat().st_size for p in planned)
    assert files_under(root) == before and not any(q.iterdir())

    rc, applied = _apply(run_cli, "--config", config)
    assert rc == 0
    assert [a["path"] for a in applied["actions"]] == [a["path"] for a in dry["actions"]]
    assert all(a["outcome"] == "done" for a in applied["actions"])
    after = files_under(root)
    assert set(before) - set(after) == set(planned)  # moved: exactly the plan
    assert all(after[p] == before[p] for p in after)  # the rest untouched
    assert files["small2"].is_symlink() and files["small2"].resolve() == files["a2"]
    assert os.readlink(files["small2"]) == "a2.jpg"  # relative by default
    in_q = files_under(q)
    assert sorted(in_q.values()) == sorted(before[p] for p in planned)
    moves = [r for r in json.loads(run_cli("audit", "--format", "json").stdout) if r["outcome"] == "done" and r["action"] != "log"]
    assert {r["path"] for r in moves} == {str(p) for p in planned}
    assert all(r["decided_by"] == "cli" for r in moves)

    rc, again = _apply(run_cli, "--config", config)
    assert rc == 0 and again["actions"] == [] and "nothing to apply" in again["note"]


def test_apply_tier_filter_and_log_only_config(tmp_path: Path, run_cli: RunCli) -> None:
    """--tier near plans only the near copy; a config with every tier on log plans nothing and says why."""
    root, q = tmp_path / "lib", tmp_path / "q"
    files = _library(root)
    assert run_cli("scan", root).returncode == 0
    _, near = _apply(run_cli, "--dry-run", "--tier", "near", "--config", _config(tmp_path / "c.yaml", q))
    assert [a["path"] for a in near["actions"]] == [str(files["small2"])]
    table = run_cli("apply", "--dry-run")
    assert table.returncode == 0 and "every tier is log" in table.stdout


def test_apply_skips_a_file_changed_since_the_scan(tmp_path: Path, run_cli: RunCli) -> None:
    """A planned copy rewritten after the scan is checked again, skipped with the reason
    and left in place (exit 3); the other planned copies are moved (with 'symlink:
    absolute', the near copy's link holds the original's full path)."""
    root, q = tmp_path / "lib", tmp_path / "q"
    files = _library(root)
    assert run_cli("scan", root).returncode == 0
    files["copy1"].write_bytes(H.encode(H.photo(777), "JPEG"))  # another picture at that path now
    rc, applied = _apply(run_cli, "--config", _config(tmp_path / "c.yaml", q, symlink="absolute"))
    assert rc == 3
    outcome = {Path(a["path"]): (a["outcome"], a.get("detail", "")) for a in applied["actions"]}
    assert outcome[files["copy1"]][0] == "skipped" and "changed" in outcome[files["copy1"]][1]
    assert outcome[files["copy0"]][0] == "done" and outcome[files["small2"]][0] == "done"
    assert files["copy1"].is_file() and not files["copy0"].exists()
    assert os.readlink(files["small2"]) == str(files["a2"])
    assert applied["total"]["done"] == 2


def test_apply_honours_the_rate_breaker_and_goes_on_when_run_again(tmp_path: Path, run_cli: RunCli) -> None:
    """With max_actions_per_minute 2, apply moves two of the three planned copies, says the
    breaker held one back (exit 3); run again, it moves the third."""
    root, q = tmp_path / "lib", tmp_path / "q"
    _library(root)
    assert run_cli("scan", root).returncode == 0
    config = _config(tmp_path / "c.yaml", q, max_actions_per_minute=2)
    first = run_cli("apply", "--config", config)
    assert first.returncode == 3 and "2 of 3 files moved" in first.stdout
    assert "rate breaker (max_actions_per_minute) held back 1" in first.stdout
    rc, second = _apply(run_cli, "--config", config)
    assert rc == 0 and [a["outcome"] for a in second["actions"]] == ["done"]


def test_apply_while_the_daemon_runs(env: Env) -> None:
    """With a daemon watching the root (its own actions on log), apply from the CLI moves
    the planned copy beside it: the daemon keeps running, acts on nothing itself, and
    stops cleanly; the store has one completed move."""
    original = _put(env.root / "a.jpg", H.encode(H.photo(5), "JPEG"))
    copy = _put(env.root / "b" / "copy.jpg", original.read_bytes())
    daemon = env.start(actions={"exact": "log", "pixel": "log", "near": "log"})
    env.wait_indexed(original, copy)
    wait_until(lambda: env.query("SELECT COUNT(*) FROM matches")[0][0] == 1, "the pair matched")
    qconf = env.base / "q.yaml"
    qconf.write_text(json.dumps({"roots": [str(env.root)], "quarantine_dir": str(env.quarantine),
                                 "actions": {"exact": "quarantine"}}))
    done = env.cli("apply", "--config", str(qconf), "--format", "json")
    [row] = json.loads(done.stdout)["actions"]
    assert (row["path"], row["outcome"]) == (str(copy), "done")
    assert not copy.exists() and sha256(env.quarantine / "b" / "copy.jpg") == sha256(original)
    # the daemon goes on matching with the moved record gone from under it
    again = _put(env.root / "again.jpg", original.read_bytes())
    daemon.wait_event("duplicate_found", path=again, original=original)
    assert daemon.alive() and not daemon.events("action_failed") and not daemon.events("file_quarantined")
    assert daemon.stop() == 0
    assert len(env.moves()) == 1
