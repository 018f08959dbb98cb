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
    smtp_max_errors = 10
    smtp_max_junk_commands = 100


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


class SubmissionPolicy(Policy):
    def authenticate(self, name, secret, peer_ip, authzid=""):
        if (name, secret) == ("alice", "pw") and authzid in ("", "alice"):
            return {"name": "alice"}
        raise ReplyError(R.AUTH_FAILED)

    def still_valid(self, user):
        return True


AUTH_LINES = [b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH PLAIN AGFsaWNlAHB3", b"AUTH LOGIN YWxpY2U=", b"YWxpY2U=",
              b"cHc=", b"AGFsaWNlAHB3", b"*", b"=", b"AUTH PLAIN =", b"MAIL FROM:<alice@mu.test> AUTH=<>"]
submission_lines = st.one_of(lines, st.sampled_from(AUTH_LINES),
                             st.builds(lambda v, rest: v + rest, st.sampled_from(AUTH_LINES), st.binary(max_size=40)))


@FUZZ
@given(st.lists(submission_lines, max_size=30), st.booleans())
def test_submission_session_never_raises(commands, loopback):
    from mu.smtp.submission import SubmissionSession
    session = SubmissionSession(SubmissionPolicy(), Config(), "127.0.0.1" if loopback else "192.0.2.1",
                                tls_available=True)
    session.greeting()
    for line in commands:
        if session.closing:
            break
        reply = session.command(line.replace(b"\r", b"").replace(b"\n", b""))
        assert isinstance(reply, R.Reply) and 200 <= reply.code < 600
        assert b"\r\n" in reply.encode()
        assert reply.code != 235 or loopback   # no password is taken in clear text from afar
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
def test_single_part_text_agrees_with_the_email_package(body, cte, charset):
    import email
    import email.policy
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
    parsed = mime.parse(raw)
    reference = email.message_from_bytes(raw, policy=email.policy.default).get_content().replace("\r\n", "\n")
    assert parsed["text"] == (reference if reference.strip() else "")   # mu leaves blank text parts out
    assert parsed["subject"] == "Grüße ✓" and parsed["from_name"] == "Ann"


# ---------------------------------------------------------------- DATA reader

class ChunkedSocket:
    """recv() hands out the stream in the chunks given, then end-of-stream."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def recv(self, _size):
        return self.chunks.pop(0) if self.chunks else b""


def _read(reader_chunks, max_bytes, by_line: bool):
    from mu.smtp import server
    reader = server.LineReader(ChunkedSocket(reader_chunks), lambda: None)
    try:
        if by_line:
            result = server._read_data_by_line(reader, server._Content(max_bytes), True)
        else:
            result = server.read_data(reader, max_bytes)
    except server.ClientGone:
        return "gone"
    rest = reader.buf[reader.pos:] + b"".join(reader.sock.chunks)
    return result, rest


_DATA_PIECES = st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"x", b"hello", b"\r\n.\r\n", b".\r\n",
                                b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"y" * 999, b"z" * 1500, b"\0", b"\xff"])


@FUZZ
@given(st.lists(_DATA_PIECES, max_size=40), st.lists(st.integers(1, 3000), max_size=8),
       st.sampled_from([10485760, 2000, 50]))
def test_data_reader_agrees_with_the_line_by_line_rules(pieces, cuts, max_bytes):
    """The fast DATA reader returns what reading line by line returns — content, error and
    what is left for the next command — however the stream is split into reads."""
    stream = b"".join(pieces) + b"\r\n.\r\nQUIT\r\n"
    chunks, at = [], 0
    for cut in cuts:
        if at < len(stream):
            chunks.append(stream[at:at + cut])
            at += cut
    chunks.append(stream[at:])
    chunks = [c for c in chunks if c]
    assert _read(chunks, max_bytes, by_line=False) == _read(chunks, max_bytes, by_line=True)


def test_data_reader_cases():
    """Dot-stuffing undone, the end marker found across reads, smuggling shapes not ending."""
    cases = [
        ([b"a\r\n..b\r\n.\r\n"], (b"a\r\n.b\r\n", None)),
        ([b"a\r\n", b".", b"\r\n"], (b"a\r\n", None)),
        ([b".\r\n"], (b"", None)),
        ([b"a\n.\r\nb\r\n.\r\n"], (b"a\n\r\nb\r\n", None)),
        ([b"a\r.\r\nb\r\n.\r\n"], (b"a\r.\r\nb\r\n", None)),
        ([b"a\r\n.\nb\r\n.\r\n"], (b"a\r\n\nb\r\n", None)),
    ]
    for chunks, expected in cases:
        assert _read(chunks, 10485760, by_line=False)[0] == expected, chunks
    too_long = _read([b"a" * 1001 + b"\r\n.\r\n"], 10485760, by_line=False)[0]
    assert too_long == (None, R.DATA_LINE_TOO_LONG)
    assert _read([b"a" * 998 + b"\r\n.\r\n"], 10485760, by_line=False)[0] == (b"a" * 998 + b"\r\n", None)
    assert _read([b"abc\r\n" * 100 + b".\r\n"], 50, by_line=False)[0] == (None, R.MESSAGE_TOO_BIG)


# ---------------------------------------------------------------- address headers

_HEADER_PIECES = st.sampled_from(["alice@example.org", "bob.smith@mail.example.org", "<", ">", '"', "\\", " ", "\t",
                                  "Alice", "Smith", ",", ";", ":", "(", ")", ".", "@", "=?utf-8?q?J=C3=B6rg?=",
                                  "x+tag@ex-ample.org", "[1.2.3.4]", "'", "!#$%&*+/=?^_`{|}~-", "é"])


@FUZZ
@given(st.lists(_HEADER_PIECES, max_size=12))
def test_plain_mailbox_reading_agrees_with_the_email_package(pieces):
    import email.utils
    value = "".join(pieces)
    plain = mime._plain_mailbox([value])
    if plain is not None:
        assert plain == email.utils.getaddresses([value]), value


def test_plain_mailbox_shapes_take_the_fast_path():
    import email.utils
    for value in ["alice@example.org", "Alice Smith <alice@example.org>", '"Smith, Alice" <alice@example.org>',
                  "  <alice@example.org> ", "=?utf-8?q?J=C3=B6rg?= <j@example.org>", '"" <a@b.example>']:
        assert mime._plain_mailbox([value]) == email.utils.getaddresses([value]), value
    for value in ["a@b.example, c@d.example", "Alice <a@b.example> (comment)", "John Q. Public <j@example.org>"]:
        assert mime._plain_mailbox([value]) is None, value


@FUZZ
@given(st.lists(st.sampled_from(["a", "bc", " ", "\n", "\t\t", "word ", "  " * 300, "x" * 250, "é"]), max_size=60))
def test_snippet_is_the_start_of_the_whitespace_normalised_text(pieces):
    from mu.records import SNIPPET_CHARS, snippet
    text = "".join(pieces)
    assert snippet(text) == " ".join(text.split())[:SNIPPET_CHARS]
