"""A fault-injection switch, off unless the environment names a step.

Every step of a quarantine, a symlink and a restore calls :func:`point` with
its name (``quarantine.after_take``, ``restore.after_copy``...).  Nothing
happens unless ``DEDUPD_FAULT`` names that step, which only tests do::

    DEDUPD_FAULT=quarantine.after_copy:kill      # SIGKILL this process there
    DEDUPD_FAULT=symlink.after_copy:sleep=2      # pause there (widen a race)
    DEDUPD_FAULT=restore.after_copy:error        # raise OSError(EIO) there

Several faults are separated by commas.  The variable is read on every call
(a handful per action), so this module holds no state of its own.
:data:`STEPS` lists every step, so that a test can walk through all of them.
"""

from __future__ import annotations

import errno
import os
import signal
import time

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
}


def point(step: str) -> None:
    """Kill, pause or fail here if ``DEDUPD_FAULT`` names ``step``; otherwise nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, what = item.strip().partition(":")
        if name != step:
            continue
        if what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif what.startswith("sleep="):
            time.sleep(float(what.removeprefix("sleep=")))
        elif what == "error":
            raise OSError(errno.EIO, f"injected fault at {step}")
