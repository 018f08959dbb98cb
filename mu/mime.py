"""Reading received messages: headers decoded, text and HTML bodies, attachments.

Broken MIME never raises: whatever cannot be decoded is kept as an attachment or
shown as text with replacement characters, because losing a message is worse.
"""

import base64
import email
import email.header
import email.policy
import email.utils
import quopri
import re

_MSGID = re.compile(r"<[^<>\s]+>")
# One plain address (`a@b.c`, `Name <a@b.c>` or `"Name" <a@b.c>`) in an address header:
# nearly every From, and most To, take this shape. Anything else goes to the email package.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_MAILBOX = re.compile(
    rf'[ \t]*(?:({_PLAIN_ADDR})|(?:"([^"\\]*)"|({_ATEXT}(?:[ \t]+{_ATEXT})*))?[ \t]*<({_PLAIN_ADDR})>)[ \t]*')


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded; text that will not decode is kept as it came."""
    if "=?" not in value:
        return " ".join(value.split())
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return " ".join(value.split())


def _raw_headers(msg) -> dict:
    """Header name (lower case) -> raw values, read without the header registry's full
    structured parse, which costs more than everything else mu does with a message."""
    headers = {}
    for name, value in msg.raw_items():
        headers.setdefault(name.lower(), []).append(str(value).replace("\r", "").replace("\n", ""))
    return headers


def _header(headers: dict, name: str) -> str:
    values = headers.get(name.lower())
    return decode_words(values[0]) if values else ""


def _plain_mailbox(values: list):
    """[(display name, address)] when the header is one plain mailbox, else None. Gives
    what `email.utils.getaddresses` gives for these shapes (a property test checks)."""
    if len(values) != 1:
        return None
    match = _PLAIN_MAILBOX.fullmatch(values[0])
    if match is None:
        return None
    bare, quoted, phrase, bracketed = match.groups()
    if bare:
        return [("", bare)]
    return [(quoted if quoted is not None else " ".join((phrase or "").split()), bracketed)]


def _addresses(headers: dict, name: str) -> list:
    values = headers.get(name.lower(), [])
    plain = _plain_mailbox(values)
    if plain is not None:
        return [(decode_words(n), a) for n, a in plain]
    try:
        pairs = email.utils.getaddresses(values)
        return [(decode_words(n), a) for n, a in pairs if a and "@" in a]
    except Exception:
        return []


def _part_text(part) -> str:
    try:
        return part.get_content()
    except Exception:
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:
            return ""
        try:
            return payload.decode(part.get_content_charset() or "utf-8", "replace")
        except LookupError:   # an unknown charset name: UTF-8 is the best guess
            return payload.decode("utf-8", "replace")


def _simple_text(raw: bytes):
    """(headers, text) for the common single-part text/plain message, read without the email
    package; None for anything else (multipart, HTML, odd encodings, malformed headers),
    which then takes the full parser."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    headers, name = {}, None
    for line in raw[:end].decode("utf-8", "replace").split("\r\n"):
        if line[:1] in (" ", "\t") and name:
            headers[name][-1] += line
            continue
        field, sep, value = line.partition(":")
        if not sep or not field or " " in field or "\n" in line:
            return None
        name = field.lower()
        headers.setdefault(name, []).append(value.strip())
    ctype = (headers.get("content-type") or ["text/plain"])[0].lower()
    if not ctype.startswith("text/plain") or headers.get("content-disposition"):
        return None
    charset = "utf-8"
    for param in ctype.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key == "charset":
            charset = value.strip('"') or "utf-8"
    encoding = (headers.get("content-transfer-encoding") or ["7bit"])[0].lower()
    body = raw[end + 4:]
    if encoding == "quoted-printable":
        body = quopri.decodestring(body)
    elif encoding == "base64":
        try:
            body = base64.b64decode(body)
        except ValueError:
            return None
    elif encoding not in ("7bit", "8bit", "binary"):
        return None
    try:
        text = body.decode(charset, "replace")
    except LookupError:   # an unknown charset name: UTF-8 is the best guess
        text = body.decode("utf-8", "replace")
    return headers, text.replace("\r\n", "\n")


def parse(raw: bytes) -> dict:
    simple = _simple_text(raw)
    if simple is not None:
        headers, text = simple
        html, attachments = "", []
    else:
        headers, text, html, attachments = _parse_mime(raw)
    from_list = _addresses(headers, "From")
    from_name, from_addr = from_list[0] if from_list else ("", "")
    references = _MSGID.findall(_header(headers, "References"))
    in_reply_to = _MSGID.findall(_header(headers, "In-Reply-To"))
    message_id = _MSGID.findall(_header(headers, "Message-ID"))
    return {
        "subject": _header(headers, "Subject").replace("\r", "").replace("\n", ""),
        "from_name": from_name,
        "from_addr": from_addr,
        "to": [a for _, a in _addresses(headers, "To")],
        "cc": [a for _, a in _addresses(headers, "Cc")],
        "date": _header(headers, "Date"),
        "message_id": message_id[0] if message_id else "",
        "in_reply_to": in_reply_to[0] if in_reply_to else "",
        "references": references,
        "text": text,
        "html": html,
        "attachments": attachments,
    }


def _parse_mime(raw: bytes) -> tuple:
    """(headers, text, html, attachments) through the email package: any MIME structure."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    headers = _raw_headers(msg)
    text_parts, html_parts, attachments = [], [], []
    try:
        parts = list(msg.walk())
    except Exception:
        parts = [msg]
    for part in parts:
        try:
            if part.is_multipart():
                continue
            disposition = part.get_content_disposition()
            ctype = part.get_content_type()
            filename = part.get_filename()
        except Exception:
            continue
        if disposition == "attachment" or filename or not ctype.startswith("text/") and ctype != "message/rfc822":
            if ctype == "message/rfc822" and not filename:
                filename = "message.eml"
            try:
                data = part.get_payload(decode=True)
                if data is None:
                    data = part.as_bytes()
            except Exception:
                data = b""
            attachments.append((filename or "attachment", ctype, data))
        elif ctype == "text/html":
            html_parts.append(_part_text(part))
        elif ctype == "text/plain" or ctype.startswith("text/"):
            text_parts.append(_part_text(part))
    text = "\n".join(text_parts).replace("\r\n", "\n")
    html = "\n".join(html_parts)
    if not text and html:
        text = html_to_text(html)
    return headers, text, html, attachments


_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)


def html_to_text(html: str) -> str:
    import html as htmllib
    text = re.sub(r"<br\s*/?>|</p\s*>|</div\s*>", "\n", html, flags=re.I)
    text = _TAGS.sub("", text)
    return htmllib.unescape(re.sub(r"\n{3,}", "\n\n", text)).strip()


def message_id_of(raw: bytes) -> str:
    """The Message-ID of a message, read from its header block alone ("" if none)."""
    end = raw.find(b"\r\n\r\n")
    head = raw[:end if end >= 0 else 65536]
    value = None
    for line in head.split(b"\n"):
        if value is not None:
            if line[:1] in (b" ", b"\t"):
                value += line
                continue
            break
        if line[:11].lower() == b"message-id:":
            value = line[11:]
    found = _MSGID.findall((value or b"").decode("utf-8", "replace"))
    return found[0] if found else ""
