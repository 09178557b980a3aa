"""The daemon survives what used to kill it: dying workers, a poison file across
restarts, a bad root on start or reload, and a second writer (``restore``)."""

from __future__ import annotations

import os
import signal
import time
import subprocess
import sys

import pytest
from daemon_helpers import DEADLINE, Daemon, Env, picture, scan, wait_until, write
from helpers import log_events

from dedupd import faults
from dedupd.crashes import CRASH_LIMIT
from dedupd.store import Store, read_daemon_status


def start_poisoned(env: Env, log_name: str, fault: str = "worker.fingerprint:kill:poison*", *,
                   ready: bool = True, **overrides: object) -> Daemon:
    """A daemon whose workers die (SIGKILL) on any file named poison*, or meet another ``fault``."""
    env.write_config(**overrides)
    argv = [
        sys.executable, "-m", "dedupd", "run",
        "--config", str(env.config_path), "--db", str(env.db), "--log-format", "json",
    ]  # fmt: skip
    daemon = Daemon(argv, env.base / log_name, {**env.env, faults.ENV: fault}, env.base)
    env.daemons.append(daemon)
    if ready:
        daemon.wait_ready()
    return daemon


def test_worker_dying_with_several_files_in_flight_leaves_the_daemon_running(env: Env) -> None:
    """A worker dies with several files in flight: the daemon restarts the pool, finds the
    poison file by retrying the suspects one at a time, skips it, and indexes the rest."""
    # a settle time long enough that the arrivals of a round become ready in one pass
    daemon = start_poisoned(env, "run.log", workers=2, settle_seconds=2)
    for round_ in range(3):  # event timing may split a round: then another round
        good = [write(env.outside / f"good{round_}_{i}.jpg", picture(300 + 10 * round_ + i)) for i in range(3)]
        poison = write(env.outside / f"poison{round_}.jpg", picture(309 + 10 * round_))
        for p in [poison, *good]:  # all at once, the poison first in the queue
            p.rename(env.root / p.name)
        daemon.wait_event("file_skipped", reason="crashed_decoder", path=env.root / poison.name, timeout=60)
        env.wait_indexed(*(env.root / p.name for p in good), timeout=60)
        assert daemon.alive()
        if any(len(e["paths"]) >= 2 for e in daemon.events("worker_died")):
            break
    else:
        pytest.fail("no worker died with several files in flight in three rounds")
    assert daemon.stop() == 0


def test_poison_file_is_skipped_after_a_restart(env: Env) -> None:
    """The crash count is kept in the store: after a restart the poison file kills one
    more worker (not two) before it is skipped, and then never again (an exception counts
    the same way: see the test of a bug on the daemon's own thread)."""
    poison = write(env.root / "poison.jpg", picture(320))
    os.utime(poison, (time.time() - 60, time.time() - 60))  # found by the start's walk, settled: read at once
    first = start_poisoned(env, "first.log", settle_seconds=5)
    first.wait_event("worker_crash_counted", crashes=1)
    assert first.stop() == 0  # before the retry (settle_seconds) comes round

    second = start_poisoned(env, "second.log", settle_seconds=0.5)
    second.wait_event("file_skipped", reason="crashed_decoder", timeout=60)
    assert [e["crashes"] for e in second.events("worker_crash_counted")] == [2]
    assert second.stop() == 0

    third = start_poisoned(env, "third.log", settle_seconds=0.5)
    env.wait_idle(third, after=0)
    assert third.events("worker_died") == []
    assert third.stop() == 0


def test_a_bug_in_a_worker_is_logged_counted_and_the_file_skipped_while_the_daemon_runs_on(env: Env) -> None:
    """An unexpected exception (a TypeError in dedupd's code) while fingerprinting one file
    is logged with its traceback and counted against that file; after CRASH_LIMIT of them
    the file is skipped as internal_error, not corrupt, and the daemon indexes the rest."""
    daemon = start_poisoned(env, "run.log", "worker.fingerprint:bug:poison*")
    poison = write(env.root / "poison.jpg", picture(325))
    good = write(env.root / "good.jpg", picture(326))
    skipped = daemon.wait_event("file_skipped", path=poison)
    assert skipped["reason"] == "internal_error"
    assert "TypeError: injected bug at worker.fingerprint" in skipped["detail"]
    errors = daemon.events("worker_error", path=poison)
    assert len(errors) == CRASH_LIMIT
    assert "Traceback" in errors[0]["exception"] and "injected bug" in errors[0]["exception"]
    assert [e["crashes"] for e in daemon.events("worker_crash_counted", path=poison)] == list(range(1, CRASH_LIMIT + 1))
    env.wait_indexed(good, poison)
    assert env.record(poison)["error"] == "internal_error"  # type: ignore[index]
    later = write(env.root / "later.jpg", picture(327))  # the daemon still works
    env.wait_indexed(later)
    assert daemon.alive()
    assert daemon.stop() == 0


def test_a_bug_on_the_daemons_own_thread_exits_70_and_the_file_is_skipped_after_restarts(env: Env) -> None:
    """A bug met while grouping one file (on the daemon's thread) exits 70 with the traceback,
    but the file is counted first: after CRASH_LIMIT such exits a restart skips it and runs on,
    instead of crashing on it forever under systemd's Restart=; an exit by a bug is no clean stop."""
    poison = write(env.root / "poison.jpg", picture(328))
    good = write(env.root / "good.jpg", picture(329))
    for attempt in range(1, CRASH_LIMIT + 1):
        daemon = start_poisoned(env, f"run{attempt}.log", "pipeline.ingest:bug:poison*", ready=False)
        assert daemon.proc.wait(DEADLINE) == 70, daemon.tail()
        daemon.cleanup()
        bug = daemon.wait_event("internal_error")
        assert "injected bug at pipeline.ingest" in bug["exception"]
        assert [e["crashes"] for e in daemon.events("ingest_bug_counted", path=poison)] == [attempt]
        assert daemon.events("worker_crash_counted") == []  # no worker was involved
        store = Store.open(env.db, readonly=True)  # not a clean stop: the next start checks the store first
        try:
            assert (read_daemon_status(store) or {}).get("state") != "stopped"
        finally:
            store.close()
    daemon = start_poisoned(env, "last.log", "pipeline.ingest:bug:poison*")
    skipped = daemon.wait_event("file_skipped", path=poison)
    assert skipped["reason"] == "internal_error"
    env.wait_indexed(good, poison)
    assert env.record(good)["error"] is None  # type: ignore[index]
    assert daemon.alive() and daemon.events("internal_error") == []
    assert daemon.stop() == 0


def test_a_bug_met_by_a_scan_counts_towards_the_daemons_crash_limit(env: Env) -> None:
    """A file that raised in `dedupd scan` (exit 70) is counted in the store and not yet
    recorded as skipped, so `dedupd run` tries it once more, as if the daemon had met the
    bug each time: CRASH_LIMIT tries in all, then it is skipped as internal_error, and a
    later scan skips it without trying."""
    poison = write(env.root / "poison.jpg", picture(380))
    good = write(env.root / "good.jpg", picture(381))
    fault = "worker.fingerprint:bug:poison*"
    env.write_config()
    for attempt in range(1, CRASH_LIMIT):
        code, _, err = scan(env, fault=fault)
        assert code == 70, err
        counted = [e for e in log_events(err) if e["event"] == "worker_crash_counted"]
        assert [e["crashes"] for e in counted] == [attempt], err
        assert env.record(poison) is None, "recorded as skipped: the daemon would never try it again"
    daemon = start_poisoned(env, "run.log", fault)
    skipped = daemon.wait_event("file_skipped", path=poison)
    assert skipped["reason"] == "internal_error"
    assert len(daemon.events("worker_error", path=poison)) == 1
    assert [e["crashes"] for e in daemon.events("worker_crash_counted", path=poison)] == [CRASH_LIMIT]
    env.wait_indexed(good, poison)
    assert daemon.stop() == 0
    code, _, err = scan(env, fault=fault)
    assert code == 0, err
    assert [e for e in log_events(err) if e["event"] == "worker_error"] == []


def test_a_bug_met_while_a_scan_groups_a_file_is_counted_and_the_file_skipped_after_the_limit(env: Env) -> None:
    """A bug met while storing and grouping one file ends `dedupd scan` with 70, counted
    against the file first (ingest_bug_counted), as the daemon counts it; after CRASH_LIMIT
    such scans the next one skips the file as internal_error without meeting the bug again."""
    poison = write(env.root / "poison.jpg", picture(382))
    good = write(env.root / "good.jpg", picture(383))
    fault = "pipeline.ingest:bug:poison*"
    env.write_config()
    for attempt in range(1, CRASH_LIMIT + 1):
        code, _, err = scan(env, fault=fault)
        events = log_events(err)
        assert code == 70, err
        assert [e["crashes"] for e in events if e["event"] == "ingest_bug_counted"] == [attempt], err
        assert [e["event"] for e in events if e["event"] == "internal_error"] == ["internal_error"]
    code, _, err = scan(env, fault=fault)
    events = log_events(err)
    assert code == 70, err  # finished, a file skipped because of a bug
    assert [e for e in events if e["event"] in ("internal_error", "ingest_bug_counted")] == [], err
    assert [e["reason"] for e in events if e["event"] == "file_skipped"] == ["internal_error"]
    assert env.record(poison)["error"] == "internal_error"  # type: ignore[index]
    assert env.record(good)["error"] is None  # type: ignore[index]


def test_missing_root_exits_78_from_run(env: Env) -> None:
    """`dedupd run` with a root that does not exist is a configuration error (78), which
    systemd's RestartPreventExitStatus=78 does not restart."""
    env.write_config(roots=[str(env.base / "no-such-dir")])
    proc = subprocess.run(
        [sys.executable, "-m", "dedupd", "run", "--config", str(env.config_path), "--db", str(env.db)],
        capture_output=True, text=True, env=env.env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 78, proc.stderr


def test_reload_adding_a_missing_root_is_refused(env: Env) -> None:
    """A reload whose config adds a missing root is refused; the daemon keeps its old config and runs on."""
    original = write(env.root / "a.jpg", picture(330))
    daemon = env.start()
    env.wait_indexed(original)
    env.write_config(roots=[str(env.root), str(env.base / "not-there")], actions={"exact": "log"})
    daemon.signal(signal.SIGHUP)
    failed = daemon.wait_event("config_reload_failed")
    assert "not-there" in failed["error"]
    dup = write(env.root / "a copy.jpg", picture(330))
    wait_until(lambda: not dup.exists(), "the copy quarantined under the old config")
    assert daemon.alive() and daemon.events("config_reloaded") == []
    assert daemon.stop() == 0


def test_concurrent_restore_while_the_daemon_writes_does_not_kill_it(env: Env) -> None:
    """`dedupd restore` writing while the daemon ingests and quarantines waits its turn
    (BEGIN IMMEDIATE and the busy timeout) instead of making the daemon fail."""
    daemon = env.start()
    originals = [write(env.root / f"o{i}.jpg", picture(340 + i)) for i in range(6)]
    env.wait_indexed(*originals)
    for round_ in range(3):
        for i in range(6):
            write(env.root / f"copy{round_}_{i}.jpg", picture(340 + i))
        # restore whatever has been quarantined so far, while the daemon is busy
        for _ in range(3):
            proc = env.cli("restore", "--all", check=False)
            assert proc.returncode in (0, 3), proc.stderr

        assert daemon.alive(), daemon.tail()
    env.wait_idle(daemon, after=0)
    assert daemon.alive()
    assert daemon.stop() == 0


def test_breaker_skipped_action_is_retried_on_reload_but_not_a_restored_one(env: Env) -> None:
    """An action the rate breaker held back is done after a reload; a pair a person
    restored is not acted on again."""
    originals = [write(env.root / f"b{i}.jpg", picture(350 + i)) for i in range(3)]
    daemon = env.start(max_actions_per_minute=1)
    env.wait_indexed(*originals)
    first = write(env.root / "b0 copy.jpg", picture(350))
    wait_until(lambda: not first.exists(), "the first copy quarantined")
    assert env.cli("restore", "--all").returncode == 0  # a person undid it: never again
    held = [write(env.root / f"b{i} copy.jpg", picture(350 + i)) for i in (1, 2)]
    daemon.wait_event("action_skipped", reason="circuit breaker open: too many actions per minute")
    assert all(p.exists() for p in held)
    env.write_config(max_actions_per_minute=100)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    wait_until(lambda: not any(p.exists() for p in held), "the held-back copies quarantined after the reload")
    assert first.exists(), "the restored copy stays where the person put it"
    assert daemon.stop() == 0


def test_a_file_appended_in_chunks_is_handled_only_after_its_last_close(env: Env) -> None:
    """A copy written in chunks, closed after each, is read once, complete: not after
    the first chunk (which would be a truncated picture)."""
    original = write(env.root / "s.jpg", picture(360, size=(640, 480)))
    daemon = env.start(settle_seconds=1.5)
    env.wait_indexed(original)
    data = original.read_bytes()
    copy = env.root / "s copy.jpg"
    step = len(data) // 4 + 1
    for start in range(0, len(data), step):
        with copy.open("ab") as f:  # open, append, close: as a slow uploader does
            f.write(data[start : start + step])
        time.sleep(0.6)  # the uploader's pace (shorter than settle_seconds), not a wait for an outcome
    wait_until(lambda: not copy.exists(), "the complete copy quarantined")
    assert daemon.events("file_skipped", path=copy) == []
    assert len(daemon.events("duplicate_found", path=copy)) == 1
    assert daemon.stop() == 0


def test_an_action_a_kill_cut_short_is_owed_and_done_after_the_restart(env: Env) -> None:
    """Killed in the middle of moving one duplicate, the daemon on restart rolls the move
    back and finds the action still owed (the matches' owed flag, m014): it is done once."""
    original = write(env.root / "o.jpg", picture(370))
    first = start_poisoned(env, "first.log", "quarantine.after_record:kill")
    env.wait_indexed(original)
    copies = [write(env.root / f"copy{i}.jpg", picture(370)) for i in range(3)]
    assert first.proc.wait(DEADLINE) == -9  # the fault's SIGKILL, at the first move
    first.cleanup()
    second = env.start()
    wait_until(lambda: not any(c.exists() for c in copies), "every copy quarantined after the restart")
    assert second.events("interrupted_actions_retried"), second.tail()
    assert sorted(r["path"] for r in env.moves()) == sorted(str(c) for c in copies)
    assert second.stop() == 0
