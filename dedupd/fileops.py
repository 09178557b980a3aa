"""Careful file moves: never overwrite, never lose a byte.

Every move is "place a copy, verify, then remove the source": a hard link
where the filesystem allows it (instant, and the same inode), otherwise a
copy to a temporary name beside the target, fsync, SHA-256 verify, then a
no-overwrite rename into place.  The source is removed only once the
target is complete, so an interruption at any moment leaves the file at
its source, at its target, or at both (which start-up recovery settles).
"""

from __future__ import annotations

import ctypes
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


#: the longest file name most Linux filesystems allow, in bytes
NAME_MAX = 255


def temp_name(beside: Path) -> Path:
    """A private, unused-looking name in the same directory: ``.NAME.dedupd-XXXXXXXX.tmp``.

    The part taken from ``beside`` is shortened so that the whole name stays
    within NAME_MAX bytes however long the original name is.
    """
    raw = os.fsencode(beside.name)[: NAME_MAX - 30]
    return beside.with_name(f".{os.fsdecode(raw)}.dedupd-{secrets.token_hex(4)}.tmp")


# --- renameat2 ----------------------------------------------------------------

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: ctypes.CDLL | None = None
#: errors that mean "this kernel or filesystem has no such rename": fall back
_NO_RENAMEAT2 = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False when the kernel or filesystem lacks it."""
    global _libc  # noqa: PLW0603 - a loaded library handle, nothing else
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(_libc, "renameat2", None)
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_RENAMEAT2:
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically; False when the filesystem cannot (nothing moved)."""
    return _renameat2(a, b, RENAME_EXCHANGE)


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
    """Rename that fails with FileExistsError rather than replace ``dst``.

    ``renameat2(RENAME_NOREPLACE)`` where the filesystem has it; otherwise a
    hard link and an unlink; otherwise a check and a rename (a small window).
    """
    try:
        if _renameat2(src, dst, RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "target exists", str(dst)) from exc
        raise
    if _link(src, dst):
        os.unlink(src)
        return
    if os.path.lexists(dst):  # no hard links here: check, then rename (small window)
        raise FileExistsError(errno.EEXIST, "target exists", str(dst))
    os.rename(src, dst)


def place_copy(
    src: Path,
    dst: Path,
    sha256: str,
    on_temp: Callable[[Path], None] | None = None,
    tmp: Path | None = None,
) -> bool:
    """Make ``dst`` hold the same bytes as ``src`` without touching ``src``.

    Returns True when ``dst`` is a hard link to ``src`` (same inode), False
    when it is a verified copy.  ``dst`` must not exist.  A copy is written
    to ``tmp`` (a fresh temporary name beside ``dst`` if not given) and
    renamed into place; ``on_temp`` is told that name before a copy starts,
    so a crash can clean it up.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if _link(src, dst):
        return True
    tmp = tmp or temp_name(dst)
    if on_temp is not None:
        on_temp(tmp)
    try:
        copy_verified(src, tmp, sha256)
        rename_no_replace(tmp, dst)
        fsync_dir(dst.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return False


def link_or_copy(src: Path, dst: Path, sha256: str, *, sync: bool = True) -> bool:
    """``dst`` (a private name that must not exist) becomes a hard link to ``src``,
    or a verified copy of it; True for a link.  Nothing is left at ``dst`` on failure.

    ``sync`` False: ``dst``'s directory is not synced after a link (the caller
    syncs it once for several files); a copy's data is synced either way."""
    if _link(src, dst, sync=sync):
        return True
    try:
        copy_verified(src, dst, sha256)
    except BaseException:
        if os.path.lexists(dst):
            os.unlink(dst)
        raise
    return False


def _link(src: Path, dst: Path, *, sync: bool = True) -> bool:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "target exists", str(dst)) from exc
        if exc.errno not in _NO_LINK:
            raise
        return False
    if sync:
        fsync_dir(dst.parent)
    return True


def copy_verified(src: Path, dst: Path, sha256: str) -> None:
    """Copy ``src`` to a new file ``dst`` (never over one), fsync, keep its times, verify."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    try:
        shutil.copystat(src, dst, follow_symlinks=False)
    except OSError:
        # e.g. RestrictSUIDSGID= refuses a setuid/setgid mode: keep times
        # and the plain permission bits, which is what a photo needs
        st = os.stat(src)
        os.chmod(dst, stat_module.S_IMODE(st.st_mode) & 0o777)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    got = sha256_of(dst)
    if got != sha256:
        raise ActionError(
            f"copy of {display_path(src)} to {display_path(dst)} does not verify "
            f"(sha256 {got[:12]}..., expected {sha256[:12]}...)"
        )


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


def remove_copy(copy: Path, of: Path, sha256: str, *, sync: bool = True) -> bool:
    """Remove ``copy`` only if it is provably redundant: the same inode as ``of``, or the same bytes.

    ``sync`` False: its directory is left for the caller to sync (once for several files)."""
    if not os.path.lexists(copy):
        return True
    if same_inode(copy, of) or (is_regular(of) and is_regular(copy) and sha256_of(copy) == sha256 == sha256_of(of)):
        os.unlink(copy)
        if sync:
            fsync_dir(copy.parent)
        return True
    return False


def is_partial_copy(copy: Path, of: Path) -> bool:
    """Is ``copy`` a regular file holding a beginning of ``of`` (a copy cut short)?"""
    if not (is_regular(copy) and is_regular(of)) or os.lstat(copy).st_size > os.lstat(of).st_size:
        return False
    with open(copy, "rb") as a, open(of, "rb") as b:
        for chunk in iter(lambda: a.read(1 << 20), b""):
            if b.read(len(chunk)) != chunk:
                return False
    return True


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
