"""Scripted SMTP dialogs: parse a tests/dialogs/*.dialog file and play it against a server.

The format (tests/dialogs/README.md has it too), one directive a line:

    # comment            the first comment line says what the dialog checks
    ! NAME=VALUE         a server setting (dialogs with the same ! lines share a server)
    ! tls                the server offers STARTTLS with a self-signed certificate
    ! blocklist VALUE    the server's blocklist holds VALUE
    ! from IP            the client connects from IP (loopback has all of 127.0.0.0/8)
    ! port submission    the client connects to SUBMISSION_PORT (`submissions`: SUBMISSIONS_PORT,
                         implicit TLS, with `! tls`), not the receiver's MAIL_PORT
    > TEXT               the client sends TEXT and CRLF; consecutive > and >> lines go out
                         together, in one packet (pipelining), when the next < comes
    >> TEXT              the client sends TEXT with no CRLF
    < PREFIX             the next reply (all its lines) ends with a line starting PREFIX
    <~ REGEX             the next reply, its lines joined by \\n, matches REGEX (re.search)
    closed               the server closes the connection, with nothing more to say
    tls                  the client starts TLS now (after the server's 220 to STARTTLS)

TEXT takes escapes \\r \\n \\t \\\\ \\xHH, and {N*TEXT} for TEXT repeated N times. At the
end of a dialog that did not expect `closed`, the client closes its sending side and the
server must then close too without another word: every reply is one the file expects.
"""

import re
import socket
import ssl
from dataclasses import dataclass, field

_REPEAT = re.compile(r"\{(\d+)\*([^}]*)\}")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[rnt\\{])")
_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\", "{": "{"}


@dataclass
class Dialog:
    name: str
    about: str
    settings: tuple            # the ! lines that shape the server, sorted
    source_ip: str = "127.0.0.1"
    port: str = "smtp"         # which of the server's listeners: smtp, submission, submissions
    steps: list = field(default_factory=list)   # (verb, argument, line number)


def expand(text: str) -> bytes:
    """TEXT as bytes: {N*X} repeated, then escapes; every other character as UTF-8."""
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)
    out, at = bytearray(), 0
    for m in _ESCAPE.finditer(text):
        out += text[at:m.start()].encode("utf-8")
        code = m.group(1)
        out += bytes([int(code[1:], 16)]) if code[0] == "x" else _ESCAPES[code].encode()
        at = m.end()
    return bytes(out + text[at:].encode("utf-8"))


def parse(path) -> Dialog:
    name = path.stem
    about, settings, source_ip, port, steps = "", [], "127.0.0.1", "smtp", []
    for number, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("#"):
            about = about or line[1:].strip()
            continue
        verb, _, argument = line.partition(" ")
        if verb == "!":
            if argument.startswith("from "):
                source_ip = argument[5:].strip()
            elif argument.startswith("port "):
                port = argument[5:].strip()
                if port not in ("smtp", "submission", "submissions"):
                    raise ValueError(f"{path.name}:{number}: no port {port!r} (smtp, submission, submissions)")
            else:
                settings.append(argument.strip())
        elif verb in (">", ">>", "<", "<~"):
            steps.append((verb, argument, number))
        elif line.strip() in ("closed", "tls"):
            steps.append((line.strip(), "", number))
        else:
            raise ValueError(f"{path.name}:{number}: cannot read {line!r}")
    return Dialog(name, about, tuple(sorted(settings)), source_ip, port, steps)


class Player:
    """Plays one dialog over a socket; raises AssertionError naming the file's line."""

    def __init__(self, dialog: Dialog, port: int, timeout: float = 10.0):
        self.dialog = dialog
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(dialog.source_ip, 0))
        self.buf = b""
        self.pending = b""
        self.tls = False
        self.closed = False
        self.transcript = []
        if dialog.port == "submissions":   # RFC 8314: TLS from the first byte
            self._tls("", 0)

    def fail(self, number: int, message: str):
        raise AssertionError(f"{self.dialog.name}.dialog:{number}: {message}\n--- transcript\n"
                             + "\n".join(self.transcript))

    def play(self) -> None:
        try:
            for verb, argument, number in self.dialog.steps:
                if self.closed:
                    self.fail(number, "the dialog goes on after the server closed")
                if verb == ">":
                    self.pending += expand(argument) + b"\r\n"
                elif verb == ">>":
                    self.pending += expand(argument)
                else:
                    self._send_pending()
                    getattr(self, "_" + {"<": "reply", "<~": "match"}.get(verb, verb))(argument, number)
            self._send_pending()
            if not self.closed and not self.tls:
                self.sock.shutdown(socket.SHUT_WR)
                rest = self._read_to_end()
                if rest:
                    self.fail(len(self.dialog.steps), f"the server said more than the dialog expects: {rest!r}")
        finally:
            self.sock.close()

    def _send_pending(self) -> None:
        if self.pending:
            self.transcript.append(f"C: {self.pending!r}")
            try:
                self.sock.sendall(self.pending)
            except OSError as exc:
                self.transcript.append(f"   (send failed: {exc})")
            self.pending = b""

    def _line(self, number: int) -> bytes:
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                self.fail(number, "no reply within the timeout")
            except OSError:
                data = b""
            if not data:
                self.fail(number, "the server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        self.transcript.append(f"S: {line!r}")
        return line.rstrip(b"\r")

    def _next_reply(self, number: int) -> list:
        lines = []
        while True:
            line = self._line(number).decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    def _reply(self, prefix: str, number: int) -> None:
        lines = self._next_reply(number)
        if not lines[-1].startswith(prefix):
            self.fail(number, f"expected a reply starting {prefix!r}, got {lines[-1]!r}")

    def _match(self, pattern: str, number: int) -> None:
        text = "\n".join(self._next_reply(number))
        if not re.search(pattern, text):
            self.fail(number, f"expected a reply matching {pattern!r}, got {text!r}")

    def _closed(self, _argument: str, number: int) -> None:
        rest = self._read_to_end()
        if rest:
            self.fail(number, f"expected the server to close, it said {rest!r}")
        self.closed = True

    def _tls(self, _argument: str, number: int) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if self.buf:
            self.fail(number, f"the server said more before the handshake: {self.buf!r}")
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mu.test")
        self.transcript.append("   (TLS)")
        self.tls = True

    def _read_to_end(self) -> bytes:
        rest = self.buf
        self.buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return rest + b"(and the connection stayed open)"
            except OSError:
                return rest
            if not data:
                return rest
            rest += data
