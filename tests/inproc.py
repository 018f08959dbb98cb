"""The in-process tier: mu's components built in this test process, with no sockets.

For the many small cases that need no real server process: the web app is a plain WSGI
callable, so requests go straight to it (`Web`), and the store, accounts and mailbox are
the real ones on a temporary MU_HOME. SMTP sessions run over a `socket.socketpair()`
against the real `Connection` and `Session` with the real receive policy (`site.smtp()`),
from any client address a test names; message submission likewise (`site.submission()`,
the real `SubmissionSession` and policy, with TLS when the site has a certificate). Anything that needs a listening socket, a signal or
a second process belongs to the live-server tier (conftest.Mu).

    def test_something(tmp_path):
        site = InProcess(tmp_path)
        alice = site.add_user("alice", credits=10)
        resp = site.web.request("GET", "/api/me", token=site.token("alice"))

    def test_smtp_case(tmp_path, dns):
        site = InProcess(tmp_path, MAIL_DNS_SERVER=f"127.0.0.1:{dns.port}")
        client = site.smtp(peer_ip="192.0.2.7")
        assert client.reply()[0] == 220
        assert client.command(b"EHLO x")[0] == 250
"""

import io
import json
import os
import select
import socket
import sys
import threading
import urllib.parse
from http.cookies import SimpleCookie

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mu import config as config_mod  # noqa: E402


class WebResponse:
    def __init__(self, status: str, headers: list, body: bytes):
        self.status = int(status.split()[0])
        self.status_line = status
        self.header_list = headers
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def cookies(self) -> dict:
        jar = SimpleCookie()
        for k, v in self.header_list:
            if k.lower() == "set-cookie":
                jar.load(v)
        return {name: morsel for name, morsel in jar.items()}


class Web:
    """Calls a WSGI app directly; keeps cookies between requests like a browser would."""

    def __init__(self, wsgi, remote_addr: str = "127.0.0.1"):
        self.wsgi = wsgi
        self.remote_addr = remote_addr
        self.cookies = {}

    def request(self, method: str, path: str, *, token: str = None, json_body=None, form: dict = None,
                body: bytes = b"", headers: dict = None, remote_addr: str = None) -> WebResponse:
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.cookies:
            headers.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        path_part, _, query = path.partition("?")
        environ = {
            # PEP 3333: PATH_INFO is the decoded path's bytes as latin-1 characters
            "REQUEST_METHOD": method, "PATH_INFO": urllib.parse.unquote_to_bytes(path_part).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": remote_addr or self.remote_addr, "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif key != "CONTENT_LENGTH":
                environ["HTTP_" + key] = value
        captured = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"], captured["headers"] = status, response_headers

        chunks = self.wsgi(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        resp = WebResponse(captured["status"], captured["headers"], data)
        for name, morsel in resp.cookies().items():
            if morsel.value and morsel["max-age"] != "0" and "1970" not in (morsel["expires"] or ""):
                self.cookies[name] = morsel.value
            else:
                self.cookies.pop(name, None)
        return resp


class SMTPClient:
    """The client's end of one in-process SMTP connection, served by a thread running
    `Receiver.handle` on the other end of a socketpair."""

    def __init__(self, receiver, peer_ip: str, timeout: float = 10.0, implicit_tls: bool = False):
        self.sock, server_end = socket.socketpair()
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rb")
        self.thread = threading.Thread(target=receiver.handle, args=(server_end, peer_ip, implicit_tls), daemon=True)
        self.thread.start()
        if implicit_tls:
            self.start_tls()

    def send(self, *lines: bytes) -> None:
        """All `lines` in one packet (pipelining), CRLF added to each that lacks it."""
        self.sock.sendall(b"".join(line if line.endswith(b"\n") else line + b"\r\n" for line in lines))

    def reply(self) -> tuple:
        """(code, text) of the next whole reply, lines joined by \\n; (None, "") at EOF."""
        lines = []
        while True:
            raw = self.file.readline()
            if not raw:
                return (None, "\n".join(lines))
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return (int(line[:3]), "\n".join(lines))

    def command(self, line: bytes) -> tuple:
        self.send(line)
        return self.reply()

    def start_tls(self) -> None:
        """The TLS handshake as a client (after the server's 220 to STARTTLS, or at once on
        an implicit TLS connection); the certificate is not checked."""
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.file.close()
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mu.test")
        self.file = self.sock.makefile("rb")

    def answered_within(self, seconds: float) -> bool:
        """Whether the server sends something (or closes) within `seconds`; call it only
        with no reply left unread."""
        poller = select.poll()   # (select() cannot watch descriptors above 1023)
        poller.register(self.sock, select.POLLIN | select.POLLHUP)
        return bool(poller.poll(seconds * 1000))

    def closed(self) -> bool:
        """The server closed the connection, with nothing more to say."""
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()
        self.thread.join(10)


class InProcess:
    """An mu App on a temporary MU_HOME, with its web app reachable through `self.web` and
    its SMTP receiver through `self.smtp()`."""

    def __init__(self, tmp_path, **env):
        environ = {"MU_HOME": str(tmp_path / "home"), "MAIL_DOMAIN": "mu.test"}
        environ.update(env)
        self.config = config_mod.load(environ)
        from mu.app import App
        from mu.web import make_web_app
        self.app = App(self.config)
        self.web = Web(make_web_app(self.app))
        self._receiver = None
        self._submission_receiver = None

    def receive_policy(self):
        from mu.smtp.policy import ReceivePolicy
        app = self.app
        return ReceivePolicy(self.config, app.mailbox, app.blocklist, app.connection_limiter,
                             app.message_limiter, app.resolver, events=app.events)

    @property
    def receiver(self):
        """The SMTP receiver (mu.smtp.server.Receiver) with the real policy, built once."""
        if self._receiver is None:
            from mu.smtp.server import Receiver
            self._receiver = Receiver(self.config, self.receive_policy())
        return self._receiver

    def smtp(self, peer_ip: str = "192.0.2.1", timeout: float = 10.0) -> SMTPClient:
        return SMTPClient(self.receiver, peer_ip, timeout)

    def submission_policy(self):
        from mu.smtp.submission import SubmissionPolicy
        app = self.app
        return SubmissionPolicy(self.config, app.mailbox, app.accounts, app.blocklist, app.queue, events=app.events)

    @property
    def submission_receiver(self):
        """Message submission (its Receiver, built once, with the site's certificate if any)."""
        if self._submission_receiver is None:
            from mu import tls
            from mu.smtp.server import Receiver
            from mu.smtp.submission import SubmissionSession
            self._submission_receiver = Receiver(self.config, self.submission_policy(),
                                                 tls.ReloadingContext.for_config(self.config),
                                                 session_class=SubmissionSession, log_name="submission")
        return self._submission_receiver

    def submission(self, peer_ip: str = "192.0.2.1", timeout: float = 10.0, implicit_tls: bool = False) -> SMTPClient:
        return SMTPClient(self.submission_receiver, peer_ip, timeout, implicit_tls)

    def add_user(self, name: str, password: str = "password1", admin: bool = False, credits: int = 0) -> str:
        self.app.accounts.create(name, password, admin=admin, credits=credits, min_password_chars=1)
        return name

    def token(self, name: str) -> str:
        return self.app.accounts.issue_token(name)
