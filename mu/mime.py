"""Reading received messages: headers decoded, text and HTML bodies, attachments.

Broken MIME never raises: whatever cannot be decoded is kept as an attachment or
shown as text with replacement characters, because losing a message is worse.
"""

import email
import email.policy
import email.utils
import re

_MSGID = re.compile(r"<[^<>\s]+>")


def _header(msg, name: str) -> str:
    try:
        value = msg.get(name)
        return str(value) if value is not None else ""
    except Exception:  # undecodable header: fall back to the raw text
        raw = msg.get_all(name, failobj=[None])
        return str(raw[0] or "")


def _addresses(msg, name: str) -> list:
    try:
        values = msg.get_all(name, failobj=[])
        return [(n, a) for n, a in email.utils.getaddresses([str(v) for v in values]) if a]
    except Exception:
        return []


def _part_text(part) -> str:
    try:
        return part.get_content()
    except Exception:
        payload = part.get_payload(decode=True) or b""
        return payload.decode(part.get_content_charset() or "utf-8", "replace")


def parse(raw: bytes) -> dict:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    from_list = _addresses(msg, "From")
    from_name, from_addr = from_list[0] if from_list else ("", "")
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
    text = "\n".join(text_parts)
    html = "\n".join(html_parts)
    if not text and html:
        text = html_to_text(html)
    references = _MSGID.findall(_header(msg, "References"))
    in_reply_to = _MSGID.findall(_header(msg, "In-Reply-To"))
    message_id = _MSGID.findall(_header(msg, "Message-ID"))
    return {
        "subject": _header(msg, "Subject").replace("\r", "").replace("\n", ""),
        "from_name": from_name,
        "from_addr": from_addr,
        "to": [a for _, a in _addresses(msg, "To")],
        "cc": [a for _, a in _addresses(msg, "Cc")],
        "date": _header(msg, "Date"),
        "message_id": message_id[0] if message_id else "",
        "in_reply_to": in_reply_to[0] if in_reply_to else "",
        "references": references,
        "text": text,
        "html": html,
        "attachments": attachments,
    }


_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)


def html_to_text(html: str) -> str:
    import html as htmllib
    text = re.sub(r"<br\s*/?>|</p\s*>|</div\s*>", "\n", html, flags=re.I)
    text = _TAGS.sub("", text)
    return htmllib.unescape(re.sub(r"\n{3,}", "\n\n", text)).strip()
