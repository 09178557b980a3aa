"""What a fingerprinting worker runs: a file's path in, its fingerprint (or why
not) out.

A worker process (the daemon's pool, ``dedupd scan --workers N``) imports
this module only, through the functions it is sent: the hashing libraries
and nothing of the store, the index or the grouping, which the process that
sends the work holds.  :mod:`dedupd.pipeline` re-exports these names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dedupd import errors, faults
from dedupd.hashing import fingerprint_file, load_dct
from dedupd.models import DEFAULT_MAX_DECODE_BYTES, FileStat, Fingerprint

__all__ = ["Failed", "Fingerprinted", "failed_now", "fingerprint_batch", "fingerprint_job", "worker_init"]


@dataclass(frozen=True, slots=True)
class Fingerprinted:
    path: Path
    stat: FileStat
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class Failed:
    path: Path
    stat: FileStat | None
    reason: str
    detail: str
    #: a bug counted against the file below its crash limit (``dedupd.crashes``):
    #: skipped now but not recorded as skipped, so that the next scan or daemon
    #: start tries the file again, as the daemon itself would
    retry: bool = False


def worker_init(memory_bytes: int) -> None:
    """Initializer of a fingerprinting worker: cap its address space.

    The limit is ``memory_bytes`` above what the worker holds once started
    (interpreter, libraries, their reserved arenas), so it holds the same on
    any machine.  A file that needs more fails with MemoryError, which
    :func:`fingerprint_job` records against the file (``out_of_memory``)
    instead of losing the worker or the daemon.  0: no limit.
    """
    load_dct()  # what a worker needs is loaded before it measures what it holds
    if memory_bytes <= 0:
        return
    import resource  # noqa: PLC0415 - only workers need it

    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            base = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        base = 0
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = base + memory_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def fingerprint_job(
    path: Path, max_pixels: int, max_bytes: int, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
) -> Fingerprinted | Failed:
    """Run in a worker process: read and fingerprint one file, errors as values."""
    faults.point("worker.fingerprint", path)  # tests only: a decoder that crashes on this file
    try:
        st, fp = fingerprint_file(path, max_pixels=max_pixels, max_bytes=max_bytes, max_decode_bytes=max_decode_bytes)
    except MemoryError:
        # the worker's memory limit, not a bug: the file is recorded and skipped
        return _failed(path, errors.OutOfMemory(path, "ran out of the memory a worker may use"))
    except errors.FileSkipped as exc:
        return _failed(path, exc)
    return Fingerprinted(path, st, fp)


def _failed(path: Path, exc: errors.FileSkipped) -> Failed:
    return failed_now(path, exc.reason, exc.cause or exc.message)


def failed_now(path: Path, reason: str, detail: str) -> Failed:
    try:
        st_now: FileStat | None = FileStat.from_path(path)
    except OSError:
        st_now = None
    return Failed(path, st_now, reason, detail)


def fingerprint_batch(
    paths: list[Path], max_pixels: int, max_bytes: int, max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
) -> list[Fingerprinted | Failed]:
    """Several files per worker task: a process pool's per-task overhead is
    comparable to fingerprinting one small JPEG, so a scan sends batches."""
    return [fingerprint_job(p, max_pixels, max_bytes, max_decode_bytes) for p in paths]
