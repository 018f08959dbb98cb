"""Trace header text that carries values from the peer: Authentication-Results values
(RFC 8601 §2.2), Received-SPF key-value pairs (RFC 7208 §9.1) and comments, each written
so no value from a message or an envelope can break out of its place; and the removal of
incoming Authentication-Results fields that claim to be mu's own (RFC 8601 §5)."""

import re

from .. import addr

MAX_VALUE_CHARS = 200
# RFC 2045 §5.1 token: any printable US-ASCII character except tspecials.
_TOKEN = re.compile(r'[!#$%&\'*+\-.0-9A-Z^_`a-z{|}~]+\Z')
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_LDH_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z", re.I)


def quoted(text, utf8: bool = False) -> str:
    """A quoted-string (RFC 5322 §3.2.4) holding `text`: controls dropped, `"` and `\\`
    escaped; non-ASCII kept only when `utf8` (RFC 6532, for values already validated)."""
    text = str(text or "")[:MAX_VALUE_CHARS]
    if utf8:
        text = "".join(c for c in text if (" " <= c <= "~") or (not c.isascii() and addr.text_allowed(c)))
    else:
        text = _NOT_PRINTABLE_ASCII.sub("", text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment_text(text) -> str:
    """Text for inside a comment (RFC 5322 §3.2.2 ctext): printable ASCII, no parentheses
    or backslashes, bounded."""
    text = _NOT_PRINTABLE_ASCII.sub("", str(text or ""))
    return re.sub(r"[()\\]", "", text)[:MAX_VALUE_CHARS]


def is_domain(text: str) -> bool:
    return bool(text) and len(text) <= addr.MAX_DOMAIN_OCTETS and _LDH_DOMAIN.match(text) is not None


def domain_value(text) -> str:
    """A pvalue that is a domain-name when `text` is one, else a quoted-string."""
    text = str(text or "")
    return text.lower() if is_domain(text) else quoted(text)


def address_value(text) -> str:
    """A pvalue `local-part "@" domain-name` when `text` is a valid address, else a
    quoted-string (RFC 8601 §2.2)."""
    try:
        local, domain = addr.parse(str(text or ""))
    except addr.AddressError:
        return quoted(text)
    return f"{local}@{domain}"


# ---------------------------------------------------------------- forged results

def _authserv_id(value: str) -> str:
    """The authserv-id of an Authentication-Results value (RFC 8601 §2.2): the first
    token or quoted-string after any comments, lower case."""
    i, depth = 0, 0
    while i < len(value):
        c = value[i]
        if depth:
            if c == "\\":
                i += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif c == "(":
            depth = 1
        elif not c.isspace():
            break
        i += 1
    rest = value[i:]
    if rest.startswith('"'):
        end = re.match(r'"((?:[^"\\]|\\.)*)"', rest)
        ident = re.sub(r"\\(.)", r"\1", end.group(1)) if end else rest[1:]
    else:
        ident = re.split(r"[\s;()]", rest, maxsplit=1)[0]
    return ident.strip().lower().rstrip(".")


def remove_own_results(data: bytes, authserv_ids) -> bytes:
    """`data` without the Authentication-Results fields of its header that name one of
    `authserv_ids`: RFC 8601 §5 has a border MTA remove results claiming to be its own, so
    a reader trusts only what mu wrote. Everything else is kept byte for byte."""
    if data.startswith(b"\r\n"):
        return data   # no header at all
    end = data.find(b"\r\n\r\n")
    header, rest = (data, b"") if end < 0 else (data[:end], data[end:])
    if b"authentication-results" not in header.lower():
        return data
    ours = {i.lower().rstrip(".") for i in authserv_ids if i}
    fields = []   # each field: its first line and its continuation lines
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = []
    for field in fields:
        name, sep, value = field[0].partition(b":")
        if sep and name.strip().lower() == b"authentication-results":
            text = b"".join([value] + field[1:]).decode("latin-1")
            if _authserv_id(text) in ours:
                continue
        kept.extend(field)
    if len(kept) == sum(len(f) for f in fields):
        return data
    if not kept:
        return rest[2:]
    return b"\r\n".join(kept) + rest
