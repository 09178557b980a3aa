"""``dedupd scan``: index a tree once, in parallel, with one writer.

Files are walked in sorted order and fingerprinted by a pool of worker
processes; results come back in submission order, so the same tree always
gives the same groups.  At most a few files per worker are in flight, so
memory stays flat however large the tree.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing
import os
import stat as stat_module
import sqlite3
import sys
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from tqdm import tqdm

from dedupd import errors, fileops
from dedupd.config import Config
from dedupd.crashes import CrashTracker
from dedupd.models import Duplicate, FileStat
from dedupd.pipeline import (
    Failed,
    Fingerprinted,
    Outcome,
    Pipeline,
    Step,
    bug_on_file,
    fingerprint_batch,
    fingerprint_job,
    worker_init,
)
from dedupd.store import AnyStore
from dedupd.walking import Filter, missing, unique_roots, walk

log = structlog.get_logger()

#: batches in flight per worker before the walk submits more
IN_FLIGHT_PER_WORKER = 3
#: a worker task holds up to this many files, or this many bytes, whichever
#: comes first: small files travel in batches (a process pool's per-task cost
#: is close to that of fingerprinting a small JPEG), large ones alone, so the
#: workers stay evenly loaded (see pipeline.fingerprint_batch)
BATCH_FILES = 8
BATCH_BYTES = 1 << 20
#: duplicates kept for the list printed at the end of a scan (the rest are counted)
FOUND_KEPT = 10_000

#: at the end of a scan on a store several hosts share: questions of other hosts
#: answered at most, and the seconds spent on them (the daemon answers the rest)
SHARE_AT_MOST = 1000
SHARE_BUDGET = 120.0


@dataclass(frozen=True, slots=True)
class Found:
    """A duplicate a scan found, for the list at its end."""

    tier: str
    similarity: float
    path: Path
    original: Path


@dataclass
class Summary:
    seen: int = 0
    fingerprinted: int = 0
    unchanged: int = 0
    renamed: int = 0
    removed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    duplicates: collections.Counter[str] = field(default_factory=collections.Counter)
    found: list[Found] = field(default_factory=list)  # the first FOUND_KEPT duplicates

    def as_dict(self) -> dict[str, object]:
        return {
            "seen": self.seen,
            "fingerprinted": self.fingerprinted,
            "unchanged": self.unchanged,
            "renamed": self.renamed,
            "removed": self.removed,
            "errors": sum(self.errors.values()),
            "errors_by_reason": dict(sorted(self.errors.items())),
            "duplicates": dict(sorted(self.duplicates.items())),
            "internal_errors": self.internal_errors,
        }

    @property
    def internal_errors(self) -> int:
        """Files skipped because working on them raised an unexpected exception: a bug."""
        return self.errors[errors.INTERNAL_ERROR]


def batches(items: Iterator[tuple[Path, int]]) -> Iterator[list[Path]]:
    """Group (path, size) into worker tasks of at most BATCH_FILES files or BATCH_BYTES bytes."""
    batch: list[Path] = []
    size = 0
    for path, n in items:
        batch.append(path)
        size += n
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def scan(
    paths: list[Path],
    store: AnyStore,
    config: Config,
    *,
    on_duplicate: Callable[[Duplicate], object] | None = None,
    on_forgotten: Callable[[Path], object] | None = None,
    on_renamed: Callable[[Path, Path], object] | None = None,
    progress: bool | None = None,
    workers: int | None = None,
) -> Summary:
    """Index ``paths`` (directories or single files) and match what is new or changed.

    ``on_duplicate`` is called with every match made; ``on_forgotten`` with
    every indexed file found gone (after its record was dropped);
    ``on_renamed`` with the old and new path of every file followed as a rename."""
    for p in paths:
        if not p.exists():
            raise errors.InputPathError(f"{errors.display_path(p)}: no such file or directory")
    roots = unique_roots([*paths, *config.reference_dirs])
    pipeline = Pipeline(store, config)
    crashes = CrashTracker(store)  # counts shared with the daemon: see bug_on_file and ingest below
    filt = Filter(config)
    summary = Summary()
    store.start_seen()  # what this scan saw, kept in the store: flat memory at any size
    n_workers = workers or config.effective_workers()
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(desc="scanning", unit=" files", disable=not show, file=sys.stderr, dynamic_ncols=True)
    if show:  # a walk first, listing only, so that the bar has a total and an ETA
        bar.set_description("walking")
        total = 0
        for root in roots:
            for _ in walk(root, filt, []) if root.is_dir() else [root]:
                total += 1
                bar.update(1)
        bar.reset(total=total)
        bar.set_description("scanning")

    def hand_on(found: tuple[Duplicate, ...] | list[Duplicate]) -> None:
        todo = list(found)
        while todo:
            dup = todo.pop(0)
            summary.duplicates[dup.match.tier.value] += 1
            if len(summary.found) < FOUND_KEPT:
                summary.found.append(
                    Found(dup.match.tier.value, dup.match.similarity, dup.duplicate.path, dup.original.path)
                )
            if on_duplicate is not None:
                on_duplicate(dup)
                if not fileops.is_regular(dup.duplicate.path) or store.record(dup.duplicate.id) is None:
                    # moved by this scan (or, in a dry run, would be: its record is gone from
                    # the private copy): the walk may list it still, neither vanished nor new
                    moved_here[dup.duplicate.path] = dup.duplicate.stat
                todo += pipeline.acted(dup)

    def consume(outcome: Outcome) -> None:
        bar.update(1)
        if outcome.error is not None:
            summary.errors[outcome.error.reason] += 1
        else:
            summary.fingerprinted += 1
            assert outcome.record is not None
            store.mark_seen(outcome.record.id)
        hand_on(outcome.duplicates)

    unreadable: list[Path] = []
    moved_here: dict[Path, FileStat] = {}  # files this scan moved (or would): the version it took

    def taken_here(path: Path) -> bool:
        """Did this scan's own action take (or, in a dry run, would it take) the file the
        walk listed at ``path``?  Not a new file saved at that path since."""
        taken = moved_here.pop(path, None)
        if taken is None:
            return False
        try:
            now = os.lstat(path)
        except OSError:
            return True  # moved away
        same = (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == (taken.dev, taken.ino, taken.size, taken.mtime_ns)
        return same or stat_module.S_ISLNK(now.st_mode)  # still the file (a dry run), or the symlink put there

    def jobs() -> Iterator[tuple[Path, int]]:
        for root in roots:
            files = walk(root, filt, unreadable) if root.is_dir() else iter([root] if filt.wanted_file(root) else [])
            for path in files:
                summary.seen += 1
                if taken_here(path):
                    bar.update(1)  # moved (or would be) by this scan's own action after the walk listed it
                    continue
                try:
                    plan = pipeline.plan(path)
                except OSError as exc:
                    consume(pipeline.record_failure(Failed(path, None, "vanished", exc.strerror or str(exc))))
                    continue
                if plan.step is not Step.FINGERPRINT:
                    bar.update(1)
                if plan.step is Step.UNCHANGED:
                    summary.unchanged += 1
                    assert plan.record is not None
                    store.mark_seen(plan.record.id)
                elif plan.step is Step.RENAMED:
                    summary.renamed += 1
                    assert plan.record is not None
                    old = plan.record.path
                    moved = pipeline.follow_rename(plan)
                    assert moved.record is not None
                    store.mark_seen(moved.record.id)
                    if on_renamed is not None:
                        on_renamed(old, path)
                    hand_on(moved.duplicates)
                elif crashes.poisoned(path, plan.stat):
                    # it raised (or killed a worker) CRASH_LIMIT times, in a scan or the
                    # daemon: skipped without another try, as the daemon skips it
                    consume(pipeline.record_failure(Failed(path, plan.stat, *crashes.why(path, plan.stat))))
                else:
                    yield path, plan.stat.size

    def ingest(result: Fingerprinted | Failed) -> None:
        """Store and group one result.  A bug met doing so (on this thread) is
        counted against the file, as the daemon counts it, before it ends the scan
        (exit 70): after CRASH_LIMIT of them the file is skipped, not met again."""
        try:
            outcome = pipeline.ingest(result)
        except (errors.DedupdError, sqlite3.Error):
            raise  # the store's failures, with their own exit codes: not the file's
        except Exception as exc:
            if isinstance(result, Fingerprinted):
                crashes.raised_while_ingesting(result.path, result.stat, exc)
            raise
        consume(outcome)

    def fingerprint_here(path: Path) -> Fingerprinted | Failed:
        try:
            return fingerprint_job(path, config.max_pixels, config.max_file_bytes, config.max_decode_bytes)
        except Exception as exc:  # noqa: BLE001 - a bug on one file: logged, the file skipped, the scan goes on
            return bug_on_file(path, exc, crashes)

    try:
        if n_workers <= 1:
            for path, _ in jobs():
                ingest(fingerprint_here(path))
        else:
            # forkserver: the progress bar runs a thread, and forking a threaded process is unsafe
            ctx = multiprocessing.get_context("forkserver")
            with cf.ProcessPoolExecutor(
                max_workers=n_workers, mp_context=ctx,
                initializer=worker_init, initargs=(config.worker_memory_bytes,),
            ) as pool:
                window: collections.deque[tuple[list[Path], cf.Future[list[Fingerprinted | Failed]]]] = (
                    collections.deque())

                def fingerprint_alone(path: Path) -> Fingerprinted | Failed:
                    try:
                        return pool.submit(
                            fingerprint_job, path, config.max_pixels, config.max_file_bytes, config.max_decode_bytes,
                        ).result()  # fmt: skip
                    except BrokenProcessPool:
                        raise  # a worker died: not one file's exception
                    except Exception as exc:  # noqa: BLE001 - a bug on this file: logged, skipped, the scan goes on
                        return bug_on_file(path, exc, crashes)

                def results(batch: list[Path], future: cf.Future[list[Fingerprinted | Failed]]) -> list[Fingerprinted | Failed]:
                    """The batch's results; when one of its files raised (a bug), the
                    batch's results are lost with it, so each file is tried again alone,
                    in order, to find which one raised and keep the others."""
                    try:
                        return future.result()
                    except BrokenProcessPool:
                        raise
                    except Exception as exc:  # noqa: BLE001 - see fingerprint_alone
                        if len(batch) == 1:
                            return [bug_on_file(batch[0], exc, crashes)]
                        return [fingerprint_alone(path) for path in batch]

                def submit(batch: list[Path]) -> None:
                    window.append((batch, pool.submit(
                        fingerprint_batch, batch, config.max_pixels, config.max_file_bytes, config.max_decode_bytes)))
                    while len(window) >= n_workers * IN_FLIGHT_PER_WORKER:
                        for result in results(*window.popleft()):
                            ingest(result)

                for batch in batches(jobs()):
                    submit(batch)
                while window:
                    for result in results(*window.popleft()):
                        ingest(result)
        # files under a scanned directory that are no longer there
        for root in roots:
            if not root.is_dir():
                continue
            for _, path in store.unseen_under(root):
                if missing(path):
                    forgotten = pipeline.forget(path)
                    if forgotten is not None:
                        summary.removed += 1
                        hand_on(forgotten.duplicates)
                        if on_forgotten is not None:
                            on_forgotten(path)
        # a store several hosts share: answer what the others asked of this host's
        # files, and place again the files that waited for pixels of theirs
        # (dedupd/exchange.py; a host's daemon does both as it runs)
        if store.host:
            grouping = pipeline.grouping
            grouping.exchange.share(budget=SHARE_BUDGET, at_most=SHARE_AT_MOST)
            grouping.index  # noqa: B018 - built (waited for) before the answers are taken
            for _ in range(SHARE_AT_MOST):
                if not store.answered():
                    break
                hand_on(grouping.take_answers())
            grouping.exchange.prune()
        summary.errors["unreadable_directory"] += len(unreadable)
        if not unreadable:
            del summary.errors["unreadable_directory"]
    finally:
        bar.close()
    return summary
