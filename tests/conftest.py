"""Test harness: the real mu server in a subprocess, a fake DNS server (dnslib) and a
capture SMTP server (aiosmtpd) on loopback. Nothing here talks to any other address."""

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MU = os.path.join(ROOT, "mu.py")
ARTIFACTS = os.path.join(ROOT, "test-artifacts")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.02, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def unique(prefix="u") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


# ---------------------------------------------------------------- fake DNS

class FakeDNS:
    """An authoritative-looking DNS server on 127.0.0.1 serving records tests add."""

    def __init__(self):
        from dnslib import QTYPE, RCODE, RR
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        self.records = {}
        self.delay = {}
        outer = self

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                reply = request.reply()
                name = str(request.q.qname).lower()
                qtype = QTYPE[request.q.qtype]
                if name in outer.delay:
                    time.sleep(outer.delay[name])
                    return None
                rdatas = outer.records.get((name, qtype))
                if rdatas:
                    for rd in rdatas:
                        reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rd, ttl=1))
                elif not any(k[0] == name for k in outer.records):
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply

        self.port = free_port()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self.servers = [DNSServer(Resolver(), port=self.port, address="127.0.0.1", tcp=tcp, logger=quiet)
                        for tcp in (False, True)]
        for s in self.servers:
            s.start_thread()

    def add(self, name: str, qtype: str, value):
        from dnslib import A, AAAA, MX, PTR, TXT
        name = name.lower().rstrip(".") + "."
        if qtype == "PTR":
            rd = PTR(value.rstrip(".") + ".")
        elif qtype == "A":
            rd = A(value)
        elif qtype == "AAAA":
            rd = AAAA(value)
        elif qtype == "MX":
            pref, host = value
            rd = MX(host.rstrip(".") + "." if host != "." else ".", pref)
        elif qtype == "TXT":
            data = value.encode()
            rd = TXT([data[i:i + 255] for i in range(0, len(data), 255)])
        else:
            raise ValueError(qtype)
        self.records.setdefault((name, qtype), []).append(rd)

    def mail_domain(self, domain: str, spf: str = None):
        """A domain whose MX is 127.0.0.1 (the capture server)."""
        self.add(domain, "MX", (10, "mx." + domain))
        self.add("mx." + domain, "A", "127.0.0.1")
        if spf:
            self.add(domain, "TXT", spf)

    def stop(self):
        for s in self.servers:
            s.stop()


# ---------------------------------------------------------------- capture SMTP

def self_signed_certificate(folder: str, name: str = "mx.capture.test") -> tuple:
    """(cert path, key path): a throwaway self-signed certificate made with openssl."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True)
    return cert, key


class MXHost:
    """One listening address of the capture MX, with the faults it injects and a record of
    every TCP connection it accepted (monotonic times), so a test can count connections
    per minute. Attributes may be changed while a test runs."""

    def __init__(self, capture, address: str, domain: str = None):
        self.capture, self.address, self.domain = capture, address, domain
        self.starttls = "offer"      # "offer", "off" (not advertised) or "fail" (handshake fails)
        self.smtputf8 = True         # advertise SMTPUTF8
        self.drop_in_data = False    # close the connection after the message data, before replying
        self.hold_data = None        # a threading.Event: the reply to DATA waits until it is set
        self.data_waiting = threading.Event()   # set while a DATA reply is held
        self.connection_times = []
        self.sni = []                # server names clients sent in their TLS hello
        self._contexts = {}

    def tls_context(self):
        import ssl
        if self.starttls == "off":
            return None
        if self.starttls not in self._contexts:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if self.starttls == "offer":
                ctx.load_cert_chain(self.capture.cert, self.capture.key)
            # "fail": no certificate, so every handshake ends in a handshake_failure alert.

            def note_server_name(_ssl_object, name, _ctx):
                self.sni.append(name)
            ctx.sni_callback = note_server_name
            self._contexts[self.starttls] = ctx
        return self._contexts[self.starttls]

    def connections(self, since: float = 0.0, until: float = None) -> int:
        """TCP connections accepted in [since, until) (time.monotonic() values)."""
        until = float("inf") if until is None else until
        return sum(1 for t in self.connection_times if since <= t < until)

    def messages(self) -> list:
        return [m for m in self.capture.messages if m["mx"] is self]


class CaptureSMTP:
    """The remote MX every outbound test delivers to: aiosmtpd on loopback offering STARTTLS
    with a self-signed certificate (made at start with openssl) and SMTPUTF8, as real MX
    hosts do. Rules script replies per domain; `dedicated(domain, dns)` gives a domain an MX
    of its own on another loopback address (same port) whose connections are counted
    apart and whose faults hit that domain alone."""

    def __init__(self):
        import asyncio
        import logging
        import tempfile

        from aiosmtpd.smtp import SMTP

        # A handshake that fails on purpose is not news: keep aiosmtpd's tracebacks out.
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
        self.folder = tempfile.mkdtemp(prefix="mu-capture-")
        self.cert, self.key = self_signed_certificate(self.folder)
        self.messages = []
        self.rcpt_rules = {}     # domain -> list of replies, used in turn (the last one repeats)
        self.data_rules = {}     # domain -> replies at the end of DATA, used in turn likewise (250s store)
        self.data_delay = {}     # domain -> seconds to stall after DATA
        self.connections = 0
        self.port = free_port()
        self.hosts = {}          # listening address -> MXHost
        outer = self

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                session.host_name = hostname
                return responses

            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                domain = address.rpartition("@")[2].lower()
                rule = outer.rcpt_rules.get(domain)
                if rule:
                    reply = rule.pop(0) if len(rule) > 1 else rule[0]
                    if not reply.startswith("250"):
                        return reply
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"

            async def handle_DATA(self, server, session, envelope):
                mx = server.mx
                domains = {r.rpartition("@")[2].lower() for r in envelope.rcpt_tos}
                for d in domains:
                    if d in outer.data_delay:
                        await asyncio.sleep(outer.data_delay[d])
                if mx.hold_data is not None:
                    mx.data_waiting.set()
                    await asyncio.get_running_loop().run_in_executor(None, mx.hold_data.wait, 60)
                    mx.data_waiting.clear()
                if mx.drop_in_data:
                    server.transport.abort()
                    await asyncio.sleep(5)   # cancelled when the connection is gone
                reply = "250 2.0.0 Accepted"
                for d in domains:
                    rule = outer.data_rules.get(d)
                    if rule:
                        reply = rule.pop(0) if len(rule) > 1 else rule[0]
                        if not reply.startswith("250"):
                            return reply
                cipher = session.ssl.get("cipher") if session.ssl else None
                outer.messages.append({"from": envelope.mail_from, "rcpts": list(envelope.rcpt_tos),
                                       "data": envelope.original_content, "helo": session.host_name,
                                       "mail_options": list(envelope.mail_options), "mx": mx,
                                       "tls": cipher[1] if cipher else None, "cipher": cipher[0] if cipher else None})
                return reply

        class Session(SMTP):
            def connection_made(self, transport):
                if self._original_transport is None:   # a new connection, not TLS after STARTTLS
                    local = transport.get_extra_info("sockname")[0]
                    self.mx = outer.hosts.get(local, outer.default)
                    self.mx.connection_times.append(time.monotonic())
                    outer.connections += 1
                    self.tls_context = self.mx.tls_context()
                    self.enable_SMTPUTF8 = self.mx.smtputf8
                super().connection_made(transport)

        self._session_class, self._handler = Session, Handler()
        self.loop = asyncio.new_event_loop()
        self._servers = []
        threading.Thread(target=self.loop.run_forever, name="capture-smtp", daemon=True).start()
        self.default = self._listen("127.0.0.1")

    def _listen(self, address: str, domain: str = None) -> MXHost:
        import asyncio
        host = MXHost(self, address, domain)

        def factory():
            return self._session_class(self._handler, hostname="mx.capture.test", data_size_limit=50_000_000,
                                       enable_SMTPUTF8=True, loop=self.loop)
        server = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(factory, host=address, port=self.port), self.loop).result(10)
        self._servers.append(server)
        self.hosts[address] = host
        return host

    def dedicated(self, domain: str, dns) -> MXHost:
        """An MX of `domain`'s own (mx.DOMAIN on 127.0.77.N, the capture's port), in DNS."""
        for n in range(len(self.hosts) + 1, 255):
            address = f"127.0.77.{n}"
            if address in self.hosts:
                continue
            try:
                host = self._listen(address, domain)
            except OSError:
                continue   # that address and port are someone else's
            dns.add(domain, "MX", (10, "mx." + domain))
            dns.add("mx." + domain, "A", address)
            return host
        raise RuntimeError("no loopback address left for a dedicated MX")

    def for_rcpt(self, address: str) -> list:
        return [m for m in self.messages if address in m["rcpts"]]

    def stop(self):
        import shutil
        for server in self._servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------- mu itself

class Mu:
    """A real `mu.py --serve` process with its own MU_HOME and ports."""

    def __init__(self, home: str, env: dict = None):
        self.home = home
        self.web_port = free_port()
        self.smtp_port = free_port()
        self.imap_port = free_port()
        self.env = dict(os.environ)
        self.env.update({"MU_HOME": home, "MAIL_PORT": str(self.smtp_port), "MAIL_DOMAIN": "mu.test",
                         "IMAP_PORT": str(self.imap_port), "IMAPS_PORT": "off",
                         "SUBMISSION_PORT": str(free_port()), "SUBMISSIONS_PORT": str(free_port()),
                         "MAIL_RATE_CONNECTIONS": "100000", "MAIL_RATE_MESSAGES": "100000",
                         "PYTHONUNBUFFERED": "1"})
        self.env.update(env or {})
        self.proc = None
        self.log_lines = []
        self.program = [MU]   # what the interpreter runs; a test may wrap mu.py to inject a fault

    @property
    def domain(self) -> str:
        return self.env["MAIL_DOMAIN"]

    @property
    def submission_port(self) -> int:
        """SUBMISSION_PORT (STARTTLS when the server has a certificate)."""
        return int(self.env["SUBMISSION_PORT"])

    @property
    def submissions_port(self) -> int:
        """SUBMISSIONS_PORT (implicit TLS; open only when the server has a certificate)."""
        return int(self.env["SUBMISSIONS_PORT"])

    def start(self, attempts: int = 3, timeout: float = 20):
        for attempt in range(attempts):
            self.log_lines = []
            self.proc = subprocess.Popen([sys.executable, *self.program, "--serve", "--address",
                                          f"127.0.0.1:{self.web_port}"],
                                         env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         cwd=ROOT)
            pump = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
            pump.start()
            wait_for(lambda: self.proc.poll() is not None or any("web: Listening on" in l for l in self.log_lines),
                     timeout=timeout, message="mu to start")
            if self.proc.poll() is None:
                return self
            pump.join(5)
            # free_port() can race with any process's outgoing connection taking the same
            # ephemeral port: take new ports and try again.
            if "Address already in use" not in self.log() or attempt == attempts - 1:
                break
            self.web_port, self.smtp_port = free_port(), free_port()
            self.env["MAIL_PORT"] = str(self.smtp_port)
            if self.env.get("IMAP_PORT") == str(self.imap_port):
                self.imap_port = free_port()
                self.env["IMAP_PORT"] = str(self.imap_port)
            for var in ("SUBMISSION_PORT", "SUBMISSIONS_PORT"):
                if self.env[var] != "off":
                    self.env[var] = str(free_port())
        raise RuntimeError("mu exited: " + "".join(self.log_lines))

    def _pump(self, proc):
        for raw in proc.stderr:
            self.log_lines.append(raw.decode("utf-8", "replace"))

    def log(self) -> str:
        return "".join(self.log_lines)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()

    # -- CLI
    def cli(self, *args, input: str = None, check: bool = True):
        result = subprocess.run([sys.executable, MU, *args], env=self.env, input=input, capture_output=True,
                                text=True, cwd=ROOT, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"mu {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def add_user(self, name: str = None, password: str = "password1", admin: bool = False, credits: int = 0):
        name = name or unique()
        args = ["users", "add", name, "--credits", str(credits)] + (["--admin"] if admin else [])
        self.cli(*args, input=password + "\n")
        return name

    def token(self, name: str) -> str:
        return self.cli("users", "token", name).stdout.strip()

    # -- HTTP
    def http(self, method: str, path: str, token: str = None, body=None, headers=None, raw: bytes = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        return Response(resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), payload)

    def send(self, token: str, to, subject="hello", body="hi there", **extra):
        resp = self.http("POST", "/api/mail", token, {"to": to, "subject": subject, "body": body, **extra})
        assert resp.status == 201, resp.text
        return resp.json()

    def inbox(self, token: str, folder="inbox", **params):
        query = "&".join(f"{k}={v}" for k, v in dict(folder=folder, **params).items())
        resp = self.http("GET", f"/api/mail?{query}", token)
        assert resp.status == 200, resp.text
        return resp.json()


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def dns():
    server = FakeDNS()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def capture():
    server = CaptureSMTP()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mu_env(dns, capture):
    return {"MAIL_DNS_SERVER": f"127.0.0.1:{dns.port}", "MAIL_OUTBOUND_PORT": str(capture.port),
            "MAIL_DNS_TIMEOUT": "2", "MAIL_RETRY_BASE_SECONDS": "0.3", "MAIL_OUTBOUND_TIMEOUT": "3",
            # doctor's outbound probe: the capture MX, never a real provider's
            "MU_DOCTOR_MX": "127.0.0.1", "MU_SIGNUPS_PER_HOUR": "1000"}


@pytest.fixture(scope="module")
def mu(tmp_path_factory, mu_env):
    """One running server shared by a test module (tests use unique user names)."""
    server = Mu(str(tmp_path_factory.mktemp("mu") / "home"), mu_env).start()
    yield server
    server.stop()


@pytest.fixture
def make_mu(tmp_path, mu_env):
    """Start a private server with extra settings: make_mu(MAIL_RATE_CONNECTIONS="3")."""
    started = []

    def make(**env):
        server = Mu(str(tmp_path / f"home{len(started)}"), dict(mu_env, **env)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def smtp_dialog(port: int, lines, timeout=10.0) -> list:
    """Send raw lines (bytes, CRLF added unless present) and collect every reply line."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    f = s.makefile("rb")
    replies = [f.readline()]
    try:
        for line in lines:
            data = line if line.endswith(b"\n") else line + b"\r\n"
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass   # the server may close first (a 421 or 554 greeting)
    try:
        for raw in f:
            replies.append(raw)
    except OSError:
        pass
    s.close()
    return [r.decode("utf-8", "replace").rstrip("\r\n") for r in replies]


def codes(replies) -> list:
    """Final reply codes (continuation lines like 250-SIZE dropped)."""
    return [int(r[:3]) for r in replies if len(r) >= 4 and r[3] == " "]
