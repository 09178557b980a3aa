"""Careful file moves: never overwrite, never lose a byte.

Every move is "place a copy, verify, then remove the source": a hard link
where the filesystem allows it (instant, and the same inode), otherwise a
copy to a temporary name beside the target, fsync, SHA-256 verify, then a
no-overwrite rename into place.  The source is removed only once the
target is complete, so an interruption at any moment leaves the file at
its source, at its target, or at both (which start-up recovery settles).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat as stat_module
from collections.abc import Callable
from pathlib import Path

from dedupd.errors import ActionError, display_path

#: errors that mean "this filesystem cannot hard-link here": fall back to copying
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def free_name(target: Path) -> Path:
    """``target``, or ``name.1.ext``, ``name.2.ext``... whichever does not exist yet."""
    if not os.path.lexists(target):
        return target
    for n in range(1, 100_000):
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise ActionError(f"no free name for {display_path(target)}")


def temp_name(beside: Path) -> Path:
    return beside.with_name(f".{beside.name}.dedupd-{secrets.token_hex(4)}.tmp")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename that fails with FileExistsError rather than replace ``dst``."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "target exists", str(dst)) from exc
        if exc.errno not in _NO_LINK:
            raise
        if os.path.lexists(dst):  # no hard links here: check, then rename (small window)
            raise FileExistsError(errno.EEXIST, "target exists", str(dst)) from exc
        os.rename(src, dst)
        return
    os.unlink(src)


def place_copy(
    src: Path, dst: Path, sha256: str, on_temp: Callable[[Path], None] | None = None
) -> bool:
    """Make ``dst`` hold the same bytes as ``src`` without touching ``src``.

    Returns True when ``dst`` is a hard link to ``src`` (same inode), False
    when it is a verified copy.  ``dst`` must not exist.  ``on_temp`` is told
    the temporary name before a copy starts, so a crash can clean it up.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
        fsync_dir(dst.parent)
        return True
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "target exists", str(dst)) from exc
        if exc.errno not in _NO_LINK:
            raise
    tmp = temp_name(dst)
    if on_temp is not None:
        on_temp(tmp)
    try:
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        try:
            shutil.copystat(src, tmp, follow_symlinks=False)
        except OSError:
            # e.g. RestrictSUIDSGID= refuses a setuid/setgid mode: keep times
            # and the plain permission bits, which is what a photo needs
            st = os.stat(src)
            os.chmod(tmp, stat_module.S_IMODE(st.st_mode) & 0o777)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        got = sha256_of(tmp)
        if got != sha256:
            raise ActionError(
                f"copy of {display_path(src)} to {display_path(tmp)} does not verify "
                f"(sha256 {got[:12]}..., expected {sha256[:12]}...)"
            )
        rename_no_replace(tmp, dst)
        fsync_dir(dst.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return False


def same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def is_regular(path: Path) -> bool:
    try:
        return stat_module.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_our_symlink(path: Path, target: Path | None) -> bool:
    try:
        return target is not None and os.path.islink(path) and Path(os.readlink(path)) == target
    except OSError:
        return False


def remove_copy(copy: Path, of: Path, sha256: str) -> bool:
    """Remove ``copy`` only if it is provably redundant: the same inode as ``of``, or the same bytes."""
    if not os.path.lexists(copy):
        return True
    if same_inode(copy, of) or (is_regular(of) and is_regular(copy) and sha256_of(copy) == sha256 == sha256_of(of)):
        os.unlink(copy)
        fsync_dir(copy.parent)
        return True
    return False


def open_for_writing(path: Path) -> bool:
    """Does some process hold ``path`` open for writing right now?

    A read lease cannot be taken on a file that is open for writing anywhere
    (EAGAIN). Leases need the file's owner or CAP_LEASE; when they cannot be
    taken at all, the answer is "not known to be", and the settle rules stand.
    """
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)
