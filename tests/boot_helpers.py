"""A minimal Debian 12 booted under systemd-nspawn, with commands run inside it.

The root file system is made once with debootstrap and kept in a cache
directory (``DEDUPD_BOOTTEST_CACHE``, default /var/cache/dedupd-boottest), keyed
by a hash of what goes into it; each test session boots a private overlay of
it, so the cached root is never changed.  The Python dependencies are built as
wheels on the host (cached the same way) and bind-mounted read-only into the
container, where pip installs them with ``PIP_NO_INDEX``: the container reaches
Debian's mirror (for apt-get) and nothing else is needed.

This machine's PID 1 need not be systemd: the container is started with
``--register=no --keep-unit`` (no machined, no scope unit) and commands run
inside with ``nsenter`` into the namespaces of the container's PID 1.  Every
step has a timeout taken from one overall budget, so nothing here can hang.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DEDUPD_BOOTTEST_CACHE", "/var/cache/dedupd-boottest"))

SUITE = "bookworm"  # Debian 12
MIRROR = "http://deb.debian.org/debian"
#: what the image has besides debootstrap's minbase: systemd as init, and jq for
#: the README's journal command.  Not python3: the install script must add it.
PACKAGES = ("systemd", "systemd-sysv", "jq")
#: downloaded into the image's apt cache (not installed), so that the install
#: script's `apt-get install python3-venv` runs for real without fetching them
PREFETCH = ("python3-venv",)
#: bump to rebuild every cached root after a change to how it is made
RECIPE = 1
#: a cached root or wheel set of another key unused this long is removed
STALE = 2 * 24 * 3600

#: where the checkout and the wheels are inside the container
SRC_IN = Path("/usr/local/src/dedupd")
WHEELS_IN = Path("/var/cache/dedupd-wheels")
PATH_IN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: not copied into the container: build output, caches, the developer's venv
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "__pycache__", "*.egg-info", "build", "dist",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", "*.pyc",
)


class BootError(AssertionError):
    """A step of building, booting or driving the container failed."""


class Budget:
    """One deadline for a sequence of steps; each step gets at most what is left."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 1:
            raise BootError("the boot test ran out of its time budget")
        return min(cap, remaining)


def run(argv: list[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a host command with a timeout; raise BootError with its output if it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        raise BootError(f"timed out after {timeout:.0f}s: {' '.join(argv)}\n{_text(exc.stdout)}{_text(exc.stderr)}") from exc
    if done.returncode != 0:
        raise BootError(f"exit {done.returncode}: {' '.join(argv)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done  # type: ignore[no-any-return]


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock in the cache: two test runs never build the same thing at once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached_root(budget: Budget) -> Path:
    """The cached Debian 12 root, built with debootstrap if it is not there yet."""
    key = _key(RECIPE, SUITE, MIRROR, PACKAGES, PREFETCH)
    final = CACHE / f"root-{key}"
    with _locked("root"):
        if not (final / "etc" / "os-release").exists():
            _debootstrap(CACHE / f"root-{key}.partial", final, budget)
        _forget_stale("root-*", final)
    return final


def _debootstrap(work: Path, final: Path, budget: Budget) -> None:
    """Build the root in ``work`` and rename it to ``final`` once it is complete."""
    if work.exists():
        shutil.rmtree(work)
    run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(work), MIRROR],
        timeout=budget.left(240),
    )
    # Fill the apt cache: lists and the .debs of PREFETCH, not installed.
    run(
        ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-D", str(work), "sh", "-c",
         "apt-get update -qq && apt-get install -y -qq --download-only " + " ".join(PREFETCH)],
        timeout=budget.left(120),
        env={"PATH": PATH_IN, "LANG": "C.UTF-8"},
    )
    (work / "etc" / "machine-id").write_text("")  # a new one at each boot
    work.rename(final)


def dependencies() -> list[str]:
    """The project's run-time requirements, and what building it from source needs."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return [*meta["project"]["dependencies"], *meta["build-system"]["requires"], "wheel"]


def cached_wheels(budget: Budget) -> Path:
    """Wheels of every dependency for this Python, built on the host with its pip settings."""
    deps = dependencies()
    key = _key(RECIPE, deps, sys.version_info[:2])
    final = CACHE / f"wheels-{key}"
    with _locked("wheels"):
        if not final.is_dir():
            work = CACHE / f"wheels-{key}.partial"
            shutil.rmtree(work, ignore_errors=True)
            run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(work), *deps],
                timeout=budget.left(180),
            )
            work.rename(final)
        _forget_stale("wheels-*", final)
    return final


def _forget_stale(pattern: str, current: Path) -> None:
    """Mark ``current`` as used now, and remove entries of other keys unused for STALE seconds
    (not at once: another checkout with other dependencies may be booting from one)."""
    os.utime(current)
    for old in CACHE.glob(pattern):
        if old.is_dir() and old != current and not old.name.endswith(".partial"):
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > STALE:
                    shutil.rmtree(old, ignore_errors=True)


class Container:
    """A booted overlay of the cached root: ``sh`` commands inside, files from the host."""

    def __init__(self, workdir: Path, lower: Path, wheels: Path, budget: Budget) -> None:
        self.workdir = workdir
        self.budget = budget
        self.root = workdir / "root"
        self.name = f"dedupd-boot-{uuid.uuid4().hex[:8]}"
        self.console = workdir / "nspawn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        for d in ("upper", "work", "root"):
            (workdir / d).mkdir()
        run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={workdir / 'upper'},workdir={workdir / 'work'}", str(self.root)],
            timeout=30,
        )
        self.mounted = True
        self.wheels = wheels

    # --- life ---------------------------------------------------------------------

    def boot(self) -> None:
        """Start systemd as PID 1 of the container and wait until the boot is done."""
        shutil.copytree(REPO, self.root / SRC_IN.relative_to("/"), ignore=IGNORED, symlinks=True)
        with open(self.console, "wb") as out:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "-D", str(self.root), "--boot", "--register=no",
                 "--keep-unit", f"--machine={self.name}", "--console=passive", "--link-journal=no",
                 f"--bind-ro={self.wheels}:{WHEELS_IN}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_poweroff_with_parent,
            )
        self.pid1 = self._wait_for_init(self.budget.left(30))
        state = self.sh("systemctl is-system-running --wait", timeout=self.budget.left(90), check=False)
        if state.stdout.strip() not in ("running", "degraded"):
            raise BootError(f"the container did not boot: {state.stdout}{state.stderr}\n{self.console_text()}")

    def _wait_for_init(self, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BootError(f"systemd-nspawn exited with {self.proc.returncode}:\n{self.console_text()}")
            for child in _children(self.proc.pid):
                with contextlib.suppress(OSError):
                    # systemd, and listening: its private socket is what systemctl talks to
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd" and Path(
                        f"/proc/{child}/root/run/systemd/private"
                    ).exists():
                        return child
            time.sleep(0.05)
        raise BootError(f"no systemd in the container after {timeout:.0f}s:\n{self.console_text()}")

    def console_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.console.read_text(errors="replace")[-3000:]
        return ""

    def close(self) -> None:
        """Power the container off (SIGTERM to nspawn: a clean shutdown), kill it if that hangs, unmount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid1, signal.SIGKILL)  # the whole PID namespace goes with it
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self.mounted:
            if subprocess.run(["umount", str(self.root)], capture_output=True, timeout=30, check=False).returncode:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True, timeout=30, check=False)
            self.mounted = False
            for d in ("upper", "work"):  # what the run wrote: a venv and more, hundreds of MB
                shutil.rmtree(self.workdir / d, ignore_errors=True)

    # --- inside -------------------------------------------------------------------

    def sh(
        self, command: str, *, timeout: float = 60, check: bool = True, cwd: Path = Path("/"),
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` with /bin/sh as root inside the container, with a clean environment."""
        variables = {"PATH": PATH_IN, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb", **(env or {})}
        argv = [
            "nsenter", f"--target={self.pid1}", "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup",
            "--root", "--wd", "--", "env", "-i", *(f"{k}={v}" for k, v in variables.items()),
            "sh", "-c", f"cd {shlex.quote(str(cwd))} && {command}",
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise BootError(f"timed out after {timeout:.0f}s in the container: {command}\n"
                            f"{_text(exc.stdout)}{_text(exc.stderr)}") from exc
        if check and done.returncode != 0:
            raise BootError(f"exit {done.returncode} in the container: {command}\n{done.stdout}{done.stderr}")
        return done

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` properties of a unit."""
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def path(self, inside: str | Path) -> Path:
        """Where a path of the container is on the host (through the overlay)."""
        return self.root / Path(inside).relative_to("/")


def _poweroff_with_parent() -> None:
    """In the nspawn child: get SIGTERM (a clean power-off) if the test process dies first."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def missing_tools() -> list[str]:
    return [t for t in ("debootstrap", "systemd-nspawn", "nsenter", "mount") if shutil.which(t) is None]


def cannot_boot_reason() -> str | None:
    """Why containers cannot be booted here at all (None if they can), decided before any work."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, overlay mounts and systemd-nspawn)"
    caps = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("CapEff:")), 16)
    needed = {"CAP_SYS_ADMIN": 21, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_SETUID": 7}
    lacking = [name for name, bit in needed.items() if not caps & (1 << bit)]
    if lacking:
        return f"lacks the capabilities systemd-nspawn needs: {', '.join(lacking)}"
    if not Path("/proc/filesystems").read_text().count("overlay"):
        return "the kernel has no overlay file system"
    return None
