"""mu against real software nobody here wrote: Postfix as the recipient's MX (with OpenDKIM
verifying mu's signatures), Postfix relaying into mu over TLS, and Postfix refusing mail.

Our own fakes (aiosmtpd, dnslib) share our assumptions; these peers do not. Each peer's own
log is the witness: what Postfix says it received, over what, and how often mu came back.
"""

import base64
import email
import email.policy
import os
import re
import smtplib
import subprocess
import time
from email.message import EmailMessage

import pytest

from conftest import ROOT, Mu, unique
from interop import OpenDKIM, PeerFolder, Postfix, poll, self_signed_certificate
from mu.smtp import replies as R

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="private Postfix instances need root")

REMOTE = "remote.test"          # the recipient domain; Postfix is its MX
SENDER_DOMAIN = "sender.test"   # outside senders whose mail Postfix relays into mu
SELECTOR = "interop"
RETRY_BASE_SECONDS = 1.0
# The documented schedule (docs/configuration.md, MAIL_RETRY_BASE_SECONDS): the first retry
# after 1x the base, the second after 5x.
FIRST_RETRY_GAPS = (1 * RETRY_BASE_SECONDS, 5 * RETRY_BASE_SECONDS)
# The queue looks for due entries once a second, so a retry may come up to that much late.
SCHEDULER_SLACK_SECONDS = 2.5

MAILBOXES = {"bob": "bob", "jürgen": "juergen", "busy": "busy"}   # local part -> Maildir


# ---------------------------------------------------------------- peers

@pytest.fixture(scope="module")
def peers():
    folder = PeerFolder()
    yield folder
    folder.remove()


@pytest.fixture(scope="module")
def mu_server(request, peers, dns, mx, tmp_path_factory):
    """One mu: signs with a key the fake DNS publishes, offers STARTTLS, delivers to the
    Postfix MX, and is the relay's next hop."""
    home = str(tmp_path_factory.mktemp("interop") / "home")
    out = subprocess.run([os.path.join(ROOT, "scripts", "generate-dkim-keys.sh"), "mu.test", SELECTOR],
                         env=dict(os.environ, MU_HOME=home), capture_output=True, text=True, check=True)
    dns.add(f"{SELECTOR}._domainkey.mu.test", "TXT", out.stdout.split('IN TXT "', 1)[1].rsplit('"', 1)[0])
    dns.mail_domain(REMOTE)
    cert, key = self_signed_certificate(peers.path, "mu.test")
    server = Mu(home, {"MAIL_DNS_SERVER": f"127.0.0.1:{dns.port}", "MAIL_DNS_TIMEOUT": "2",
                       "MAIL_SELECTOR": SELECTOR, "MAIL_TLS_CERT": cert, "MAIL_TLS_KEY": key,
                       "MAIL_OUTBOUND_PORT": str(mx.port), "MAIL_OUTBOUND_TIMEOUT": "10",
                       "MAIL_RETRY_BASE_SECONDS": str(RETRY_BASE_SECONDS)})
    request.addfinalizer(server.stop)
    return server.start()


@pytest.fixture(scope="module")
def opendkim(request, peers, dns):
    milter = OpenDKIM(peers, dns.port, authserv_id=f"mx.{REMOTE}")
    request.addfinalizer(milter.stop)   # before start(): a half-started peer is stopped too
    return milter.start()


@pytest.fixture(scope="module")
def mx(request, peers, opendkim):
    """Postfix as REMOTE's MX: virtual mailboxes, STARTTLS, SMTPUTF8, OpenDKIM as milter,
    450 for busy@, 550 (unknown user) for anyone not in the mailbox table."""
    cert, key = self_signed_certificate(peers.path, f"mx.{REMOTE}")
    postfix = Postfix(peers, "mx", f"mx.{REMOTE}", {
        "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key,
        "smtpd_milters": f"inet:127.0.0.1:{opendkim.port}", "milter_default_action": "accept",
        "virtual_mailbox_domains": REMOTE, "virtual_uid_maps": "static:65534",
        "virtual_gid_maps": "static:65534",
    })
    mailboxes = {f"{local}@{REMOTE}": f"{REMOTE}/{folder}/" for local, folder in MAILBOXES.items()}
    busy = postfix.write_map("recipient_access", {f"busy@{REMOTE}": "450 4.2.1 Mailbox busy, try later"})
    postfix.settings.update({"virtual_mailbox_base": postfix.mail_dir,
                             "virtual_mailbox_maps": postfix.write_map("vmailbox", mailboxes),
                             "smtpd_recipient_restrictions": f"check_recipient_access {busy}"})
    request.addfinalizer(postfix.stop)
    return postfix.start()


@pytest.fixture(scope="module")
def relay(request, peers, mu_server, mx):
    """Postfix relaying mu.test to mu, TLS required, no DNS, no header rewriting (so what it
    relays is what it was given, plus its Received line)."""
    postfix = Postfix(peers, "relay", "relay.test", {
        "smtp_tls_security_level": "encrypt",
        "local_header_rewrite_clients": "",
        "message_size_limit": str(20 * 1024 * 1024),
    })
    postfix.settings["transport_maps"] = postfix.write_map(
        "transport", {mu_server.domain: f"smtp:[127.0.0.1]:{mu_server.smtp_port}"})
    request.addfinalizer(postfix.stop)
    return postfix.start()


# ---------------------------------------------------------------- helpers

def sender(mu, credits=20):
    name = mu.add_user(credits=credits)
    return name, mu.token(name)


def credits(mu, token) -> int:
    return mu.http("GET", "/api/me", token).json()["credits"]


def wait_status(mu, token, msg_id, wanted, peer, timeout=20):
    """Poll the sent copy until its status is in `wanted`; on a time-out say what mu and
    the peer logged, which is where an interop failure shows."""
    def check():
        msg = mu.http("GET", f"/api/mail/{msg_id}", token).json()
        return msg if msg.get("status") in wanted else None
    try:
        return poll(check, timeout, f"status in {wanted}")
    except AssertionError as exc:
        last = mu.http("GET", f"/api/mail/{msg_id}", token).json()
        raise AssertionError(f"{exc}; status {last.get('status')!r} ({last.get('status_detail')!r}); "
                             f"postfix {peer.name} logged {len(smtpd_sessions(peer, 0))} connections\n"
                             f"--- mu log (tail)\n{''.join(mu.log_lines[-15:])}"
                             f"--- postfix {peer.name} log (tail)\n"
                             + "\n".join(peer.log().splitlines()[-15:])) from None


def smtpd_sessions(peer, start: int) -> list:
    """Lines `connect from` Postfix's smtpd logged after log offset `start`."""
    return [l for l in peer.log()[start:].splitlines() if "smtpd[" in l and ": connect from " in l]


def delivered(peer, rcpt: str) -> list:
    """Postfix's `status=sent` lines for `rcpt`; Postfix answers 250 before it delivers,
    so callers poll for them."""
    return [l for l in peer.log().splitlines() if f"to=<{rcpt}>" in l and "status=sent" in l]


def wait_delivered(peer, rcpt: str) -> list:
    return peer.wait_log(rf"to=<{re.escape(rcpt)}>.*status=sent")


def stored_at_mx(mx, local: str, message_id: str) -> tuple:
    """(parsed, raw) of the message with `message_id` in `local`'s Maildir at the MX."""
    def find():
        return [m for m in mx.maildir_messages(f"{REMOTE}/{MAILBOXES[local]}") if message_id.encode() in m]
    raw = poll(find, 20, f"{message_id} in {local}'s mailbox")[0]
    return email.message_from_bytes(raw, policy=email.policy.default), raw


def dkim_result(raw: bytes) -> str:
    """OpenDKIM's verdict in the Authentication-Results it added (authserv-id mx.REMOTE)."""
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", raw.split(b"\n\n", 1)[0])
    for line in unfolded.splitlines():
        if line.lower().startswith(b"authentication-results: mx." + REMOTE.encode()):
            found = re.search(rb"dkim=(\w+)\b.*?header\.d=([\w.-]+)", line)
            if found:
                return f"{found[1].decode()} {found[2].decode()}"
    return "none"


# ---------------------------------------------------------------- mu -> Postfix (the recipient's MX)

def test_delivery_to_postfix_uses_starttls_and_dkim_passes(mu_server, mx):
    name, token = sender(mu_server)
    start = len(mx.log())
    msg = mu_server.send(token, f"bob@{REMOTE}", subject="interop hello", body="Hello Bob,\nfrom mu.\n")
    done = wait_status(mu_server, token, msg["id"], {"sent"}, mx)
    assert done["status_detail"].startswith("250 2.0.0 Ok: queued as"), done["status_detail"]
    parsed, raw = stored_at_mx(mx, "bob", msg["message_id"])
    log = mx.log()[start:]
    assert "Anonymous TLS connection established from unknown[127.0.0.1]" in log
    assert re.search(r"to=<bob@remote\.test>, relay=virtual, .*status=sent \(delivered to maildir\)", log)
    assert len(smtpd_sessions(mx, start)) == 1
    assert parsed["From"] == f"{name} <{name}@mu.test>" and parsed["Subject"] == "interop hello"
    assert re.search(r"by mx\.remote\.test \(Postfix\) with ESMTPS", parsed["Received"])
    assert dkim_result(raw) == "pass mu.test"
    assert parsed.get_content() == "Hello Bob,\nfrom mu.\n"


def test_smtputf8_recipient_delivered_to_postfix(mu_server, mx):
    name, token = sender(mu_server)
    msg = mu_server.send(token, f"jürgen@{REMOTE}", subject="grüezi", body="Grüße an Jürgen\n")
    wait_status(mu_server, token, msg["id"], {"sent"}, mx)
    wait_delivered(mx, f"jürgen@{REMOTE}")
    parsed, raw = stored_at_mx(mx, "jürgen", msg["message_id"])
    # RFC 6531 §3.7.3: the receiving MTA records a UTF-8 transaction as UTF8SMTP(S).
    assert "with UTF8SMTPS" in parsed["Received"]
    assert raw.count(f"jürgen@{REMOTE}".encode()) >= 2   # envelope (Delivered-To) and the To header
    assert f"To: jürgen@{REMOTE}".encode() in raw        # RFC 6532: UTF-8 as it is, not encoded words
    assert parsed.get_content() == "Grüße an Jürgen\n"
    assert dkim_result(raw) == "pass mu.test"


def test_non_ascii_subject_and_attachment_reach_postfix_intact(mu_server, mx):
    name, token = sender(mu_server)
    payload = os.urandom(150_000)
    subject = "Grüße aus Zürich — 東京 📎"
    body = "Ünïcödé body line\n" + "x" * 300 + "\n"   # one line longer than 78: quoted-printable folds it
    msg = mu_server.send(token, f"bob@{REMOTE}", subject=subject, body=body,
                         attachments=[{"name": "résumé.pdf", "type": "application/pdf",
                                       "content": base64.b64encode(payload).decode()}])
    wait_status(mu_server, token, msg["id"], {"sent"}, mx)
    parsed, raw = stored_at_mx(mx, "bob", msg["message_id"])
    assert parsed["Subject"] == subject
    assert all(len(line) <= 998 for line in raw.split(b"\n"))
    text = parsed.get_body(("plain",))
    assert text.get_content() == body
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_filename() == "résumé.pdf" and attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == payload
    assert dkim_result(raw) == "pass mu.test"   # the signature covers the body, attachment and all


# ---------------------------------------------------------------- Postfix (a relay) -> mu

def relayed_into_mu(mu, relay, user_token, message: bytes, mail_from: str, rcpt: str, **options):
    """Inject `message` into the relay's smtpd; return (API message, raw as mu serves it)."""
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.sender.test", timeout=30) as client:
        client.sendmail(mail_from, [rcpt], message, **options)
    wait_delivered(relay, rcpt)
    listed = poll(lambda: mu.inbox(user_token)["messages"], 10, "the message in mu's inbox")
    msg = mu.http("GET", f"/api/mail/{listed[0]['id']}", user_token).json()
    raw = mu.http("GET", f"/api/mail/{msg['id']}/raw", user_token).body
    return msg, raw


def below_trace(raw: bytes, count: int) -> bytes:
    """`raw` without its first `count` header fields (each with its folded lines)."""
    lines = raw.split(b"\r\n")
    fields = 0
    for i, line in enumerate(lines):
        if line[:1] not in (b" ", b"\t"):
            if fields == count:
                return b"\r\n".join(lines[i:])
            fields += 1
    raise AssertionError("fewer header fields than expected")


MU_TRACE_FIELDS = (b"Received:", b"Received-SPF:", b"Authentication-Results:")


def assert_relayed_verbatim(raw: bytes, sent: bytes, relay) -> None:
    """mu's raw copy: its own trace fields, the relay's Received line, then `sent` unchanged."""
    for i, field in enumerate(MU_TRACE_FIELDS):
        assert below_trace(raw, i).startswith(field), raw[:600]
    relayed = below_trace(raw, len(MU_TRACE_FIELDS))
    assert relayed.startswith(b"Received: from client.sender.test") and b"by relay.test (Postfix)" in relayed[:300]
    assert below_trace(relayed, 1) == sent


def test_postfix_relays_smtputf8_sender_into_mu_over_tls(mu_server, relay):
    user = mu_server.add_user()
    token = mu_server.token(user)
    start = len(relay.log())
    author = f"jürgen.müller@{SENDER_DOMAIN}"
    sent = (f"From: Jürgen Müller <{author}>\r\nTo: {user}@mu.test\r\nSubject: Grüße über Postfix\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0100\r\nMessage-ID: <utf8.{unique()}@{SENDER_DOMAIN}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            "\r\nHallo, schöne Grüße!\r\n").encode()
    msg, raw = relayed_into_mu(mu_server, relay, token, sent, author, f"{user}@mu.test", mail_options=["SMTPUTF8"])
    log = relay.log()[start:]
    # "Untrusted": Postfix at `encrypt` does not verify mu's self-signed certificate.
    assert f"Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{mu_server.smtp_port}" in log
    stored = re.escape(f"{R.QUEUED.code} {R.QUEUED.enhanced} {R.QUEUED.text}").replace(re.escape("{id}"), r"\S+")
    assert re.search(rf"status=sent \({stored}\)", log)
    assert msg["from"] == author and msg["from_name"] == "Jürgen Müller"
    assert msg["subject"] == "Grüße über Postfix" and msg["body"] == "Hallo, schöne Grüße!\n"
    received = raw[:len(raw) - len(below_trace(raw, 1))]   # mu's own Received field
    assert re.search(rb"by mu\.test \(mu\) with UTF8SMTPS\b", received), received
    assert_relayed_verbatim(raw, sent, relay)


def test_postfix_relays_5mb_attachment_into_mu_byte_exact(mu_server, relay):
    user = mu_server.add_user()
    token = mu_server.token(user)
    payload = os.urandom(5 * 1024 * 1024)
    original = EmailMessage(policy=email.policy.SMTP)
    original["From"] = f"carol@{SENDER_DOMAIN}"
    original["To"] = f"{user}@mu.test"
    original["Subject"] = "five megabytes"
    original["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    original["Message-ID"] = f"<big.{unique()}@{SENDER_DOMAIN}>"
    original.set_content("The data is attached.\n")
    original.add_attachment(payload, maintype="application", subtype="octet-stream", filename="data.bin")
    sent = original.as_bytes()
    start = len(relay.log())
    msg, raw = relayed_into_mu(mu_server, relay, token, sent, f"carol@{SENDER_DOMAIN}", f"{user}@mu.test")
    assert f"TLS connection established to 127.0.0.1[127.0.0.1]:{mu_server.smtp_port}" in relay.log()[start:]
    assert msg["body"] == "The data is attached.\n"
    (att,) = msg["attachments"]
    assert att["name"] == "data.bin" and att["size"] == len(payload)
    served = mu_server.http("GET", att["url"], token)
    assert served.status == 200 and served.body == payload
    received = raw[:len(raw) - len(below_trace(raw, 1))]
    assert re.search(rb"by mu\.test \(mu\) with ESMTPS\b", received), received
    assert_relayed_verbatim(raw, sent, relay)


# ---------------------------------------------------------------- Postfix refusing mail

def test_postfix_450_retried_on_schedule_then_delivered(mu_server, mx):
    """A 450 from Postfix: mu comes back after 1x then 5x MAIL_RETRY_BASE_SECONDS, one
    connection each time, and stops once Postfix takes the message."""
    name, token = sender(mu_server)
    start = len(mx.log())
    seen = []   # (monotonic time, log line) of each smtpd connection, as it appears

    def sessions(n):
        for line in smtpd_sessions(mx, start)[len(seen):]:
            seen.append((time.monotonic(), line))
        return len(seen) >= n

    msg = mu_server.send(token, f"busy@{REMOTE}", subject="are you there")
    poll(lambda: sessions(2), 15, "mu's first retry")
    # The second session over (so it saw the old table) before the table changes.
    poll(lambda: mx.log()[start:].count(": disconnect from ") >= 2, 15, "the first retry to end")
    deferred = mu_server.http("GET", f"/api/mail/{msg['id']}", token).json()
    assert deferred["status"] == "deferred"
    assert "450 4.2.1" in deferred["status_detail"] and "Mailbox busy" in deferred["status_detail"]
    # Free the mailbox; Postfix's smtpd notices the changed table at its next connection.
    mx.write_map("recipient_access", {})
    wait_status(mu_server, token, msg["id"], {"sent"}, mx, timeout=20)
    sessions(3)
    assert len(seen) == 3, [l for _, l in seen]
    gaps = [seen[i + 1][0] - seen[i][0] for i in range(2)]
    for gap, expected in zip(gaps, FIRST_RETRY_GAPS):
        assert expected * 0.8 <= gap <= expected + SCHEDULER_SLACK_SECONDS, (gaps, FIRST_RETRY_GAPS)
    rejects = [l for l in mx.log()[start:].splitlines() if "NOQUEUE: reject: RCPT" in l and "busy@remote.test" in l]
    assert len(rejects) == 2 and all(": 450 4.2.1 <busy@remote.test>" in l for l in rejects)
    wait_delivered(mx, f"busy@{REMOTE}")
    assert len(delivered(mx, f"busy@{REMOTE}")) == 1
    assert credits(mu_server, token) == 16


def test_postfix_550_bounces_once_and_refunds(mu_server, mx):
    name, token = sender(mu_server)
    start = len(mx.log())
    msg = mu_server.send(token, f"nosuchuser@{REMOTE}", subject="to nobody")
    failed = wait_status(mu_server, token, msg["id"], {"failed"}, mx)
    assert "550 5.1.1" in failed["status_detail"] and "User unknown" in failed["status_detail"]
    poll(lambda: credits(mu_server, token) == 20, 10, "the refund")
    bounce = poll(lambda: [m for m in mu_server.inbox(token)["messages"] if m["kind"] == "bounce"], 10, "a bounce")[0]
    raw = mu_server.http("GET", f"/api/mail/{bounce['id']}/raw", token).text
    assert "Final-Recipient: rfc822; nosuchuser@remote.test" in raw and "Status: 5.1.1" in raw
    assert "User unknown in virtual mailbox table" in raw
    # One connection, no retry: a permanent refusal is final.
    retry_window = FIRST_RETRY_GAPS[0] + SCHEDULER_SLACK_SECONDS
    time.sleep(retry_window)   # the time a wrong retry would take to show: nothing to poll for
    assert len(smtpd_sessions(mx, start)) == 1
    rejects = [l for l in mx.log()[start:].splitlines() if "NOQUEUE: reject: RCPT" in l]
    assert len(rejects) == 1 and ": 550 5.1.1 <nosuchuser@remote.test>: Recipient address rejected" in rejects[0]
