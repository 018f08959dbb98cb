"""Log lines on stderr in the contract's `subsystem: message` form.

Under systemd the journal stamps each line itself; anywhere else (a terminal, a file,
a pipe to another supervisor) the line starts with the local time in RFC 3339 form,
`2026-12-01T21:40:03+00:00 smtp: Starting SMTP server ...`.
"""

import datetime
import os
import sys
import threading

_lock = threading.Lock()
_stamped = None   # decided at the first line: whether stderr is something other than the journal


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM=DEVICE:INODE for a service whose stderr is the journal
    (systemd.exec(5)); it is inherited, so the descriptor itself must still match."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return bool(inode) and (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


def _prefix() -> str:
    global _stamped
    if _stamped is None:
        _stamped = not stderr_is_journal()
    if not _stamped:
        return ""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds") + " "


def log(subsystem: str, message: str) -> None:
    with _lock:
        line = f"{_prefix()}{subsystem}: {message}\n"
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must never take the server down
