"""IMAP's view of a message: ENVELOPE, BODY, BODYSTRUCTURE, body sections and BINARY.

Pure functions of the raw RFC 5322 bytes, exactly as stored. One pass finds every MIME
part's header and body offsets (`parse`); nothing is copied or decoded unless asked, so the
work is linear in the message size. The store calls `describe()` once when a message
arrives and keeps the three strings; FETCH of ENVELOPE and BODYSTRUCTURE never re-parses.
Sections (`BODY[1.2.MIME]`, `BODY[HEADER.FIELDS (...)]`, `<partial>`) and BINARY (RFC 3516)
parse the message again, which costs the same as reading it.

Strings in the results are IMAP strings: quoted when they are plain 7-bit text, literals
otherwise, so raw 8-bit header text reaches the client octet for octet. Results are `str`
holding those octets decoded as UTF-8 with surrogateescape (`wire()` gives the bytes back).

RFC 9051 §7.5.2 (ENVELOPE, BODYSTRUCTURE), §6.4.5 (section numbering), RFC 2045/2046
(MIME headers and multipart delimiters), RFC 5322 §3.4 (address lists), RFC 3516 (BINARY).
"""

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Optional

# Nesting and part counts beyond which the rest of a part is taken as opaque content: a
# hostile message of a million empty parts must cost no more than reading it.
MAX_DEPTH = 40
MAX_PARTS = 5000

_TRAILING_WS = re.compile(rb"[ \t]+(?=\r?\n|\Z)")
_SOFT_BREAK = re.compile(rb"=\r?\n")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(c for c in range(256) if c not in _B64_ALPHABET)
IDENTITY_ENCODINGS = frozenset({b"7bit", b"8bit", b"binary"})


class UnknownEncoding(ValueError):
    """BINARY of a part whose Content-Transfer-Encoding mu cannot decode ([UNKNOWN-CTE])."""


# ---------------------------------------------------------------- IMAP strings

def wire(text: str) -> bytes:
    """The octets an envelope/bodystructure string stands for."""
    return text.encode("utf-8", "surrogateescape")


def istring(value: Optional[bytes]) -> bytes:
    """An IMAP nstring: NIL, a quoted string, or a literal for anything else (RFC 9051 §4.3)."""
    if value is None:
        return b"NIL"
    if value.isascii() and b"\r" not in value and b"\n" not in value and b"\0" not in value:
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    value = value.replace(b"\0", b"")
    return b"{%d}\r\n%s" % (len(value), value)


# ---------------------------------------------------------------- header fields

def unfold(value: bytes) -> bytes:
    """A header value with its line breaks removed and outer whitespace trimmed (RFC 5322 §2.2.3)."""
    return value.replace(b"\r", b"").replace(b"\n", b"").strip(b" \t")


def header_fields(header: bytes) -> list:
    """[(lower-case name, whole field including its line breaks, raw value)] in order.

    A line without a colon that is not a continuation belongs to no field and is skipped.
    """
    fields = []
    lines = header.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if lines and lines[-1] in (b"", b"\r"):   # the empty line that ends the header
        lines.pop()
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            name, whole, value = fields[-1]
            fields[-1] = (name, whole + b"\n" + line, value + b"\n" + line)
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            fields.append((None, line, b""))   # kept for HEADER.FIELDS.NOT's sake
            continue
        fields.append((name.strip().lower(), line, value))
    return [(n, w + b"\n", v) for n, w, v in fields]


def first(fields: list, name: bytes) -> Optional[bytes]:
    """The raw value of the first field with that (lower-case) name, or None."""
    for field_name, _whole, value in fields:
        if field_name == name:
            return value
    return None


# ---------------------------------------------------------------- structured header text

_SPECIALS = b'()<>@,;:\\".[]'


def _tokens(value: bytes, specials: bytes = _SPECIALS) -> list:
    """RFC 5322 §3.2 lexical tokens: (kind, text) with kind one of atom, quoted, comment,
    literal (a [domain literal]) or a special character itself. Unbalanced quotes and
    comments end at the end of the value instead of failing."""
    out = []
    i, n = 0, len(value)
    while i < n:
        c = value[i:i + 1]
        if c in b" \t\r\n":
            if not out or out[-1][0] != "space":
                out.append(("space", b" "))   # kept so a display name keeps its word breaks
            i += 1
        elif c == b'"':
            j, buf = i + 1, bytearray()
            while j < n and value[j:j + 1] != b'"':
                if value[j:j + 1] == b"\\" and j + 1 < n:
                    j += 1
                if value[j:j + 1] not in b"\r\n":
                    buf += value[j:j + 1]
                j += 1
            out.append(("quoted", bytes(buf)))
            i = j + 1
        elif c == b"(":
            depth, j, buf = 1, i + 1, bytearray()
            while j < n and depth:
                ch = value[j:j + 1]
                if ch == b"\\" and j + 1 < n:
                    j += 1
                    ch = value[j:j + 1]
                elif ch == b"(":
                    depth += 1
                elif ch == b")":
                    depth -= 1
                    if not depth:
                        break
                if ch not in b"\r\n":
                    buf += ch
                j += 1
            out.append(("comment", bytes(buf)))
            i = j + 1
        elif c == b"[" and b"[" in specials:
            j = value.find(b"]", i)
            j = n if j < 0 else j
            out.append(("literal", value[i:j + 1]))
            i = j + 1
        elif c in specials:
            out.append((c.decode(), c))
            i += 1
        else:
            j = i
            while j < n and value[j:j + 1] not in b' \t\r\n"(' and value[j:j + 1] not in specials:
                j += 1
            out.append(("atom", value[i:j]))
            i = j
    return out


@dataclass(frozen=True)
class Address:
    """One ENVELOPE address (RFC 9051 §7.5.2): a mailbox, or a group's start (host None,
    mailbox the group name) or end (everything None)."""
    name: Optional[bytes]
    route: Optional[bytes]
    mailbox: Optional[bytes]
    host: Optional[bytes]

    @property
    def is_group_marker(self) -> bool:
        return self.host is None

    def imap(self) -> bytes:
        return b"(" + b" ".join(map(istring, (self.name, self.route, self.mailbox, self.host))) + b")"


GROUP_END = Address(None, None, None, None)


def _phrase(tokens: list) -> Optional[bytes]:
    """A display name: its words with single spaces where the header had space (or a
    comment) between them, so "J. Doe" and "J.Doe" stay as written."""
    out, gap = bytearray(), False
    for kind, text in tokens:
        if kind in ("space", "comment"):
            gap = True
        elif kind in ("atom", "quoted", "."):
            if out and gap:
                out += b" "
            out += text
            gap = False
    return bytes(out) or None


def _addr_spec(tokens: list) -> tuple:
    """(mailbox, host) from the tokens of an addr-spec; comments ignored."""
    tokens = [t for t in tokens if t[0] != "comment"]
    at = max((i for i, t in enumerate(tokens) if t[0] == "@"), default=-1)
    local, domain = (tokens[:at], tokens[at + 1:]) if at >= 0 else (tokens, [])
    mailbox = b"".join(text for kind, text in local if kind in ("atom", "quoted", "."))
    host = b"".join(text for kind, text in domain if kind in ("atom", "literal", "."))
    return mailbox, host


def _mailbox(tokens: list) -> Optional[Address]:
    if not any(kind not in ("comment", "space") for kind, _ in tokens):
        return None
    if any(kind == "<" for kind, _ in tokens):
        start = next(i for i, t in enumerate(tokens) if t[0] == "<")
        end = next((i for i in range(start + 1, len(tokens)) if tokens[i][0] == ">"), len(tokens))
        name = _phrase(tokens[:start])
        inner = tokens[start + 1:end]
        route = None
        colon = next((i for i, t in enumerate(inner) if t[0] == ":"), -1)
        if colon >= 0:
            route = b"".join(text for kind, text in inner[:colon] if kind not in ("comment", "space")) or None
            inner = inner[colon + 1:]
        mailbox, host = _addr_spec(inner)
        if not mailbox and not host and name is None:
            return None
    else:
        comments = [text for kind, text in tokens if kind == "comment"]
        name = b" ".join(comments).strip() or None if comments else None
        route = None
        mailbox, host = _addr_spec(tokens)
        if not mailbox and not host:
            return None
    return Address(name, route, mailbox, host)


# The common shapes, read without the tokenizer: `local@domain`, `Name <local@domain>`,
# `"Name" <local@domain>`, comma-separated. Anything else (comments, groups, routes,
# escapes, 8-bit) takes the general parser below, which gives the same result for these.
_ATEXT = rb"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_PLAIN_ITEM = re.compile(
    rb'[ \t]*(?:(?:"([^"\\\r\n]*)"|([' + _ATEXT + rb'. \t]*?))[ \t]*<([' + _ATEXT + rb'.]+)@([A-Za-z0-9.-]+)>'
    rb'|([' + _ATEXT + rb'.]+)@([A-Za-z0-9.-]+))[ \t]*')


def _plain_addresses(value: bytes):
    out, pos, n = [], 0, len(value)
    while True:
        m = _PLAIN_ITEM.match(value, pos)
        if not m:
            return None
        quoted, phrase, local, domain, bare_local, bare_domain = m.groups()
        if local is not None:
            name = (quoted if quoted is not None else b" ".join(phrase.split())) or None
            out.append(Address(name, None, local, domain))
        else:
            out.append(Address(None, None, bare_local, bare_domain))
        pos = m.end()
        if pos == n:
            return out
        if value[pos:pos + 1] != b",":
            return None
        pos += 1


def addresses(value: Optional[bytes]) -> list:
    """[Address] of an address-list header value, groups marked as IMAP marks them."""
    if value is None:
        return []
    plain = _plain_addresses(value.replace(b"\r", b"").replace(b"\n", b""))
    return plain if plain is not None else _general_addresses(value)


def _general_addresses(value: bytes) -> list:
    """addresses() for any value, through the RFC 5322 tokenizer."""
    out, segment, in_group, angle = [], [], False, 0
    for token in _tokens(value) + [("end", b"")]:
        kind = token[0]
        if kind == "<":
            angle += 1
        elif kind == ">":
            angle = max(0, angle - 1)
        if kind == ":" and not angle and not in_group and not any(t[0] == "@" for t in segment):
            out.append(Address(None, None, _phrase(segment) or b"", None))
            segment, in_group = [], True
            continue
        if (kind in (",", ";") and not angle) or kind == "end":
            address = _mailbox(segment)
            if address is not None:
                out.append(address)
            segment = []
            if in_group and kind in (";", "end"):
                out.append(GROUP_END)
                in_group = False
            angle = 0
            continue
        segment.append(token)
    return out


def _address_list(value: Optional[bytes]) -> bytes:
    found = addresses(value)
    return b"(" + b"".join(a.imap() for a in found) + b")" if found else b"NIL"


def _value_or_nil(value: Optional[bytes]) -> Optional[bytes]:
    return None if value is None else unfold(value)


_ENVELOPE_FIELDS = frozenset({b"date", b"subject", b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc",
                              b"in-reply-to", b"message-id"})


def envelope(fields: list) -> bytes:
    """The ENVELOPE of a message from its header fields (RFC 9051 §7.5.2): Sender and
    Reply-To default to From when missing or empty."""
    wanted = {}
    for name, _whole, value in fields:
        if name in _ENVELOPE_FIELDS and name not in wanted:
            wanted[name] = value
    get = wanted.get

    from_ = _address_list(get(b"from"))
    sender = _address_list(get(b"sender"))
    reply_to = _address_list(get(b"reply-to"))
    parts = [
        istring(_value_or_nil(get(b"date"))),
        istring(_value_or_nil(get(b"subject"))),
        from_,
        from_ if sender == b"NIL" else sender,
        from_ if reply_to == b"NIL" else reply_to,
        _address_list(get(b"to")),
        _address_list(get(b"cc")),
        _address_list(get(b"bcc")),
        istring(_value_or_nil(get(b"in-reply-to"))),
        istring(_value_or_nil(get(b"message-id"))),
    ]
    return b"(" + b" ".join(parts) + b")"


# ---------------------------------------------------------------- MIME header values

def _mime_value(value: Optional[bytes]) -> tuple:
    """(main value lower-cased, [(NAME, value)]) of a Content-Type/-Disposition value:
    RFC 2045 §5.1 tokens and quoted strings, comments skipped. RFC 2231 continuations are
    joined (an encoded parameter keeps its name* and charset'language' prefix)."""
    if value is None:
        return b"", []
    tokens = [t for t in _tokens(value, b'()<>@,;:\\"/[]?=') if t[0] not in ("comment", "space")]
    i = 0
    main = b""
    if tokens and tokens[0][0] in ("atom", "quoted"):   # type, or type "/" subtype; the rest ignored
        main = tokens[0][1]
        if len(tokens) > 2 and tokens[1][0] == "/" and tokens[2][0] in ("atom", "quoted"):
            main += b"/" + tokens[2][1]
    while i < len(tokens) and tokens[i][0] != ";":
        i += 1
    params = []
    while i < len(tokens):
        if tokens[i][0] != ";":
            i += 1
            continue
        i += 1
        if i + 1 < len(tokens) and tokens[i][0] == "atom" and tokens[i + 1][0] == "=":
            name = tokens[i][1]
            i += 2
            buf = bytearray()
            while i < len(tokens) and tokens[i][0] != ";":
                buf += tokens[i][1]
                i += 1
            params.append((name.upper(), bytes(buf)))
    return bytes(main).lower(), _join_rfc2231(params)


_SECTION = re.compile(rb"(.+?)\*(\d+)(\*?)\Z")


def _join_rfc2231(params: list) -> list:
    """RFC 2231 §3: NAME*0, NAME*1* ... joined into one parameter, in place of the first."""
    if not any(b"*" in n for n, _ in params):
        return params
    out, sections = [], {}
    for name, value in params:
        m = _SECTION.match(name)
        if m:
            base = m.group(1)
            if base not in sections:
                sections[base] = []
                out.append((base, None))
            sections[base].append((int(m.group(2)), bool(m.group(3)), value))
        else:
            out.append((name, value))
    joined = []
    for name, value in out:
        if value is not None:
            joined.append((name, value))
            continue
        pieces = sorted(sections[name])
        extended = pieces[0][1]
        joined.append((name + (b"*" if extended else b""), b"".join(v for _n, _e, v in pieces)))
    return joined


def param(params: list, name: bytes) -> Optional[bytes]:
    """A parameter's value, an RFC 2231 encoded one (NAME*) decoded to its octets."""
    for n, v in params:
        if n == name:
            return v
    for n, v in params:
        if n == name + b"*":
            parts = v.split(b"'", 2)
            data = parts[2] if len(parts) == 3 else v
            return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes((int(m.group(1), 16),)), data)
    return None


def _param_list(params: list) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(istring(n) + b" " + istring(v) for n, v in params) + b")"


# ---------------------------------------------------------------- the part tree

class Part:
    """One MIME entity: header at [start, body_start), body at [body_start, end) of `raw`.

    `children` for multipart, `message` (the encapsulated message, itself a Part whose
    header is that message's header) for message/rfc822 and message/global.
    """
    __slots__ = ("raw", "start", "body_start", "end", "type", "subtype", "params", "fields",
                 "children", "message")

    def __init__(self, raw, start, body_start, end, fields, ctype, subtype, params):
        self.raw, self.start, self.body_start, self.end = raw, start, body_start, end
        self.fields, self.type, self.subtype, self.params = fields, ctype, subtype, params
        self.children = None
        self.message = None

    @property
    def header(self) -> bytes:
        return self.raw[self.start:self.body_start]

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start:self.end]

    @property
    def size(self) -> int:
        return self.end - self.body_start

    def lines(self) -> int:
        if self.end <= self.body_start:
            return 0
        count = self.raw.count(b"\n", self.body_start, self.end)
        return count + (self.raw[self.end - 1:self.end] != b"\n")

    def field(self, name: bytes) -> Optional[bytes]:
        return first(self.fields, name)

    @property
    def encoding(self) -> bytes:
        value = self.field(b"content-transfer-encoding")
        return unfold(value).lower() if value is not None and unfold(value) else b"7bit"


# A run of header field lines: a field name (RFC 5322 §3.6.8 ftext, obsolete space before
# the colon allowed) or a continuation line.
_FIELD_LINES = re.compile(rb"(?:[!-9;-~]+[ \t]*:[^\n]*(?:\n|\Z)|[ \t][^\n]*(?:\n|\Z))*")


def _split_header(raw: bytes, start: int, end: int) -> int:
    """Where the body of the entity at [start, end) begins. The header ends with the first
    empty line, which belongs to it; a line that is neither a field nor a continuation
    also ends it (and starts the body), as mail readers treat a missing empty line."""
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if raw.startswith(b"\n", start) and start < end:
        return start + 1
    pos = _FIELD_LINES.match(raw, start, end).end()
    if raw.startswith(b"\r\n", pos) and pos + 2 <= end:
        return pos + 2
    if raw.startswith(b"\n", pos) and pos < end:
        return pos + 1
    return pos


def message_header(raw: bytes) -> list:
    """header_fields() of a whole message's header."""
    return header_fields(raw[:_split_header(raw, 0, len(raw))])


def _delimiters(raw: bytes, boundary: bytes, start: int, end: int) -> list:
    """[(line start, line end after its EOL, is close delimiter)] of the boundary delimiter
    lines in [start, end) (RFC 2046 §5.1.1: "--" boundary, "--" for the last, then
    whitespace and the line end)."""
    marker = b"--" + boundary
    found = []
    pos = start
    while True:
        if raw.startswith(marker, pos) and (pos == start or raw[pos - 1] == 0x0A):
            i = pos   # a delimiter right after the previous one: an empty part between them
        else:
            i = raw.find(b"\n" + marker, pos, end)
            if i < 0:
                return found
            i += 1
        j = i + len(marker)
        close = raw.startswith(b"--", j) and j + 2 <= end
        k = j + 2 if close else j
        while k < end and raw[k] in b" \t":
            k += 1
        if k >= end or raw[k] == 0x0A or raw.startswith(b"\r\n", k):
            line_end = min(end, k + (2 if raw.startswith(b"\r\n", k) else 1))
            found.append((i, line_end, close))
            if close or len(found) > MAX_PARTS:
                return found
            pos = line_end
            if pos >= end:
                return found
        else:
            pos = i + len(marker)   # "--boundaryX": not this boundary


def _content_end(raw: bytes, delimiter_start: int, floor: int) -> int:
    """Where a part's content ends: the line break before a delimiter belongs to the
    delimiter (RFC 2046 §5.1.1)."""
    end = delimiter_start
    if end > floor and raw[end - 1] == 0x0A:
        end -= 1
        if end > floor and raw[end - 1] == 0x0D:
            end -= 1
    return end


class _Budget:
    __slots__ = ("parts",)

    def __init__(self):
        self.parts = 0


def _entity(raw: bytes, start: int, end: int, default_type: tuple, depth: int, budget) -> Part:
    body_start = _split_header(raw, start, end)
    fields = header_fields(raw[start:body_start])
    main, params = _mime_value(first(fields, b"content-type"))
    ctype, slash, subtype = main.partition(b"/")
    if not slash or not ctype or not subtype:
        ctype, subtype = default_type
        params = []
        if (ctype, subtype) == (b"text", b"plain") and param(params, b"CHARSET") is None:
            params = [(b"CHARSET", b"us-ascii")] + params
    part = Part(raw, start, body_start, end, fields, ctype, subtype, params)
    budget.parts += 1
    if depth >= MAX_DEPTH or budget.parts > MAX_PARTS:
        return part
    if ctype == b"multipart":
        boundary = param(params, b"BOUNDARY") or b""
        child_default = (b"message", b"rfc822") if subtype == b"digest" else (b"text", b"plain")
        children = []
        if boundary:
            marks = _delimiters(raw, boundary, body_start, end)
            for (_s, line_end, close), following in zip(marks, marks[1:] + [None]):
                if close:
                    break
                stop = _content_end(raw, following[0], line_end) if following else end
                children.append(_entity(raw, line_end, stop, child_default, depth + 1, budget))
        if not children:   # IMAP needs at least one part (RFC 9051 body-type-mpart)
            children.append(Part(raw, end, end, end, [], b"text", b"plain", [(b"CHARSET", b"us-ascii")]))
        part.children = children
    elif ctype == b"message" and subtype in (b"rfc822", b"global") and part.encoding in IDENTITY_ENCODINGS:
        part.message = _entity(raw, body_start, end, (b"text", b"plain"), depth + 1, budget)
    return part


def parse(raw: bytes) -> Part:
    """The part tree of a whole message (the root's header is the message header)."""
    return _entity(raw, 0, len(raw), (b"text", b"plain"), 0, _Budget())


# ---------------------------------------------------------------- BODY and BODYSTRUCTURE

def _disposition(part: Part) -> bytes:
    main, params = _mime_value(part.field(b"content-disposition"))
    if not main:
        return b"NIL"
    return b"(" + istring(main) + b" " + _param_list(params) + b")"


def _language(part: Part) -> bytes:
    value = part.field(b"content-language")
    if value is None:
        return b"NIL"
    tags = [t for t in re.split(rb"[\s,]+", re.sub(rb"\([^)]*\)", b"", unfold(value))) if t]
    if not tags:
        return b"NIL"
    if len(tags) == 1:
        return istring(tags[0])
    return b"(" + b" ".join(map(istring, tags)) + b")"


def _nfield(part: Part, name: bytes) -> bytes:
    value = part.field(name)
    return istring(None if value is None else unfold(value))


def _structure(part: Part, extensible: bool) -> bytes:
    if part.children is not None:
        out = b"".join(_structure(child, extensible) for child in part.children)
        out += b" " + istring(part.subtype.upper())
        if extensible:
            out += b" " + b" ".join((_param_list(part.params), _disposition(part), _language(part),
                                     _nfield(part, b"content-location")))
        return b"(" + out + b")"
    fields = [istring(part.type.upper()), istring(part.subtype.upper()), _param_list(part.params),
              _nfield(part, b"content-id"), _nfield(part, b"content-description"),
              istring(part.encoding.upper()), b"%d" % part.size]
    if part.message is not None:
        inner = part.message
        fields += [envelope(inner.fields), _structure(inner, extensible), b"%d" % part.lines()]
    elif part.type == b"text":
        fields.append(b"%d" % part.lines())
    if extensible:
        fields += [_nfield(part, b"content-md5"), _disposition(part), _language(part),
                   _nfield(part, b"content-location")]
    return b"(" + b" ".join(fields) + b")"


@dataclass(frozen=True)
class Description:
    """What the store keeps per message so FETCH never parses it again."""
    envelope: str
    body: str            # BODY, the non-extensible form
    bodystructure: str   # BODYSTRUCTURE, with the extension data


def describe(raw: bytes) -> Description:
    root = parse(raw)
    return Description(envelope(root.fields).decode("utf-8", "surrogateescape"),
                       _structure(root, False).decode("utf-8", "surrogateescape"),
                       _structure(root, True).decode("utf-8", "surrogateescape"))


# ---------------------------------------------------------------- sections

@dataclass(frozen=True)
class Section:
    """A parsed section-spec (RFC 9051 §6.4.5): `part` numbers, then `text` one of "",
    "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"; `fields` lower-case."""
    part: tuple = ()
    text: str = ""
    fields: tuple = ()


def find_part(root: Part, path: tuple) -> Optional[Part]:
    """The part a section's numbers name. A non-multipart message has only part 1 (its
    body); below a message/rfc822 part the numbers count the encapsulated message's parts."""
    message, part = root, None
    for n in path:
        if part is not None:
            if part.children is not None:
                if not 1 <= n <= len(part.children):
                    return None
                part = part.children[n - 1]
                continue
            if part.message is None:
                return None
            message = part.message
        if message.children is not None:
            if not 1 <= n <= len(message.children):
                return None
            part = message.children[n - 1]
        elif n == 1:
            part = message
        else:
            return None
    return part


def _header_lines(entity: Part, names: tuple, keep: bool) -> bytes:
    wanted = set(n.encode() if isinstance(n, str) else n for n in names)
    out = [whole for name, whole, _value in entity.fields if (name in wanted) == keep and (name or not keep)]
    newline = b"\n" if entity.header.endswith(b"\n") and not entity.header.endswith(b"\r\n") else b"\r\n"
    return b"".join(out) + newline


def section_bytes(raw: bytes, section: Section, root: Part = None) -> Optional[bytes]:
    """The octets of a section, or None when that part does not exist."""
    root = root or parse(raw)
    if section.part:
        part = find_part(root, section.part)
        if part is None:
            return None
        if section.text == "":
            return part.body
        if section.text == "MIME":
            if part is root:
                return root.header
            return part.header
        if part.message is None:
            return None
        entity = part.message
    else:
        entity = root
        if section.text == "":
            return raw
    if section.text == "HEADER":
        return entity.header
    if section.text == "TEXT":
        return entity.body
    if section.text == "HEADER.FIELDS":
        return _header_lines(entity, section.fields, True)
    if section.text == "HEADER.FIELDS.NOT":
        return _header_lines(entity, section.fields, False)
    return None


# ---------------------------------------------------------------- BINARY (RFC 3516)

def decode_base64(data: bytes) -> bytes:
    """Lenient base64: characters outside the alphabet ignored, decoding stops at padding."""
    data = data.split(b"=", 1)[0].translate(None, _NOT_B64)
    usable = len(data) - len(data) % 4
    out = binascii.a2b_base64(data[:usable]) if usable else b""
    rest = data[usable:]
    if len(rest) >= 2:
        out += base64.b64decode(rest + b"=" * (4 - len(rest)))
    return out


def decode_quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7: trailing whitespace dropped, soft line breaks joined, =XX decoded,
    anything malformed kept as it is."""
    data = _TRAILING_WS.sub(b"", data)
    data = _SOFT_BREAK.sub(b"", data)
    if data.endswith(b"="):
        data = data[:-1]
    return _QP_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), data)


def decode_content(part: Part) -> bytes:
    encoding = part.encoding
    if encoding in IDENTITY_ENCODINGS:
        return part.body
    if encoding == b"base64":
        return decode_base64(part.body)
    if encoding == b"quoted-printable":
        return decode_quoted_printable(part.body)
    raise UnknownEncoding(encoding.decode("ascii", "replace"))


def binary_bytes(raw: bytes, path: tuple, root: Part = None) -> Optional[bytes]:
    """BINARY[path]: the part's content with its transfer encoding undone; the whole
    message as it is for an empty path. None when the part does not exist."""
    if not path:
        return raw
    part = find_part(root or parse(raw), path)
    if part is None:
        return None
    if part.children is not None or part.message is not None:
        return part.body
    return decode_content(part)


# ---------------------------------------------------------------- text for SEARCH

def _charset(part: Part) -> str:
    charset = param(part.params, b"CHARSET") or b"utf-8"
    return charset.decode("ascii", "replace").strip() or "utf-8"


def _decode_text(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except LookupError:   # an unknown charset name: UTF-8 is the best guess
        return data.decode("utf-8", "replace")


def body_text(raw: bytes, root: Part = None) -> str:
    """The decoded text of every text/* part (and of encapsulated messages' text parts),
    for SEARCH BODY (RFC 9051 §6.4.4)."""
    out = []
    stack = [root or parse(raw)]
    while stack:
        part = stack.pop()
        if part.children is not None:
            stack.extend(reversed(part.children))
        elif part.message is not None:
            out.append(header_text(part.message))
            stack.append(part.message)
        elif part.type == b"text":
            try:
                content = decode_content(part)
            except UnknownEncoding:
                content = part.body
            out.append(_decode_text(content, _charset(part)))
    return "\n".join(out)


def decode_words(value: bytes) -> str:
    """A header value with RFC 2047 encoded words decoded, unfolded."""
    import email.header
    text = unfold(value).decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:
        return text


def header_text(entity: Part) -> str:
    return "\n".join(decode_words(whole.partition(b":")[2]) if name else ""
                     for name, whole, _v in entity.fields)


# ---------------------------------------------------------------- binary content on APPEND

def encode_binary_parts(raw: bytes) -> bytes:
    """The message with every leaf part that is binary (Content-Transfer-Encoding: binary
    or NUL octets) re-encoded as base64, so BODY[] stays text while BINARY[] gives back the
    octets that were appended (RFC 3516 §4.4, APPEND with literal8)."""
    root = parse(raw)
    edits, stack = [], [root]
    while stack:
        part = stack.pop()
        if part.children is not None:
            stack.extend(part.children)
        elif part.message is not None:
            stack.append(part.message)
        elif part.encoding == b"binary" or b"\0" in raw[part.body_start:part.end]:
            edits.append(part)
    if not edits:
        return raw
    out, pos = [], 0
    for part in sorted(edits, key=lambda p: p.start):
        content = decode_content(part) if part.encoding in IDENTITY_ENCODINGS else part.body
        newline = b"\n" if part.header.endswith(b"\n") and not part.header.endswith(b"\r\n") else b"\r\n"
        header = b"".join(whole for name, whole, _v in part.fields if name != b"content-transfer-encoding")
        header += b"Content-Transfer-Encoding: base64" + newline + newline
        body = base64.encodebytes(content).replace(b"\n", newline).rstrip(b"\r\n")
        out += [raw[pos:part.start], header, body]
        pos = part.end
    out.append(raw[pos:])
    return b"".join(out)
