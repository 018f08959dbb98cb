"""Writing RFC 5322 messages: headers, MIME body, Message-IDs.

Uses the stdlib `email` package with the SMTP policy: CRLF line ends, folded headers,
RFC 2047 encoded words for non-ASCII text, quoted-printable UTF-8 bodies, so no line
exceeds 998 octets (RFC 5322 §2.1.1).
"""

import email.policy
import email.utils
import secrets
import time
from email.headerregistry import Address
from email.message import EmailMessage

POLICY = email.policy.SMTP.clone(max_line_length=78)
# RFC 6532 §3.2: a message to or from a UTF-8 address carries that address as UTF-8 (it can
# only travel by SMTPUTF8 anyway); encoded words are not allowed in an addr-spec (RFC 2047 §5).
UTF8_POLICY = POLICY.clone(utf8=True)


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: everything
# str.splitlines() breaks a line at (the email package refuses such a header value, and
# would fold at it), and nothing a one-line field should hold.
_NOT_IN_HEADER_TEXT = {c: " " for c in [*range(0, 32), 127, *range(0x80, 0xA0), 0x2028, 0x2029]}


def clean_header_text(text: str) -> str:
    """Header field text with CR, LF, other controls and line separators turned into
    spaces (no header injection, no broken fold)."""
    return (text or "").translate(_NOT_IN_HEADER_TEXT).strip()


def new_message_id(domain: str) -> str:
    return f"<{int(time.time() * 1000):x}.{secrets.token_hex(8)}@{domain}>"


def format_address(name: str, address: str) -> str:
    local, _, domain = address.rpartition("@")
    try:
        return str(Address(display_name=clean_header_text(name), username=local, domain=domain))
    except (ValueError, IndexError):
        return address


def build(*, from_name: str, from_addr: str, to: list, subject: str, body: str, message_id: str,
          date: float, in_reply_to: str = None, references: list = (), attachments=(),
          cc: list = ()) -> bytes:
    """The message as bytes with CRLF line ends; `attachments` are (name, type, bytes)."""
    policy = POLICY if all(a.isascii() for a in (from_addr, *to, *cc)) else UTF8_POLICY
    msg = EmailMessage(policy=policy)
    msg["From"] = format_address(from_name, from_addr)
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = clean_header_text(subject)
    msg["Date"] = email.utils.formatdate(date, localtime=False)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg["MIME-Version"] = "1.0"
    text = (body or "").replace("\r\n", "\n").replace("\r", "\n")
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    for name, content_type, data in attachments:
        maintype, _, subtype = (content_type or "application/octet-stream").partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=clean_header_text(name) or "attachment")
    del msg["MIME-Version"]
    msg["MIME-Version"] = "1.0"
    return msg.as_bytes(policy=policy)
