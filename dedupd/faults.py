"""A fault-injection switch, off unless the environment names a step.

Every step of a quarantine, a symlink and a restore calls :func:`point` with
its name (``quarantine.after_take``, ``restore.after_copy``...), and so do
a fingerprinting worker before it decodes a file (``worker.fingerprint``)
the daemon's sweep between checking a root and looking for its files
(``sweep.before_look``), the daemon's check of its store (``store.check``),
and the pipeline before it stores and groups a
fingerprinted file (``pipeline.ingest``, on the daemon's main thread).
Nothing happens unless ``DEDUPD_FAULT`` names that step, which only tests
do::

    DEDUPD_FAULT=quarantine.after_copy:kill      # SIGKILL this process there
    DEDUPD_FAULT=symlink.after_copy:sleep=2      # pause there (widen a race)
    DEDUPD_FAULT=restore.after_copy:error        # raise OSError(EIO) there
    DEDUPD_FAULT=worker.fingerprint:bug:poison*  # raise TypeError there: a bug in dedupd's code
    DEDUPD_FAULT=worker.fingerprint:kill:poison*  # only for files named poison*

A third part is a glob on the name of the file the step works on: the fault
fires only for files whose name matches (a worker that dies on one file
only, as it would in a crashing decoder).  The file a step works on is the
one a worker decodes or the pipeline ingests, the duplicate a quarantine or
a symlink moves, and the path a restore puts a file back at.  Several faults
are separated by commas.  The variable is read on every call (a handful per
action), so this module holds no state of its own.
:data:`STEPS` lists every step, so that a test can walk through all of them.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
import time
from pathlib import Path

ENV = "DEDUPD_FAULT"

#: every step that calls :func:`point`, in the order each operation reaches them
STEPS: dict[str, tuple[str, ...]] = {
    "quarantine": (
        "quarantine.after_record",
        "quarantine.after_copy",
        "quarantine.after_take",
        "quarantine.after_unlink",
    ),
    "symlink": (
        "symlink.after_record",
        "symlink.after_copy",
        "symlink.after_temp_link",
        "symlink.after_take",
        "symlink.after_unlink",
    ),
    "restore": (
        "restore.after_intent",
        "restore.after_copy",
        "restore.after_rename",
        "restore.after_unlink",
    ),
    "worker": ("worker.fingerprint",),
    "pipeline": ("pipeline.ingest",),
    "sweep": ("sweep.before_look",),
    "exchange": ("exchange.share",),
    "store": ("store.check",),
}


def point(step: str, path: Path | None = None) -> None:
    """Kill, pause or fail here if ``DEDUPD_FAULT`` names ``step`` (and, when it
    gives a glob, ``path``'s name matches it); otherwise nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, rest = item.strip().partition(":")
        what, _, pattern = rest.partition(":")
        if name != step:
            continue
        if pattern and (path is None or not fnmatch.fnmatchcase(path.name, pattern)):
            continue
        if what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif what.startswith("sleep="):
            time.sleep(float(what.removeprefix("sleep=")))
        elif what == "error":
            raise OSError(errno.EIO, f"injected fault at {step}")
        elif what == "bug":  # not an error dedupd expects anywhere: what a mistake in its code raises
            raise TypeError(f"injected bug at {step}")
