"""Message submission against a live server with real clients: swaks (AUTH PLAIN and
LOGIN, cleartext on loopback, STARTTLS, implicit TLS), msmtp with a config file, and
smtplib. A message with an attachment and a non-ASCII subject reaches the capture MX
DKIM-signed and byte for byte, and a local user's INBOX; credits are charged once and
the Sent copy is kept once."""

import email.policy
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage

import dkim
import pytest

from conftest import ROOT, Mu, self_signed_certificate, wait_for

SELECTOR = "sub"


@pytest.fixture(scope="module")
def mu(tmp_path_factory, mu_env, dns):
    """A server with a TLS certificate and a DKIM key whose public half the fake DNS serves."""
    folder = tmp_path_factory.mktemp("submission")
    home = str(folder / "home")
    out = subprocess.run([os.path.join(ROOT, "scripts", "generate-dkim-keys.sh"), "mu.test", SELECTOR],
                         env=dict(os.environ, MU_HOME=home), capture_output=True, text=True, check=True)
    dns.add(f"{SELECTOR}._domainkey.mu.test", "TXT", out.stdout.split('IN TXT "', 1)[1].rsplit('"', 1)[0])
    cert, key = self_signed_certificate(str(folder), "mu.test")
    server = Mu(home, dict(mu_env, MAIL_SELECTOR=SELECTOR, MAIL_TLS_CERT=cert, MAIL_TLS_KEY=key,
                           CREDIT_COST_EMAIL="4")).start()
    yield server
    server.stop()


def account(mu, credits=10):
    """(name, its API token) of a new user whose password is `password1`."""
    name = mu.add_user(credits=credits)
    return name, mu.token(name)


def inbox(mu, token, folder="inbox"):
    return mu.inbox(token, folder)["messages"]


def credits(mu, token):
    return mu.http("GET", "/api/me", token).json()["credits"]


def without_signature(data: bytes) -> bytes:
    """The message below the DKIM-Signature field the queue put on top (with its folded lines)."""
    assert data.startswith(b"DKIM-Signature:")
    lines = data.split(b"\r\n")
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def without_received(data: bytes) -> bytes:
    """The message below mu's Received field (two lines)."""
    first, second, rest = data.split(b"\r\n", 2)
    assert first.startswith(b"Received: from ") and second.startswith(b"\tby mu.test (mu) with ESMTP")
    return rest


def dkim_verifies(data: bytes, dns) -> bool:
    txt = dns.records[(f"{SELECTOR}._domainkey.mu.test.", "TXT")][0]

    def dnsfunc(qname, timeout=5):
        return b"".join(txt.data) if qname == f"{SELECTOR}._domainkey.mu.test.".encode() else None

    return dkim.verify(data, dnsfunc=dnsfunc)


# ---------------------------------------------------------------- the listeners

def test_startup_logs_both_submission_ports(mu):
    log = mu.log()
    assert f"submission: Starting submission server on :{mu.submission_port}\n" in log
    assert f"submission: Starting submission server on :{mu.submissions_port}\n" in log
    health = mu.http("GET", "/healthz").json()
    assert health["submission_ports"] == [mu.submission_port, mu.submissions_port]


def test_port_off_is_not_opened_and_implicit_tls_needs_a_certificate(make_mu, tmp_path):
    server = make_mu(SUBMISSION_PORT="off")
    assert "Starting submission server" not in server.log()
    with pytest.raises(OSError):   # no certificate: the implicit TLS port stays shut too
        socket.create_connection(("127.0.0.1", server.submissions_port), timeout=2).close()
    cert, key = self_signed_certificate(str(tmp_path), "mu.test")
    server = make_mu(SUBMISSIONS_PORT="off", MAIL_TLS_CERT=cert, MAIL_TLS_KEY=key)
    assert server.log().count("submission: Starting submission server on") == 1
    assert f"on :{server.submission_port}\n" in server.log()


def test_malformed_submission_port_is_a_one_line_error(tmp_path):
    for value in ("abc", "0", "70000", "of"):
        out = subprocess.run([sys.executable, os.path.join(ROOT, "mu.py")], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, MU_HOME=str(tmp_path / "home"), SUBMISSION_PORT=value))
        assert out.returncode == 2 and out.stderr.startswith("mu: error: SUBMISSION_PORT: "), value
        assert len(out.stderr.splitlines()) == 1 and not (tmp_path / "home").exists()


def test_idle_session_gets_421_at_shutdown(make_mu):
    server = make_mu()
    with socket.create_connection(("127.0.0.1", server.submission_port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(b"EHLO client.example\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        started = time.monotonic()
        server.proc.send_signal(15)
        assert f.readline().startswith(b"421 4.3.2")
        assert time.monotonic() - started < 10
    assert server.proc.wait(20) == 0


# ---------------------------------------------------------------- swaks

@pytest.mark.parametrize("auth", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("tls", ["cleartext", "starttls", "implicit"])
def test_swaks_submits_with_auth(mu, auth, tls):
    name, _token = account(mu)
    rcpt, rcpt_token = account(mu)
    port = mu.submissions_port if tls == "implicit" else mu.submission_port
    args = ["swaks", "--server", f"127.0.0.1:{port}", "--auth", auth, "--auth-user", name,
            "--auth-password", "password1", "--from", f"{name}@mu.test", "--to", f"{rcpt}@mu.test",
            "--header", f"Subject: swaks {auth} {tls}", "--timeout", "20"]
    args += {"cleartext": [], "starttls": ["--tls"], "implicit": ["--tlsc"]}[tls]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "235 2.7.0" in out.stdout
    (got,) = inbox(mu, rcpt_token)
    assert got["subject"] == f"swaks {auth} {tls}" and got["from"] == name


def test_swaks_with_a_wrong_password_gets_535(mu):
    name, _token = account(mu)
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{mu.submission_port}", "--tls", "--auth", "PLAIN",
                          "--auth-user", name, "--auth-password", "wrong", "--from", f"{name}@mu.test",
                          "--to", f"{name}@mu.test"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "535 5.7.8" in out.stdout


# ---------------------------------------------------------------- msmtp

@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_msmtp_with_a_config_file_and_an_app_password(mu, tmp_path, mode):
    name, token = account(mu)
    rcpt, rcpt_token = account(mu)
    app_password = mu.cli("users", "app-password", name, "--label", "msmtp").stdout.strip()
    port = mu.submission_port if mode == "starttls" else mu.submissions_port
    config = tmp_path / "msmtprc"
    config.write_text(f"defaults\nlogfile {tmp_path / 'msmtp.log'}\n\naccount mu\nhost 127.0.0.1\nport {port}\n"
                      f"from {name}@mu.test\nauth {'plain' if mode == 'starttls' else 'login'}\nuser {name}\n"
                      f"password {app_password}\ntls on\ntls_starttls {'on' if mode == 'starttls' else 'off'}\n"
                      f"tls_certcheck off\n\naccount default : mu\n")
    config.chmod(0o600)
    message = f"From: {name}@mu.test\nTo: {rcpt}@mu.test\nSubject: from msmtp\n\nsent by msmtp\n"
    out = subprocess.run(["msmtp", "-C", str(config), f"{rcpt}@mu.test"], input=message, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr + (tmp_path / "msmtp.log").read_text()
    (got,) = inbox(mu, rcpt_token)
    assert got["subject"] == "from msmtp" and got["body"].strip() == "sent by msmtp"
    assert len(inbox(mu, token, "sent")) == 1
    listed = mu.cli("users", "app-password", name, "--list").stdout
    assert listed.endswith(" msmtp\n") and " never " not in listed   # its last use is recorded


# ---------------------------------------------------------------- smtplib: the message itself

def rich_message(sender: str, to: list) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Ålice Ünïcode <{sender}>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = "Grüße aus dem Büro – résumé attached ✓"
    msg["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = "<rich.1@client.example>"
    msg.set_content("Hallo,\n\nanbei der Lebenslauf. Schöne Grüße\n")
    msg.add_attachment(bytes(range(256)) * 80, maintype="application", subtype="pdf", filename="lebenslauf é.pdf")
    return msg.as_bytes()


def test_smtplib_message_with_attachment_arrives_byte_for_byte_signed_charged_once_sent_once(mu, dns, capture):
    dns.mail_domain("far.example")
    name, token = account(mu, credits=10)
    local, local_token = account(mu)
    rcpts = ["carol@far.example", "dave@far.example", f"{local}@mu.test"]
    data = rich_message(f"{name}@mu.test", rcpts)
    with smtplib.SMTP("127.0.0.1", mu.submission_port, timeout=20) as client:
        client.starttls(context=ssl._create_unverified_context())
        client.login(name, "password1")
        assert client.sendmail(f"{name}@mu.test", rcpts, data) == {}
    got = wait_for(lambda: capture.for_rcpt("carol@far.example"), timeout=20, message="delivery to the MX")
    (delivered,) = got
    assert sorted(delivered["rcpts"]) == ["carol@far.example", "dave@far.example"]
    assert delivered["from"] == f"{name}@mu.test"
    assert dkim_verifies(delivered["data"], dns)
    assert without_received(without_signature(delivered["data"])) == data
    (received,) = inbox(mu, local_token)
    raw = mu.http("GET", f"/api/mail/{received['id']}/raw", local_token).body
    assert without_received(raw) == data
    assert received["subject"] == "Grüße aus dem Büro – résumé attached ✓"
    assert received["from_name"] == "Ålice Ünïcode"
    assert [(a["name"], a["type"], a["size"]) for a in received["attachments"]] == [
        ("lebenslauf é.pdf", "application/pdf", 256 * 80)]
    assert credits(mu, token) == 6   # one message: CREDIT_COST_EMAIL once, whatever the recipients
    sent = inbox(mu, token, "sent")
    assert [m["message_id"] for m in sent] == ["<rich.1@client.example>"]
    assert sent[0]["read"] is True and sent[0]["kind"] == "outbound"


def test_smtplib_over_implicit_tls(mu):
    name, _token = account(mu)
    rcpt, rcpt_token = account(mu)
    with smtplib.SMTP_SSL("127.0.0.1", mu.submissions_port, timeout=20,
                          context=ssl._create_unverified_context()) as client:
        client.login(f"{name}@mu.test", "password1")
        client.sendmail(f"{name}+smtplib@mu.test", [f"{rcpt}@mu.test"],
                        f"From: {name}@mu.test\r\nSubject: over TLS\r\n\r\nhi\r\n")
    (got,) = inbox(mu, rcpt_token)
    assert got["subject"] == "over TLS"
    raw = mu.http("GET", f"/api/mail/{got['id']}/raw", rcpt_token).body
    assert b" with ESMTPSA; " in raw.split(b"\r\n")[1] and b"\r\nMessage-ID: <" in raw   # added: it had none


def test_smtplib_not_enough_credits_says_so(mu):
    name, token = account(mu, credits=3)
    with smtplib.SMTP("127.0.0.1", mu.submission_port, timeout=20) as client:
        client.starttls(context=ssl._create_unverified_context())
        client.login(name, "password1")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail(f"{name}@mu.test", ["carol@far.example"], b"Subject: x\r\n\r\nbody\r\n")
    code, text = refused.value.recipients["carol@far.example"]
    assert code == 554 and b"Not enough credits" in text
    assert credits(mu, token) == 3 and inbox(mu, token, "sent") == []


def test_app_password_revoked_by_the_cli_is_refused_at_once_by_the_running_server(mu):
    name, token = account(mu)
    app_password = mu.cli("users", "app-password", name, "--label", "old phone").stdout.strip()
    message = f"From: {name}@mu.test\r\nSubject: before\r\n\r\nhi\r\n"
    with smtplib.SMTP("127.0.0.1", mu.submission_port, timeout=20) as client:
        client.login(name, app_password)
        client.sendmail(f"{name}@mu.test", [f"{name}@mu.test"], message)
        assert mu.cli("users", "app-password", name, "--revoke", "Old Phone").returncode == 0
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(f"{name}@mu.test", [f"{name}@mu.test"], message.replace("before", "after"))
        assert refused.value.smtp_code == 530
    with smtplib.SMTP("127.0.0.1", mu.submission_port, timeout=20) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login(name, app_password)
        assert failed.value.smtp_code == 535
    assert [m["subject"] for m in inbox(mu, token)] == ["before"]
