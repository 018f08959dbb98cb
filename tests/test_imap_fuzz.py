"""Fuzzing the IMAP command parser and session, and mimeinfo, with hypothesis: no exception
escapes, every command gets exactly one completion, and the live server keeps answering.
`make fuzz` runs more examples (MU_FUZZ_EXAMPLES)."""

import os
import re
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from imap_site import IMAPSite, message
from mu import mimeinfo
from mu.imap.parser import BadSyntax, CommandReader, Literal
from mu.imap.session import Session

EXAMPLES = int(os.environ.get("MU_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

COMMANDS = ["CAPABILITY", "NOOP", "LOGOUT", "ID", "ENABLE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME",
            "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "CHECK", "CLOSE",
            "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID FETCH", "UID STORE",
            "UID SEARCH", "UID COPY", "UID MOVE", "UID EXPUNGE", "SORT", "THREAD", "UID SORT", "UID THREAD",
            "CANCELUPDATE", "IDLE", "NOTIFY SET", "NOTIFY NONE", "AUTHENTICATE", "LOGIN", "STARTTLS", "XYZZY"]
ATOMS = ["INBOX", "Sent", "1", "1:*", "*", "2,4:5", "$", "(FLAGS)", "(UID BODY.PEEK[1.MIME])", "BODY[]<0.10>",
         "BINARY[1]", "BINARY.SIZE[2]", "(\\Seen)", "+FLAGS", "-FLAGS.SILENT", "FLAGS", "(UNCHANGEDSINCE 5)",
         "ALL", "FULL", "FAST", "ENVELOPE", "BODYSTRUCTURE", "RETURN", "(MIN MAX COUNT)", "(PARTIAL 1:3)",
         "(UPDATE)", "(SAVE)", "CHARSET", "UTF-8", "US-ASCII", "OR", "NOT", "SEEN", "UNSEEN", "FROM", "HEADER",
         "SUBJECT", "BODY", "TEXT", "LARGER", "SINCE", "1-Jan-2020", "MODSEQ", "UID", "(", ")", '""', '"x y"',
         "NIL", "(ARRIVAL)", "(REVERSE SUBJECT)", "REFERENCES", "ORDEREDSUBJECT", "(MESSAGES UNSEEN SIZE)",
         "CONDSTORE", "QRESYNC", "IMAP4rev2", "UTF8=ACCEPT", "(SUBSCRIBED RECURSIVEMATCH)", "RETURN (CHILDREN)",
         "(QRESYNC (1 1))", "CATENATE", "SET", "STATUS", "(SELECTED (MessageNew MessageExpunge))",
         "(PERSONAL (MailboxName SubscriptionChange))", "(MAILBOXES INBOX (FlagChange))", "NOTIFY", "(TEXT", "URL", '"/INBOX/;UID=1"', "PLAIN", "DONE", "%", "&AOk-", "~"]
tokens = st.one_of(st.sampled_from(ATOMS), st.text(max_size=12),
                   st.integers(min_value=0, max_value=2 ** 33).map(str))


@st.composite
def commands(draw):
    tag = draw(st.one_of(st.just("t1"), st.text(alphabet="abc+*{}\" 1", max_size=4)))
    verb = draw(st.sampled_from(COMMANDS))
    args = draw(st.lists(tokens, max_size=8))
    line = " ".join([tag, verb] + args).encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")
    parts = [line]
    for data in draw(st.lists(st.binary(max_size=200), max_size=2)):
        parts[-1] += b" "
        parts += [Literal(data, draw(st.booleans())), draw(st.sampled_from([b"", b" (\\Seen)", b" x", b")"]))]
    return tag.encode("utf-8", "surrogatepass"), parts


class FuzzConn:
    def __init__(self):
        self.out = []

    def write(self, data):
        assert isinstance(data, bytes)
        self.out.append(data)

    def flush(self):
        pass

    def authenticated(self):
        pass

    def read_line(self):
        return b"DONE\r\n"

    def notifying(self, on):
        pass

    def wait_for_input(self, waker, timeout):
        return "input"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = IMAPSite(tmp_path_factory.mktemp("fuzz"))
    s.add_user("fuzzer")
    for i in range(4):
        s.deliver("fuzzer", message(f"fuzz {i}", extra="Content-Type: text/plain; charset=utf-8\r\n"))
    yield s
    s.close()


def test_command_reader_raises_only_bad_syntax():
    @FUZZ
    @given(st.binary(max_size=300))
    def check(data):
        reader = CommandReader([data])
        for method in ("tag", "atom", "astring", "nstring", "sequence_set", "flag_list", "date", "date_time",
                       "number", "list_mailbox", "quoted"):
            try:
                getattr(CommandReader([data]), method)()
            except BadSyntax:
                pass
        try:
            reader.tag()
            reader.sp()
            reader.word()
        except BadSyntax:
            pass
    check()


def test_session_answers_every_command_exactly_once(site):
    @FUZZ
    @given(st.lists(commands(), min_size=1, max_size=12))
    def check(script):
        conn = FuzzConn()
        session = Session(site.context, conn, "127.0.0.1")
        session.user, session.state = "fuzzer", "AUTHENTICATED"   # LOGIN itself: test_imap.py
        session.handle([b"s SELECT INBOX"])
        assert b"s OK" in b"".join(conn.out)
        for tag, parts in script:
            if session.closing:
                break
            conn.out = []
            session.handle(parts)
            data = b"".join(conn.out)
            assert data.endswith(b"\r\n")
            lines = _response_lines(data)
            completions = [ln for ln in lines if re.match(rb"\S+ (OK|NO|BAD) ", ln) and not ln.startswith(b"* ")]
            bad_tag = [ln for ln in lines if ln.startswith(b"* BAD ")]
            bye = [ln for ln in lines if ln.startswith(b"* BYE ")]
            assert len(completions) == 1 or (not completions and (bad_tag or bye)), lines
    check()


def _response_lines(data: bytes) -> list:
    """Response lines with literals skipped (so literal octets never look like a line)."""
    lines, pos = [], 0
    current = b""
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        if end < 0:
            break
        piece = data[pos:end]
        m = re.search(rb"~?\{(\d+)\}\Z", piece)
        if m:
            current += piece
            pos = end + 2 + int(m.group(1))
            continue
        lines.append(current + piece)
        current = b""
        pos = end + 2
    return lines


mime_parts = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: multipart/digest; boundary=\"b\"\r\n",
    b"--b\r\n", b"--b--\r\n", b"\r\n", b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n", b"Content-Transfer-Encoding: binary\r\n",
    b"From: \"A (b)\" <a@b>, group: c@d;, <@r:x@y>\r\n", b"Subject: =?utf-8?q?=C3=A9?=\r\n", b"(", b")", b"\"",
    b"Content-Disposition: attachment; filename=\"x\"\r\n", b"Content-Language: en, de\r\n", b"\xff\x00", b"=\r\n",
])


@FUZZ
@given(st.lists(st.one_of(mime_parts, st.binary(max_size=30)), max_size=40),
       st.lists(st.integers(min_value=1, max_value=4), max_size=4),
       st.sampled_from(["", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"]))
def test_mimeinfo_never_raises_and_gives_balanced_strings(chunks, path, text):
    raw = b"".join(chunks)
    d = mimeinfo.describe(raw)
    for value in (d.envelope, d.body, d.bodystructure):
        assert _balanced(mimeinfo.wire(value)), value
    if text == "MIME" and not path:
        text = ""
    section = mimeinfo.Section(tuple(path), text, ("from", "subject") if text.startswith("HEADER.") else ())
    out = mimeinfo.section_bytes(raw, section)
    assert out is None or isinstance(out, bytes)
    try:
        data = mimeinfo.binary_bytes(raw, tuple(path))
        assert data is None or isinstance(data, bytes)
    except mimeinfo.UnknownEncoding:
        pass
    assert mimeinfo.describe(mimeinfo.encode_binary_parts(raw))


def _balanced(data: bytes) -> bool:
    """Parentheses balance outside quoted strings and literals, as an IMAP parser sees them."""
    depth, i, n = 0, 0, len(data)
    while i < n:
        c = data[i:i + 1]
        if c == b'"':
            i += 1
            while i < n and data[i:i + 1] != b'"':
                i += 2 if data[i:i + 1] == b"\\" else 1
        elif c == b"{":
            m = re.match(rb"\{(\d+)\}\r\n", data[i:])
            if not m:
                return False
            i += m.end() + int(m.group(1)) - 1
        elif c == b"(":
            depth += 1
        elif c == b")":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


def test_live_server_survives_random_bytes(site):
    before = threading.active_count()

    @settings(max_examples=max(20, EXAMPLES // 10), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.binary(min_size=1, max_size=400), max_size=6))
    def check(packets):
        s = socket.create_connection(("127.0.0.1", site.port), timeout=10)
        s.recv(4096)
        try:
            for p in packets:
                s.sendall(p)
            s.sendall(b"\r\nzz NOOP\r\n")
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()
    check()
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as s:
        assert s.recv(4096).startswith(b"* OK")
        s.sendall(b"a NOOP\r\n")
        assert b"a OK" in s.recv(4096)
    assert threading.active_count() <= before + 3
