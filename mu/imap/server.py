"""The IMAP listener: sockets, TLS, bounded reads of lines and literals, one thread per
connection, timeouts and connection limits.

Each connection thread accepts its own connection and serves it to the end (as the SMTP
receiver does). A `Connection` reads one complete command at a time (its lines and the
literals between them, sending "+" for synchronizing literals, RFC 9051 §7.5), hands it to
the `Session`, and sends what the session wrote. Responses are flushed when the client has
nothing more buffered, so several pipelined commands in one packet are answered together;
nothing is held back once the client waits.
"""

import collections
import contextlib
import ipaddress
import os
import re
import select
import socket
import ssl
import struct
import threading
import time

from ..log import log
from . import responses as R
from .selected import RecentClaims
from .session import Session
from .parser import BadSyntax, Literal

_READ_CHUNK = 65536
_FLUSH_BYTES = 65536
WRITE_TIMEOUT_SECONDS = 120.0   # a client that stops reading our output is given up on
WATCH_SECONDS = 10.0            # how often an idle watcher thread checks it is still needed
_LITERAL_AT_END = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\r?\n?\Z")
_COMMAND_NAME = re.compile(rb"^[^ ]+ (?:UID )?([A-Za-z]+)", re.I)
LITERAL_HEAD_BYTES = 200        # of an over-long line, kept to find its tag


class ClientGone(ConnectionError):
    pass


class LiteralTooBig(Exception):
    def __init__(self, tag: bytes, nonsync: bool, append: bool):
        super().__init__("literal too big")
        self.tag, self.nonsync, self.append = tag, nonsync, append


class LineTooLong(Exception):
    def __init__(self, tag: bytes, literal_follows: bool):
        super().__init__("line too long")
        self.tag, self.literal_follows = tag, literal_follows


def set_io_timeouts(sock, read_seconds: float, write_seconds: float) -> None:
    """Read/write timeouts kept by the kernel (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket."""
    if sock.gettimeout() is not None:
        sock.settimeout(None)
    for option, seconds in ((socket.SO_RCVTIMEO, read_seconds), (socket.SO_SNDTIMEO, write_seconds)):
        whole = int(seconds)
        sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", whole, int((seconds - whole) * 1_000_000)))


# ---------------------------------------------------------------- shared per-server state

class Waker:
    """A pipe whose read end becomes readable when the user's mailboxes change."""

    def __init__(self, generation: int):
        self.generation = generation
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._r

    def set(self) -> None:
        try:
            os.write(self._w, b"!")
        except (BlockingIOError, OSError):
            pass

    def clear(self) -> None:
        try:
            while os.read(self._r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class ChangeWatcher:
    """One thread per user with sessions in IDLE, blocked in `store.wait` and waking them."""

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._users = {}   # user -> {"generation": int, "wakers": set}

    @contextlib.contextmanager
    def watch(self, user: str):
        waker = Waker(self.store.generation(user))
        with self._lock:
            entry = self._users.get(user)
            if entry is None:
                entry = self._users[user] = {"generation": waker.generation, "wakers": set()}
                threading.Thread(target=self._run, args=(user, entry), name="imap-watch", daemon=True).start()
            elif entry["generation"] != waker.generation:
                waker.set()
            entry["wakers"].add(waker)
        try:
            yield waker
        finally:
            with self._lock:
                entry["wakers"].discard(waker)
            waker.close()

    def _run(self, user: str, entry: dict) -> None:
        while True:
            with self._lock:
                if not entry["wakers"]:
                    if self._users.get(user) is entry:
                        del self._users[user]
                    return
                since = entry["generation"]
            try:
                current = self.store.wait(user, since, WATCH_SECONDS)
            except Exception as exc:   # the store failing must not leave IDLE sessions hanging
                log("imap", f"change watch for {user} failed: {exc!r}")
                time.sleep(1.0)
                current = since + 1
            if current != since:
                with self._lock:
                    entry["generation"] = current
                    for waker in list(entry["wakers"]):
                        waker.set()


class Context:
    """What every session of one server shares."""

    def __init__(self, config, accounts, store):
        self.config = config
        self.accounts = accounts
        self.store = store
        self.recent = RecentClaims()
        self.watcher = ChangeWatcher(store)
        self.idle_timeout_seconds = config.imap_idle_timeout_seconds

    def watch(self, user: str):
        return self.watcher.watch(user)

    @staticmethod
    def is_loopback(ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip).is_loopback
        except ValueError:
            return False


# ---------------------------------------------------------------- one connection

class Connection:
    """Reads commands, writes responses, for one client; owns the socket."""

    def __init__(self, server, sock, peer_ip: str, tls_active: bool):
        self.server = server
        self.config = server.config
        self.sock = sock
        self.peer_ip = peer_ip
        self.tls_active = tls_active
        self.buf = b""
        self.pos = 0
        self.out = []
        self.out_bytes = 0
        self.notify = False
        set_io_timeouts(sock, self.config.imap_login_timeout_seconds, WRITE_TIMEOUT_SECONDS)

    # ------------------------------------------------------------ the session's side

    def write(self, data: bytes) -> None:
        self.out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.out:
            data, self.out, self.out_bytes = b"".join(self.out), [], 0
            try:
                self.sock.sendall(data)
            except (BlockingIOError, ssl.SSLWantWriteError):
                raise TimeoutError("write timed out") from None

    def notifying(self, on: bool) -> None:
        """NOTIFY SET (on) or NONE: between commands, wait for mailbox changes too."""
        self.notify = on

    def authenticated(self) -> None:
        set_io_timeouts(self.sock, self.config.imap_timeout_seconds, WRITE_TIMEOUT_SECONDS)

    def read_line(self) -> bytes:
        """One line (AUTHENTICATE's response, IDLE's DONE), bounded like command lines."""
        self.flush()
        line, too_long, _head = self._readline(self.config.imap_max_line_bytes)
        if too_long:
            raise BadSyntax(R.BAD_LINE_TOO_LONG)
        return line

    def wait_for_input(self, waker, timeout: float) -> str:
        """"input" when the client sent something, "changed" when the waker fired, or
        "timeout"; for IDLE, which waits for both at once."""
        self.flush()
        if self.pos < len(self.buf):
            return "input"
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return "input"
        try:
            readable, _, _ = select.select([self.sock, waker], [], [], max(0.0, timeout))
        except (ValueError, OSError):
            raise ClientGone() from None
        if self.sock in readable:
            return "input"
        if waker in readable:
            return "changed"
        return "timeout"

    # ------------------------------------------------------------ reading

    def _fill(self) -> None:
        self.flush()
        try:
            data = self.sock.recv(_READ_CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError):
            raise TimeoutError("read timed out") from None
        if not data:
            raise ClientGone()
        self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
        self.pos = 0

    def buffered(self) -> bool:
        return self.pos < len(self.buf)

    def _readline(self, limit: int) -> tuple:
        """(line with its line end, too_long, head). An over-long line is read to its end;
        its first octets (`head`) and its end are kept, to find its tag and any literal."""
        head = None
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                line = self.buf[self.pos:i + 1]
                self.pos = i + 1
                if head is not None or len(line) > limit:
                    return line[-64:], True, (head if head is not None else line[:LITERAL_HEAD_BYTES])
                return line, False, None
            if len(self.buf) - self.pos > limit:
                if head is None:
                    head = self.buf[self.pos:self.pos + LITERAL_HEAD_BYTES]
                self.buf, self.pos = self.buf[-64:], 0
            self._fill()

    def _read_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            if self.pos >= len(self.buf):
                self._fill()
            take = self.buf[self.pos:self.pos + n]
            self.pos += len(take)
            n -= len(take)
            chunks.append(take)
        return b"".join(chunks)

    def _discard(self, n: int) -> None:
        while n:
            if self.pos >= len(self.buf):
                self._fill()
            take = min(n, len(self.buf) - self.pos)
            self.pos += take
            n -= take

    def read_command(self) -> list:
        """One command: [line, Literal, line, ...] with line ends and literal markers removed."""
        parts = []
        total = 0
        first = None
        while True:
            line, too_long, head = self._readline(self.config.imap_max_line_bytes)
            if first is None:
                first = head if too_long else line
            if too_long:
                raise LineTooLong(_tag_of(first), bool(_LITERAL_AT_END.search(line)))
            m = _LITERAL_AT_END.search(line)
            if not m:
                parts.append(line.rstrip(b"\r\n"))
                return parts
            parts.append(line[:m.start()])
            size, nonsync, binary = int(m.group(2)), bool(m.group(3)), bool(m.group(1))
            name = _COMMAND_NAME.match(first)
            append = bool(name) and name.group(1).upper() == b"APPEND"
            limit = self.config.max_message_bytes if append else self.config.imap_max_literal_bytes
            total += size
            if size > limit or total > self.config.max_message_bytes + self.config.imap_max_literal_bytes:
                raise LiteralTooBig(_tag_of(first), nonsync, append)
            if not nonsync:
                self.write(b"+ " + R.CONTINUE_LITERAL.encode() + b"\r\n")
                self.flush()
            parts.append(Literal(self._read_exact(size), binary))

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        ctx = self.server.context
        session = Session(ctx, self, self.peer_ip, tls_active=self.tls_active,
                          tls_available=self.server.starttls_context is not None)
        try:
            self.write(session.greeting())
            answered = 0
            while not session.closing:
                if not self.buffered() or answered >= self.config.imap_max_commands_in_flight:
                    self.flush()
                    answered = 0
                if self.notify and not self.buffered():
                    self._wait_notifying(ctx, session)
                try:
                    parts = self.read_command()
                except LineTooLong as exc:
                    if exc.literal_follows:
                        session.bye(R.BYE_LINE_TOO_LONG)
                        break
                    session._bad_command(exc.tag, R.BAD_LINE_TOO_LONG)
                    continue
                except LiteralTooBig as exc:
                    if exc.nonsync:   # its octets are on the way: they cannot be told from commands
                        session.bye(R.BYE_LITERAL_TOO_BIG)
                        break
                    status = "NO" if exc.append else "BAD"
                    text = R.NO_TOOBIG.format(limit=self.config.max_message_bytes) if exc.append else "[TOOBIG] Literal too big"
                    session._tagged(exc.tag, status, text)
                    continue
                session.handle(parts)
                answered += 1
                if session.start_tls:
                    self.flush()
                    self.buf, self.pos = b"", 0   # RFC 9051 §6.2.1: nothing before the handshake counts
                    self.sock = self.server.starttls_context.wrap_socket(self.sock, server_side=True)
                    self.tls_active = True
                    session.start_tls = False
                    session.tls_active, session.tls_available = True, False
            self.flush()
        except TimeoutError:
            self._last_words(b"* BYE " + R.BYE_TIMEOUT.encode() + b"\r\n")
        except (ClientGone, ConnectionError, ssl.SSLError, OSError):
            pass
        except Exception as exc:   # a bug must cost one connection, never the server
            log("imap", f"error in session with {self.peer_ip}: {exc!r}")
            self._last_words(b"* BYE " + R.BYE_SERVER_BUG.encode() + b"\r\n")

    def _wait_notifying(self, ctx, session) -> None:
        """Between commands under NOTIFY (RFC 5465): report changes as they happen until the
        client sends its next command."""
        deadline = time.monotonic() + self.config.imap_timeout_seconds
        with ctx.watch(session.user) as waker:
            session.notify_between_commands()
            while self.notify and not session.closing:
                self.flush()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("idle under NOTIFY")
                event = self.wait_for_input(waker, left)
                if event == "input":
                    return
                if event == "changed":
                    waker.clear()
                    session.notify_between_commands()
        self.flush()

    def _last_words(self, data: bytes) -> None:
        try:
            self.out = []
            set_io_timeouts(self.sock, 1.0, 1.0)
            self.sock.sendall(data)
        except OSError:
            pass


def _tag_of(line: bytes) -> bytes:
    tag = line.split(b" ", 1)[0].strip()
    return tag if tag and len(tag) <= 64 and re.fullmatch(rb"[!#$&'*,-./0-9:;<=>?@A-Z\[^_`a-z|}~\]]+", tag) else b"*"


def _peer_ip(address) -> str:
    ip = address[0]
    return ip[7:] if ip.startswith("::ffff:") else ip   # IPv4-mapped IPv6


# ---------------------------------------------------------------- the listener

class IMAPServer:
    """One listening socket (IMAP with STARTTLS, or IMAPS with implicit TLS, RFC 8314)."""

    def __init__(self, config, context: Context, port: int, host: str = "", implicit_tls: bool = False,
                 tls_context=None):
        self.config = config
        self.context = context
        self.implicit_tls = implicit_tls
        self.tls_context = tls_context
        self.starttls_context = None if implicit_tls else tls_context
        self._slots = threading.BoundedSemaphore(config.imap_max_connections)
        self._per_ip = collections.Counter()
        self._lock = threading.Lock()
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        self._idle_acceptors = 0
        self._threads = 0
        self._active = 0
        self._active_changed = threading.Condition(self._lock)
        family = socket.AF_INET6 if (not host or ":" in host) and socket.has_ipv6 else socket.AF_INET
        self.socket = self._bind(family, host, port)

    @staticmethod
    def _bind(family, host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host or ("::" if family == socket.AF_INET6 else ""), port))
            sock.listen(256)
            return sock
        except OSError:
            sock.close()
            if family == socket.AF_INET6 and not host:
                return IMAPServer._bind(socket.AF_INET, "", port)
            raise

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def serve_forever(self) -> None:
        self._accepting.set()
        self._spawn_acceptor()
        self._stopped.wait()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="imap", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self._accepting.clear()
        self._stopped.set()
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()

    def active(self) -> int:
        with self._lock:
            return self._active

    def _spawn_acceptor(self) -> None:
        with self._lock:
            if self._threads > self.config.imap_max_connections:
                return
            self._threads += 1
        threading.Thread(target=self._accept_loop, name="imap-conn", daemon=True).start()

    def _accept_loop(self) -> None:
        try:
            while self._accepting.is_set():
                with self._lock:
                    self._idle_acceptors += 1
                try:
                    request, address = self.socket.accept()
                except OSError:
                    if not self._accepting.is_set():
                        return
                    continue
                finally:
                    with self._lock:
                        self._idle_acceptors -= 1
                        spare = self._idle_acceptors
                if not self._accepting.is_set():
                    request.close()
                    return
                if spare == 0:
                    self._spawn_acceptor()
                self._serve(request, _peer_ip(address))
        finally:
            with self._lock:
                self._threads -= 1

    def _refuse(self, request, text: str) -> None:
        try:
            request.settimeout(1.0)
            request.sendall(b"* BYE " + text.encode() + b"\r\n")
        except OSError:
            pass
        request.close()

    def _serve(self, request, peer_ip: str) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request, R.BYE_TOO_MANY_CONNECTIONS)
            return
        with self._lock:
            crowded = self._per_ip[peer_ip] >= self.config.imap_max_connections_per_ip
            if not crowded:
                self._per_ip[peer_ip] += 1
                self._active += 1
        if crowded:
            self._slots.release()
            self._refuse(request, R.BYE_TOO_MANY_FROM_CLIENT)
            return
        sock = request
        try:
            if self.implicit_tls:
                request.settimeout(self.config.imap_login_timeout_seconds)
                sock = self.tls_context.wrap_socket(request, server_side=True)
            Connection(self, sock, peer_ip, tls_active=self.implicit_tls).run()
        except (OSError, ssl.SSLError):
            pass
        except Exception as exc:
            log("imap", f"connection from {peer_ip} failed: {exc!r}")
        finally:
            try:
                sock.close()
            except OSError:
                pass
            request.close()
            self._slots.release()
            with self._lock:
                self._per_ip[peer_ip] -= 1
                if self._per_ip[peer_ip] <= 0:
                    del self._per_ip[peer_ip]
                self._active -= 1
                self._active_changed.notify_all()


def tls_context(config):
    if not config.tls_enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


def start(config, accounts, store, starttls_context=None) -> list:
    """Open the IMAP and IMAPS listeners the config asks for; [(server, label)] started."""
    context = Context(config, accounts, store)
    ctx = starttls_context if starttls_context is not None else tls_context(config)
    started = []
    if config.imap_port:
        server = IMAPServer(config, context, config.imap_port, config.imap_host, tls_context=ctx)
        server.start()
        started.append(server)
        log("imap", f"Starting IMAP server on {config.imap_host}:{server.port}")
    if config.imaps_port and ctx is not None:
        server = IMAPServer(config, context, config.imaps_port, config.imaps_host, implicit_tls=True, tls_context=ctx)
        server.start()
        started.append(server)
        log("imap", f"Starting IMAP server on {config.imaps_host}:{server.port}")
    return started
