"""Durable file writes: atomic replace, fsync of file and folder, private modes, flock.

Every byte mu writes to disk goes through here, so the durability rules live in one place.
"""

import contextlib
import fcntl
import json
import os

FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_dir(path: str) -> str:
    """Create `path` (and parents) 0700; tighten the mode of an existing one."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    if os.stat(path).st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def sync_appended(fd: int) -> None:
    """Make bytes appended to `fd` durable. fdatasync suffices: it also flushes the file
    size a reader needs to find them (fdatasync(2)), and skips the timestamps fsync adds."""
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


def fsync_dir(path: str) -> None:
    """Make a create/rename inside `path` durable (POSIX leaves it to the folder's fsync)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` so a crash at any instant leaves the old or the new file
    (`durable=False`: derived data, where the old one after a crash is as good).

    The temporary file is in the same folder because rename(2) is only atomic
    within one filesystem.
    """
    folder = os.path.dirname(path) or "."
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(folder)


def json_bytes(value) -> bytes:
    """Compact JSON in UTF-8; text holding lone surrogates (bytes that were not UTF-8, kept
    by surrogateescape) is written with \\u escapes instead, which read back the same."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def write_json_atomic(path: str, value) -> None:
    write_atomic(path, json_bytes(value))


def replace_with_empty(path: str) -> None:
    """Replace `path` with an empty file, durably (a journal folded into a new snapshot)."""
    fresh = path + ".new"
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(fresh, path)
    fsync_dir(os.path.dirname(path) or ".")


def open_append(path: str) -> int:
    """An O_APPEND descriptor on `path`, created 0600."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
    return fd


def open_lock_file(path: str) -> int:
    """A descriptor on a lock file, created 0600 holding `{}` so it too is valid JSON."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    if os.fstat(fd).st_size == 0:
        os.pwrite(fd, b"{}\n", 0)
    return fd


@contextlib.contextmanager
def flocked(path: str, exclusive: bool = True):
    """Hold flock(2) on `path` (a dedicated lock file) for the `with` body.

    A separate lock file is used because the data files are replaced by rename,
    and a lock on a replaced inode protects nothing.
    """
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock
