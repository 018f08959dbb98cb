"""A watcher process that ends the server when its shutdown overruns the deadline.

SIGTERM normally stops mu from Python (`app.serve`: stop accepting, let sessions and
deliveries finish, exit). But a Python signal handler runs only when the main thread gets
the interpreter lock, and a thread inside one long C call (a regular expression over a
hostile message, say) keeps it: then no Python code runs at all, and no shutdown either.
The kernel still delivers the signal, and CPython's C-level handler writes the signal's
number to the wakeup fd (`signal.set_wakeup_fd`) without taking the lock. That fd is a
pipe to the watcher, a second small interpreter started with the server, which gives the
server `grace` seconds from the first SIGTERM or SIGINT, then has it write every thread's
stack to stderr (faulthandler, also free of the lock) and kills it. The watcher exits as
soon as the pipe closes, which is when the server has exited, however it did.
"""

import faulthandler
import os
import signal
import subprocess
import sys

from .log import log

STACKS_SIGNAL = signal.SIGUSR2

# Run by a fresh `python -I -S` (about 3.5 MiB of its own memory; a fork of the server
# would keep a private copy of everything the server changes after it): argv is the
# server's pid, the grace in seconds, and the signals that start the countdown and the
# one that asks for the stacks.
_WATCHER = r"""
import os, select, signal, sys, time
server, grace = int(sys.argv[1]), float(sys.argv[2])
stop_signals, stacks_signal = set(map(int, sys.argv[3].split(","))), int(sys.argv[4])
# systemd signals the whole control group, a terminal the whole process group: the
# watcher outlives those signals to do its job.
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, stacks_signal):
    signal.signal(signum, signal.SIG_IGN)

def server_exits(deadline):
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if select.select([0], [], [], remaining)[0] and not os.read(0, 64):
            return True

while True:
    data = os.read(0, 64)
    if not data:
        sys.exit(0)   # the server exited
    if stop_signals & set(data):
        break
if server_exits(time.monotonic() + grace) or os.getppid() != server:
    sys.exit(0)
os.write(2, f"mail: shutdown took longer than {grace:g} s; stopping the process\n".encode())
os.kill(server, stacks_signal)
if not server_exits(time.monotonic() + 1.0) and os.getppid() == server:
    os.kill(server, signal.SIGKILL)
"""


def start(grace_seconds: float):
    """Start the watcher and route signals to it; call it from the main thread. Returns
    the watcher's Popen, or None where it cannot run (mu then works without it)."""
    read_end, write_end = os.pipe()
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHER, str(os.getpid()), repr(grace_seconds),
             f"{signal.SIGTERM:d},{signal.SIGINT:d}", str(int(STACKS_SIGNAL))],
            stdin=read_end, stdout=subprocess.DEVNULL, close_fds=True)
    except OSError as exc:
        os.close(write_end)
        log("mail", f"shutdown watcher not started ({exc.strerror or exc}): a stuck thread could delay SIGTERM")
        return None
    finally:
        os.close(read_end)
    os.set_blocking(write_end, False)   # set_wakeup_fd requires it: a signal never blocks
    faulthandler.register(STACKS_SIGNAL, all_threads=True)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    return watcher
