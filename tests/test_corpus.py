"""Real-world messages shipped in Debian packages, sent into the running mu over SMTP as an
MTA would, and read back through the API: subject, text body and attachments (names and
bytes) must be what Python's email package (policy.default) reads from the same bytes.

Corpora: CPython's email test messages (libpython3.11-testsuite), SpamAssassin's samples,
and the enmime Go library's test mail (golang-github-jhillyerd-enmime-dev). Where mu reads
a message differently from the email package on purpose, `reference()` says so and why.
"""

import email
import email.policy
import glob
import os
import re
import smtplib

import pytest

from mu import mime

ENMIME = "/usr/share/gocode/src/github.com/jhillyerd/enmime/testdata"
CORPUS = (sorted(glob.glob("/usr/lib/python3.11/test/test_email/data/msg_*.txt"))
          + sorted(glob.glob("/usr/share/doc/spamassassin/examples/sample-*.txt"))
          + sorted(f for f in glob.glob(f"{ENMIME}/**/*", recursive=True) if f.endswith((".raw", ".golden"))))

# Replies a message may be refused with: a line over 1000 octets (RFC 5321 §4.5.3.1.6),
# the size limit, a MIME limit. Never 451 (our fault) or a dropped connection.
REFUSALS = {550, 552, 554}

# mu reads `Content-Type: application/pdf name="x.pdf"` (the ";" missing) by its first
# word, as enmime does; the email package returns the whole malformed value, which is not
# a type (RFC 2045 §5.1) and was once served as the download's HTTP Content-Type.
# And an attachment whose Content-Type says nothing (`Content-Type: ;`) is stored and served
# as application/octet-stream: RFC 2045 §5.2's text/plain default says how to read a part,
# not what a downloaded file is.
TYPE_OVERRIDES = {
    "mime-bad-content-type.raw": {"Invoice_302232133150612.pdf": "application/pdf"},
    "mime-blank-media-name.raw": {"Invoice_302232133150612.pdf": "application/pdf"},
    "barren-content-type.raw": {"attachment": "application/octet-stream"},
}


def _label(path: str) -> str:
    return os.path.relpath(path, os.path.dirname(os.path.dirname(path)))


def as_mta(raw: bytes) -> bytes:
    """What an MTA hands on: no mbox `From ` separator line, CRLF line ends (smtplib then
    dot-stuffs)."""
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def _guess(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _leaves(part):
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for sub in part.iter_parts():
            yield from _leaves(sub)
    else:
        yield part


def reference(raw: bytes) -> dict:
    """The message as the email package reads it, sorted into body and attachments by the
    rules mu documents (mu/mime.py), with the differences mu chooses marked."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text, html, attachments = [], [], []
    for part in _leaves(msg):
        ctype = part.get_content_type()
        disposition = part.get_content_disposition() or ""
        name = mime.one_line(part.get_filename() or "")
        if ctype.startswith("multipart/"):
            # A multipart with no delimiter line: the email package leaves an empty
            # container; mu shows what it holds as text rather than lose it.
            ctype = "text/plain"
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload(0)
            attachments.append((name or "message.eml", ctype, ("subject", str(inner["subject"] or ""))))
            continue
        if ctype.startswith("message/"):
            # message/delivery-status and the like: the email package parses them into
            # header blocks and gives no bytes; mu keeps the bytes as they came.
            attachments.append((name or "attachment", ctype, ("within", None)))
            continue
        data = part.get_payload(decode=True) or b""
        if ctype.startswith("text/") and disposition in ("", "inline"):
            if mime._codec(part.get_content_charset()) is None:
                # No charset, us-ascii holding 8-bit bytes, or an unknown name: the email
                # package decodes as ASCII and mangles every 8-bit byte; mu reads UTF-8
                # when valid, else Windows-1252 (RFC 6532 mail is UTF-8).
                content = _guess(data)
            else:
                content = part.get_content()
            (html if ctype == "text/html" else text).append(content)
            if name:   # RFC 2183: inline means shown; mu also lists it to be saved
                attachments.append((name, ctype, ("bytes", data)))
        else:
            attachments.append((name or "attachment", ctype, ("bytes", data)))
    body = "\n".join(t for t in text if t.strip()).replace("\r\n", "\n")
    shown_html = "\n".join(h for h in html if h.strip())
    if not body and shown_html:
        body = mime.html_to_text(shown_html)
    # The subject is one line with whitespace runs made single spaces (folding artefacts).
    return {"subject": mime.one_line(str(msg["subject"] or "")), "body": body, "attachments": attachments}


@pytest.fixture(scope="module")
def reader(mu):
    name = mu.add_user()
    return name, mu.token(name)


def test_corpora_are_installed():
    assert len(CORPUS) > 100, "install libpython3.11-testsuite, spamassassin, golang-github-jhillyerd-enmime-dev"


@pytest.mark.parametrize("path", CORPUS, ids=_label)
def test_real_world_message_reads_as_the_email_package_reads_it(mu, reader, path):
    name, token = reader
    raw = as_mta(open(path, "rb").read())
    with smtplib.SMTP("127.0.0.1", mu.smtp_port, timeout=30) as client:
        client.ehlo("corpus.example")
        client.mail("corpus@example.org", ["BODY=8BITMIME"])
        client.rcpt(f"{name}@mu.test")
        code, text = client.data(raw)
    log = mu.log()
    assert "Traceback" not in log and "error in session" not in log
    if code != 250:
        assert code in REFUSALS, (code, text)
        return
    msg_id = re.search(rb"message (\w+) stored", text).group(1).decode()
    got = mu.http("GET", f"/api/mail/{msg_id}", token).json()
    expected = reference(raw)
    assert got["subject"] == expected["subject"][:998]
    assert got["body"].strip() == expected["body"].strip()
    overrides = TYPE_OVERRIDES.get(os.path.basename(path), {})
    assert [a["name"] for a in got["attachments"]] == [n for n, _t, _c in expected["attachments"]]
    for att, (att_name, ctype, (kind, content)) in zip(got["attachments"], expected["attachments"]):
        assert att["type"] == overrides.get(att_name, mime.safe_content_type(ctype)), att_name
        resp = mu.http("GET", att["url"], token)
        assert resp.status == 200 and resp.headers["content-type"] == att["type"]
        assert len(resp.body) == att["size"]
        if kind == "bytes":
            assert resp.body == content, att_name
        elif kind == "subject":
            inner = email.message_from_bytes(resp.body, policy=email.policy.default)
            assert str(inner["subject"] or "") == content, att_name
        else:
            assert resp.body and resp.body in raw, att_name
