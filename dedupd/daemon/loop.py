"""``dedupd run``: the loop that pings the watchdog, and its wiring.

Watch, settle (``settling.py``), fingerprint, match, act (``acting.py``);
reconcile with the disk (``reconcile.py``); trip breakers (``breakers.py``);
count worker crashes (``dedupd.crashes``); signals and systemd.

Threads: watchdog's observer threads only enqueue events (``watcher.py``);
the file work of a move (copies, re-hashes) runs on one action thread
(``acting.py``); everything else runs on the main thread, which is the
store's only writer.  Fingerprinting runs in a pool of worker processes.  The main loop wakes at
least every quarter second, so signals, settle timers, the systemd watchdog
and the circuit breakers are all served from one place.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
from concurrent.futures.process import BrokenProcessPool
import multiprocessing
import os
import queue
import signal
import sqlite3
import stat as stat_module
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from dedupd import config as config_module
from dedupd import faults, identity, relink, startup
from dedupd.actions import Actor, act_on_unhandled, is_own_symlink, resolve_intents, unhandled
from dedupd.audit import Audit
from dedupd.config import Config
from dedupd.crashes import CrashTracker
from dedupd.daemon import breakers
from dedupd.daemon.acting import ActionLane
from dedupd.daemon.breakers import RootState
from dedupd.daemon.reconcile import Reconciliation
from dedupd.daemon.settling import Pending
from dedupd.errors import ConfigError, DedupdError, StoreError, StoreUnavailable
from dedupd.identity import resolve
from dedupd.models import Action, Duplicate, FileStat, Tier
from dedupd.pipeline import Failed, Fingerprinted, Pipeline, Step, fingerprint_job, log_worker_bug, worker_init
from dedupd.restore import adopt_records
from dedupd.walking import Filter
from dedupd.sdnotify import Notifier, watchdog_interval
from dedupd.models import StoreLocation
from dedupd.store import open_store, read_daemon_status, write_daemon_status
from dedupd.watcher import Event, Kind, listen_for_overflow, start_watch, stop_watch

log = structlog.get_logger()

TICK = 0.25  # seconds between passes of the main loop at most
CLOSE_GRACE = 0.5  # after close-after-write, wait this long for another write
#: while the store is checked before the start, systemd hears from the daemon this often
CHECK_PING = 5.0
STATUS_EVERY = 2.0
#: seconds between looks at what other hosts sharing the store wrote, at most
FEED_EVERY = 0.5
#: seconds between prunings of that feed's old rows
PRUNE_EVERY = 300.0
EVENT_QUEUE_SIZE = 10_000


@dataclass
class Counters:
    events: int = 0
    fingerprinted: int = 0
    errors: int = 0
    duplicates: collections.Counter[str] = field(default_factory=collections.Counter)


class Daemon:
    def __init__(self, config: Config, db_path: StoreLocation, config_path: Path | None) -> None:
        self.config = config
        self.config_path = config_path
        self.db_path = db_path
        self.notifier = Notifier.from_environment()
        self.watchdog_every = watchdog_interval()
        self.stop = threading.Event()
        self.reload_requested = threading.Event()
        self.store_damage: StoreError | None = None  # found by the background soundness check
        self.overflow = threading.Event()
        self.events: queue.Queue[Event] = queue.Queue(maxsize=EVENT_QUEUE_SIZE)
        self.pending: dict[Path, Pending] = {}
        self.in_flight: dict[Path, cf.Future[Fingerprinted | Failed]] = {}
        self.in_flight_stat: dict[Path, FileStat] = {}  # what each file in flight was when submitted
        self.roots: dict[Path, RootState] = {}
        self.counters = Counters()
        self.started_at = time.time()
        self.was_ready = False  # READY=1 was sent: a lost store from now on is a pause, not an exit

    # --- lifecycle --------------------------------------------------------

    def run(self) -> int:
        self.store = open_store(self.db_path, host=self.config.host)
        self.store.lock_writer()
        # before the check, which may take minutes: a reload then waits for the start,
        # and a stop ends it with nothing touched
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        if not self._check_sound():
            log.info("daemon_stopped", during="the check of the store before the start")
            self.store.close()
            return 0
        # from here a kill is not a clean stop: the next start checks the store first
        write_daemon_status(self.store, pid=os.getpid(), started_at=self.started_at, state="starting", data={})
        self.crashes = CrashTracker(self.store)
        self.acting = ActionLane(self.store)
        self.reconcile = Reconciliation(self.store, self._filter)
        overflow_log = listen_for_overflow(self.overflow)
        workers = self.config.effective_workers()
        self.pool = self._new_pool()
        self.max_in_flight = workers * 2
        clean = False  # the loop returned: nothing raised through it
        lost = False  # the store's server went away: pause, hand nothing more to it
        try:
            settled = resolve_intents(self.store, Audit(self.store, self.config.audit_jsonl))
            if settled:
                log.warning("intents_resolved", count=settled)
            adopt_records(self.store, Audit(self.store, self.config.audit_jsonl), self.config.quarantine_dir)
            self.actor = Actor(self.store, self.config, roots=self.config.roots)
            # before the index is built: an action here may move a file away
            act_on_unhandled(self.store, self.actor)
            self.pipeline = Pipeline(self.store, self.config)
            self.seen_version = self.store.data_version()
            self.feed_at = self.pruned_at = time.monotonic()
            self.ignore_mark, _ = self.store.ignores_after(0)
            self._warn_destructive()
            self._start_roots()
            self.notifier.ready(self._status_line())
            log.info("daemon_ready", roots=[str(r) for r in self.roots], db=self.db_path, workers=workers)
            self.was_ready = True
            self._loop()
            clean = True
        except StoreUnavailable:
            lost = True
            raise
        finally:
            if not (lost and self.was_ready):  # a pause is no stop: systemd keeps the service active
                self.notifier.stopping()
            for state in self.roots.values():
                if state.watch is not None:
                    stop_watch(state.watch)
            if lost:
                self._abandon()
            elif hasattr(self, "pipeline"):  # a start that failed early has nothing in hand
                self._drain()
                self.acting.finish_current(self.actor, self.pipeline.acted)
            self.acting.close()
            self.pool.shutdown(wait=True, cancel_futures=True)
            # only a clean stop is "stopped": after damage or a bug raised through
            # the loop, the next start checks the store before anything else
            if clean and self.store_damage is None:
                self._write_status("stopped")
            self._close_store(lost)
            logging.getLogger("watchdog").removeHandler(overflow_log)
            if not lost:
                log.info("daemon_stopped")
        return 0

    def _abandon(self) -> None:
        """The store's server went away: let the work in hand end without
        recording it.  Files being fingerprinted are found again by the
        catch-up walk when the store is back; a move in flight finishes on
        disk and its intent, written before it started, settles it then."""
        for future in self.in_flight.values():
            future.cancel()
        self.in_flight.clear()
        if hasattr(self, "acting") and self.acting.current is not None:
            move, moving = self.acting.current
            self.acting.current = None
            cf.wait([moving])
            log.warning("action_left_to_its_intent", path=move.dup.duplicate.path)

    def _close_store(self, lost: bool) -> None:
        try:
            self.store.close()
        except StoreError:
            if not lost:
                raise

    def _check_sound(self) -> bool:
        """``PRAGMA quick_check`` reads the whole store: seconds at a million
        files.  After a clean stop it runs on a thread of its own beside the
        start, and damage it finds stops the loop with exit 74; after anything
        else (a kill, a crash, a store never run by the daemon) it runs before
        anything is touched, while systemd is told that the start goes on.
        False when a stop was asked for meanwhile."""
        try:
            previous = read_daemon_status(self.store)
        except sqlite3.DatabaseError:  # unreadable: a reason to check before anything else
            previous = None
        reader = self.store.reader()
        found: list[BaseException] = []

        def check() -> None:
            try:
                faults.point("store.check")  # tests only: a check that takes a while
                reader.require_sound()
            except Exception as exc:  # noqa: BLE001 - raised by the start that waits, or kept for the loop
                found.append(exc)
                if isinstance(exc, StoreError):
                    self.store_damage = exc
                elif clean:  # nobody waits for this thread: say what went wrong
                    log.exception("store_check_failed")
            finally:
                reader.close()
            log.info("store_checked", damaged=self.store_damage is not None, before_start=not clean)

        clean = previous is not None and previous.get("state") == "stopped"
        thread = threading.Thread(target=check, name="dedupd-store-check", daemon=True)
        thread.start()
        if clean:
            return True
        # before anything is touched: systemd is told the start goes on, so that a
        # check that takes minutes (tens of millions of files) is not taken for a hang
        log.info("store_check_started", why="a store the daemon has not run on" if previous is None
                 else "the daemon did not stop cleanly last time")  # fmt: skip
        next_ping = 0.0
        while thread.is_alive() and not self.stop.is_set():
            if time.monotonic() >= next_ping:
                self.notifier.status("checking the store (PRAGMA quick_check) before starting")
                self.notifier.extend_timeout(3 * CHECK_PING)
                if self.watchdog_every:
                    self.notifier.watchdog()
                next_ping = time.monotonic() + CHECK_PING
            thread.join(TICK)  # a stop asked for meanwhile is seen within a tick
        if self.stop.is_set():
            return False
        if found:
            raise found[0]
        return True

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested.set()

    def _warn_destructive(self) -> None:
        near = self.config.actions.for_tier(Tier.NEAR)
        if near is not Action.LOG:
            log.warning(
                "destructive_near_action",
                action=near.value,
                note="near duplicates are judged by perceptual hashes; every move is reversible "
                "with 'dedupd restore', but review 'dedupd groups' first",
            )

    # --- roots ----------------------------------------------------------------

    def _start_roots(self) -> None:
        filt = self._filter()
        for root in self.config.roots:
            try:
                st = os.stat(root)
            except OSError as exc:
                raise ConfigError(f"{root}: {exc.strerror}", source=self.config_path, key="roots") from exc
            self.roots[root] = RootState(root, st.st_dev, st.st_ino)
            self._watch(self.roots[root], filt)

    def _watch(self, state: RootState, filt: Filter) -> None:
        """(Re)start the observer of a root and walk it."""
        if state.watch is not None:
            stop_watch(state.watch)
        state.watch = start_watch(
            state.root, filt, self.events, self.overflow,
            polling=self.config.polling, poll_interval=self.config.poll_interval,
        )
        self._queue_catch_up(state.root)

    def _filter(self) -> Filter:
        return Filter(self.config, extra_never=(self.db_path,) if isinstance(self.db_path, Path) else ())

    def _queue_catch_up(self, root: Path) -> None:
        self.reconcile.walk_root(root)

    def _check_roots(self) -> None:
        """Trip a root's breaker if it vanished, changed device or emptied."""
        breakers.check(self.roots.values(), self.store.count_under, self.actor.paused)

    # --- the loop ---------------------------------------------------------

    def _loop(self) -> None:
        last_status = last_ping = 0.0
        last_reconcile = time.monotonic()
        while not self.stop.is_set():
            if self.store_damage is not None:
                raise self.store_damage
            now = time.monotonic()
            every = self.config.reconcile_interval
            if every and now - last_reconcile >= every and not self.reconcile.in_progress():
                last_reconcile = now
                for root in self.roots:
                    self._queue_catch_up(root)
            if self.reload_requested.is_set() and self.acting.current is None:
                # after the move in flight is recorded: a reload replaces the Actor
                self.reload_requested.clear()
                self._reload()
            if self.overflow.is_set():
                self.overflow.clear()
                log.warning("events_lost", action="rescanning every root")
                for root in self.roots:
                    self._queue_catch_up(root)
            self._check_roots()
            self._take_events()
            self.reconcile.advance_walks(self.pending)
            self._submit_ready(now)
            self._collect()
            self._learn_of_ignores()
            self._learn_of_other_hosts(now)
            self.acting.advance(self.actor, self.pipeline.acted)
            # a rename is followed, not forgotten, if its new name settles within this
            rename_delay = self.config.settle_seconds + 2 * CLOSE_GRACE
            self.reconcile.process_gone(
                now, rename_delay, self.roots, self._check_roots,
                self.acting.busy, self._forget, self.pending, self.in_flight,
            )
            self.reconcile.finish_walks(self.pending, self.in_flight)
            self.reconcile.advance_sweeps(
                self.roots, self._check_roots, self.acting.busy, self._forget, time.monotonic(), rename_delay,
                self.config.poll_interval,
            )
            if self.watchdog_every and now - last_ping >= self.watchdog_every:
                self.notifier.watchdog()
                last_ping = now
            if now - last_status >= STATUS_EVERY:
                self.notifier.status(self._status_line())
                self._write_status("running")
                last_status = now
            self._wait()

    def _wait(self) -> None:
        futures: list[cf.Future[Any]] = [*self.in_flight.values(), *self.acting.futures()]
        if futures:
            cf.wait(futures, timeout=TICK, return_when=cf.FIRST_COMPLETED)
        elif self.events.empty() and not self.reconcile.busy and self.acting.idle:
            self.stop.wait(TICK)

    def _take_events(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self.counters.events += 1
            if event.kind is Kind.GONE:
                # Not forgotten at once: if this was a rename, the new path is
                # planned first and follows the record without re-reading it.
                self.pending.pop(event.path, None)
                self.reconcile.note_gone(event.path, event.root, time.monotonic())
            elif event.kind is Kind.DIRECTORY:
                self.reconcile.walk_directory(event.root, event.path)
            else:
                state = self.roots.get(event.root)
                self.pending.setdefault(event.path, Pending(event.root)).on_event(
                    closed=event.kind is Kind.CLOSED,
                    written=event.kind is Kind.CHANGED,
                    inotify=bool(state and state.watch and not state.watch.polling),
                    now=time.monotonic(),
                )

    def _submit_ready(self, now: float) -> None:
        """Hand complete files (``settling.py`` says which) to the workers."""
        settle = self.config.settle_seconds
        # after a worker died with several files in flight, they go one at a
        # time until the one that kills workers is known
        limit = 1 if self.crashes.isolating else self.max_in_flight
        busy = self.acting.busy
        for path in list(self.pending):
            if len(self.in_flight) >= limit:
                return
            if path in self.in_flight or path in busy:
                continue  # a file being moved waits until the move is recorded
            p = self.pending[path]
            try:
                raw = os.lstat(path)
                st = FileStat.from_path(path) if not stat_module.S_ISREG(raw.st_mode) else FileStat.of(raw)
            except FileNotFoundError:
                del self.pending[path]
                continue
            except OSError as exc:  # not a regular file (a FIFO, a device...), or unreadable
                del self.pending[path]
                if is_own_symlink(self.store, path):
                    continue  # the symlink action's own work, seen arriving
                log.warning("file_skipped", path=path, reason="not_an_image", detail=f"not a regular file: {exc.strerror or exc}")
                self.counters.errors += 1
                continue
            if not p.complete(st, raw.st_ctime_ns, now=now, wall_now=time.time(), settle=settle):
                continue
            del self.pending[path]
            self._handle(path)

    def _handle(self, path: Path) -> None:
        try:
            plan = self.pipeline.plan(path)
        except OSError:
            return
        if plan.step is Step.UNCHANGED:
            return
        if plan.step is Step.RENAMED:
            assert plan.record is not None
            followed = self.pipeline.follow_rename(plan)
            # its symlinks first: should the renamed file itself be moved next (a better
            # copy placed again with it), they then follow it to its new original
            relink.original_renamed(self.store, self.config, plan.record.path, path)
            self._act(followed.duplicates)
            return
        if self.crashes.poisoned(path, plan.stat):
            self._ingest(Failed(path, plan.stat, *self.crashes.why(path, plan.stat)))
            return
        if self.crashes.isolating and path not in self.crashes.suspects:
            self.pending.setdefault(path, Pending(self._root_of(path), changed_at=time.monotonic() - self.config.settle_seconds))
            return
        future = self.pool.submit(
            fingerprint_job, path, self.config.max_pixels, self.config.max_file_bytes, self.config.max_decode_bytes
        )
        self.in_flight[path] = future
        self.in_flight_stat[path] = plan.stat

    def _collect(self) -> None:
        for path, future in list(self.in_flight.items()):
            if not future.done():
                continue
            try:
                result = future.result()
            except BrokenProcessPool:
                self._worker_died()
                return  # every future of the old pool is gone with it
            except Exception as exc:  # noqa: BLE001 - a bug met on this one file: logged with its traceback, counted
                del self.in_flight[path]
                self._worker_raised(path, self.in_flight_stat.pop(path, None), exc)
                continue
            del self.in_flight[path]
            self.in_flight_stat.pop(path, None)
            self.crashes.survived(path)
            self._ingest(result)

    def _worker_died(self) -> None:
        """A worker died (a crash in a decoder, the OOM killer): every file in
        flight goes back to the queue on a fresh pool; a file that killed
        workers alone often enough is skipped, now and after a restart."""
        flying = [(path, self.in_flight_stat.get(path)) for path in self.in_flight]
        log.error("worker_died", paths=[p for p, _ in flying], note="restarting the worker pool")
        poisoned = self.crashes.died(flying)
        self._restart_pool()
        for path in poisoned:
            self.pending.pop(path, None)
            try:
                st: FileStat | None = FileStat.from_path(path)
            except OSError:
                st = None
            self._ingest(Failed(path, st, "crashed_decoder", f"the file killed a worker process {self.crashes.limit} times"))

    def _worker_raised(self, path: Path, st: FileStat | None, exc: Exception) -> None:
        """Fingerprinting one file raised an exception dedupd does not expect (not a
        damaged picture: those come back as :class:`Failed` values), so a bug.

        It is logged as one, with the worker's traceback, and counted against the
        file in the store like a worker that died with only that file in hand:
        the file is tried again after its settle time, and once it has crashed
        :data:`~dedupd.crashes.CRASH_LIMIT` times it is skipped
        (``internal_error``), now and after a restart.

        The daemon does not exit 70 here, as it does for a bug on its own
        thread: the worker is another process running a pure function of one
        file, so nothing of the daemon's state was touched, just as when a
        worker dies.  Exiting would stop every other file for the sake of one,
        and systemd would restart the daemon into the same file.
        """
        log_worker_bug(path, exc)
        self.counters.errors += 1
        if st is None:  # not submitted by _handle (cannot happen): nothing to count against
            return
        if self.crashes.raised(path, st, exc):
            self.pending.pop(path, None)
            self._ingest(Failed(path, st, *self.crashes.why(path, st)))
        else:
            self.pending.setdefault(path, Pending(self._root_of(path), changed_at=time.monotonic()))

    def _restart_pool(self) -> None:
        for path in list(self.in_flight):
            self.pending.setdefault(path, Pending(self._root_of(path), changed_at=time.monotonic()))
        self.in_flight.clear()
        self.in_flight_stat.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        # forkserver: never fork a process that runs observer threads
        return cf.ProcessPoolExecutor(
            self.config.effective_workers(),
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=worker_init,
            initargs=(self.config.worker_memory_bytes,),
        )

    def _drain(self) -> None:
        """On stop: finish the files in hand."""
        for path, future in list(self.in_flight.items()):
            try:
                result = future.result(timeout=60)
            except (cf.TimeoutError, cf.CancelledError, BrokenProcessPool):
                log.warning("file_abandoned_on_stop", path=path)
                continue
            except Exception as exc:  # noqa: BLE001 - as in _collect: a bug on one file, counted
                self._worker_raised(path, self.in_flight_stat.get(path), exc)
                continue
            self._ingest(result)
        self.in_flight.clear()

    def _ingest(self, result: Fingerprinted | Failed) -> None:
        if result.path in self.acting.busy:
            self.pending.setdefault(result.path, Pending(self._root_of(result.path), changed_at=time.monotonic()))
            return  # read while it was being moved: read again once the move is recorded
        if isinstance(result, Fingerprinted):
            try:
                if identity.changed(result.path, result.stat) is not None:  # ctime too: rewritten in place
                    self.pending.setdefault(result.path, Pending(self._root_of(result.path), changed_at=time.monotonic()))
                    return  # changed while we read it: settle again
            except OSError:
                return
        try:
            outcome = self.pipeline.ingest(result)
        except (DedupdError, sqlite3.Error):
            raise  # the store's failures stop the daemon with their own exit codes
        except Exception as exc:
            # A bug on this thread may leave the in-memory index half updated
            # while the store's transaction rolled back, so the daemon exits 70
            # and a restart rebuilds from the store.  The file is counted first:
            # after CRASH_LIMIT such exits it is skipped instead of crashing
            # every restart that meets it.
            if isinstance(result, Fingerprinted):
                self.crashes.raised_while_ingesting(result.path, result.stat, exc)
            raise
        if outcome.error is not None:
            self.counters.errors += 1
        else:
            self.counters.fingerprinted += 1
        self._act(outcome.duplicates)

    def _learn_of_ignores(self) -> None:
        """``dedupd ignore`` run meanwhile undoes pairings, and what the two files
        join instead is owed an action: queue it now, not at the next start.

        Cheap: one ``PRAGMA data_version`` per pass; only after another process
        committed are the pairs marked since the last look read, and only the
        groups of the files with those contents (or their pictures) are looked at.
        """
        version = self.store.data_version()
        if version == self.seen_version:
            return
        self.seen_version = version
        self.ignore_mark, pairs = self.store.ignores_after(self.ignore_mark)
        if not pairs:
            return
        twins: set[int] = set()
        for pair in pairs:
            for sha in set(pair):
                for file_id in self.store.ids_with("sha256", sha):
                    twins.add(file_id)
                    rec = self.store.record(file_id)
                    if rec is not None and rec.fingerprint is not None:
                        twins.update(self.store.ids_with("pixel_digest", rec.fingerprint.pixel_digest))
        members: set[int] = set()
        for file_id in twins:
            found = self.store.match_of(file_id)
            original = found[0] if found is not None else file_id
            members.add(original)
            members.update(self.store.duplicates_of(original))
        owed = unhandled(self.store, members)
        if owed:
            log.info("regrouped_pairs_queued", count=len(owed), note="pairings made by 'dedupd ignore'")
            self.acting.add(owed)

    def _learn_of_other_hosts(self, now: float) -> None:
        """In a store several hosts share: take in the files other hosts stored
        (into the index, within :data:`FEED_EVERY`), and act on the matches they
        made on this host's files.  Every placement catches up as well, under
        the store's write lock; this keeps the index fresh between them.  Old
        rows of the feed are dropped now and then."""
        if now - self.feed_at < FEED_EVERY:
            return
        self.feed_at = now
        grouping = self.pipeline.grouping
        found = grouping.catch_up(wait=False)
        if found:
            log.info("grouped_by_other_hosts", count=len(found))
            self._act(found)
        if not self.store.host:
            return  # a store of one host: nothing asked, nothing to prune
        # pixels other hosts asked of this host's files, and files placed again
        # with those this host asked for (dedupd/exchange.py)
        grouping.exchange.share()
        again = grouping.take_answers()
        if again:
            self._act(again)
        if now - self.pruned_at >= PRUNE_EVERY:
            self.pruned_at = now
            self.store.prune_changes()
            grouping.exchange.prune()

    def _forget(self, path: Path) -> None:
        forgotten = self.pipeline.forget(path)
        if forgotten is not None:
            self._act(forgotten.duplicates)
            # an original with symlinks to it: a quarantined copy goes back in their place
            relink.original_gone(self.store, self.config, path, roots=self.config.roots)

    def _act(self, found: tuple[Duplicate, ...] | list[Duplicate]) -> None:
        """Every match grouping made or moved goes to the Actor (through the action
        lane), re-matches included."""
        for dup in found:
            self.counters.duplicates[dup.match.tier.value] += 1
        self.acting.add(found)

    def _root_of(self, path: Path) -> Path:
        for root in self.roots:
            if path.is_relative_to(root):
                return root
        return path.parent

    # --- reload and status ------------------------------------------------

    def _reload(self) -> None:
        self.notifier.reloading()
        log.info("config_reloading", path=self.config_path)
        try:
            new = config_module.load(self.config_path)
            if not new.roots:
                new = config_module.from_mapping({**new.to_dict(), "roots": [str(r) for r in self.config.roots]}, source=self.config_path)
            new = resolve(new, strict=True)
        except ConfigError as exc:
            log.error("config_reload_failed", error=exc.message, note="keeping the running configuration")
            self.notifier.ready(self._status_line())
            return
        old_roots = set(self.roots)
        self.config = new
        self.pipeline.config = new
        self.actor = Actor(self.store, new, roots=new.roots)
        self.actor.paused.clear()
        # actions that failed or that a breaker held back are tried again now
        self.acting.add(unhandled(self.store))
        for root in old_roots - set(new.roots):
            state = self.roots.pop(root)
            if state.watch is not None:
                stop_watch(state.watch)
        filt = self._filter()
        for state in list(self.roots.values()):
            # A reload is the person saying "go on": clear the breaker and
            # start a fresh watch (the old one may have died with the directory).
            try:
                st = os.stat(state.root)
            except OSError as exc:
                log.error("root_unavailable", root=state.root, error=exc.strerror)
                continue
            state.vouched = state.tripped is not None
            state.tripped = None
            state.dev, state.ino = st.st_dev, st.st_ino
            self._watch(state, filt)
        for root in [r for r in new.roots if r not in old_roots]:
            try:
                st = os.stat(root)
            except OSError as exc:  # vanished since the check above: watched from the next reload
                log.error("root_unavailable", root=root, error=exc.strerror)
                continue
            self.roots[root] = RootState(root, st.st_dev, st.st_ino)
            self._watch(self.roots[root], filt)
        self._warn_destructive()
        log.info("config_reloaded", path=self.config_path)
        self.notifier.ready(self._status_line())

    def _status_line(self) -> str:
        counts = self.store.counts()
        last = self.actor.last_action if hasattr(self, "actor") else None
        return (
            f"{counts['files']} files indexed, {len(self.pending) + len(self.in_flight)} queued, "
            f"{counts['duplicates']} duplicates"
            + (f", last action: {last['action']} {last['path']}" if last else "")
        )

    def status_data(self) -> dict[str, Any]:
        return {
            "roots": [
                {
                    "path": str(s.root),
                    "observer": ("polling" if s.watch.polling else "inotify") if s.watch else None,
                    "why": s.watch.why if s.watch else None,
                    "circuit_breaker": s.tripped,
                }
                for s in self.roots.values()
            ],
            "queue_depth": len(self.pending) + len(self.in_flight) + self.events.qsize(),
            "catching_up": self.reconcile.in_progress(),
            "events": self.counters.events,
            "fingerprinted": self.counters.fingerprinted,
            "errors": self.counters.errors,
            "duplicates": dict(self.counters.duplicates),
            "actions": dict(self.actor.counts),
            "rate_breaker": self.actor.breaker.tripped_at,
            "last_action": self.actor.last_action,
        }

    def _write_status(self, state: str) -> None:
        write_daemon_status(self.store, pid=os.getpid(), started_at=self.started_at, state=state, data=self.status_data())


def run(config: Config, db_path: StoreLocation, config_path: Path | None) -> int:
    if not config.roots:
        raise ConfigError("nothing to watch: give --watch DIR or 'roots' in the config", source=config_path, key="roots")
    startup.check(config, db_path)
    ready, reload = False, False
    while True:
        daemon = Daemon(config, db_path, config_path)
        if reload:
            daemon.reload_requested.set()
        try:
            return daemon.run()
        except StoreUnavailable as exc:
            # before the first READY a store that cannot be reached is exit 74,
            # as for any command; once running, the daemon waits for it
            ready = ready or daemon.was_ready
            if not ready:
                raise
            config = daemon.config  # a reload while running is kept
            # its signal handlers stay: SIGTERM ends the pause, SIGHUP reloads after it
            if not wait_for_store(db_path, exc, daemon.notifier, daemon.watchdog_every, daemon.stop):
                log.info("daemon_stopped", while_paused=True)
                return 0
            reload = daemon.reload_requested.is_set()


#: seconds between attempts to reach a store that went away, at most
RETRY_MAX = 5.0


def wait_for_store(
    location: StoreLocation, cause: StoreError, notifier: Notifier, watchdog_every: float | None, stop: threading.Event
) -> bool:
    """Pause until the store answers again: True when it does, False on SIGTERM or SIGINT.

    Nothing is read or moved meanwhile; the systemd watchdog is still
    pinged, since the daemon is alive and waiting, and its status line says
    why.  On the way back the daemon starts again as after a restart:
    intents are settled, the index is read back, and a catch-up walk finds
    what arrived or changed during the pause."""
    started = time.monotonic()
    log.warning("store_unavailable", db=str(location), error=str(cause), action="paused until it answers")
    notifier.status(f"paused: the store cannot be reached ({cause})")
    delay, attempts, last_ping = 0.5, 0, 0.0
    next_try = started + delay
    while not stop.is_set():
        now = time.monotonic()
        if watchdog_every and now - last_ping >= watchdog_every:
            notifier.watchdog()
            last_ping = now
        if now >= next_try:
            attempts += 1
            try:
                open_store(location, readonly=True).close()
            except StoreUnavailable as exc:
                if attempts % 12 == 0:
                    log.warning("store_still_unavailable", db=str(location), error=str(exc),
                                seconds=round(now - started, 1))
                delay = min(delay * 2, RETRY_MAX)
                next_try = time.monotonic() + delay
            else:
                log.info("store_available", db=str(location), paused_seconds=round(now - started, 1), attempts=attempts)
                return True
        wait = next_try - time.monotonic()
        if watchdog_every:
            wait = min(wait, watchdog_every)
        if stop.wait(max(wait, 0.05)):
            return False
    return False
