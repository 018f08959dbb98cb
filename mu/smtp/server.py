"""The SMTP listener: sockets, bounded reads, timeouts, TLS and one thread per connection.

`socketserver.ThreadingTCPServer` accepts; each connection gets a `Connection` that reads
lines with hard length limits, hands them to a `Session`, and writes the replies. Replies
are flushed only when the client has nothing more buffered, which is what PIPELINING
(RFC 2920) asks of a server.
"""

import socket
import socketserver
import ssl
import threading

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
        data = self.sock.recv(_READ_CHUNK)
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


def read_data(reader: LineReader, max_bytes: int) -> tuple:
    """Read message content up to <CRLF>.<CRLF> (RFC 5321 §4.1.1.4), undoing dot-stuffing.

    Returns (content or None, error reply or None). Only a line that is exactly ".\\r\\n"
    and follows a CRLF ends the data: a bare LF or CR before a dot does not (SMTP
    smuggling). Past `max_bytes` content is counted but no longer kept.
    """
    chunks, size = [], 0
    error = None
    after_crlf = True
    while True:
        line, too_long = reader.readline(TEXT_LINE_LIMIT + 1)
        if after_crlf and line == b".\r\n" and not too_long:
            break
        if too_long and error is None:
            error = R.DATA_LINE_TOO_LONG
        after_crlf = line.endswith(b"\r\n")
        if line.startswith(b"."):
            line = line[1:]
        size += len(line)
        if size > max_bytes:
            error = R.MESSAGE_TOO_BIG
        if error is None:
            chunks.append(line)
    if error is not None:
        return None, error
    return b"".join(chunks), None


class Connection:
    def __init__(self, server, sock, peer_ip: str):
        self.server = server
        self.config = server.config
        self.sock = sock
        self.peer_ip = peer_ip
        self.out = []
        sock.settimeout(self.config.smtp_timeout_seconds)
        self.reader = LineReader(sock, self.flush)

    def send(self, reply) -> None:
        self.out.append(reply.encode())

    def flush(self) -> None:
        if self.out:
            data, self.out = b"".join(self.out), []
            self.sock.sendall(data)

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


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            Connection(self.server, self.request, _peer_ip(self.client_address)).run()
        finally:
            self.server.release_slot()


class SMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    block_on_close = False

    def __init__(self, config, policy, host: str = "", port: int = None):
        self.config = config
        self.policy = policy
        self.tls_context = None
        if config.tls_enabled:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(config.tls_cert, config.tls_key)
            self.tls_context = ctx
        self._slots = threading.BoundedSemaphore(config.max_smtp_connections)
        port = config.smtp_port if port is None else port
        host = host or config.smtp_host
        self.address_family = socket.AF_INET6 if (not host or ":" in host) and socket.has_ipv6 else socket.AF_INET
        try:
            super().__init__((host or ("::" if self.address_family == socket.AF_INET6 else ""), port),
                             _Handler, bind_and_activate=True)
        except OSError:
            if self.address_family != socket.AF_INET6 or host:
                raise
            self.address_family = socket.AF_INET
            super().__init__(("", port), _Handler, bind_and_activate=True)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(R.TOO_MANY_CONNECTIONS.encode())
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def release_slot(self):
        self._slots.release()

    @property
    def port(self) -> int:
        return self.server_address[1]
