"""`dedupd scan` on a terminal: a quiet bar with a total, the duplicates listed at the end."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from daemon_helpers import picture, write


def run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the real CLI with stdin, stdout and stderr on a pseudo-terminal; (exit code, all it wrote)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))  # a terminal has a size
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dedupd", *args], stdin=follower, stdout=follower, stderr=follower, cwd=cwd, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the other end is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(60), b"".join(chunks).decode("utf-8", "replace")


def test_a_scan_on_a_terminal_shows_a_bar_with_a_total_and_lists_duplicates_at_the_end(tmp_path: Path) -> None:
    """On a TTY: no log line per duplicate under the bar; the bar counts files against the
    total the walk found (so it can show an ETA); the duplicates come after it, one each
    with its original, then the summary."""
    photos = tmp_path / "photos"
    for i in range(4):  # walked in sorted order: a*.jpg come first, so they are the originals
        write(photos / f"a{i}.jpg", picture(8100 + i))
    write(photos / "copy_of_p0.jpg", picture(8100))
    write(photos / "sub" / "copy_of_p2.jpg", picture(8102))
    code, out = run_on_a_terminal(["scan", str(photos), "--db", str(tmp_path / "s.db"), "--workers", "1"], tmp_path)
    assert code == 0, out
    assert "duplicate_found" not in out, out  # quiet: no log lines under the bar
    assert re.search(r"scanning: 100%.*\b6/6\b", out), out  # counted against the walk's total
    listing = out[out.rindex("6/6"):]
    lines = [line.strip() for line in listing.splitlines() if line.strip()]
    assert any(line.startswith("exact") and line.endswith("copy_of_p0.jpg") for line in lines), lines
    assert any(line.startswith("exact") and line.endswith("copy_of_p2.jpg") for line in lines), lines
    assert any(line.startswith("of ") and line.endswith("a0.jpg") for line in lines), lines
    assert lines[-1].startswith("duplicates found: exact: 2"), lines


def test_a_scan_piped_keeps_its_log_lines_and_lists_nothing(tmp_path: Path) -> None:
    """Off a terminal (a pipe, journald, CI): each duplicate is a JSON log line, as before,
    and no list is printed after the summary."""
    photos = tmp_path / "photos"
    write(photos / "a.jpg", picture(8200))
    write(photos / "b.jpg", picture(8200))
    done = subprocess.run(
        [sys.executable, "-m", "dedupd", "scan", str(photos), "--db", str(tmp_path / "s.db"), "--workers", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert '"event": "duplicate_found"' in done.stderr
    assert "of " not in done.stdout and "exact " not in done.stdout, done.stdout
