"""Log lines on stderr in the contract's `subsystem: message` form."""

import sys
import threading

_lock = threading.Lock()


def log(subsystem: str, message: str) -> None:
    line = f"{subsystem}: {message}\n"
    with _lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must never take the server down
