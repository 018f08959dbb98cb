"""mimeinfo: ENVELOPE, BODY/BODYSTRUCTURE, sections and BINARY from raw message bytes."""

import email
import email.policy
import glob
import os
import time
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mu import mimeinfo
from mu.mimeinfo import Section

CRLF = b"\r\n"


def msg(*lines) -> bytes:
    return CRLF.join(x.encode() if isinstance(x, str) else x for x in lines)


def section(raw, part=(), text="", fields=()):
    return mimeinfo.section_bytes(raw, Section(tuple(part), text, tuple(fields)))


# ---------------------------------------------------------------- ENVELOPE

def test_envelope_fields_in_order_with_sender_and_reply_to_defaulting_to_from():
    raw = msg("Date: Thu, 15 Feb 2007 01:02:03 +0200", "Subject: hi", "From: A B <a@b.example>",
              "To: c@d.example, \"E, F\" <e@f.example>", "Sender: ", "In-Reply-To: <x@y>", "Message-ID: <m@id>",
              "", "body", "")
    env = mimeinfo.describe(raw).envelope
    assert env == ('("Thu, 15 Feb 2007 01:02:03 +0200" "hi" (("A B" NIL "a" "b.example")) '
                   '(("A B" NIL "a" "b.example")) (("A B" NIL "a" "b.example")) '
                   '((NIL NIL "c" "d.example")("E, F" NIL "e" "f.example")) NIL NIL "<x@y>" "<m@id>")')


def test_envelope_groups_comments_and_routes():
    raw = msg("From: user@domain (Real Name)", "To: group: g1@d1.org, g2@d2.org;, empty:;",
              "Cc: <@route1,@route2:u@h>", "", "")
    env = mimeinfo.describe(raw).envelope
    assert '(("Real Name" NIL "user" "domain"))' in env
    assert ('((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
            '(NIL NIL "empty" NIL)(NIL NIL NIL NIL))') in env
    assert '((NIL "@route1,@route2" "u" "h"))' in env


def test_envelope_eight_bit_text_is_a_literal_and_encoded_words_stay_raw():
    raw = msg("Subject: caf\xe9 =?utf-8?q?caf=C3=A9?=".encode("latin-1").decode("latin-1").encode("utf-8"), "", "")
    env = mimeinfo.wire(mimeinfo.describe(raw).envelope)
    value = "café =?utf-8?q?caf=C3=A9?=".encode()
    assert b"{%d}\r\n%s" % (len(value), value) in env


def test_envelope_quotes_escape_specials():
    raw = msg('From: "Say \\"hi\\"" <a@b>', "", "")
    assert '(("Say \\"hi\\"" NIL "a" "b"))' in mimeinfo.describe(raw).envelope


_atext = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=6)
_plain_address = st.one_of(
    st.builds(lambda a, b, d: f"{a}.{b}@{d}.example", _atext, _atext, st.sampled_from(["x", "mail-1"])),
    st.builds(lambda n, a: f"{n} <{a}@d.example>", st.text(alphabet="Ab c.", max_size=12), _atext),
    st.builds(lambda n, a: f'"{n}" <{a}@d.example>', st.text(alphabet="Ab ,;:()<>@.", max_size=12), _atext))


@settings(max_examples=300, deadline=None)
@given(st.lists(_plain_address, min_size=1, max_size=4), st.sampled_from([", ", ",", " ,\r\n "]))
def test_plain_address_fast_path_agrees_with_the_full_parser(items, separator):
    value = separator.join(items).encode()
    fast = mimeinfo._plain_addresses(value.replace(b"\r\n", b""))
    assert fast is not None
    assert fast == mimeinfo._general_addresses(value)


# ---------------------------------------------------------------- BODYSTRUCTURE

NESTED = msg(
    "From: a@b", "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="outer"', "",
    "preamble", "--outer", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable",
    "", "caf=C3=A9", "--outer", "Content-Type: multipart/alternative; boundary=inner", "", "--inner",
    "Content-Type: text/html", "", "<p>x</p>", "--inner--", "--outer", "Content-Type: message/rfc822",
    "Content-Disposition: attachment; filename=fwd.eml", "", "From: c@d", "Subject: inner", "", "inner body",
    "--outer", 'Content-Type: application/pdf; name="a.pdf"', "Content-Transfer-Encoding: base64",
    "Content-ID: <pdf@x>", "Content-Language: en", "", "JVBERi0=", "--outer--", "epilogue", "")


def test_bodystructure_nested_multipart_and_message_rfc822():
    d = mimeinfo.describe(NESTED)
    assert d.bodystructure == (
        '(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 9 1 NIL NIL NIL NIL)'
        '(("TEXT" "HTML" NIL NIL NIL "7BIT" 8 1 NIL NIL NIL NIL) "ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL)'
        '("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 39 (NIL "inner" ((NIL NIL "c" "d")) ((NIL NIL "c" "d")) '
        '((NIL NIL "c" "d")) NIL NIL NIL NIL NIL) ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1 '
        'NIL NIL NIL NIL) 4 NIL ("attachment" ("FILENAME" "fwd.eml")) NIL NIL)'
        '("APPLICATION" "PDF" ("NAME" "a.pdf") "<pdf@x>" NIL "BASE64" 8 NIL NIL "en" NIL) '
        '"MIXED" ("BOUNDARY" "outer") NIL NIL NIL)')
    assert d.body.startswith('(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 9 1)')
    assert d.body.endswith('("APPLICATION" "PDF" ("NAME" "a.pdf") "<pdf@x>" NIL "BASE64" 8) "MIXED")')


def test_defaults_text_plain_us_ascii_and_digest_parts_are_messages():
    assert mimeinfo.describe(msg("Subject: x", "", "hello", "")).body == \
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 7 1)'
    digest = msg("Content-Type: multipart/digest; boundary=d", "", "--d", "", "From: a@b", "", "one", "--d--", "")
    assert '"MESSAGE" "RFC822"' in mimeinfo.describe(digest).body


def test_multipart_without_parts_still_has_one_part():
    d = mimeinfo.describe(msg("Content-Type: multipart/mixed; boundary=zz", "", "no delimiters here", ""))
    assert d.body == '(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0) "MIXED")'


def test_rfc2231_boundary_is_decoded_and_continuations_joined():
    raw = msg("Content-Type: multipart/mixed; boundary*=us-ascii''a%20b", "", "--a b",
              "Content-Type: text/plain; name*0=\"long\"; name*1=\"er.txt\"", "", "x", "--a b--", "")
    d = mimeinfo.describe(raw)
    assert '("NAME" "longer.txt")' in d.body and '"7BIT" 1 1' in d.body


def test_header_without_empty_line_ends_at_the_first_non_field_line():
    raw = msg("Content-Type: multipart/alternative; boundary=b", "preamble text, no empty line before it",
              "--b", "Content-Type: text/plain", "", "one", "--b", "Content-Type: text/html", "", "<b>two</b>",
              "--b--", "")
    assert section(raw, (), "HEADER") == b"Content-Type: multipart/alternative; boundary=b\r\n"
    assert section(raw, (2,)) == b"<b>two</b>"


# ---------------------------------------------------------------- sections

def test_sections_by_part_number():
    assert section(NESTED, (1,)) == b"caf=C3=A9"
    assert section(NESTED, (1,), "MIME") == b"Content-Type: text/plain; charset=utf-8\r\n" \
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    assert section(NESTED, (2, 1)) == b"<p>x</p>"
    assert section(NESTED, (3,)) == b"From: c@d\r\nSubject: inner\r\n\r\ninner body"
    assert section(NESTED, (3,), "HEADER") == b"From: c@d\r\nSubject: inner\r\n\r\n"
    assert section(NESTED, (3,), "TEXT") == b"inner body"
    assert section(NESTED, (3, 1)) == b"inner body"
    assert section(NESTED, (5,)) is None
    assert section(NESTED, (1, 1)) is None
    assert section(NESTED, (1,), "HEADER") is None   # not a message/rfc822 part


def test_header_fields_keep_message_order_and_folding():
    raw = msg("Subject: one", "From: x@y", "X-Long: a", "\tb", "subject: two", "", "body")
    assert section(raw, (), "HEADER.FIELDS", ["subject", "x-long"]) == \
        b"Subject: one\r\nX-Long: a\r\n\tb\r\nsubject: two\r\n\r\n"
    assert section(raw, (), "HEADER.FIELDS.NOT", ["subject", "x-long"]) == b"From: x@y\r\n\r\n"
    assert section(raw, (), "HEADER.FIELDS", ["nothing"]) == b"\r\n"
    assert section(raw, (), "TEXT") == b"body"
    assert section(raw, (1,)) == b"body"


# ---------------------------------------------------------------- BINARY

def test_binary_undoes_base64_and_quoted_printable():
    assert mimeinfo.binary_bytes(NESTED, (1,)) == "café".encode()
    assert mimeinfo.binary_bytes(NESTED, (4,)) == b"%PDF-"
    assert mimeinfo.binary_bytes(NESTED, ()) == NESTED
    assert mimeinfo.binary_bytes(NESTED, (3,)) == section(NESTED, (3,))   # composite parts as they are


def test_binary_of_an_unknown_encoding_is_refused():
    raw = msg("Content-Transfer-Encoding: x-uuencode", "", "begin 644 x", "")
    with pytest.raises(mimeinfo.UnknownEncoding):
        mimeinfo.binary_bytes(raw, (1,))


def test_quoted_printable_rules():
    """RFC 2045 §6.7: trailing whitespace dropped, soft breaks joined, bad escapes kept."""
    assert mimeinfo.decode_quoted_printable(b"a  \r\nb=\r\nc=3D=zz= \t\r\nd") == b"a\r\nbc==zzd"
    assert mimeinfo.decode_quoted_printable(b"trailing  \r\nsoft=\r\nbreak=3D") == b"trailing\r\nsoftbreak="


def test_binary_append_content_becomes_base64_and_decodes_back():
    raw = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\xff\r\n"
    stored = mimeinfo.encode_binary_parts(raw)
    assert b"\x00" not in stored and b"Content-Transfer-Encoding: base64" in stored
    assert mimeinfo.binary_bytes(stored, (1,)) == b"\x00\x01\xff\r\n"


# ---------------------------------------------------------------- real-world corpora

CORPORA = (glob.glob("/usr/lib/python3.11/test/test_email/data/msg_*.txt")
           + glob.glob("/usr/share/doc/spamassassin/examples/sample-*.txt")
           + [f for f in glob.glob("/usr/share/gocode/src/github.com/jhillyerd/enmime/testdata/**/*", recursive=True)
              if os.path.isfile(f) and not f.endswith(".go")])


def _corpus_message(path) -> bytes:
    raw = open(path, "rb").read()
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1]
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _leaves(root):
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        if p.children is not None:
            stack.extend(reversed(p.children))
        elif p.message is not None:
            stack.append(p.message)
        elif p.start < p.end or p is root:   # RFC 2046 counts an empty part; the email package drops it
            out.append(p)
    return out


@pytest.mark.skipif(len(CORPORA) < 100, reason="needs the corpora `make test` installs")
def test_real_world_messages_agree_with_the_email_package():
    """On every corpus message the email package reads without a defect, the same leaf
    parts in the same order, and each decodes to the same octets."""
    compared = 0
    for path in CORPORA:
        raw = _corpus_message(path)
        d = mimeinfo.describe(raw)   # never raises, on anything
        assert d.envelope.startswith("(") and d.bodystructure.startswith("(")
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        parts = list(parsed.walk())
        if any(p.defects for p in parts) or any(p.get_content_type() in (
                "message/delivery-status", "message/external-body") for p in parts):
            continue
        theirs = [p for p in parts if not p.is_multipart()]
        mine = _leaves(mimeinfo.parse(raw))
        assert [p.get_content_type().split()[0] for p in theirs] == \
            [(m.type + b"/" + m.subtype).decode("latin-1") for m in mine], path
        for their, my in zip(theirs, mine):
            payload = their.get_payload(decode=True) or b""
            if their.defects:   # not really base64: the email package gives up, mimeinfo decodes what it can
                continue
            if my.encoding == b"base64":
                assert mimeinfo.decode_content(my) == payload, path
            elif my.encoding == b"quoted-printable":
                def norm(b):
                    return b.replace(b"\r\n", b"\n").rstrip(b"\n")
                assert norm(mimeinfo.decode_content(my)) == norm(payload), path
        compared += 1
    assert compared >= 100


# ---------------------------------------------------------------- generated messages

leaf = st.one_of(
    st.builds(lambda t, sub: MIMEText(t, sub, "utf-8"), st.text(max_size=200), st.sampled_from(["plain", "html"])),
    st.builds(lambda b: MIMEApplication(b, "octet-stream"), st.binary(max_size=300)),
)
trees = st.recursive(leaf, lambda kids: st.one_of(
    st.builds(lambda parts, sub: _multipart(sub, parts), st.lists(kids, min_size=1, max_size=4),
              st.sampled_from(["mixed", "alternative", "related"])),
    st.builds(lambda inner: MIMEMessage(inner), kids)), max_leaves=8)


def _multipart(subtype, parts):
    m = MIMEMultipart(subtype)
    for p in parts:
        m.attach(p)
    return m


def _expected(node):
    """[(content type, decoded payload)] of the leaves, in order, as the email package built them."""
    if node.is_multipart() and node.get_content_type() != "message/rfc822":
        return [x for p in node.get_payload() for x in _expected(p)]
    if node.get_content_type() == "message/rfc822":
        return _expected(node.get_payload(0))
    return [(node.get_content_type(), node.get_payload(decode=True))]


@settings(max_examples=int(os.environ.get("MU_FUZZ_EXAMPLES", "200")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(trees)
def test_generated_mime_trees_parse_to_the_same_parts_and_octets(tree):
    tree["Subject"] = "generated"
    raw = tree.as_bytes(policy=email.policy.SMTP)
    mine = _leaves(mimeinfo.parse(raw))
    expected = _expected(tree)
    assert [(m.type + b"/" + m.subtype).decode() for m in mine] == [t for t, _ in expected]
    for part, (_t, payload) in zip(mine, expected):
        assert mimeinfo.decode_content(part) == payload.replace(b"\n", b"\r\n") or \
            mimeinfo.decode_content(part) == payload


# ---------------------------------------------------------------- cost

def _multipart_of(size: int) -> bytes:
    chunk = msg("--b", "Content-Type: text/plain", "", "x" * 70) + CRLF
    count = size // len(chunk)
    return msg("Content-Type: multipart/mixed; boundary=b", "", "") + chunk * count + b"--b--\r\n"


def test_describe_is_linear_in_the_message_size():
    """No quadratic blow-up: 5 MB of parts in well under 3 s, and 4x the size costs < 8x the time."""
    small, large = _multipart_of(1_250_000), _multipart_of(5_000_000)
    started = time.perf_counter()
    mimeinfo.describe(small)
    t_small = time.perf_counter() - started
    started = time.perf_counter()
    mimeinfo.describe(large)
    t_large = time.perf_counter() - started
    assert t_large < 3.0
    assert t_large < 8 * t_small + 0.2
    one_part = msg("Subject: big", "", "y" * 5_000_000)
    started = time.perf_counter()
    mimeinfo.describe(one_part)
    mimeinfo.section_bytes(one_part, Section((), "TEXT"))
    assert time.perf_counter() - started < 1.0


def test_hostile_nesting_is_bounded():
    raw = b"".join(b"Content-Type: message/rfc822\r\n\r\n" for _ in range(5000)) + b"x\r\n"
    d = mimeinfo.describe(raw)
    assert d.body.count("RFC822") <= mimeinfo.MAX_DEPTH + 1
    many = _multipart_of(20 * 1024 * 1024 // 8)
    assert mimeinfo.describe(many).body.count('"TEXT"') <= mimeinfo.MAX_PARTS + 1
