"""Writing RFC 5322 messages: headers, MIME body, Message-IDs.

Uses the stdlib `email` package with the SMTP policy: CRLF line ends, folded headers,
RFC 2047 encoded words for non-ASCII text, quoted-printable UTF-8 bodies, so no line
exceeds 998 octets (RFC 5322 §2.1.1). An address with a UTF-8 local part cannot be
written with encoded words (RFC 2047 §5 keeps them out of an addr-spec), so such
addresses go into To/Cc as UTF-8 (RFC 6532 §3.2), and the message needs SMTPUTF8.
"""

import datetime
import email.policy
import email.utils
import secrets
import time
from email.headerregistry import Address
from email.message import EmailMessage

POLICY = email.policy.SMTP.clone(max_line_length=78)


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


def format_date(timestamp: float) -> str:
    """An RFC 5322 §3.3 date in UTC, `+0000`: "-0000" would say the zone is unknown."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc))


def needs_smtputf8(message: bytes) -> bool:
    """True when the header section holds UTF-8 (RFC 6532), which only an SMTPUTF8
    transaction may carry (RFC 6531 §3.2); the body is 8BITMIME's business."""
    end = message.find(b"\r\n\r\n")
    return not message[:end if end >= 0 else len(message)].isascii()


def _address_field(name: str, addresses: list) -> bytes:
    """`To: a, b` with UTF-8 addresses as they are, folded between addresses."""
    lines, line = [], f"{name}:"
    for i, address in enumerate(addresses):
        item = f" {address}" + ("," if i < len(addresses) - 1 else "")
        if len(line) > len(name) + 1 and len((line + item).encode("utf-8")) > POLICY.max_line_length:
            lines.append(line)
            line = ""
        line += item
    lines.append(line)
    return "\r\n".join(lines).encode("utf-8")


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
    msg = EmailMessage(policy=POLICY)
    msg["From"] = format_address(from_name, from_addr)
    utf8_addresses = not all(a.isascii() for a in list(to) + list(cc))
    if not utf8_addresses:
        msg["To"] = ", ".join(to)
        if cc:
            msg["Cc"] = ", ".join(cc)
    msg["Subject"] = clean_header_text(subject)
    msg["Date"] = format_date(date)
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
    data = msg.as_bytes(policy=POLICY)
    if utf8_addresses:
        fields = [_address_field("To", list(to))] + ([_address_field("Cc", list(cc))] if cc else [])
        at = data.index(b"\r\nSubject:") + 2   # after From, where the email package puts To
        data = data[:at] + b"\r\n".join(fields) + b"\r\n" + data[at:]
    return data
