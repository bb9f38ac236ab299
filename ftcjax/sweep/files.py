"""Safe file handling inside a run directory: no link is followed, nothing is group/world-writable.

A run directory may sit on a shared file system where others can plant files, and its contents are
trusted later (records are analysed, cached executables are loaded). So every file the store creates
is opened with ``O_NOFOLLOW`` (a planted symbolic link is refused, never written through), new files
get mode 0600 and new directories 0700 whatever the umask, and temporary files get unpredictable names
created with ``O_EXCL``. Temporaries are held under an ``flock`` while written, which lets a later run
tell a crashed writer's leftovers (removed at start) from a live writer's file (left alone).

Errors are :class:`~ftcjax._src.errors.FTCEnvironmentError` naming the path, never a raw traceback.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Iterator

from ftcjax._src.errors import FTCEnvironmentError

__all__ = ["FILE_MODE", "DIR_MODE", "ensure_dir", "open_append", "atomic_write_bytes", "read_regular",
           "is_regular", "clean_stale_temporaries", "fsync_dir", "TEMP_SUFFIX", "try_lock", "describe", "write_all",
           "locked_file"]

FILE_MODE = 0o600
DIR_MODE = 0o700
TEMP_SUFFIX = ".tmp"
# A temporary younger than this may belong to a writer that has created it but not yet locked it.
_STALE_AFTER_S = 5.0


def describe(e: OSError) -> str:
    """``strerror`` in words, with the errno name for the cases people search for (ENOSPC, EROFS)."""
    name = errno.errorcode.get(e.errno or 0, "")
    text = e.strerror or str(e)
    return f"{text} ({name})" if name else text


def _env_error(path: Path | str, what: str, e: OSError) -> FTCEnvironmentError:
    return FTCEnvironmentError(f"{path}: cannot {what}: {describe(e)}")


def fsync_dir(path: Path) -> None:
    """Make new directory entries durable (best effort: some file systems refuse fsync on dirs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_dir(path: Path, *, parents: bool = False) -> Path:
    """Create ``path`` as a 0700 directory (or check an existing one): a link or a file is refused.

    ``parents`` creates missing parents too (with the user's umask: they are not ours to restrict).
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if parents and not path.parent.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _env_error(path.parent, "create the directory", e) from None
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass  # another writer made it meanwhile: check it below
        except OSError as e:
            raise _env_error(path, "create the directory", e) from None
        st = os.lstat(path)
    except OSError as e:
        raise _env_error(path, "inspect", e) from None
    if stat.S_ISLNK(st.st_mode):
        raise FTCEnvironmentError(f"{path}: is a symbolic link inside the run directory; refusing to "
                                  "follow it (remove the link)")
    if not stat.S_ISDIR(st.st_mode):
        raise FTCEnvironmentError(f"{path}: exists and is not a directory")
    return path


def is_regular(path: Path) -> bool:
    """True for a regular file that is not a symbolic link."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def open_append(path: Path) -> int:
    """Open (creating 0600) ``path`` for appending without following a link; returns the fd."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FTCEnvironmentError(f"{path}: is a symbolic link; refusing to write through it "
                                      "(remove the link)") from None
        raise _env_error(path, "open for appending", e) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FTCEnvironmentError(f"{path}: is not a regular file; refusing to write to it")
    return fd


def try_lock(fd: int, kind: int = fcntl.LOCK_EX) -> bool | None:
    """Non-blocking ``flock``: True when taken, False when another process holds it, None when the
    file system has no locks (some network mounts)."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            return None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename; a link is replaced, not
    followed). The temporary has an unpredictable name, is created with ``O_EXCL`` and mode 0600."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except OSError as e:
        raise _env_error(path, "write (creating its temporary file)", e) from None
    try:
        try:
            try_lock(fd)  # marks the temporary as live for clean_stale_temporaries
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _env_error(path, "write", e) from None
    fsync_dir(path.parent)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write is not an error on its own)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_regular(path: Path, *, limit: int | None = None, what: str = "file") -> bytes:
    """The bytes of a regular file (no link, FIFO or device; at most ``limit`` bytes).

    Opened with ``O_NONBLOCK`` so a FIFO cannot block us before the type check.

    Raises:
      FileNotFoundError: the file does not exist (callers say what that means).
      FTCEnvironmentError: a link, not a regular file, too large, or unreadable.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FTCEnvironmentError(f"{path}: the {what} is a symbolic link; refusing to follow it") from None
        raise _env_error(path, f"read the {what}", e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FTCEnvironmentError(f"{path}: the {what} is not a regular file")
        if limit is not None and st.st_size > limit:
            raise FTCEnvironmentError(f"{path}: the {what} has {st.st_size} bytes, more than the "
                                      f"limit of {limit}")
        chunks = []
        total = 0
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if limit is not None and total > limit:
                raise FTCEnvironmentError(f"{path}: the {what} grew past the limit of {limit} bytes")
        return b"".join(chunks)
    except OSError as e:
        raise _env_error(path, f"read the {what}", e) from None
    finally:
        os.close(fd)


def clean_stale_temporaries(directory: Path) -> list[Path]:
    """Remove ``.*.tmp`` files left by crashed writers: unlocked and older than a few seconds.

    A live writer holds an ``flock`` on its temporary while writing it, so it is never removed.
    Best effort: a file we cannot remove (read-only directory) is left. Returns the removed paths.
    """
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
            continue
        p = Path(directory) / name
        try:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
                os.unlink(p)  # nothing of ours is a link: a planted one goes
                removed.append(p)
                continue
            if now - st.st_mtime < _STALE_AFTER_S:
                continue
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if try_lock(fd) is False:
                    continue  # a live writer
                os.unlink(p)
                removed.append(p)
            finally:
                os.close(fd)
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def locked_file(path: Path, kind: int = fcntl.LOCK_EX) -> Iterator[int | None]:
    """Hold a blocking ``flock`` of ``kind`` on ``path`` (created 0600); yields the fd."""
    fd = open_append(path)
    try:
        try:
            fcntl.flock(fd, kind)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                raise _env_error(path, "lock", e) from None
        yield fd
    finally:
        os.close(fd)
