"""Every error dedupd raises on purpose, each with the exit code it maps to.

The docstring of each class is its message; ``str(error)`` adds the detail
(the path, the key, the cause).  The command line turns any of these into one
log line and the class's exit code (see ``dedupd.cli``).  Exit codes follow
``sysexits.h`` so that systemd's ``RestartPreventExitStatus=78`` stops a
restart loop on a broken configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

EX_OK = 0
EX_SOFTWARE = 70  # a bug: an error nobody anticipated
EX_PARTIAL = 3  # the run finished, but some files were skipped with errors
EX_USAGE = 64
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_CONFIG = 78


def display_path(path: Path | str | bytes) -> str:
    """A path as safe text for a log line or a terminal.

    Undecodable bytes become ``\\xNN`` escapes and control characters
    (a newline in a file name would forge a log line) become ``\\uNNNN``.
    """
    raw = os.fsencode(path)
    text = raw.decode("utf-8", errors="backslashreplace")
    return "".join(
        ch if ch.isprintable() or ch == " " else f"\\u{ord(ch):04x}" for ch in text
    )


class DedupdError(Exception):
    """dedupd failed."""

    exit_code = 1

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(detail)

    @property
    def message(self) -> str:
        doc = (type(self).__doc__ or "").strip().splitlines()[0]
        return f"{doc.rstrip('.')}: {self.detail}" if self.detail else doc

    def __str__(self) -> str:
        return self.message


class ConfigError(DedupdError):
    """Invalid configuration."""

    exit_code = EX_CONFIG

    def __init__(self, detail: str, *, source: Path | None = None, key: str | None = None) -> None:
        where = ", ".join(
            part
            for part in (
                f"in {display_path(source)}" if source else "",
                f"key {key!r}" if key else "",
            )
            if part
        )
        super().__init__(f"{where}: {detail}" if where else detail)
        self.source = source
        self.key = key


class InputPathError(DedupdError):
    """A path given on the command line cannot be used."""

    exit_code = EX_NOINPUT


class StoreError(DedupdError):
    """The fingerprint store cannot be used."""

    exit_code = EX_IOERR


class StoreUnavailable(StoreError):
    """The store's server cannot be reached: the connection was refused or
    lost (PostgreSQL restarted or went away).  A command exits 74 as for any
    store error; a running daemon pauses and resumes when the server answers."""


class StoreLockedError(StoreError):
    """Another dedupd process is writing to this store."""

    exit_code = EX_TEMPFAIL


# --- per-file errors: logged, recorded against the file, and skipped -------


class FileSkipped(DedupdError):
    """The file was skipped."""

    exit_code = EX_PARTIAL
    #: short machine-readable reason stored in the database and logs
    reason = "error"

    def __init__(self, path: Path, detail: str = "") -> None:
        self.path = path
        super().__init__(f"{display_path(path)}: {detail}" if detail else display_path(path))
        self.cause = detail


class EmptyFile(FileSkipped):
    """The file is empty (zero bytes)."""

    reason = "empty"


class NotAnImage(FileSkipped):
    """The file is not an image dedupd can read."""

    reason = "not_an_image"


class CorruptImage(FileSkipped):
    """The image is truncated or corrupt."""

    reason = "corrupt"


class DecompressionBomb(FileSkipped):
    """The image has more pixels than the configured limit (a decompression bomb?)."""

    reason = "too_many_pixels"


class DecodeBudgetExceeded(FileSkipped):
    """Decoding the image would take more memory than the configured budget."""

    reason = "over_memory_budget"


class OutOfMemory(FileSkipped):
    """Fingerprinting the image ran out of the memory a worker may use."""

    reason = "out_of_memory"


class UnreadableFile(FileSkipped):
    """The file cannot be read."""

    reason = "unreadable"


class FileVanished(FileSkipped):
    """The file disappeared before it could be read."""

    reason = "vanished"


class FileChangedWhileReading(FileSkipped):
    """The file changed while it was being read (still being written?)."""

    reason = "changed_while_reading"


class ActionError(DedupdError):
    """An action on a file could not be completed."""

    exit_code = EX_IOERR


class DaemonUnreachable(DedupdError):
    """The daemon cannot be signalled (not running?)."""

    exit_code = EX_UNAVAILABLE


class NotTheCheckedFile(ActionError):
    """Not acted on: the file is no longer the one that was checked."""


#: the reason a file is skipped with when working on it raised an exception
#: dedupd does not expect: a bug in dedupd, not a damaged picture
INTERNAL_ERROR = "internal_error"


def bug_cause(exc: BaseException) -> str:
    """An unexpected exception in one line, as the log and the file's skip record give it."""
    return f"{type(exc).__name__}: {exc}"[:500]


def bug_detail(cause: str, times: int | None = None) -> str:
    """The detail a file skipped as :data:`INTERNAL_ERROR` is recorded with."""
    count = "" if times is None else f" {times} times"
    return f"working on the file raised an unexpected error{count} (a bug in dedupd; please report it): {cause}"
