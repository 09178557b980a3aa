"""Tests for dedupd.sdnotify against real AF_UNIX datagram sockets owned by the test."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dedupd.sdnotify import MAX_DATAGRAM, MAX_STATUS_BYTES, Notifier, watchdog_interval

RECV_TIMEOUT = 5.0


class Manager:
    """The service manager's end: a bound datagram socket and its NOTIFY_SOCKET value."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        """Wrap a bound socket and the NOTIFY_SOCKET value that reaches it."""
        self.sock = sock
        self.address = address

    def receive(self) -> bytes:
        """Return the next datagram, failing the test if none arrives in time."""
        return self.sock.recv(MAX_DATAGRAM * 2)

    def assert_nothing_pending(self) -> None:
        """Fail if a datagram is waiting."""
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(MAX_DATAGRAM * 2)
        finally:
            self.sock.settimeout(RECV_TIMEOUT)


def _bound_socket(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(RECV_TIMEOUT)
    return sock


@pytest.fixture
def path_manager(tmp_path: Path) -> Iterator[Manager]:
    """Yield a manager listening on a socket file in tmp_path."""
    path = tmp_path / "notify.sock"
    assert len(os.fsencode(path)) < 108, "sun_path is limited to 108 bytes"
    sock = _bound_socket(str(path))
    yield Manager(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_manager() -> Iterator[Manager]:
    """Yield a manager listening on a unique name in the abstract namespace."""
    name = f"dedupd-test-{uuid.uuid4().hex}"
    sock = _bound_socket(b"\0" + name.encode())
    yield Manager(sock, "@" + name)
    sock.close()


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest) -> Manager:
    """Each test using it runs once with a path socket and once with an abstract one."""
    fixture: Manager = request.getfixturevalue(f"{request.param}_manager")
    return fixture


@pytest.fixture
def notifier(manager: Manager) -> Iterator[Notifier]:
    """Yield a notifier built from an environment that points at the manager."""
    with Notifier.from_environment({"NOTIFY_SOCKET": manager.address}) as n:
        yield n


def test_ready_sends_ready_datagram(manager: Manager, notifier: Notifier) -> None:
    """ready() sends exactly READY=1 to path and abstract sockets alike."""
    assert notifier.enabled
    assert notifier.ready() is True
    assert manager.receive() == b"READY=1"
    assert notifier.last_error is None


def test_ready_with_status(manager: Manager, notifier: Notifier) -> None:
    """ready(status) puts READY=1 and STATUS= in one datagram."""
    assert notifier.ready("watching 2 roots")
    assert manager.receive() == b"READY=1\nSTATUS=watching 2 roots"


def test_each_message_is_exact(manager: Manager, notifier: Notifier) -> None:
    """status, watchdog, stopping and notify send exactly the expected bytes, one datagram each."""
    assert notifier.status("indexed 10 files, queue 3")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert notifier.notify("EXTEND_TIMEOUT_USEC=5000000", "STATUS=scanning")
    assert manager.receive() == b"STATUS=indexed 10 files, queue 3"
    assert manager.receive() == b"WATCHDOG=1"
    assert manager.receive() == b"STOPPING=1"
    assert manager.receive() == b"EXTEND_TIMEOUT_USEC=5000000\nSTATUS=scanning"
    manager.assert_nothing_pending()


def test_reloading_carries_monotonic_timestamp(manager: Manager, notifier: Notifier) -> None:
    """reloading() sends RELOADING=1 and MONOTONIC_USEC read from CLOCK_MONOTONIC at the call."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = manager.receive().split(b"\n")
    assert first == b"RELOADING=1"
    name, _, value = second.partition(b"=")
    assert name == b"MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_newlines_in_status_cannot_inject_fields(manager: Manager, notifier: Notifier) -> None:
    """Newlines, carriage returns and NULs in a status become one harmless line."""
    assert notifier.status("moved a.jpg\nREADY=1\rWATCHDOG=trigger\0")
    assert manager.receive() == b"STATUS=moved a.jpg READY=1 WATCHDOG=trigger"
    assert notifier.ready("line one\nline two")
    assert manager.receive() == b"READY=1\nSTATUS=line one line two"


def test_notify_cleans_every_field(manager: Manager, notifier: Notifier) -> None:
    """A newline inside any notify() field is replaced, so the datagram keeps its field count."""
    assert notifier.notify("STATUS=a\nSTOPPING=1", "WATCHDOG=1")
    assert manager.receive() == b"STATUS=a STOPPING=1\nWATCHDOG=1"


def test_status_is_utf8_and_survives_undecodable_file_names(
    manager: Manager, notifier: Notifier
) -> None:
    """Non-ASCII text is sent as UTF-8; a lone surrogate from an undecodable name becomes '?'."""
    undecodable = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: a surrogate escape on UTF-8 systems
    assert notifier.status("quarantined Ümlaut.jpg, " + undecodable)
    assert manager.receive() == "STATUS=quarantined Ümlaut.jpg, caf?.jpg".encode()


def test_long_status_is_cut_to_fit(manager: Manager, notifier: Notifier) -> None:
    """A status longer than MAX_STATUS_BYTES is cut on a character boundary and still sent."""
    assert notifier.status("é" * MAX_STATUS_BYTES)
    text = manager.receive().removeprefix(b"STATUS=").decode("utf-8")
    assert text == "é" * (MAX_STATUS_BYTES // 2)


def test_oversized_datagram_is_refused(manager: Manager, notifier: Notifier) -> None:
    """A message the manager would drop is not sent; notify() says False and why."""
    assert notifier.notify("X_BIG=" + "x" * MAX_DATAGRAM) is False
    err = notifier.last_error
    assert err is not None
    assert err.errno == errno.EMSGSIZE
    manager.assert_nothing_pending()
    assert notifier.watchdog()  # the notifier keeps working afterwards
    assert manager.receive() == b"WATCHDOG=1"
    assert notifier.last_error is None


def test_field_without_name_is_a_programming_error(notifier: Notifier) -> None:
    """notify() rejects a field that is not NAME=value, and an empty call."""
    with pytest.raises(ValueError, match="NAME=value"):
        notifier.notify("READY")
    with pytest.raises(ValueError, match="NAME=value"):
        notifier.notify("=1")
    with pytest.raises(ValueError, match="at least one"):
        notifier.notify()


def test_unset_or_empty_socket_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET every call does nothing and returns False."""
    for environ in ({}, {"NOTIFY_SOCKET": ""}):
        n = Notifier.from_environment(environ)
        assert not n.enabled
        assert n.address is None
        assert n.ready("x") is False
        assert n.status("x") is False
        assert n.watchdog() is False
        assert n.reloading() is False
        assert n.stopping() is False
        assert n.notify("X=1") is False
        assert n.last_error is None
        n.close()


def test_from_environment_defaults_to_os_environ(
    monkeypatch: pytest.MonkeyPatch, path_manager: Manager
) -> None:
    """With no mapping given, from_environment reads the process environment."""
    monkeypatch.setenv("NOTIFY_SOCKET", path_manager.address)
    with Notifier.from_environment() as n:
        assert n.address == path_manager.address
        assert n.ready()
    assert path_manager.receive() == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not Notifier.from_environment().enabled


def test_missing_socket_reports_failure_without_raising(tmp_path: Path) -> None:
    """When nobody listens at the path, calls return False and last_error holds the OSError."""
    n = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert n.ready() is False
    err = n.last_error
    assert isinstance(err, OSError)
    assert err.errno == errno.ENOENT
    n.close()


def test_unsupported_address_reports_failure() -> None:
    """A relative path or a vsock: address is not sent anywhere; the error says why."""
    for address in ("relative.sock", "vsock:2:1234"):
        n = Notifier(address)
        assert n.ready() is False
        err = n.last_error
        assert err is not None
        assert err.errno == errno.EAFNOSUPPORT
        n.close()


def test_manager_socket_recreated_is_reached_again(tmp_path: Path) -> None:
    """After the manager replaces its socket at the same path, the next notification arrives."""
    path = tmp_path / "notify.sock"
    first = _bound_socket(str(path))
    with Notifier(str(path)) as n:
        assert n.status("one")
        assert first.recv(MAX_DATAGRAM) == b"STATUS=one"
        first.close()
        path.unlink()
        assert n.status("lost") is False
        second = _bound_socket(str(path))
        try:
            assert n.status("two")
            assert second.recv(MAX_DATAGRAM) == b"STATUS=two"
        finally:
            second.close()


def test_close_stops_sending(manager: Manager) -> None:
    """After close() the notifier is disabled, sends nothing and can be closed again."""
    n = Notifier(manager.address)
    assert n.watchdog()
    assert manager.receive() == b"WATCHDOG=1"
    n.close()
    assert not n.enabled
    assert n.watchdog() is False
    n.close()
    manager.assert_nothing_pending()


def test_concurrent_senders_never_interleave(manager: Manager, notifier: Notifier) -> None:
    """Two threads sending at once produce only whole, well-formed datagrams, none lost."""
    per_thread = 200
    start = threading.Barrier(2)
    results: list[bool] = []

    def send(tag: str) -> None:
        start.wait(timeout=RECV_TIMEOUT)
        for i in range(per_thread):
            results.append(notifier.status(f"{tag} {i}"))

    threads = [threading.Thread(target=send, args=(tag,)) for tag in ("main", "worker")]
    for t in threads:
        t.start()
    received = [manager.receive() for _ in range(2 * per_thread)]
    for t in threads:
        t.join(timeout=RECV_TIMEOUT)
        assert not t.is_alive()
    assert results == [True] * (2 * per_thread)
    expected = {f"STATUS={t} {i}".encode() for t in ("main", "worker") for i in range(per_thread)}
    assert set(received) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": ""}, 30.0),
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "60s"}, None),
        ({"WATCHDOG_USEC": " 60"}, None),
        ({"WATCHDOG_USEC": "١٢"}, None),  # Arabic-Indic digits are not ASCII
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "self"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    """The interval is half of WATCHDOG_USEC in seconds; None if unset, invalid or another PID's."""
    assert watchdog_interval(environ) == expected


def test_watchdog_interval_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no mapping given, watchdog_interval reads the process environment."""
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 5.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None
