"""The SMTP listener: sockets, bounded reads, timeouts, TLS and one thread per connection.

A `socketserver.TCPServer` binds; each connection is accepted by, and lives in, its own
thread (which accepts again once the connection ends), with a `Connection` that reads
lines with hard length limits, hands them to a `Session`, and writes the replies. Replies
are flushed only when the client has nothing more buffered, which is what PIPELINING
(RFC 2920) asks of a server.
"""

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

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
COMMAND_LINE_LIMIT = 512
# RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF
# (the leading dot of a dot-stuffed line is not counted).
TEXT_LINE_LIMIT = 1000
_READ_CHUNK = 65536


class ClientGone(Exception):
    pass


class LineReader:
    """Reads CRLF-terminated lines from a socket, never holding more than one chunk
    plus `limit` octets, whatever the client sends."""

    def __init__(self, sock, before_block):
        self.sock = sock
        self.before_block = before_block
        self.buf = b""
        self.pos = 0

    def buffered(self) -> bool:
        return self.pos < len(self.buf)

    def discard_buffer(self) -> None:
        self.buf, self.pos = b"", 0

    def _fill(self) -> None:
        self.before_block()
        try:
            data = self.sock.recv(_READ_CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError):
            raise socket.timeout("read timed out") from None   # SO_RCVTIMEO expired
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


def set_io_timeout(sock, seconds: float) -> None:
    """Read/write timeouts kept by the kernel (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket.

    Python's own socket timeout polls before every recv and send; with the kernel's
    timers each read is one system call, which matters with many threads sharing the GIL.
    """
    if sock.gettimeout() is not None:   # accepted sockets are already blocking
        sock.settimeout(None)
    whole = int(seconds)
    packed = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, packed)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, packed)


class Connection:
    def __init__(self, server, sock, peer_ip: str):
        self.server = server
        self.config = server.config
        self.sock = sock
        self.peer_ip = peer_ip
        self.out = []
        set_io_timeout(sock, self.config.smtp_timeout_seconds)
        self.reader = LineReader(sock, self.flush)

    def send(self, reply) -> None:
        self.out.append(reply.encode())

    def flush(self) -> None:
        if self.out:
            data, self.out = b"".join(self.out), []
            try:
                self.sock.sendall(data)
            except (BlockingIOError, ssl.SSLWantWriteError):
                raise socket.timeout("write timed out") from None   # SO_SNDTIMEO expired

    def run(self) -> None:
        tls = self.server.tls_context is not None
        session = Session(self.server.policy, self.config, self.peer_ip, tls_available=tls)
        try:
            self.send(session.greeting())
            while not session.closing:
                line, too_long = self.reader.readline(COMMAND_LINE_LIMIT)
                if too_long:
                    session.errors += 1
                    self.send(R.LINE_TOO_LONG)
                    continue
                reply = session.command(line.rstrip(b"\r\n"))
                self.send(reply)
                if session.in_data:
                    self.flush()
                    data, error = read_data(self.reader, self.config.max_message_bytes)
                    self.send(session.data_received(data, error))
                elif session.start_tls:
                    self.flush()
                    # RFC 3207 §4.2: nothing sent before the handshake may be acted on.
                    self.reader.discard_buffer()
                    self.sock = self.server.tls_context.wrap_socket(self.sock, server_side=True)
                    self.reader = LineReader(self.sock, self.flush)
                    session = Session(self.server.policy, self.config, self.peer_ip,
                                      tls_active=True, tls_available=False)
            self.flush()
        except socket.timeout:
            self._last_words(R.TIMEOUT)
        except (ClientGone, ConnectionError, ssl.SSLError, OSError):
            pass
        except Exception as exc:  # a bug must cost one connection, never the server
            log("smtp", f"error in session with {self.peer_ip}: {exc!r}")
            self._last_words(R.STORAGE_FAILED.with_text("Local error, closing connection"))

    def _last_words(self, reply) -> None:
        try:
            self.out = []
            self.sock.settimeout(1.0)
            self.sock.sendall(reply.encode())
        except OSError:
            pass


def _peer_ip(address) -> str:
    ip = address[0]
    return ip[7:] if ip.startswith("::ffff:") else ip   # IPv4-mapped IPv6


class SMTPServer(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, config, policy, host: str = "", port: int = None, tls_context=None):
        self.config = config
        self.policy = policy
        self.tls_context = tls_context or tls.ReloadingContext.for_config(config)   # reloads itself
        self._slots = threading.BoundedSemaphore(config.max_smtp_connections)
        self._active = 0
        self._active_changed = threading.Condition()
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        self._idle_acceptors = 0
        self._threads = 0
        self._threads_lock = threading.Lock()
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
    # thread always waits in accept(); threads are never more than the connection slots + 1.

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
            if self._threads > self.config.max_smtp_connections:
                return
            self._threads += 1
        threading.Thread(target=self._accept_loop, name="smtp-conn", daemon=True).start()

    def _accept_loop(self) -> None:
        while self._accepting.is_set():
            with self._threads_lock:
                self._idle_acceptors += 1
            try:
                request, client_address = self.socket.accept()
            except OSError:
                if not self._accepting.is_set():
                    return
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
            if not self._slots.acquire(blocking=False):
                try:
                    request.settimeout(1.0)
                    request.sendall(R.TOO_MANY_CONNECTIONS.encode())
                except OSError:
                    pass
                self.shutdown_request(request)
                continue
            self._serve_connection(request, client_address)

    def shutdown_request(self, request):
        # close() alone: the socket is ours only, and shutdown() costs a system call
        # (and a turn of the GIL) per connection for nothing.
        request.close()

    def _serve_connection(self, request, client_address):
        with self._active_changed:
            self._active += 1
        connection = None
        try:
            connection = Connection(self, request, _peer_ip(client_address))
            connection.run()
        except Exception as exc:
            log("smtp", f"connection from {client_address[0]} failed: {exc!r}")
        finally:
            if connection is not None and connection.sock is not request:
                connection.sock.close()   # the TLS socket that replaced `request`
            self.shutdown_request(request)
            self._slots.release()
            with self._active_changed:
                self._active -= 1
                self._active_changed.notify_all()

    def drain(self, timeout: float) -> int:
        """Stop accepting, then wait up to `timeout` for open sessions to end; return how many
        were still open. A session mid-DATA finishes and gets its reply before it ends."""
        self.shutdown()
        deadline = time.monotonic() + timeout
        with self._active_changed:
            while self._active and time.monotonic() < deadline:
                self._active_changed.wait(deadline - time.monotonic())
            return self._active

    @property
    def port(self) -> int:
        return self.server_address[1]
