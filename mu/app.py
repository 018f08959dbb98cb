"""Process wiring: build every component from the config and run them in one process.

Threads: the web server (Waitress, main thread), the SMTP listener, the submission
listeners, the outbound queue scheduler and workers, the rate-limit sweeper, and the store's chores (compaction, blob
reclamation).
"""

import collections
import fcntl
import gc
import os
import signal
import sys
import threading
import time

from . import runas, safeio, tls
from .accounts import Accounts, LoginThrottle
from .blocklist import Blocklist
from .chores import StoreChores
from .delivery.queue import DeliveryQueue
from .delivery.signer import Signer
from .dnsresolver import Resolver
from .log import log
from .mailbox import Mailbox
from .mailstore import MailStore
from .ratelimit import RateLimiter, Sweeper
from .store import Store

SWEEP_INTERVAL_SECONDS = 60.0
# Open files the server needs besides one per SMTP connection: the web app's connections
# (Waitress's connection_limit), the store's files, DNS sockets.
OTHER_OPEN_FILES = 1024
# After MU_SHUTDOWN_SECONDS the backstop gives the process this much longer to exit by
# itself before it ends it (mu/backstop.py).
BACKSTOP_EXTRA_SECONDS = 5.0
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
        self.accounts = Accounts(self.store, config.domain, LoginThrottle(config.login_failures_per_address))
        self.mailstore = MailStore(self.store, config)
        self.mailbox = Mailbox(self.store, config, self.accounts, self.mailstore)
        self.blocklist = Blocklist(config.home)
        self.resolver = Resolver(config.dns_server, config.dns_timeout_seconds)
        self.signer = Signer(config)
        self.events = EventLog()
        self.connection_limiter = RateLimiter(config.rate_connections_per_hour, 3600)
        self.message_limiter = RateLimiter(config.rate_messages_per_day, 86400)
        self.queue = DeliveryQueue(config, self.store, self.mailbox, self.resolver, self.signer, self.events)
        self.smtp_server = None
        self.submission_servers = []   # SUBMISSION_PORT, SUBMISSIONS_PORT: one receiver between them
        self.tls = None          # tls.ReloadingContext when MAIL_TLS_CERT/KEY are set
        self.setup_code = None   # while no admin exists: the one-time code of the admin sign-up link
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


def _allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files to what the connection caps need (it is often
    1,024, and every SMTP connection holds a descriptor), as far as the hard limit allows."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        return
    if target < wanted:
        log("smtp", f"open files limited to {target} (ulimit -n); MAIL_MAX_CONNECTIONS"
                    f" connections may not all fit")


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
    _give_back_freed_memory()


# glibc mallopt(3) parameters.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024
MALLOC_ARENAS = 2


def _tune_heap() -> None:
    """Keep a long-running server's heap near what it uses. glibc gives each thread that
    allocates an arena of its own (up to 8 a core) and, once a large block is freed, raises
    the size above which blocks are mapped rather than carved from an arena; together, a
    search that reads its index in 4 MiB chunks left each of Waitress's threads holding
    such chunks: 250 MiB of RSS at 200,000 messages instead of 85. A fixed threshold keeps
    large blocks mapped (given back when freed), and the interpreter lock lets one thread
    run at a time, so two arenas cost no speed."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass   # not glibc: nothing to do


def _give_back_freed_memory() -> None:
    """Return the heap that loading the snapshot used and freed to the system: glibc keeps
    it otherwise (about half the RSS of a freshly started server of a million messages)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass   # not glibc: nothing to do


def _offer_admin_setup(app, host: str, port: int) -> None:
    """With no admin yet, a web sign-up becomes one only through a one-time link that goes
    to the operator's log, never to whoever finds the server first."""
    if app.accounts.has_admin():
        return
    import secrets
    app.setup_code = secrets.token_urlsafe(18)
    shown = host if host and host not in ("0.0.0.0", "::") else "localhost"
    shown = f"[{shown}]" if ":" in shown else shown
    log("web", f"No admin yet: sign up as the admin at http://{shown}:{port}/signup?setup={app.setup_code} "
               f"(or run: {runas.command_name()} users add NAME --admin)")


def _submission_listeners(app, config) -> list:
    """The message submission listeners (mu/smtp/submission.py), bound but not started:
    SUBMISSION_PORT, and SUBMISSIONS_PORT (implicit TLS) when there is a certificate.
    OSError names the port that could not be had."""
    from .smtp.server import Receiver, SMTPServer
    from .smtp.submission import SubmissionPolicy, SubmissionSession
    policy = SubmissionPolicy(config, app.mailbox, app.accounts, app.blocklist, app.queue, events=app.events)
    receiver = Receiver(config, policy, app.tls, session_class=SubmissionSession, log_name="submission")
    servers = []
    for port, host, implicit_tls in ((config.submission_port, config.submission_host, False),
                                     (config.submissions_port, config.submissions_host, True)):
        if port is None or (implicit_tls and app.tls is None):
            continue
        try:
            servers.append(SMTPServer(config, policy, host=host, port=port, tls_context=app.tls, receiver=receiver,
                                      implicit_tls=implicit_tls))
        except OSError as exc:
            raise OSError(f"cannot listen for submission on port {port}: {exc.strerror or exc}") from None
    return servers


def serve(config, host: str, port: int) -> int:
    import waitress

    from . import backstop
    from .smtp.policy import ReceivePolicy
    from .smtp.server import THREAD_STACK_BYTES, SMTPServer, drain_all
    from .web import make_web_app

    # The watcher that makes SIGTERM always work (mu/backstop.py), and before any thread
    # starts, the stack size every thread is made with (why: mu/smtp/server.py).
    backstop.start(config.shutdown_seconds + BACKSTOP_EXTRA_SECONDS)
    threading.stack_size(THREAD_STACK_BYTES)
    _tune_heap()
    _keep_to_cpus(config.cpus)
    app = App(config)
    if _claim_home(config.home) is None:
        print(f"mu: error: another mu server is already running with MU_HOME={config.home}", file=sys.stderr)
        return 2
    try:
        # Asked for explicitly, so an unusable certificate stops start-up (docs: TLS).
        app.tls = tls.ReloadingContext.for_config(config)
    except tls.TLSSetupError as exc:
        print(f"mu: error: {exc}", file=sys.stderr)
        return 2
    _settle_heap()
    app.signer.log_status()
    if app.tls:
        log("tls", f"using {config.tls_cert}: {tls.describe(config.tls_cert)}")
    policy = ReceivePolicy(config, app.mailbox, app.blocklist, app.connection_limiter,
                           app.message_limiter, app.resolver, events=app.events)
    _allow_open_files(config.max_smtp_connections + OTHER_OPEN_FILES)
    try:
        app.smtp_server = SMTPServer(config, policy, tls_context=app.tls)
    except OSError as exc:
        print(f"mu: error: cannot listen for SMTP on port {config.smtp_port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        app.submission_servers = _submission_listeners(app, config)
    except OSError as exc:
        print(f"mu: error: {exc}", file=sys.stderr)
        return 1
    smtp_thread = threading.Thread(target=app.smtp_server.serve_forever, name="smtp", daemon=True)
    smtp_thread.start()
    log("smtp", f"Starting SMTP server (receive only) on {config.smtp_host}:{app.smtp_server.port}")
    from .imap import server as imap_server
    try:
        imap_servers = imap_server.start(config, app.accounts, app.mailstore, app.tls)
    except OSError as exc:
        print(f"mu: error: cannot listen for IMAP: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for server in app.submission_servers:
        threading.Thread(target=server.serve_forever, name="submission", daemon=True).start()
        shown_host = config.submissions_host if server.implicit_tls else config.submission_host
        log("submission", f"Starting submission server on {shown_host}:{server.port}")
    if app.submission_servers and app.tls is None:
        log("submission", "no TLS certificate (MAIL_TLS_CERT, MAIL_TLS_KEY): only clients on this machine can log in")
    app.queue.start()
    from .search import _index
    _index(app.mailstore).start()
    sweeper = Sweeper([app.connection_limiter, app.message_limiter], SWEEP_INTERVAL_SECONDS)
    sweeper.start()
    chores = StoreChores(app.store)
    chores.start()

    wsgi = make_web_app(app)
    try:
        web = waitress.create_server(wsgi, host=host or "0.0.0.0", port=port, threads=16, ident="mu",
                                     max_request_body_size=config.max_message_bytes * 3 + 1024 * 1024,
                                     channel_timeout=60, connection_limit=500,
                                     # mu.web.common.ProxyHeaders decides whom to believe (MU_TRUSTED_PROXY)
                                     clear_untrusted_proxy_headers=False)
    except OSError as exc:
        print(f"mu: error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    bound_port = web.effective_port if hasattr(web, "effective_port") else port

    def stop(signum, _frame):
        log("mail", "shutting down: finishing open SMTP sessions and deliveries")
        raise SystemExit(0)

    def reload(signum, _frame):
        # Each part on its own: one that fails says why in a line and the others still reload.
        try:
            count = len(app.blocklist.entries())
            log("mail", f"reloaded: blocklist has {count} entries")
        except Exception as exc:
            log("mail", f"blocklist not reloaded: {exc}")
        if app.tls:
            app.tls.reload("SIGHUP")
        app.signer.log_status()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    log("web", f"Listening on http://{host or '0.0.0.0'}:{bound_port}")
    _offer_admin_setup(app, host, bound_port)
    try:
        web.run()
    except SystemExit:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)   # a second SIGTERM stops at once
        deadline = time.monotonic() + config.shutdown_seconds

        def left(most: float = float("inf")) -> float:
            return max(0.0, min(most, deadline - time.monotonic()))

        web.close()
        for server in imap_servers:
            server.shutdown()
        # Most of the time goes to sessions mid-transaction; deliveries get what they leave.
        busy = drain_all([app.smtp_server, *app.submission_servers], timeout=left() * 0.8)
        if busy:
            log("smtp", f"{busy} sessions still busy; stopping without them (nothing they hold was acknowledged)")
        app.queue.stop(timeout=left(config.outbound_timeout_seconds))
        sweeper.stopping.set()
        chores.stop(timeout=left(5))
        web.task_dispatcher.shutdown(timeout=left(5))
        log("mail", "stopped")
        if busy:
            os._exit(0)   # not wait on, or tear down the interpreter under, threads still at work
    return 0
