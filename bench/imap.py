"""IMAP benchmarks for bench/run.py (`make bench`, or `bench/run.py imap`).

- mimeinfo.describe() per message, for a 4 KB text message and a 1 MB multipart: it runs on
  every delivery, so its cost is part of the SMTP receive path.
- mu's IMAP server against a private Dovecot (Debian's dovecot-imapd, started here) on the
  same 20,000-message mailbox: LOGIN + SELECT + UID FETCH 1:* (UID FLAGS ENVELOPE), and
  fetching 1,000 whole messages. The client reads raw responses without parsing them, so
  the figures are the servers' time.
"""

import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from mu import mimeinfo

MAILBOX_SIZE = 20_000
_FETCHES = re.compile(rb"(?m)^\* \d+ FETCH ")
ROUNDS = 5


def sample_text_message(size: int = 4096) -> bytes:
    head = (b"Received: from mx.example.org (mx.example.org [192.0.2.1]) by mu.test; Mon, 6 May 2024 10:00:00 +0000\r\n"
            b"From: \"Alice Example\" <alice@example.org>\r\nTo: bob@mu.test, \"Carol\" <carol@mu.test>\r\n"
            b"Subject: =?utf-8?q?Quarterly_numbers_=E2=80=94_draft?=\r\nDate: Mon, 6 May 2024 10:00:00 +0000\r\n"
            b"Message-ID: <quarterly.4711@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
    line = b"The numbers are in; please have a look before Thursday's meeting.\r\n"
    return head + line * ((size - len(head)) // len(line))


def sample_multipart(size: int = 1024 * 1024) -> bytes:
    head = (b"From: alice@example.org\r\nTo: bob@mu.test\r\nSubject: photos\r\nDate: Mon, 6 May 2024 10:00:00 +0000\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b1\"\r\n\r\n--=_b1\r\n"
            b"Content-Type: multipart/alternative; boundary=\"=_b2\"\r\n\r\n--=_b2\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n--=_b2\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>See attached.</p>\r\n--=_b2--\r\n")
    per_part = (size - len(head)) // 4
    parts = []
    for i in range(4):
        body = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n"
                * (per_part // 80))
        parts.append(b"--=_b1\r\nContent-Type: image/jpeg; name=\"p%d.jpg\"\r\nContent-Transfer-Encoding: base64\r\n"
                     b"Content-Disposition: attachment; filename=\"p%d.jpg\"\r\n\r\n" % (i, i) + body)
    return head + b"".join(parts) + b"--=_b1--\r\n"


def bench_mimeinfo(row) -> None:
    print("mimeinfo.describe (ENVELOPE, BODY, BODYSTRUCTURE) per message", flush=True)
    for label, raw, n in (("4 KB text message", sample_text_message(), 5000),
                          ("1 MB multipart (2 text, 4 base64 parts)", sample_multipart(), 200)):
        mimeinfo.describe(raw)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(n):
                mimeinfo.describe(raw)
            times.append((time.perf_counter() - started) / n)
        row(f"describe, {label}", f"{statistics.median(times) * 1e6:.0f}", "µs", f"median of 5 x {n}")


# ---------------------------------------------------------------- IMAP against Dovecot

def _message(i: int) -> bytes:
    return (f"From: Sender {i % 97} <sender{i % 97}@example.org>\r\nTo: bench@mu.test\r\n"
            f"Subject: message number {i}\r\nDate: Mon, 6 May 2024 10:{i % 60:02d}:00 +0000\r\n"
            f"Message-ID: <{i}@bench.example>\r\n\r\n" + "hello there, this is a message body line.\r\n" * 40).encode()


class RawClient:
    """Commands in, bytes out until the tagged completion; nothing parsed (the benchmark's
    messages never hold a line that looks like a tagged response)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.n = 0
        self.pending = bytearray()
        while b"\r\n" not in self.pending:
            self._read()
        del self.pending[:self.pending.index(b"\r\n") + 2]   # the greeting

    def _read(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        self.pending += chunk

    def command(self, text: str) -> bytes:
        self.n += 1
        tag = f"b{self.n} ".encode()
        self.sock.sendall(tag + text.encode() + b"\r\n")
        data, searched = self.pending, 0
        while True:
            at = 0 if data.startswith(tag) else data.find(b"\r\n" + tag, max(0, searched - len(tag) - 2))
            if at >= 0:
                end = data.find(b"\r\n", at + 2)
                if end >= 0:
                    line = bytes(data[at:end]).lstrip(b"\r\n")
                    response = bytes(data[:end + 2])
                    self.pending = bytearray(data[end + 2:])
                    if not line.startswith(tag + b"OK"):
                        raise RuntimeError(line.decode(errors="replace"))
                    return response
            searched = len(data)
            self._read()

    def close(self):
        self.sock.close()


def _sync_session(port: int, user: str, password: str) -> float:
    started = time.perf_counter()
    c = RawClient(port)
    c.command(f"LOGIN {user} {password}")
    c.command("SELECT INBOX")
    data = c.command("UID FETCH 1:* (UID FLAGS ENVELOPE)")
    elapsed = time.perf_counter() - started
    c.close()
    assert len(_FETCHES.findall(data)) == MAILBOX_SIZE, data[-200:]
    return elapsed


def _fetch_bodies(port: int, user: str, password: str) -> float:
    c = RawClient(port)
    c.command(f"LOGIN {user} {password}")
    c.command("SELECT INBOX")
    started = time.perf_counter()
    data = c.command("UID FETCH 1:1000 (BODY.PEEK[])")
    elapsed = time.perf_counter() - started
    c.close()
    assert len(_FETCHES.findall(data)) == 1000, data[-200:]
    return elapsed


def _start_dovecot(port: int, messages) -> tuple:
    """A private Dovecot on 127.0.0.1:port with one Maildir user; (pid, folder). Its folder is
    its own, searchable by Dovecot's unprivileged processes (the bench's tmp is 0700)."""
    folder = tempfile.mkdtemp(prefix="mu-bench-dovecot-")
    os.chmod(folder, 0o755)
    maildir = os.path.join(folder, "mail", "bench", "Maildir")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub))
    for i, raw in enumerate(messages, 1):
        with open(os.path.join(maildir, "cur", f"{1700000000 + i}.{i}.bench:2,"), "wb") as f:
            f.write(raw)
    for sub in ("run", "state"):
        os.makedirs(os.path.join(folder, sub))
    with open(os.path.join(folder, "users"), "w") as f:
        f.write(f"bench:{{PLAIN}}benchpass:65534:65534::{folder}/mail/bench::\n")
    with open(os.path.join(folder, "dovecot.conf"), "w") as f:
        f.write(f"""protocols = imap
listen = 127.0.0.1
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
instance_name = mu-bench-{port}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{folder}/mail/%u/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {folder}/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
    subprocess.run(["chown", "-R", "65534:65534", os.path.join(folder, "mail")], check=True)
    subprocess.run(["dovecot", "-c", os.path.join(folder, "dovecot.conf")], check=True)
    pid_file = os.path.join(folder, "run", "master.pid")
    for _ in range(200):   # the master writes its pid once it has daemonized
        if os.path.exists(pid_file) and open(pid_file).read().strip():
            break
        time.sleep(0.05)
    with open(pid_file) as f:
        pid = int(f.read().strip())
    return pid, folder


def _stop(pid: int) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def bench_imap(tmp: str, row, free_port, wait_port) -> None:
    from conftest import Mu
    from mu import config as config_mod
    from mu.mailstore import MailStore
    from mu.records import from_raw
    from mu.store import Store

    print(f"IMAP: mu and Dovecot on the same {MAILBOX_SIZE:,}-message mailbox (median of {ROUNDS})", flush=True)
    messages = [_message(i) for i in range(MAILBOX_SIZE)]
    PASSWORD = "password1"
    site = Mu(os.path.join(tmp, "imap"), {"MAIL_DOMAIN": "mu.test"})
    site.add_user("bench", password=PASSWORD)
    store = Store(site.home)   # filled before the server starts, as `mu.py import` would
    ms = MailStore(store, config_mod.load({"MU_HOME": site.home, "MAIL_DOMAIN": "mu.test"}))
    for start in range(0, MAILBOX_SIZE, 1000):
        ms.store_messages([(from_raw(raw, "imported", ["bench"], 1_700_000_000 + i),
                            [("bench", "INBOX", [], 1_700_000_000 + i, 0)])
                           for i, raw in enumerate(messages[start:start + 1000], start)])
    del ms, store
    site.start()
    site.port = site.imap_port
    # Dovecot checks a {PLAIN} password; mu's account passwords are scrypt (about 50 ms by
    # design), so mu logs in with an app password, which is what mail clients are given.
    PASSWORD = site.cli("users", "app-password", "bench", "--label", "bench").stdout.strip()
    store_kind = "mu.py --serve, its store"
    dovecot_pid = None
    if shutil.which("dovecot") and os.geteuid() == 0:
        port = free_port()
        dovecot_pid, dovecot_folder = _start_dovecot(port, messages)
        wait_port(port)
    try:
        results = {}
        servers = [("mu", site.port, "bench", PASSWORD)]   # (an app password: see above)
        if dovecot_pid:
            servers.append(("Dovecot", port, "bench", "benchpass"))
            _sync_session(port, "bench", "benchpass")   # Dovecot builds its index on first look
        for name, p, user, password in servers:
            _sync_session(p, user, password)
        for _ in range(ROUNDS):   # interleaved, so the machine's drift hits both alike
            for name, p, user, password in servers:
                results.setdefault((name, "sync"), []).append(_sync_session(p, user, password))
                results.setdefault((name, "bodies"), []).append(_fetch_bodies(p, user, password))
        for kind, label in (("sync", "LOGIN+SELECT+UID FETCH 1:* (UID FLAGS ENVELOPE)"),
                            ("bodies", "UID FETCH 1:1000 (BODY.PEEK[]), 2 KB messages")):
            mu_t = statistics.median(results[("mu", kind)])
            row(f"mu: {label}", f"{mu_t * 1000:.0f}", "ms", store_kind)
            if dovecot_pid:
                dc_t = statistics.median(results[("Dovecot", kind)])
                row(f"Dovecot: {label}", f"{dc_t * 1000:.0f}", "ms", "maildir, indexed")
                row("ratio mu / Dovecot", f"{mu_t / dc_t:.2f}", "x", "target ≤ 2")
    finally:
        site.stop()
        if dovecot_pid:
            _stop(dovecot_pid)
            shutil.rmtree(dovecot_folder, ignore_errors=True)
