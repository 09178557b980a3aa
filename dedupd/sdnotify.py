"""The systemd notify protocol (sd_notify(3)), written out by hand.

A service started with ``Type=notify`` finds the address of the service
manager's datagram socket in ``NOTIFY_SOCKET``: a filesystem path, or a name in
the abstract namespace when it starts with ``@``. A notification is one
datagram of newline-separated ``NAME=value`` fields. Sending is best effort:
every method returns whether the datagram went out and never raises
``OSError``; the caller decides whether a failure is worth a log line
(:attr:`Notifier.last_error` says why it failed).

This module imports nothing else from dedupd, so it can be used and tested on
its own.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Self

__all__ = ["MAX_DATAGRAM", "Notifier", "watchdog_interval"]

# The service manager reads notifications into a buffer of this size and drops
# a datagram that fills it (systemd's NOTIFY_BUFFER_MAX, which is PIPE_BUF).
MAX_DATAGRAM = 4096

# A STATUS= text longer than this is cut, so that it always fits in a datagram
# together with the other fields of the same message.
MAX_STATUS_BYTES = 1024

# How long a send may block when the manager's receive queue is full. Blocking
# for longer would stall the caller's main loop, and the watchdog with it.
SEND_TIMEOUT = 5.0

# systemd splits a message into fields at both characters, so either one inside
# a value would start a new field.
_FIELD_BREAKS = str.maketrans({"\n": " ", "\r": " ", "\0": None})


def _clean_value(text: str) -> str:
    """Return ``text`` with the characters that would break the message format replaced."""
    return text.translate(_FIELD_BREAKS)


def _clean_status(text: str) -> str:
    """Return a STATUS= value: one line, cut to :data:`MAX_STATUS_BYTES` bytes of UTF-8."""
    line = _clean_value(text)
    encoded = line.encode("utf-8", "replace")
    if len(encoded) <= MAX_STATUS_BYTES:
        return line
    # Cut on a character boundary: "ignore" drops a partial trailing character.
    return encoded[:MAX_STATUS_BYTES].decode("utf-8", "ignore")


def _socket_address(address: str) -> bytes | None:
    """Return the AF_UNIX address for a NOTIFY_SOCKET value, or None if it is not one.

    ``@name`` is a name in the abstract namespace, which the kernel spells with a
    leading NUL byte; an absolute path is a socket in the filesystem. Anything
    else (a relative path, systemd 254's ``vsock:`` addresses) is not supported,
    as in sd_notify(3) of the systemd versions this targets.
    """
    if address.startswith("@"):
        return b"\0" + os.fsencode(address[1:])
    if address.startswith("/"):
        return os.fsencode(address)
    return None


class Notifier:
    """Sends notifications to the service manager; does nothing when there is none.

    Safe to share between threads: a lock serialises creating the socket,
    sending and closing.
    """

    def __init__(self, address: str | None) -> None:
        """Prepare to notify ``address`` (a NOTIFY_SOCKET value), or nobody when it is None."""
        self._address = address or None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closed = False
        self._last_error: OSError | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Return a notifier for ``NOTIFY_SOCKET`` in ``environ`` (default ``os.environ``).

        When the variable is unset or empty (not started by systemd, or not with
        ``Type=notify``) the notifier is disabled and every method is a no-op that
        returns False.
        """
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify and :meth:`close` has not been called."""
        return self._address is not None and not self._closed

    @property
    def address(self) -> str | None:
        """The NOTIFY_SOCKET value this notifier sends to, for log lines."""
        return self._address

    @property
    def last_error(self) -> OSError | None:
        """Why the most recent send failed; None after a send that succeeded."""
        return self._last_error

    def notify(self, *fields: str) -> bool:
        """Send ``NAME=value`` fields as one datagram; return whether it was sent.

        Newlines, carriage returns and NUL bytes inside a field are replaced, so
        a value cannot inject a field of its own. A field without a name is a
        programming error and raises ValueError.
        """
        if not fields:
            msg = "a notification needs at least one NAME=value field"
            raise ValueError(msg)
        cleaned = []
        for field in fields:
            name, sep, _ = field.partition("=")
            if not sep or not name:
                msg = f"not a NAME=value notification field: {field!r}"
                raise ValueError(msg)
            cleaned.append(_clean_value(field))
        # "replace" turns lone surrogates (undecodable bytes in a file name that
        # reached a STATUS= text) into "?" instead of raising.
        payload = "\n".join(cleaned).encode("utf-8", "replace")
        return self._send(payload)

    def ready(self, status: str | None = None) -> bool:
        """Tell the manager that start-up or a reload is done: ``READY=1``, maybe with a status."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", "STATUS=" + _clean_status(status))

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``: ``STATUS=text``."""
        return self.notify("STATUS=" + _clean_status(text))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: the start (or stop) needs ``seconds`` more from
        now; systemd (236 and later) waits that long before it gives up on it."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def watchdog(self) -> bool:
        """Ping the service manager's watchdog: ``WATCHDOG=1``."""
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """Tell the manager that a reload has begun: ``RELOADING=1`` with ``MONOTONIC_USEC``.

        Send :meth:`ready` when the reload is done. systemd 253 and later require
        the CLOCK_MONOTONIC timestamp for ``Type=notify-reload``; older versions
        ignore the field.
        """
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self) -> bool:
        """Tell the manager that the service is shutting down: ``STOPPING=1``."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the socket; later notifications are not sent. Calling it again does nothing."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Self:
        """Return self; the notifier is closed when the ``with`` block ends."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the notifier."""
        self.close()

    def __repr__(self) -> str:
        """Show the address and whether the notifier is enabled."""
        return f"Notifier(address={self._address!r}, enabled={self.enabled})"

    def _send(self, payload: bytes) -> bool:
        """Send one datagram under the lock; record and swallow OSError."""
        if self._address is None:
            return False
        target = _socket_address(self._address)
        with self._lock:
            if self._closed:
                return False
            if target is None:
                self._last_error = OSError(
                    errno.EAFNOSUPPORT, "unsupported NOTIFY_SOCKET address", self._address
                )
                return False
            if len(payload) >= MAX_DATAGRAM:
                # The manager would drop it ("exceeded maximum size") without a word.
                self._last_error = OSError(
                    errno.EMSGSIZE,
                    f"a notification of {len(payload)} bytes is over the"
                    f" {MAX_DATAGRAM - 1} bytes the service manager accepts",
                )
                return False
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.settimeout(SEND_TIMEOUT)
                    self._sock = sock
                # Not connect(): sendto() still reaches the manager after it has
                # re-created its socket under the same address (daemon-reexec).
                self._sock.sendto(payload, socket.MSG_NOSIGNAL, target)
            except OSError as err:  # includes TimeoutError when the queue stays full
                self._last_error = err
                return False
            self._last_error = None
            return True


def _positive_int(text: str) -> int | None:
    """Return ``text`` as a positive integer if it is one written in ASCII digits, else None."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value > 0 else None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Return how many seconds may pass between ``WATCHDOG=1`` pings, or None for no watchdog.

    The interval is half of ``WATCHDOG_USEC`` (sd_watchdog_enabled(3) advises
    pinging at half the timeout). None when ``WATCHDOG_USEC`` is unset, not a
    positive integer, or when ``WATCHDOG_PID`` is set and is not this process
    (the variables were inherited from a parent that the watchdog is meant for).
    """
    env = os.environ if environ is None else environ
    usec = _positive_int(env.get("WATCHDOG_USEC", ""))
    if usec is None:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and _positive_int(pid) != os.getpid():
        return None
    return usec / 2 / 1_000_000
