"""Process wiring: build every component from the config and run them in one process.

Threads: the web server (Waitress, main thread), the SMTP listener, the outbound queue
scheduler and workers, and the sweeper (rate-limit state, store compaction).
"""

import collections
import fcntl
import gc
import os
import signal
import sys
import threading
import time

from . import safeio
from .accounts import Accounts
from .blocklist import Blocklist
from .delivery.queue import DeliveryQueue
from .delivery.signer import Signer
from .dnsresolver import Resolver
from .log import log
from .mailbox import Mailbox
from .ratelimit import RateLimiter, Sweeper
from .store import Store

SWEEP_INTERVAL_SECONDS = 60.0
EVENT_LOG_SIZE = 500
# Young-generation collections every 20,000 net container allocations instead of 700: a
# received message allocates a few hundred short-lived dicts and lists, nearly all freed by
# reference counting, so frequent passes of the cycle collector found little and cost time.
GC_THRESHOLDS = (20_000, 20, 100)


class EventLog:
    """Recent mail events for the admin mail page (memory only, bounded)."""

    def __init__(self, size: int = EVENT_LOG_SIZE):
        self._events = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def __call__(self, kind: str, fields: dict) -> None:
        with self._lock:
            self._events.append(dict(fields, kind=kind, at=time.time()))

    def recent(self) -> list:
        with self._lock:
            return list(reversed(self._events))


class App:
    """Every component, built once; the web app and the SMTP server both get theirs from here."""

    def __init__(self, config):
        self.config = config
        safeio.ensure_dir(config.home)
        self.store = Store(config.home)
        self.accounts = Accounts(self.store)
        self.mailbox = Mailbox(self.store, config, self.accounts)
        self.blocklist = Blocklist(config.home)
        self.resolver = Resolver(config.dns_server, config.dns_timeout_seconds)
        self.signer = Signer(config)
        self.events = EventLog()
        self.connection_limiter = RateLimiter(config.rate_connections_per_hour, 3600)
        self.message_limiter = RateLimiter(config.rate_messages_per_day, 86400)
        self.queue = DeliveryQueue(config, self.store, self.mailbox, self.resolver, self.signer, self.events)
        self.smtp_server = None
        self.started_at = time.time()


def _claim_home(home: str):
    """One server per MU_HOME: a second one would deliver the queue twice."""
    fd = safeio.open_lock_file(os.path.join(home, ".server.lock"))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _keep_to_cpus(count: int) -> None:
    """Run every thread of this process on `count` cores (0: any), before any thread starts
    so all of them inherit it. Why one core by default: docs/configuration.md, MU_CPUS."""
    if not count or not hasattr(os, "sched_setaffinity"):
        return
    try:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) > count:
            os.sched_setaffinity(0, allowed[-count:])
    except OSError as exc:   # a sandbox may forbid it; mu runs the same, a little slower
        log("mail", f"cannot keep to {count} CPU cores ({exc.strerror or exc}); using all")


def _settle_heap() -> None:
    """Keep the cycle collector off the store's long-lived state.

    The loaded store is hundreds of thousands of plain dicts and lists with no reference
    cycles; every full collection walked all of them (about 7% of receive CPU, and pauses
    that grow with the store). Freezing them after start-up leaves them to reference
    counting, which frees a deleted message's objects at once.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(config, host: str, port: int) -> int:
    import waitress

    from .smtp.policy import ReceivePolicy
    from .smtp.server import SMTPServer
    from .web import make_web_app

    _keep_to_cpus(config.cpus)
    app = App(config)
    if _claim_home(config.home) is None:
        print(f"mu: error: another mu server is already running with MU_HOME={config.home}", file=sys.stderr)
        return 2
    _settle_heap()
    app.signer.log_status()
    policy = ReceivePolicy(config, app.mailbox, app.blocklist, app.connection_limiter,
                           app.message_limiter, app.resolver, events=app.events)
    try:
        app.smtp_server = SMTPServer(config, policy)
    except OSError as exc:
        print(f"mu: error: cannot listen for SMTP on port {config.smtp_port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    smtp_thread = threading.Thread(target=app.smtp_server.serve_forever, name="smtp", daemon=True)
    smtp_thread.start()
    log("smtp", f"Starting SMTP server (receive only) on {config.smtp_host}:{app.smtp_server.port}")
    imap_servers = []
    if getattr(app, "mailstore", None) is not None:   # the mailbox store IMAP serves
        from .imap import server as imap_server
        try:
            imap_servers = imap_server.start(config, app.accounts, app.mailstore)
        except OSError as exc:
            print(f"mu: error: cannot listen for IMAP: {exc.strerror or exc}", file=sys.stderr)
            return 1
    app.queue.start()
    sweeper = Sweeper([app.connection_limiter, app.message_limiter], SWEEP_INTERVAL_SECONDS,
                      chores=[app.store.maybe_compact, app.store.maybe_reclaim])
    sweeper.start()

    wsgi = make_web_app(app)
    try:
        web = waitress.create_server(wsgi, host=host or "0.0.0.0", port=port, threads=16, ident="mu",
                                     max_request_body_size=config.max_message_bytes * 3 + 1024 * 1024,
                                     channel_timeout=60, connection_limit=500)
    except OSError as exc:
        print(f"mu: error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    bound_port = web.effective_port if hasattr(web, "effective_port") else port

    def stop(signum, _frame):
        log("mail", "shutting down: finishing open SMTP sessions and deliveries")
        raise SystemExit(0)

    def reload(signum, _frame):
        count = len(app.blocklist.entries())
        log("mail", f"reloaded: blocklist has {count} entries")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    log("web", f"Listening on http://{host or '0.0.0.0'}:{bound_port}")
    try:
        web.run()
    except SystemExit:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        web.close()
        for server in imap_servers:
            server.shutdown()
        still_open = app.smtp_server.drain(timeout=config.smtp_timeout_seconds + 5)
        if still_open:
            log("smtp", f"closing {still_open} idle sessions")
        app.queue.stop(timeout=config.outbound_timeout_seconds)
        sweeper.stopping.set()
        web.task_dispatcher.shutdown(timeout=5)
        log("mail", "stopped")
    return 0
