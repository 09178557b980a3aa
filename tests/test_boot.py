"""dedupd as a service under a real systemd: a minimal Debian 12 booted with systemd-nspawn.

The container (see ``boot_helpers``) starts from debootstrap's minbase plus
systemd and jq: no Python, no procps.  The project is installed with
``systemd/install.sh``, exactly the command docs/service.md shows, and the
service is then driven with the documented commands, run inside with
``nsenter``.  The checks: READY and active, a duplicate quarantined, a reload
with the same PID (and a bad config refused by the reload), a bad config at
start exits 78 and is not restarted, the watchdog restarts a stopped daemon,
a clean stop, and the template for a second library.

Needs root and the tools of Debian's debootstrap and systemd-container packages
(.ci/run installs them); skips without root, and without the tools unless CI is
set.  Every step has a timeout: building, booting and installing share one budget
of BUDGET seconds, and each wait for an outcome inside has its own (WAIT).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from boot_helpers import SRC_IN, WHEELS_IN, BootError, Budget, Container, cached_root, cached_wheels
from boot_helpers import cannot_boot_reason, missing_tools
from daemon_helpers import picture, sha256, wait_until

#: the tests that boot the container (the docs check below runs everywhere)
boot = pytest.mark.boot

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
#: seconds for everything: building the root from scratch (about 100 s), the
#: wheels (about 30 s), booting, installing and every check
BUDGET = 340.0
#: how long one outcome inside the container may take
WAIT = 30.0

# The commands, as docs/service.md (and README.md, for the first ones) show them.
# test_docs_show_the_commands_the_boot_test_runs keeps the three in step.
INSTALL = "systemd/install.sh --root /srv/photos --quarantine /srv/dedupd-quarantine --group photos"
INSTALL_INSTANCE = (
    "systemd/install.sh --instance family --root /srv/family --quarantine /srv/family-quarantine --group photos"
)
STATUS = "systemctl status dedupd"
JOURNAL = "journalctl -u dedupd -o cat | jq -R 'fromjson? // .'"
DEDUPD_STATUS = "dedupd status --db /var/lib/dedupd/dedupd.db"
RELOAD = "systemctl reload dedupd"
FOLLOW = (
    "journalctl -u dedupd -o cat -f | "
    "jq -cR 'fromjson? | select(.level == \"warning\" or .level == \"error\")'"
)
STOP = "systemctl stop dedupd"
START = "systemctl start dedupd"
README_COMMANDS = (INSTALL, STATUS, JOURNAL, DEDUPD_STATUS, RELOAD)
DOC_COMMANDS = (*README_COMMANDS, INSTALL_INSTANCE, STOP, START, FOLLOW)

#: what a site has before dedupd comes: photos owned by a group
PREPARE = "groupadd --system photos && install -d -m 2775 -g photos /srv/photos /srv/family"
#: where pip finds the dependencies: wheels built on the host, bind-mounted in
PIP_OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELS_IN)}
CONFIG = "/etc/dedupd/config.yaml"


def test_docs_show_the_commands_the_boot_test_runs() -> None:
    """Every command the boot test runs appears verbatim in docs/service.md, the main ones in README.md."""
    # as rendered: a "|" inside a Markdown table is written "\\|"
    doc = (REPO / "docs" / "service.md").read_text(encoding="utf-8").replace("\\|", "|")
    readme = (REPO / "README.md").read_text(encoding="utf-8").replace("\\|", "|")
    for command in DOC_COMMANDS:
        assert command in doc, command
    for command in README_COMMANDS:
        assert command in readme, command


# --- the container ---------------------------------------------------------------


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted Debian 12 with dedupd installed by systemd/install.sh and running."""
    reason = cannot_boot_reason()
    if reason:
        pytest.skip(f"cannot boot a container here: {reason}")
    missing = missing_tools()
    if missing:
        message = f"missing {', '.join(missing)} (Debian packages debootstrap, systemd-container)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    budget = Budget(BUDGET)
    # On a fresh machine: debootstrap (network and dpkg) and pip wheel side by side.
    with cf.ThreadPoolExecutor(2) as pool:
        building_root = pool.submit(cached_root, budget)
        building_wheels = pool.submit(cached_wheels, budget)
        root, wheels = building_root.result(), building_wheels.result()
    container = Container(tmp_path_factory.mktemp("boot"), root, wheels, budget)
    try:
        container.boot()
        container.sh(PREPARE)
        container.sh(INSTALL, cwd=SRC_IN, env=PIP_OFFLINE, timeout=budget.left(240))
        yield container
    finally:
        container.close()


def wait_for(check: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``
    (each check runs a command in the container: a slower pace than the daemon tests')."""
    return wait_until(check, what, timeout=timeout, interval=0.2)


def events(box: Container, unit: str = "dedupd", since: float = 0.0) -> list[dict[str, Any]]:
    """dedupd's JSON log events in the journal of ``unit``, logged at or after ``since`` (epoch)."""
    out = box.sh(f"journalctl -u {unit} -o cat --no-pager").stdout
    found = []
    for line in out.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # systemd's own lines about the unit
        if dt.datetime.fromisoformat(event["timestamp"]).timestamp() >= since:
            found.append(event)
    return found


def wait_event(box: Container, name: str, since: float, unit: str = "dedupd") -> dict[str, Any]:
    return wait_for(
        lambda: next((e for e in events(box, unit, since) if e["event"] == name), None),
        f"{name} in the journal of {unit}",
    )


def unit_state(box: Container, unit: str = "dedupd") -> dict[str, str]:
    return box.show(unit, "ActiveState", "SubState", "MainPID", "NRestarts", "Result",
                    "ExecMainStatus", "StatusText")


def running(box: Container, unit: str = "dedupd") -> dict[str, str]:
    """Start ``unit`` if it is not active; its state once it is (start waits for READY=1)."""
    state = unit_state(box, unit)
    if state["ActiveState"] != "active":
        box.sh(f"systemctl reset-failed {unit}; systemctl start {unit}")
        state = unit_state(box, unit)
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    return state


def write_config(box: Container, text: str, path: str = CONFIG) -> None:
    box.sh(f"cat > {path} <<'EOF'\n{text}EOF")


# --- the checks ------------------------------------------------------------------


@boot
def test_install_script_starts_the_service(box: Container) -> None:
    """install.sh leaves the service active after READY=1, with its user, quarantine, drop-in and store."""
    state = running(box)
    assert "files indexed" in state["StatusText"], state  # STATUS= reached systemd
    status = box.sh(STATUS).stdout
    assert "active (running)" in status and "10-paths.conf" in status, status
    journal = box.sh(JOURNAL).stdout
    assert '"event": "daemon_ready"' in journal, journal
    assert '"Started dedupd.service - dedupd duplicate image watcher."' in journal, journal
    assert box.sh("stat -c '%U %G %a' /srv/dedupd-quarantine").stdout.split() == ["dedupd", "dedupd", "750"]
    assert box.sh("id -nG dedupd").stdout.split() == ["dedupd", "photos"]
    dropin = box.path("/etc/systemd/system/dedupd.service.d/10-paths.conf").read_text()
    assert "ReadWritePaths=-/srv/photos\n" in dropin and "ReadWritePaths=-/srv/dedupd-quarantine\n" in dropin
    assert box.sh("test -x /usr/bin/kill || test -x /bin/kill", check=False).returncode != 0, "procps crept in"
    assert "daemon:   running" in box.sh(DEDUPD_STATUS).stdout


@boot
def test_duplicate_is_quarantined(box: Container) -> None:
    """An exact copy written into the root is moved to the quarantine; the original stays."""
    running(box)
    data = picture(7)
    box.path("/root/pic.jpg").write_bytes(data)
    box.sh("cp /root/pic.jpg /srv/photos/first.jpg")
    wait_for(lambda: box.sh(f"{DEDUPD_STATUS} --format json", check=False).stdout.count('"files": 1'),
             "the first file indexed")
    box.sh("cp /root/pic.jpg /srv/photos/second.jpg")
    quarantine = box.path("/srv/dedupd-quarantine")
    # each quarantined file has its record beside it (NAME.dedupd.json, see docs/safety.md)
    moved = wait_for(lambda: [p for p in quarantine.rglob("*") if p.is_file() and not p.name.endswith(".dedupd.json")],
                     "a file in the quarantine")
    assert [p.name for p in moved] == ["second.jpg"] and sha256(moved[0]) == sha256(data)
    assert (quarantine / "second.jpg.dedupd.json").is_file()
    # a move within one file system is a hard link, then the unlink of the source
    wait_for(lambda: not box.path("/srv/photos/second.jpg").exists(), "the copy gone from the root")
    assert sorted(p.name for p in box.path("/srv/photos").iterdir()) == ["first.jpg"]
    assert "quarantine" in box.sh(DEDUPD_STATUS).stdout


@boot
def test_reload_keeps_the_pid_and_refuses_a_bad_config(box: Container) -> None:
    """systemctl reload re-reads the config in the same process; a bad file fails the reload, not the daemon."""
    pid = running(box)["MainPID"]
    since = time.time()
    box.sh(RELOAD)
    wait_event(box, "config_reloaded", since)
    assert unit_state(box)["MainPID"] == pid
    good = box.path(CONFIG).read_text()
    try:
        write_config(box, good + "no_such_key: 1\n")
        failed = box.sh(RELOAD, check=False)
        assert failed.returncode != 0, failed
        journal = box.sh("journalctl -u dedupd -o cat --no-pager -n 20").stdout
        assert "no_such_key" in journal, journal
        # the documented follow command, ended after a moment: the refusal is among its errors
        followed = box.sh(f"timeout 3 {FOLLOW}", check=False).stdout
        errors = [json.loads(line) for line in followed.splitlines()]
        assert any("no_such_key" in e.get("error", "") and e["level"] == "error" for e in errors), followed
    finally:
        write_config(box, good)
    state = unit_state(box)
    assert (state["ActiveState"], state["MainPID"]) == ("active", pid), state


@boot
def test_watchdog_restarts_a_stopped_daemon(box: Container) -> None:
    """A daemon that stops pinging (SIGSTOP) is killed by the watchdog and restarted.

    A runtime drop-in shortens WatchdogSec from the unit's 60 s to 3 s so the
    test does not wait a minute; the mechanism is the unit's own.
    """
    box.sh("mkdir -p /run/systemd/system/dedupd.service.d && printf '[Service]\\nWatchdogSec=3s\\n' "
           "> /run/systemd/system/dedupd.service.d/50-test-watchdog.conf && systemctl daemon-reload "
           "&& systemctl restart dedupd")
    try:
        before = running(box)
        since = time.time()
        box.sh("systemctl kill --kill-who=main --signal=SIGSTOP dedupd")
        after = wait_for(
            lambda: (s := unit_state(box))["MainPID"] not in ("0", before["MainPID"])
            and s["ActiveState"] == "active" and s,
            "a new main process after the watchdog timeout",
        )
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
        journal = box.sh(f"journalctl -u dedupd -o cat --no-pager --since=@{int(since)}").stdout
        assert "Watchdog timeout" in journal, journal
    finally:
        box.sh("rm -f /run/systemd/system/dedupd.service.d/50-test-watchdog.conf && systemctl daemon-reload "
               "&& systemctl restart dedupd")


@boot
@pytest.mark.parametrize(
    ("case", "edit", "named"),
    [
        ("unknown key", lambda text: text + "no_such_key: 1\n", "no_such_key"),
        (
            "quarantine outside the sandbox's writable paths",
            lambda text: re.sub(r"quarantine_dir: .*", 'quarantine_dir: "/srv/elsewhere"', text),
            "/srv/elsewhere",
        ),
    ],
    ids=["unknown-key", "unwritable-quarantine"],
)
def test_bad_config_exits_78_and_is_not_restarted(
    box: Container, case: str, edit: Callable[[str], str], named: str
) -> None:
    """A config the daemon cannot run with fails the start with 78, naming the culprit; no restart follows.

    systemd puts a unit it will restart into "activating (auto-restart)" at once;
    "failed" right after the exit means RestartPreventExitStatus=78 held.
    """
    before = running(box)
    good = box.path(CONFIG).read_text()
    box.sh("install -d -o dedupd -g dedupd /srv/elsewhere")
    try:
        write_config(box, edit(good))
        since = time.time()
        assert box.sh("systemctl restart dedupd", check=False).returncode != 0
        state = unit_state(box)
        assert (state["ActiveState"], state["SubState"], state["Result"], state["ExecMainStatus"]) == (
            "failed", "failed", "exit-code", "78"), state
        assert state["NRestarts"] == before["NRestarts"], (before, state)
        error = wait_event(box, "dedupd_error", since)
        assert named in error["error"] and error["exit_code"] == 78, error
    finally:
        write_config(box, good)
        box.sh("rmdir /srv/elsewhere")
    running(box)


@boot
def test_missing_root_exits_78_not_a_namespace_error(box: Container) -> None:
    """A root that is gone (an unmounted share) is dedupd's exit 78 naming it, not systemd's 226/NAMESPACE.

    The drop-in lists it as ReadWritePaths=-/srv/photos: the "-" lets the
    sandbox be built without it, so dedupd itself can say what is wrong.
    """
    before = running(box)
    box.sh("mv /srv/photos /srv/photos.away")
    try:
        since = time.time()
        assert box.sh("systemctl restart dedupd", check=False).returncode != 0
        state = unit_state(box)
        assert (state["ActiveState"], state["ExecMainStatus"], state["NRestarts"]) == (
            "failed", "78", before["NRestarts"]), state
        error = wait_event(box, "dedupd_error", since)
        assert "/srv/photos" in error["error"] and error["exit_code"] == 78, error
    finally:
        box.sh("mv /srv/photos.away /srv/photos")
    running(box)


@boot
def test_clean_stop(box: Container) -> None:
    """systemctl stop ends the daemon with exit 0 after it says goodbye; start brings it back."""
    running(box)
    since = time.time()
    box.sh(STOP)
    state = unit_state(box)
    assert (state["ActiveState"], state["Result"], state["ExecMainStatus"]) == ("inactive", "success", "0"), state
    assert wait_event(box, "daemon_stopped", since)
    box.sh(START)
    assert running(box)["ActiveState"] == "active"


@boot
def test_template_instance_and_a_missing_config(box: Container) -> None:
    """install.sh --instance runs a second library with its own quarantine and store; an instance
    without a config fails at once and leaves no state directory behind."""
    box.sh(INSTALL_INSTANCE, cwd=SRC_IN, env=PIP_OFFLINE, timeout=box.budget.left(120))
    running(box, "dedupd@family")
    assert box.sh("stat -c '%U %a' /srv/family-quarantine").stdout.split() == ["dedupd", "750"]
    assert box.path("/var/lib/dedupd/family/dedupd.db").exists()
    box.path("/root/pic.jpg").write_bytes(picture(8))
    box.sh("cp /root/pic.jpg /srv/family/a.jpg && cp /root/pic.jpg /srv/family/b.jpg")
    wait_for(lambda: [p for p in box.path("/srv/family-quarantine").rglob("*") if p.is_file()],
             "a file in the family quarantine")
    failed = box.sh("systemctl start dedupd@nosuch", check=False)
    assert failed.returncode != 0, failed
    assert "Assertion failed" in box.sh("systemctl status dedupd@nosuch", check=False).stdout
    assert not box.path("/var/lib/dedupd/nosuch").exists()
    running(box)  # the first library is untouched


@boot
def test_no_permission_or_filter_errors_under_the_hardening(box: Container) -> None:
    """Nothing dedupd did under the sandbox was refused by the system call filter or the file system."""
    journal = box.sh("journalctl -u dedupd -u 'dedupd@*' -o cat --no-pager").stdout
    for bad in ("SIGSYS", "Operation not permitted:", "Permission denied", "Read-only file system", "Traceback"):
        assert bad not in journal, (bad, journal)



def doc_block(heading: str) -> str:
    """The first ```sh block after ``heading`` in docs/service.md, as written there."""
    doc = (REPO / "docs" / "service.md").read_text(encoding="utf-8")
    section = doc[doc.index(f"\n{heading}\n"):]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


@boot
def test_uninstall_as_documented_keeps_the_data(box: Container) -> None:
    """The uninstall block of docs/service.md, run as written, removes the service and keeps the data.

    Last in this module: it takes the installation away.
    """
    box.sh("systemctl disable --now dedupd@family")
    box.sh("set -e\n" + doc_block("## Uninstall"))
    assert "could not be found" in box.sh(STATUS, check=False).stderr
    assert not box.path("/opt/dedupd").exists() and not box.path("/usr/local/bin/dedupd").is_symlink()
    assert not list(box.path("/etc/systemd/system").glob("dedupd*"))
    assert [p.name for p in box.path("/srv/dedupd-quarantine").rglob("*.jpg")] == ["second.jpg"]
    assert box.path("/var/lib/dedupd/dedupd.db").exists() and box.path(CONFIG).exists()
