"""The terminal: 'dedupd errors', one time format, AppleDouble files, and errors on a TTY."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import helpers as H

RunCli = Callable[..., subprocess.CompletedProcess[str]]

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")


def test_errors_lists_skipped_files_and_appledouble_files_are_not_looked_at(tmp_path: Path, run_cli: RunCli) -> None:
    """A file that is not an image and an empty file are listed by 'dedupd errors' with their
    reason; a macOS '._' AppleDouble file beside a picture is not looked at at all."""
    root = tmp_path / "lib"
    root.mkdir()
    H.save(H.photo(11), root / "a.jpg")
    (root / "._a.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 80)  # an AppleDouble header
    (root / "notes.jpg").write_bytes(b"this is not a picture")
    (root / "empty.png").write_bytes(b"")
    assert run_cli("scan", root).returncode == 3  # finished, some files skipped
    found = json.loads(run_cli("errors", "--format", "json").stdout)
    assert sorted(Path(e["path"]).name for e in found) == ["empty.png", "notes.jpg"]
    assert all(e["reason"] and ISO.fullmatch(e["time"]) for e in found)
    table = run_cli("errors").stdout
    assert "notes.jpg" in table and table.rstrip().endswith(")") and "2 files skipped" in table


def test_audit_and_status_share_one_time_format(tmp_path: Path, run_cli: RunCli) -> None:
    """Audit rows (table and JSON) and status show times as ISO 8601 with the zone."""
    root = tmp_path / "lib"
    root.mkdir()
    data = H.encode(H.photo(12), "JPEG")
    (root / "a.jpg").write_bytes(data)
    (root / "b.jpg").write_bytes(data)
    assert run_cli("scan", root).returncode == 0
    [row] = json.loads(run_cli("audit", "--format", "json").stdout)
    assert ISO.fullmatch(row["time"])
    assert row["time"] in run_cli("audit").stdout
    status = json.loads(run_cli("status", "--format", "json").stdout)
    assert all(ISO.fullmatch(r["time"]) for r in status["last_actions"])


def test_an_error_on_a_tty_is_one_plain_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """On a terminal an error is one 'dedupd: error: ...' line (and its exit code), not a log record."""
    main, child = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dedupd", "groups", "--db", str(tmp_path / "none" / "x.db")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child, env=cli_env, timeout=60, check=False,
        )  # fmt: skip
        os.close(child)
        child = -1
        out = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        if child >= 0:
            os.close(child)
        os.close(main)
    lines = out.decode().splitlines()
    assert done.returncode == 74
    assert len(lines) == 1 and lines[0].startswith("dedupd: error: ") and "no store here yet" in lines[0], lines
