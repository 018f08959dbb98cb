"""Fuzzing the SMTP command parser and MIME intake with hypothesis: no exception escapes,
no thread leaks, and the live server keeps answering. `make fuzz` runs more examples."""

import os
import threading

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import smtp_dialog
from mu import mime
from mu.smtp import replies as R
from mu.smtp.replies import ReplyError
from mu.smtp.session import Session

EXAMPLES = int(os.environ.get("MU_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


class Config:
    max_message_bytes = 10485760
    max_recipients = 50


class Policy:
    hostname = "mu.test"

    def connect(self, ip):
        return None

    def mail_from(self, envelope, address):
        return None

    def rcpt_to(self, envelope, address):
        if not address.endswith("@mu.test"):
            raise ReplyError(R.RELAY_DENIED)
        return ["alice"]

    def deliver(self, envelope, data):
        return R.OK


VERBS = [b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP", b"QUIT", b"VRFY", b"HELP",
         b"STARTTLS", b"BDAT", b"AUTH", b"mail from:<", b"RCPT TO:<a@mu.test>"]
lines = st.one_of(st.binary(max_size=600),
                  st.builds(lambda v, rest: v + b" " + rest, st.sampled_from(VERBS), st.binary(max_size=80)),
                  st.builds(lambda v, t: v + t.encode("utf-8", "surrogatepass"), st.sampled_from(VERBS),
                            st.text(max_size=60)))


@FUZZ
@given(st.lists(lines, max_size=30))
def test_session_never_raises(commands):
    session = Session(Policy(), Config(), "127.0.0.1", tls_available=True)
    session.greeting()
    for line in commands:
        if session.closing:
            break
        reply = session.command(line.replace(b"\r", b"").replace(b"\n", b""))
        assert isinstance(reply, R.Reply) and 200 <= reply.code < 600
        assert b"\r\n" in reply.encode()
        if session.in_data:
            assert session.data_received(b"Subject: x\r\n\r\ny\r\n", None).code == 250


mime_parts = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=", b"--", b"\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Type: text/html; charset=bogus\r\n", b"=?utf-8?b?", b"?=", b"Subject: ", b"From: ", b"=?x?q?=FF?=",
    b"Content-Disposition: attachment; filename*=utf-8''%FF\r\n", b"\xff\xfe", b"<", b">", b"\"", b",",
    b"Content-Type: message/rfc822\r\n", b"In-Reply-To: <", b"References: ",
])


@FUZZ
@given(st.lists(st.one_of(mime_parts, st.binary(max_size=40)), max_size=60))
def test_mime_parse_never_raises(chunks):
    parsed = mime.parse(b"".join(chunks))
    assert isinstance(parsed["subject"], str) and isinstance(parsed["text"], str)
    for name, ctype, data in parsed["attachments"]:
        assert isinstance(name, str) and isinstance(data, bytes)


@settings(max_examples=max(20, EXAMPLES // 10), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(lines, min_size=1, max_size=15))
def test_live_server_survives_random_sessions(mu, commands):
    before = threading.active_count()
    replies = smtp_dialog(mu.smtp_port, [c.replace(b"\n", b"") for c in commands], timeout=15)
    assert replies and replies[0].startswith("220")
    again = smtp_dialog(mu.smtp_port, [b"NOOP", b"QUIT"])
    assert again[1].startswith("250")
    assert threading.active_count() <= before + 1


@FUZZ
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=200),
       st.sampled_from(["7bit", "8bit", "quoted-printable", "base64"]),
       st.sampled_from(["utf-8", "iso-8859-1", "us-ascii"]))
def test_simple_text_fast_path_agrees_with_the_email_package(body, cte, charset):
    from email.message import EmailMessage
    try:
        body.encode(charset)
    except UnicodeEncodeError:
        return
    if cte == "7bit" and not body.isascii():
        return
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Ann <a@example.org>", "b@example.org", "Grüße ✓"
    msg.set_content(body, charset=charset, cte=cte)
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    assert mime._simple_text(raw) is not None
    fast = mime.parse(raw)
    headers, text, _html, _atts = mime._parse_mime(raw)
    assert fast["text"] == text and fast["subject"] == "Grüße ✓" and fast["from_name"] == "Ann"
