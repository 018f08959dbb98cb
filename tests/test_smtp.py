"""The SMTP receiver against the contract, driven by smtplib, raw sockets, swaks and smtp-source."""

import smtplib
import socket
import ssl
import subprocess
import time
from email.message import EmailMessage

import pytest

from conftest import codes, smtp_dialog, wait_for
from mu.smtp import replies as R


def make_message(to, subject="Test", body="Hello", sender="sender@example.org"):
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


@pytest.fixture(scope="module")
def user(mu):
    name = mu.add_user()
    return name, mu.token(name)


def test_greeting_and_ehlo_advertise_extensions(mu):
    with smtplib.SMTP("127.0.0.1", mu.smtp_port, timeout=10) as s:
        code, text = s.ehlo("client.example")
        assert code == 250
        features = text.decode()
        for ext in ("SIZE 10485760", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            assert ext in features
        assert "STARTTLS" not in features
    assert "smtp: Starting SMTP server (receive only) on :%d" % mu.smtp_port in mu.log()


def test_delivers_to_local_user_and_stores_durably(mu, user):
    name, token = user
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.send_message(make_message(f"{name}@mu.test", subject="Durable"))
    inbox = mu.inbox(token)
    assert inbox["messages"][0]["subject"] == "Durable"
    assert inbox["messages"][0]["from"] == "sender@example.org"
    assert inbox["unread"] >= 1


def test_rcpt_unknown_user_550(mu):
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.ehlo()
        s.mail("a@example.org")
        code, text = s.rcpt("nobody-here@mu.test")
    assert code == 550 and b"User not found" in text


@pytest.mark.parametrize("rcpt", ["someone@gmail.com", "x@mu.test.evil.com", "x@[127.0.0.1]"])
def test_relay_attempt_refused_from_loopback(mu, rcpt):
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.ehlo()
        s.mail("a@example.org")
        code, _ = s.rcpt(rcpt)
    assert code in (550, 554)


def test_local_part_case_plus_tag_and_domain_case(mu, user):
    name, token = user
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.sendmail("a@example.org", [f"{name.upper()}+news@MU.Test"], make_message("x", subject="tagged").as_bytes())
    assert any(m["subject"] == "tagged" for m in mu.inbox(token)["messages"])


def test_postmaster_reaches_every_admin(mu):
    admin1 = mu.add_user(admin=True)
    admin2 = mu.add_user(admin=True)
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.sendmail("a@example.org", ["postmaster@mu.test"], make_message("postmaster@mu.test", subject="pm").as_bytes())
    for admin in (admin1, admin2):
        assert any(m["subject"] == "pm" for m in mu.inbox(mu.token(admin))["messages"])


def test_dot_stuffing_undone_and_raw_keeps_trace_headers(mu, user):
    name, token = user
    data = (b"From: x@example.org\r\nSubject: dots\r\nMessage-ID: <dots@example.org>\r\n\r\n"
            b"..leading dot\r\n.\r\n")
    replies = smtp_dialog(mu.smtp_port, [b"EHLO client.example", b"MAIL FROM:<x@example.org>",
                                          f"RCPT TO:<{name}@mu.test>".encode(), b"DATA", data, b"QUIT"])
    assert codes(replies)[-2] == 250
    msg = next(m for m in mu.inbox(token)["messages"] if m["subject"] == "dots")
    full = mu.http("GET", f"/api/mail/{msg['id']}", token).json()
    assert full["body"].startswith(".leading dot")
    raw = mu.http("GET", f"/api/mail/{msg['id']}/raw", token)
    assert raw.headers["content-type"].startswith("message/rfc822")
    lines = raw.text.split("\r\n")
    assert lines[0].startswith("Received: from client.example")
    assert any(l.startswith("Received-SPF:") for l in lines)
    assert any(l.startswith("Authentication-Results:") for l in lines)
    assert raw.body.endswith(b"\r\n\r\n.leading dot\r\n")


def test_smuggling_bare_lf_dot_does_not_end_data(mu, user):
    name, token = user
    smuggle = (b"Subject: smuggle-outer\r\n\r\nhello\n.\nMAIL FROM:<evil@b.org>\nRCPT TO:<" + name.encode() +
               b"@mu.test>\nDATA\nSubject: smuggled-inner\n\nbad\n.\n"
               b"also\r.\rnot-end\r\n.\r\n")
    replies = smtp_dialog(mu.smtp_port, [b"EHLO x", b"MAIL FROM:<a@b.org>", f"RCPT TO:<{name}@mu.test>".encode(),
                                          b"DATA", smuggle, b"QUIT"])
    assert codes(replies) == [220, 250, 250, 250, 354, 250, 221]
    subjects = [m["subject"] for m in mu.inbox(token, limit=500)["messages"]]
    assert "smuggle-outer" in subjects and "smuggled-inner" not in subjects


def test_client_vanishing_mid_data_stores_nothing_and_server_goes_on(mu, user):
    name, token = user
    s = socket.create_connection(("127.0.0.1", mu.smtp_port))
    s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<" + name.encode() + b"@mu.test>\r\nDATA\r\n"
              b"Subject: half\r\n\r\npartial")
    time.sleep(0.2)
    s.close()
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as c:
        assert c.noop()[0] == 250
    assert all(m["subject"] != "half" for m in mu.inbox(token, limit=500)["messages"])


def test_connection_rate_limit_421(make_mu):
    mu = make_mu(MAIL_RATE_CONNECTIONS="3")
    for _ in range(3):
        assert smtp_dialog(mu.smtp_port, [b"QUIT"])[0].startswith("220")
    assert smtp_dialog(mu.smtp_port, [b"QUIT"])[0].startswith("421")


def test_message_rate_limit_per_sender(make_mu):
    mu = make_mu(MAIL_RATE_MESSAGES="2")
    name = mu.add_user()
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        for _ in range(2):
            s.sendmail("flood@example.org", [f"{name}@mu.test"], b"Subject: x\r\n\r\ny\r\n")
        s.ehlo()
        code, _ = s.mail("flood@example.org")
        assert code in (421, 450, 451)
        s.rset()
        assert s.mail("other@example.org")[0] == 250


def test_blocked_sender_and_ip(make_mu):
    mu = make_mu()
    mu.cli("blocklist", "add", "spammer@bad.com")
    mu.cli("blocklist", "add", "*@worse.org")
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.ehlo()
        code, text = s.mail("Spammer@BAD.com")
        assert code == 554 and b"Transaction failed: sender blocked" in text
        code, _ = s.mail("anyone@worse.org")
        assert code == 554
        assert s.mail("fine@good.org")[0] == 250
    wait_for(lambda: "smtp: Rejected blocked sender: Spammer@BAD.com (IP: 127.0.0.1)" in mu.log(), 5)
    mu.cli("blocklist", "add", "127.0.0.1")
    reply = smtp_dialog(mu.smtp_port, [b"QUIT"])[0]
    assert reply.startswith("554") and "sender blocked" in reply
    mu.cli("blocklist", "remove", "127.0.0.1")
    assert smtp_dialog(mu.smtp_port, [b"QUIT"])[0].startswith("220")


def test_swaks(mu, user):
    name, token = user
    out = subprocess.run(["swaks", "--to", f"{name}@mu.test", "--from", "test@example.com", "--server",
                          f"127.0.0.1:{mu.smtp_port}", "--header", "Subject: via swaks", "--body", "Hello"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(m["subject"] == "via swaks" for m in mu.inbox(token)["messages"])


def test_smtp_source_500_messages_all_delivered(make_mu):
    mu = make_mu()
    name = mu.add_user()
    out = subprocess.run(["/usr/sbin/smtp-source", "-s", "5", "-m", "500", "-f", "load@example.org",
                          "-t", f"{name}@mu.test", f"127.0.0.1:{mu.smtp_port}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    token = mu.token(name)
    total, before = 0, None
    while True:
        page = mu.inbox(token, limit=500, **({"before": before} if before else {}))
        total += len(page["messages"])
        if len(page["messages"]) < 500:
            break
        before = page["messages"][-1]["id"]
    assert total == 500


def test_attachments_html_and_encoded_headers(mu, user):
    name, token = user
    msg = EmailMessage()
    msg["From"] = "=?utf-8?q?J=C3=BCrgen?= <j@example.org>"
    msg["To"] = f"{name}@mu.test"
    msg["Subject"] = "=?utf-8?b?w5xiZXJ3ZWlzdW5n?="
    msg.set_content("plain part")
    msg.add_alternative("<p>html <b>part</b></p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 data", maintype="application", subtype="pdf", filename="report.pdf")
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.send_message(msg)
    m = next(m for m in mu.inbox(token)["messages"] if m["subject"] == "Überweisung")
    assert m["from_name"] == "Jürgen" and m["from"] == "j@example.org"
    full = mu.http("GET", f"/api/mail/{m['id']}", token).json()
    assert full["body"].strip() == "plain part" and full["has_html"]
    att = full["attachments"][0]
    assert (att["name"], att["type"], att["size"]) == ("report.pdf", "application/pdf", 13)
    dl = mu.http("GET", att["url"], token)
    assert dl.status == 200 and dl.body == b"%PDF-1.4 data"
    assert dl.headers["content-disposition"].startswith("attachment")


def test_threading_by_in_reply_to(mu, user):
    name, token = user
    other = mu.add_user()
    sent = mu.send(mu.token(other), f"{name}@mu.test", subject="original")
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.sendmail("ext@example.org", [f"{other}@mu.test"],
                   f"Subject: re\r\nIn-Reply-To: {sent['message_id']}\r\n\r\nanswer\r\n".encode())
    reply = next(m for m in mu.inbox(mu.token(other))["messages"] if m["subject"] == "re")
    assert reply["thread_id"] == sent["thread_id"]


def test_starttls_restarts_session(make_mu, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=mu.test"], check=True, capture_output=True)
    mu = make_mu(MAIL_TLS_CERT=str(cert), MAIL_TLS_KEY=str(key))
    name = mu.add_user()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        assert s.ehlo()[0] == 250 and s.has_extn("starttls")
        assert s.starttls(context=ctx)[0] == 220
        assert s.mail("a@b.org")[0] == 503     # EHLO required again
        s.ehlo()
        assert not s.has_extn("starttls")
        s.sendmail("a@b.org", [f"{name}@mu.test"], b"Subject: tls\r\n\r\nsecret\r\n")
    raw = mu.http("GET", f"/api/mail/{mu.inbox(mu.token(name))['messages'][0]['id']}/raw", mu.token(name)).text
    assert "with ESMTPS" in raw


def test_reply_constants_have_enhanced_codes():
    for name in dir(R):
        value = getattr(R, name)
        if isinstance(value, R.Reply) and value.code not in (220, 334, 354) and name not in ("READY",):
            assert value.enhanced[:1] == str(value.code)[0], name


def test_message_without_headers_uses_envelope(mu, user):
    name, token = user
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.sendmail("bare@example.org", [f"{name}@mu.test"], b"\r\njust a body\r\n")
    msg = mu.inbox(token)["messages"][0]
    assert msg["from"] == "bare@example.org" and msg["to"] == [f"{name}@mu.test"]
    assert mu.http("GET", f"/api/mail/{msg['id']}", token).json()["body"].strip() == "just a body"
