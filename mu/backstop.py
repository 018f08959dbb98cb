"""A watcher process that ends the server when its shutdown overruns the deadline.

SIGTERM normally stops mu from Python (`app.serve`: stop accepting, let sessions and
deliveries finish, exit). But a Python signal handler runs only when the main thread gets
the interpreter lock, and a thread inside one long C call (a regular expression over a
hostile message, say) keeps it: then no Python code runs at all, and no shutdown either.
The kernel still delivers the signal, and CPython's C-level handler writes the signal's
number to the wakeup fd (`signal.set_wakeup_fd`) without taking the lock. That fd is a
pipe to this watcher, forked at start-up, which gives the server `grace` seconds from the
first SIGTERM or SIGINT, then has it write every thread's stack to stderr (faulthandler,
also free of the lock) and kills it. The watcher exits as soon as the pipe closes, which
is when the server has exited, however it did.
"""

import faulthandler
import os
import select
import signal
import time

_STOP_SIGNALS = bytes([signal.SIGTERM, signal.SIGINT])
_STACKS_SIGNAL = signal.SIGUSR2
_STACKS_SECONDS = 1.0   # time for faulthandler to write the stacks before the kill


def start(grace_seconds: float) -> bool:
    """Fork the watcher. Call it before any thread starts or any file is opened: the
    child keeps nothing of the server but the pipe (and stderr, to say why it acts)."""
    if not hasattr(os, "fork"):
        return False
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the watcher
        try:
            os.close(write_end)
            _watch(read_end, os.getppid(), grace_seconds)
        finally:
            os._exit(0)
    os.close(read_end)
    os.set_blocking(write_end, False)   # set_wakeup_fd requires it: a signal never blocks
    faulthandler.register(_STACKS_SIGNAL, all_threads=True)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    return True


def _watch(pipe: int, server: int, grace_seconds: float) -> None:
    # systemd signals the whole control group and a terminal the whole process group:
    # the watcher outlives those signals to do its job.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, _STACKS_SIGNAL):
        signal.signal(signum, signal.SIG_IGN)
    while True:
        data = os.read(pipe, 64)
        if not data:
            return   # the server exited
        if any(b in _STOP_SIGNALS for b in data):
            break
    if _server_exits(pipe, time.monotonic() + grace_seconds) or os.getppid() != server:
        return
    os.write(2, f"mail: shutdown took longer than {grace_seconds:g} s; stopping the process\n".encode())
    os.kill(server, _STACKS_SIGNAL)
    if not _server_exits(pipe, time.monotonic() + _STACKS_SECONDS) and os.getppid() == server:
        os.kill(server, signal.SIGKILL)


def _server_exits(pipe: int, deadline: float) -> bool:
    """Wait until the pipe closes (True) or `deadline` passes (False)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([pipe], [], [], remaining)
        if ready and not os.read(pipe, 64):
            return True
