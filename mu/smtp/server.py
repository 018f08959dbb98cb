"""The SMTP listener: sockets, deadlines, connection caps, TLS and one thread per connection.

Who does what:

- `SMTPServer` binds the port. Each of its threads accepts a connection, serves it to the
  end and accepts again; past KEEP_THREADS, when enough threads already wait in accept(),
  a thread whose connection ended exits instead, so idle threads do not pile up after a
  burst.
- `Receiver` is everything but the listening socket: config, policy, TLS context, the
  connection `Slots`, and shutdown (`drain`). `Receiver.handle(sock, peer_ip)` serves one
  accepted connection, which is how the in-process tests drive it over a socketpair.
  Message submission is a Receiver too, with its own session class, policy and slots, and
  its log name (`submission`); its two listeners (STARTTLS and implicit TLS, RFC 8314)
  share it, so its caps and its drain cover both.
- `Slots` counts open connections in total (MAIL_MAX_CONNECTIONS) and per client
  (MAIL_MAX_CONNECTIONS_PER_CLIENT), refuses past either with 421, and says which timeout
  applies now: MAIL_TIMEOUT, or MAIL_STRESS_TIMEOUT_SECONDS once MAIL_STRESS_PERCENT of the
  slots are taken (Postfix's stress mode), so that idle connections make room quickly.
- `Connection` owns one socket. A `LineReader` reads command lines and DATA with hard
  length limits and a deadline for a whole command line or the whole DATA transfer (never
  just for each read, which one byte every few seconds would satisfy forever); a `Session`
  (session.py) turns lines into replies; every reply goes out through `Connection.send()`,
  which with MU_DEBUG=smtp also logs the transcript. Replies are flushed only when the
  client has nothing more buffered, which is what PIPELINING (RFC 2920) asks of a server.
"""

import errno
import ipaddress
import itertools
import math
import re
import select
import socket
import socketserver
import ssl
import struct
import threading
import time

from .. import tls
from ..log import log
from . import replies as R
from .session import Session

# RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF
# (the leading dot of a dot-stuffed line is not counted).
TEXT_LINE_LIMIT = 1000
_READ_CHUNK = 65536
# The deepest recursion CPython allows (1,000 frames, through C slots such as __getattr__,
# the worst case) needs about 700 KiB of C stack: 1 MiB is safe for any code, and an eighth
# of glibc's 8 MiB default, so 1,000 connection threads reserve 1 GiB of address space, not 8.
THREAD_STACK_BYTES = 1024 * 1024
# Connection threads kept however few connections are open; beyond them, a thread whose
# connection ends exits if this many others already wait in accept(). The gap between
# "spawn when none waits" and "exit when many wait" keeps a steady load from creating and
# ending a thread per connection.
KEEP_THREADS = 32
SPARE_ACCEPTORS = 8
# A read may overrun its deadline by this much before the socket's timer is set again:
# setting it for every read would cost a system call each.
_REARM_SLACK_SECONDS = 0.2
# How long a refusal, or the last reply before closing, may take to write.
_LAST_WORDS_SECONDS = 1.0
# accept() failed for want of file descriptors: wait this long before trying again.
_OUT_OF_FILES_PAUSE_SECONDS = 0.1
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class ClientGone(Exception):
    """The client closed its side (or the drain closed our read side)."""


class Timeout(Exception):
    """The client let a deadline pass."""


def _timeval(seconds: float) -> bytes:
    seconds = max(seconds, 0.001)   # a zero timeval would mean "wait forever"
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class LineReader:
    """Reads CRLF-terminated lines from a socket, never holding more than one chunk
    plus `limit` octets, whatever the client sends, and never waiting past its deadline.

    The socket is blocking, with the kernel's read timer (SO_RCVTIMEO) set to the time left:
    Python's own socket timeout would poll before every recv, and with many threads sharing
    the GIL one system call per read matters. Without a deadline (`expect` never called) it
    reads as long as the socket lets it.
    """

    def __init__(self, sock, before_block):
        self.sock = sock
        self.before_block = before_block
        self.buf = b""
        self.pos = 0
        self.deadline = None          # time.monotonic() by which what is expected must arrive
        self._timeout = 0.0
        self._seconds_per_byte = 0.0
        self._armed = None            # seconds SO_RCVTIMEO is set to, None when unknown

    def expect(self, timeout: float, min_bytes_per_second: int = 0) -> None:
        """Start a deadline `timeout` from now. With a minimum rate (DATA) every read moves it
        on by its size over that rate, never more than `timeout` ahead: a transfer may take as
        long as it keeps that rate and never pauses longer than `timeout` (Postfix's
        smtpd_min_data_rate)."""
        self._timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._seconds_per_byte = 1.0 / min_bytes_per_second if min_bytes_per_second else 0.0

    def buffered(self) -> bool:
        return self.pos < len(self.buf)

    def discard_buffer(self) -> None:
        self.buf, self.pos = b"", 0

    def _fill(self) -> None:
        self.before_block()
        if self.deadline is None:
            data = self.sock.recv(_READ_CHUNK)
        else:
            while True:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise Timeout()
                if self._armed is None or self._armed > remaining + _REARM_SLACK_SECONDS:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(remaining))
                    self._armed = remaining
                try:
                    data = self.sock.recv(_READ_CHUNK)
                    break
                except (BlockingIOError, ssl.SSLWantReadError):   # SO_RCVTIMEO expired
                    self._armed = None
            if self._seconds_per_byte and data:
                self.deadline = min(self.deadline + len(data) * self._seconds_per_byte,
                                    time.monotonic() + self._timeout)
        if not data:
            raise ClientGone()
        self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
        self.pos = 0

    def readline(self, limit: int) -> tuple:
        """(line including its LF, too_long). A too-long line is read to its end and
        returned as its last `limit` octets so the caller can still see how it ended."""
        too_long = False
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                line = self.buf[self.pos:i + 1]
                self.pos = i + 1
                if too_long or len(line) > limit:
                    return line[-limit:], True
                return line, False
            if len(self.buf) - self.pos > limit:
                too_long = True
                self.buf, self.pos = self.buf[-2:], 0   # keep a possible CR before the LF
            self._fill()


# RFC 5321 §4.1.1.4: the data ends with a line holding only "." that follows a CRLF.
_END_OF_DATA = b"\r\n.\r\n"


class _Content:
    """Message content as it is read: kept up to `max_bytes`, counted beyond, and the
    first error that decides the reply."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.kept, self.size, self.error = [], 0, None

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.max_bytes:
            self.error = R.MESSAGE_TOO_BIG
        if self.error is None:
            self.kept.append(piece)

    def result(self) -> tuple:
        if self.error is not None:
            return None, self.error
        return b"".join(self.kept), None


def read_data(reader: LineReader, max_bytes: int) -> tuple:
    """Read message content up to <CRLF>.<CRLF> (RFC 5321 §4.1.1.4), undoing dot-stuffing.

    Returns (content or None, error reply or None). Only a line that is exactly ".\\r\\n"
    and follows a CRLF ends the data: a bare LF or CR before a dot does not (SMTP
    smuggling). Past `max_bytes` content is counted but no longer kept.

    Whole runs of buffered lines are handled at once with bytes methods (find, replace),
    which is what makes a large message cheap; the first line over the length limit hands
    the rest of the message to the line-by-line reader, which owns that rule.
    """
    content = _Content(max_bytes)
    after_crlf = True   # the data begins right after the DATA command's CRLF
    limit = TEXT_LINE_LIMIT + 1   # a dot-stuffed line's leading dot does not count
    while True:
        buf, pos = reader.buf, reader.pos
        if after_crlf and buf.startswith(b".\r\n", pos):
            reader.pos = pos + 3
            return content.result()
        end = buf.find(_END_OF_DATA, pos)
        finished = end >= 0
        stop = end + 2 if finished else buf.rfind(b"\n", pos) + 1   # whole lines only
        if stop <= pos:   # no whole line buffered yet
            if len(buf) - pos > limit:
                return _read_data_by_line(reader, content, after_crlf)
            reader._fill()
            continue
        run = buf[pos:stop]
        if len(run) > limit and max(map(len, run.split(b"\n"))) >= limit:
            return _read_data_by_line(reader, content, after_crlf)
        unstuffed = run.replace(b"\n.", b"\n")
        content.add(unstuffed[1:] if unstuffed.startswith(b".") else unstuffed)
        after_crlf = run.endswith(b"\r\n")
        reader.pos = stop + 3 if finished else stop
        if finished:
            return content.result()


def _read_data_by_line(reader: LineReader, content: _Content, after_crlf: bool) -> tuple:
    """The rest of `read_data`, one line at a time from a line start."""
    while True:
        line, too_long = reader.readline(TEXT_LINE_LIMIT + 1)
        if after_crlf and line == b".\r\n" and not too_long:
            return content.result()
        if too_long and content.error is None:
            content.error = R.DATA_LINE_TOO_LONG
        after_crlf = line.endswith(b"\r\n")
        content.add(line[1:] if line.startswith(b".") else line)


# ---------------------------------------------------------------- connection slots

def client_key(ip: str) -> str:
    """Whose connection this is: an IPv4 address, or an IPv6 client's /64 (the smallest
    block a subscriber is given, RFC 6177), which one host can fill with addresses."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    except ValueError:
        return ip


class Slots:
    """Open connections, in total and per client; stress when many are open."""

    def __init__(self, config, log_name: str = "smtp"):
        self.log_name = log_name
        self.total = config.max_smtp_connections
        self.per_client = config.max_smtp_connections_per_client
        self.stress_from = max(1, math.ceil(self.total * config.smtp_stress_percent / 100))
        # Stress ends a quarter below where it began, so a load near the line does not flap.
        self.stress_until = max(0, self.stress_from - max(1, self.stress_from // 4))
        self.normal_timeout = config.smtp_timeout_seconds
        self.stress_timeout = min(config.smtp_stress_timeout_seconds, config.smtp_timeout_seconds)
        self.open = 0
        self.stressed = False
        self.timeout = self.normal_timeout   # for what is read next: shorter under stress
        self._by_client = {}
        self._changed = threading.Condition(threading.Lock())

    def take(self, ip: str):
        """A slot for a new connection from `ip`, or the 421 that refuses it."""
        key = client_key(ip)
        with self._changed:
            if self.open >= self.total:
                return R.TOO_MANY_CONNECTIONS
            count = self._by_client.get(key, 0)
            if count >= self.per_client:
                return R.TOO_MANY_CLIENT_CONNECTIONS
            self._by_client[key] = count + 1
            self.open += 1
            if not self.stressed and self.open >= self.stress_from:
                self.stressed = True
                self.timeout = self.stress_timeout
                log(self.log_name, f"under stress: {self.open} of {self.total} connections open;"
                                   f" timeouts down to {self.stress_timeout:g} s")
        return None

    def give_back(self, ip: str) -> None:
        key = client_key(ip)
        with self._changed:
            count = self._by_client.pop(key, 1) - 1
            if count > 0:
                self._by_client[key] = count
            self.open -= 1
            if self.stressed and self.open <= self.stress_until:
                self.stressed = False
                self.timeout = self.normal_timeout
                log(self.log_name, f"stress over: {self.open} of {self.total} connections open")
            self._changed.notify_all()

    def wait_until_fewer(self, than: int, deadline: float) -> int:
        with self._changed:
            while self.open >= than and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return self.open


# ---------------------------------------------------------------- one connection

_UNPRINTABLE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")   # and the backslash itself
_TRANSCRIPT_LINE_CHARS = 600


def printable(line: bytes) -> str:
    """A line from the wire as one log line: control and 8-bit bytes (and backslashes) as
    \\xNN, so no client can split or forge a log line, and what was sent reads exactly."""
    text = _UNPRINTABLE.sub(lambda m: b"\\x%02x" % m.group()[0], line[:_TRANSCRIPT_LINE_CHARS]).decode("ascii")
    return text + (f"... ({len(line)} octets)" if len(line) > _TRANSCRIPT_LINE_CHARS else "")


def _log_reply(label: str, wire: bytes, log_name: str = "smtp") -> None:
    for line in wire.split(b"\r\n")[:-1]:
        log(log_name, f"{label} > {printable(line)}")


class Connection:
    """One client: reads with deadlines, asks the session, writes every reply in `send`."""

    _ids = itertools.count(1)

    def __init__(self, receiver, sock, peer_ip: str, implicit_tls: bool = False):
        self.receiver = receiver
        self.config = receiver.config
        self.sock = sock
        self.peer_ip = peer_ip
        self.implicit_tls = implicit_tls   # RFC 8314: the handshake comes before the greeting
        self.out = []
        self.log_name = receiver.log_name
        self.debug = self.log_name in self.config.debug
        self.id = next(self._ids)
        self.session = None
        self.waiting = False        # blocked on the client: the drain may cut in
        self.closed = False
        self._lock = threading.Lock()   # between close() and interrupt() from the drain
        if sock.gettimeout() is not None:   # accepted sockets are already blocking
            sock.settimeout(None)
        # Writes: the kernel's timer per send; replies are small and the error and junk
        # budgets bound how many a client can make us queue without reading them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(receiver.slots.timeout))
        self.reader = LineReader(sock, self.flush)
        if self.debug:
            log(self.log_name, f"#{self.id} connect from {peer_ip}" + (" (TLS)" if implicit_tls else ""))

    # Every reply goes out through here, and only here (aiosmtpd's push()).
    def send(self, reply) -> None:
        wire = reply.encode()
        self.out.append(wire)
        if self.debug:
            _log_reply(f"#{self.id}", wire, self.log_name)

    def flush(self) -> None:
        if self.out:
            data, self.out = b"".join(self.out), []
            try:
                self.sock.sendall(data)
            except (BlockingIOError, ssl.SSLWantWriteError):
                raise Timeout() from None   # SO_SNDTIMEO expired

    def run(self) -> None:
        receiver = self.receiver
        slots = receiver.slots
        try:
            if self.implicit_tls:
                self._wrap_tls()
            self.session = session = self._new_session(tls_active=self.implicit_tls)
            self.send(session.greeting())
            while not session.closing:
                if receiver.stopping and not session.in_transaction:
                    self.send(R.SHUTTING_DOWN)
                    break
                self.reader.expect(slots.timeout)
                self.waiting = True
                line, too_long = self.reader.readline(session.line_limit)
                self.waiting = False
                if self.debug:
                    self._log_command(line, too_long)
                reply = session.line_too_long() if too_long else session.command(line.rstrip(b"\r\n"))
                self.send(reply)
                if session.in_data:
                    self.flush()
                    self.reader.expect(slots.timeout, self.config.smtp_min_data_bytes_per_second)
                    self.waiting = True
                    data, error = read_data(self.reader, self.config.max_message_bytes)
                    self.waiting = False
                    if self.debug:
                        size = f"{len(data)} octets" if data is not None else "dropped"
                        log(self.log_name, f"#{self.id} < (message data, {size})")
                    self.send(session.data_received(data, error))
                elif session.start_tls:
                    self.session = session = self._start_tls()
            self.flush()
        except Timeout:
            if self.session is not None:   # not while an implicit TLS handshake is unfinished
                self._last_words(R.TIMEOUT)
        except (ClientGone, ConnectionError, ssl.SSLError, OSError):
            if receiver.stopping and self.session is not None:   # the drain closed our read side
                self._last_words(R.SHUTTING_DOWN)
        except Exception as exc:  # a bug must cost one connection, never the server
            log(self.log_name, f"error in session with {self.peer_ip}: {exc!r}")
            self._last_words(R.LOCAL_ERROR)   # RFC 5321 §3.8: say so, and close
        finally:
            self.waiting = False
            if self.debug:
                log(self.log_name, f"#{self.id} closed")

    def _new_session(self, tls_active: bool) -> Session:
        tls_available = self.receiver.tls_context is not None and not tls_active
        return self.receiver.session_class(self.receiver.policy, self.config, self.peer_ip,
                                           tls_active=tls_active, tls_available=tls_available)

    def _start_tls(self) -> Session:
        self.flush()
        # RFC 3207 §4.2: nothing sent before the handshake may be acted on.
        self.reader.discard_buffer()
        self._wrap_tls()
        return self._new_session(tls_active=True)

    def _wrap_tls(self) -> None:
        tls = self.receiver.tls_context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self.sock = tls
        self._handshake(tls, self.receiver.slots.timeout)
        self.reader = LineReader(tls, self.flush)

    def _handshake(self, tls, timeout: float) -> None:
        """The TLS handshake under one deadline: a blocking handshake would wait for each
        record afresh, so a client trickling bytes could make it last forever."""
        deadline = time.monotonic() + timeout
        tls.setblocking(False)
        try:
            while True:
                try:
                    tls.do_handshake()
                    return
                except ssl.SSLWantReadError:
                    events = select.POLLIN
                except ssl.SSLWantWriteError:
                    events = select.POLLOUT
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Timeout()
                poller = select.poll()
                poller.register(tls.fileno(), events)
                poller.poll(remaining * 1000)
        finally:
            tls.setblocking(True)

    def _log_command(self, line: bytes, too_long: bool) -> None:
        line = line.rstrip(b"\r\n")
        if self.session.secret_next:   # a SASL response: credentials, whatever it holds
            line = b"***"
        elif line[:5].upper() == b"AUTH ":   # never log credentials
            line = line[:5] + line[5:].split(b" ", 1)[0] + b" ***"
        note = " (over-long line, its end shown)" if too_long else ""
        log(self.log_name, f"#{self.id} < {printable(line)}{note}")

    def _last_words(self, reply) -> None:
        """Send what is owed and `reply`, then the caller closes; never waits long."""
        try:
            self.send(reply)
            self.sock.settimeout(_LAST_WORDS_SECONDS)
            data, self.out = b"".join(self.out), []
            self.sock.sendall(data)
        except (OSError, ValueError):   # ValueError: a TLS socket whose handshake never ended
            pass

    def interrupt(self, idle_only: bool) -> None:
        """From the drain: if this connection waits for its client (and, with `idle_only`,
        is in no mail transaction), shut its read side so the wait ends now."""
        with self._lock:
            session = self.session
            if self.closed or not self.waiting or session is None:
                return
            if idle_only and session.in_transaction:
                return
            try:
                # A copy of the descriptor: SSLSocket.shutdown() would drop its TLS state,
                # and the connection still writes its 421 over TLS.
                with socket.fromfd(self.sock.fileno(), self.sock.family, socket.SOCK_STREAM) as dup:
                    dup.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.sock.close()


# ---------------------------------------------------------------- the receiver

class Receiver:
    """Serves accepted connections; knows nothing of the listening socket."""

    def __init__(self, config, policy, tls_context=None, session_class=Session, log_name: str = "smtp"):
        self.config = config
        self.policy = policy
        self.tls_context = tls_context
        self.session_class = session_class
        self.log_name = log_name
        self.slots = Slots(config, log_name)
        self.stopping = False   # set once, by drain()
        self._connections = set()
        self._lock = threading.Lock()

    def handle(self, sock, peer_ip: str, implicit_tls: bool = False) -> None:
        """Serve one accepted connection to its end, then close it. With `implicit_tls`
        (RFC 8314) the TLS handshake comes first, and a refusal is no reply at all: the
        client would read it as a broken handshake."""
        refusal = R.SHUTTING_DOWN if self.stopping else self.slots.take(peer_ip)
        if refusal is not None:
            if implicit_tls:
                sock.close()
            else:
                self._refuse(sock, peer_ip, refusal)
            return
        connection = None
        try:
            connection = Connection(self, sock, peer_ip, implicit_tls)
            with self._lock:
                self._connections.add(connection)
            connection.run()
        except Exception as exc:
            log(self.log_name, f"connection from {peer_ip} failed: {exc!r}")
        finally:
            if connection is not None:
                with self._lock:
                    self._connections.discard(connection)
                connection.close()   # its socket: `sock`, or the TLS socket that replaced it
            if connection is None or connection.sock is not sock:
                sock.close()
            self.slots.give_back(peer_ip)

    def _refuse(self, sock, peer_ip: str, reply) -> None:
        """421 without a thread's worth of waiting: the kernel takes a short reply at once
        into a new connection's send buffer, or the client gets nothing. (No Connection:
        a flood of refusals should cost as little as possible.)"""
        if self.log_name in self.config.debug:
            label = f"#{next(Connection._ids)}"
            log(self.log_name, f"{label} connect from {peer_ip}, refused")
            _log_reply(label, reply.encode(), self.log_name)
        try:
            sock.setblocking(False)
            sock.send(reply.encode())
        except OSError:
            pass
        sock.close()

    @property
    def open_connections(self) -> int:
        return self.slots.open

    def drain(self, timeout: float) -> int:
        """Stop serving. Sessions waiting for a command outside a mail transaction get 421 at
        once; the others get until near `timeout` to finish (a message mid-DATA gets its
        reply), then 421 as they wait for their client. Returns how many were still open
        (busy in the policy, which no one can cut short)."""
        self.stopping = True
        now = time.monotonic()
        deadline = now + timeout
        cut_off = deadline - min(1.0, timeout / 4)
        while time.monotonic() < cut_off:
            self._interrupt(idle_only=True)
            # a session can end its transaction (or start to wait) at any moment: look again
            if not self.slots.wait_until_fewer(1, min(cut_off, time.monotonic() + 0.25)):
                return 0
        self._interrupt(idle_only=False)
        return self.slots.wait_until_fewer(1, deadline)

    def _interrupt(self, idle_only: bool) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.interrupt(idle_only)


# ---------------------------------------------------------------- the listener

def _peer_ip(address) -> str:
    ip = address[0]
    return ip[7:] if ip.startswith("::ffff:") else ip   # IPv4-mapped IPv6


class SMTPServer(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, config, policy, host: str = "", port: int = None, tls_context=None, receiver=None,
                 implicit_tls: bool = False):
        """`receiver`: one shared with another listener (submission's two ports); else a new
        one for `policy`. `implicit_tls`: connections start with the TLS handshake."""
        self.config = config
        self.policy = policy
        self.tls_context = tls_context or tls.ReloadingContext.for_config(config)   # reloads itself
        self.receiver = receiver or Receiver(config, policy, self.tls_context)
        self.implicit_tls = implicit_tls
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        self._idle_acceptors = 0
        self._threads = 0
        self._threads_lock = threading.Lock()
        self._out_of_files_logged = 0.0
        port = config.smtp_port if port is None else port
        host = host or config.smtp_host
        self.address_family = socket.AF_INET6 if (not host or ":" in host) and socket.has_ipv6 else socket.AF_INET
        try:
            super().__init__((host or ("::" if self.address_family == socket.AF_INET6 else ""), port),
                             socketserver.BaseRequestHandler, bind_and_activate=True)
        except OSError:
            if self.address_family != socket.AF_INET6 or host:
                raise
            self.address_family = socket.AF_INET
            super().__init__(("", port), socketserver.BaseRequestHandler, bind_and_activate=True)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    # Each connection thread accepts its own connection and serves it to the end, then
    # accepts again: no hand-off between an accept loop and a worker per message. One idle
    # thread always waits in accept(); refusals are written by the accepting thread itself.

    def serve_forever(self, poll_interval=None):
        self._accepting.set()
        self._spawn_acceptor()
        self._stopped.wait()

    def shutdown(self):
        """Stop accepting: threads blocked in accept() return, open sessions go on."""
        self._accepting.clear()
        self._stopped.set()
        try:
            self.socket.shutdown(socket.SHUT_RDWR)   # wakes every thread blocked in accept()
        except OSError:
            pass

    def _spawn_acceptor(self) -> None:
        with self._threads_lock:
            if self._threads >= self.config.max_smtp_connections + SPARE_ACCEPTORS:
                return
            self._threads += 1
        threading.Thread(target=self._accept_loop, name=f"{self.receiver.log_name}-conn", daemon=True).start()

    def _accept_loop(self) -> None:
        try:
            while self._accepting.is_set():
                with self._threads_lock:
                    self._idle_acceptors += 1
                try:
                    request, client_address = self.socket.accept()
                except OSError as exc:
                    if not self._accepting.is_set():
                        return
                    if exc.errno in _OUT_OF_FILES:
                        self._out_of_files(exc)
                    continue   # e.g. ECONNABORTED: the client gave up before we accepted
                finally:
                    with self._threads_lock:
                        self._idle_acceptors -= 1
                        spare = self._idle_acceptors
                if not self._accepting.is_set():
                    self.shutdown_request(request)
                    return
                if spare == 0:
                    self._spawn_acceptor()
                self.receiver.handle(request, _peer_ip(client_address), self.implicit_tls)
                with self._threads_lock:
                    if self._idle_acceptors >= SPARE_ACCEPTORS and self._threads > KEEP_THREADS:
                        return
        finally:
            with self._threads_lock:
                self._threads -= 1

    def _out_of_files(self, exc) -> None:
        """The connection stays in the listen queue; pausing keeps this thread from spinning."""
        now = time.monotonic()
        if now - self._out_of_files_logged > 60:
            self._out_of_files_logged = now
            log(self.receiver.log_name, f"cannot accept connections: {exc.strerror or exc} (open files: ulimit -n);"
                                        f" {self.receiver.open_connections} connections open")
        time.sleep(_OUT_OF_FILES_PAUSE_SECONDS)

    def shutdown_request(self, request):
        # close() alone: the socket is ours only, and shutdown() costs a system call
        # (and a turn of the GIL) per connection for nothing.
        request.close()

    def drain(self, timeout: float) -> int:
        """Stop accepting, then let open sessions finish (Receiver.drain); return how many
        were still open after `timeout`."""
        self.shutdown()
        return self.receiver.drain(timeout)

    @property
    def port(self) -> int:
        return self.server_address[1]


def drain_all(servers, timeout: float) -> int:
    """Drain several listeners at once (SMTP and submission): stop every one accepting,
    then drain each distinct receiver in a thread of its own, so that none waits for
    another's sessions. Returns how many sessions were still open after `timeout`."""
    for server in servers:
        server.shutdown()
    receivers = list({id(s.receiver): s.receiver for s in servers}.values())
    busy = [0] * len(receivers)

    def drain(i):
        busy[i] = receivers[i].drain(timeout)

    threads = [threading.Thread(target=drain, args=(i,), name="drain") for i in range(len(receivers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(busy)
