"""Reading received messages: headers decoded, text and HTML bodies, attachments.

Everything here reads bytes from the network, so every step takes time linear in its
input: the message is read in place (offsets into one buffer), boundaries and line ends
are found with `bytes.find`, and no regular expression can backtrack over unbounded
text. Nested multiparts are walked with an explicit stack, each level scanning only its
own part, so the work is at most size x `max_depth`.

Past `max_parts` body parts, `max_depth` nested multiparts or the time allowed, `parse`
raises MimeLimitError and the receiver refuses the message. Short of that, broken MIME
never raises: what cannot be decoded is kept as an attachment or shown as text with
replacement characters, because losing a message is worse.

What is shown where (docs/README.md, "How a received message is read"):
- text/plain (and other text/*) parts not marked `attachment` are the body, in order;
  one that also has a file name is listed as an attachment too, so it can be saved.
- text/html parts not marked `attachment` are the HTML body; the text body comes from
  them when the message has no plain text.
- Everything else, message/rfc822 included, is an attachment.
"""

import base64
import binascii
import codecs
import email.utils
import functools
import html as htmllib
import re
import time

#: Body parts per message (multipart containers count too). RFC 2046 sets no limit; real
#: mail rarely has more than a few dozen, a large digest a few hundred.
MAX_PARTS = 1000
#: Nested multiparts. mixed > related > alternative is 3 deep; forwarding inside
#: forwarding adds a level each time. RFC 2046 sets no limit.
MAX_DEPTH = 20
#: Address headers are read up to this many characters (about a thousand addresses);
#: the rest of such a header stays in the raw message only.
ADDRESS_HEADER_MAX_CHARS = 65536
#: RFC 6838 §4.2: a type or subtype name is at most 127 characters.
MAX_TYPE_NAME_CHARS = 127
#: Parameters read from one Content-Type or Content-Disposition, and characters kept of
#: each value: far more than any real header has (a long file name split by RFC 2231 has
#: a few dozen pieces; a boundary is at most 70 characters, RFC 2046 §5.1.1).
MAX_PARAMS = 1000
MAX_PARAM_VALUE_CHARS = 1024

_MESSAGE_HEADERS = ("subject", "from", "to", "cc", "date", "message-id", "in-reply-to", "references",
                    "content-type", "content-disposition", "content-transfer-encoding")
_PART_HEADERS = ("content-type", "content-disposition", "content-transfer-encoding")


class MimeLimitError(ValueError):
    """The message is past a MIME limit; str() says which, for the SMTP reply."""


# ---------------------------------------------------------------- text decoding

# Codecs that are not charsets a message may name, or that take more than linear time
# (Python's punycode decoder is quadratic).
_REFUSED_CODECS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape",
                             "unicode_escape", "raw_unicode_escape"})
# Labels that promise nothing about 8-bit bytes: decoded like a part without a charset.
_NO_REAL_CHARSET = frozenset({"", "us-ascii", "ascii", "us_ascii", "ansi_x3.4-1968", "646", "unknown-8bit",
                              "x-unknown", "unknown", "default", "8bit", "7bit"})


@functools.lru_cache(maxsize=256)
def _codec(charset: str):
    """The Python codec name for a MIME charset label, or None when unknown or refused."""
    label = (charset or "").strip().strip('"').strip().lower()
    if label in _NO_REAL_CHARSET or len(label) > 64:
        return None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED_CODECS:
        return None
    return info.name


def decode_text(data: bytes, charset: str = None) -> str:
    """Bytes of a text part (or header) as text.

    With a known charset, that charset (bad bytes become U+FFFD). Without one, or with one
    that says nothing (us-ascii holding 8-bit bytes, an unknown name): UTF-8 when the bytes
    are valid UTF-8 (RFC 6532 mail, and what nearly every sender means today), else
    Windows-1252, the superset of Latin-1 that HTML5 also reads such text as.
    """
    codec = _codec(charset) if charset else None
    if codec is not None:
        try:
            return data.decode(codec, "replace")
        except Exception:   # a codec that cannot replace: fall through to the guess
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


# Line and paragraph separators (str.splitlines() splits on all of them) and other
# control characters: a header value is one line, so each becomes a space.
_CONTROLS = {c: " " for c in [*range(0, 32), 127, *range(0x80, 0xA0), 0x2028, 0x2029]}


def one_line(text: str) -> str:
    """Text for a one-line field (subject, name, file name): controls and line separators
    made spaces, runs of whitespace made one space."""
    return " ".join((text or "").translate(_CONTROLS).split())


# ---------------------------------------------------------------- RFC 2047 encoded words

# RFC 2047 §2: =?charset?encoding?encoded-text?= with no spaces or "?" inside. Each class
# stops at "?" or whitespace, so an attempt never scans past the third "?" after its start.
_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([qQbB])\?([^?\s]*)\?=")


def _b_decode(data: bytes, undecodable: bytes = b"") -> bytes:
    """Base64 as the email package reads it: fix the padding, else skip stray characters;
    `undecodable` when even that fails (its length cannot be base64)."""
    data = b"".join(data.split())
    missing = -len(data) % 4
    try:
        return base64.b64decode(data + b"=" * missing, validate=True)
    except binascii.Error:
        for extra in (b"", b"=="):
            try:
                return base64.b64decode(data + extra, validate=False)
            except binascii.Error:
                pass
    return undecodable


def decode_words(value: str) -> str:
    """A header value with RFC 2047 encoded words decoded, as one line of text.

    Whitespace between two encoded words is dropped (RFC 2047 §6.2), and adjacent encoded
    words in one charset are decoded together, so a character split across two words (as
    many mailers do with UTF-8) comes out whole."""
    if "=?" not in value:
        return one_line(value)
    out, pending, pending_charset, pos, after_word = [], [], None, 0, False

    def flush():
        if pending:
            out.append(decode_text(b"".join(pending), pending_charset))
            pending.clear()

    for match in _ENCODED_WORD.finditer(value):
        between = value[pos:match.start()]
        if between and not (after_word and between.isspace()):
            flush()
            out.append(between)
        charset, encoding, encoded = match.groups()
        charset = charset.split("*", 1)[0]   # RFC 2231 §5: charset*language
        data = encoded.encode("ascii", "replace")
        if encoding in "qQ":
            data = binascii.a2b_qp(data, header=True)
        else:
            data = _b_decode(data)
        if pending and charset.lower() != (pending_charset or "").lower():
            flush()
        pending_charset = charset
        pending.append(data)
        pos, after_word = match.end(), True
    flush()
    out.append(value[pos:])
    return one_line("".join(out))


# ---------------------------------------------------------------- header fields

# RFC 5322 §3.6.8: a field name is printable US-ASCII except ":" (and, as the email
# package reads it, no space before the colon).
# The patterns start at the line break before a line ("\n" is a literal the regex engine
# skips to quickly; "^" with re.M is tried at every position, and re.I is slow).
_END_OF_HEAD = re.compile(rb"\n\r?\n")
_NOT_A_FIELD = re.compile(rb"\n(?![ \t]|[!-9;-~]+:)")
_NEXT_FIELD = re.compile(rb"\n(?![ \t])")
_FIELDS = {}


def _fields_pattern(wanted: tuple):
    if wanted not in _FIELDS:
        names = "|".join("".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in n) for n in wanted)
        _FIELDS[wanted] = re.compile(rb"\n(" + names.encode() + rb"):")
    return _FIELDS[wanted]


def _read_head(data: bytes, start: int, end: int, wanted: tuple) -> tuple:
    """({lower name: [value, ...]} for the `wanted` fields, offset where the body starts).

    The header section ends at the first empty line, or at the first line that is not a
    field (the email package reads that line as the start of the body, and so does mu).
    Folded values are unfolded by dropping the line breaks (RFC 5322 §2.2.3). Only the
    wanted fields cost Python work; the rest is scanned by the regex engine."""
    if data.startswith(b"From ", start, end):   # an mbox separator line, not a field
        nl = data.find(b"\n", start, end)
        start = end if nl < 0 else nl + 1
    if data.startswith(b"\n", start, end) or data.startswith(b"\r\n", start, end):
        return {}, data.find(b"\n", start, end) + 1
    blank = _END_OF_HEAD.search(data, start, end)
    head_end, body = (blank.start() + 1, blank.end()) if blank else (end, end)
    head = b"\n" + data[start:head_end]   # every line after its line break, the first one too
    stray = _NOT_A_FIELD.search(head)
    if stray is not None and stray.start() + 1 < len(head):
        head, body = head[:stray.start() + 1], start + stray.start()
    headers = {}
    for match in _fields_pattern(wanted).finditer(head):
        nxt = _NEXT_FIELD.search(head, match.end())
        raw = head[match.end():nxt.start() if nxt else len(head)].replace(b"\r", b"").replace(b"\n", b"")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = decode_text(raw)
        headers.setdefault(match.group(1).decode("ascii").lower(), []).append(text.strip(" \t"))
    return headers, body


def _first(headers: dict, name: str) -> str:
    values = headers.get(name)
    return values[0] if values else ""


# ---------------------------------------------------------------- parameters (RFC 2045, 2231)

# One parameter after a ";": a name, "=", then a quoted-string (an unclosed one runs to the
# end, as the email package reads it) or anything up to the next ";" (senders put spaces in
# unquoted file names). Every part stops at a character the next part cannot start with.
_PARAM = re.compile(r';[ \t]*([^=;"\s]+)[ \t]*=[ \t]*(?:"([^"\\]*(?:\\.?[^"\\]*)*)(?:"|\Z)|([^;"]*))', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_RFC2231_NAME = re.compile(r"([^*]+)(?:\*([0-9]{1,3}))?(\*)?\Z")
_TOKEN_CHARS = "!#$%&'*+-.^_`{|}~0123456789abcdefghijklmnopqrstuvwxyz"
_VALID_TYPE = re.compile(rf"[{re.escape(_TOKEN_CHARS)}]{{1,{MAX_TYPE_NAME_CHARS}}}"
                         rf"/[{re.escape(_TOKEN_CHARS)}]{{1,{MAX_TYPE_NAME_CHARS}}}")


def parse_params(value: str) -> tuple:
    """'text/plain; charset="utf-8"' -> ('text/plain', {'charset': 'utf-8'}).

    The first value of a parameter wins. Values are tokens or quoted-strings (RFC 2045
    §5.1). RFC 2231 continuations (`name*0`, `name*1*`) and charsets
    (`name*=utf-8''%C3%A9`) are joined and decoded, and win over a plain value of the same
    name. RFC 2047 encoded words in a file name (against RFC 2047 §5, but what many mailers
    send) are decoded too."""
    semi = value.find(";")
    main = (value if semi < 0 else value[:semi]).strip().lower()
    params, split = {}, {}
    if semi >= 0:
        for count, match in enumerate(_PARAM.finditer(value, semi)):
            if count >= MAX_PARAMS:
                break
            attr, quoted, token = match.groups()
            attr = attr.lower()[:MAX_PARAM_VALUE_CHARS]
            if quoted is not None:
                text = _QUOTED_PAIR.sub(r"\1", quoted[:MAX_PARAM_VALUE_CHARS])
            else:
                text = token[:MAX_PARAM_VALUE_CHARS].strip()
            if "*" in attr:
                m = _RFC2231_NAME.match(attr)
                if m:
                    split.setdefault(m.group(1), {}).setdefault(int(m.group(2) or 0), (text, bool(m.group(3))))
                    continue
            params.setdefault(attr, text)
    for attr, pieces in split.items():
        params[attr] = _join_rfc2231(pieces)
    for attr in ("name", "filename"):
        if "=?" in params.get(attr, ""):
            params[attr] = decode_words(params[attr])
    return main, params


def _join_rfc2231(pieces: dict) -> str:
    """RFC 2231 §3-4: continuations in order; encoded ones percent-decoded in the charset
    named by the first."""
    charset, out = None, []
    for index in sorted(pieces):
        text, encoded = pieces[index]
        if encoded and index == 0 and text.count("'") >= 2:
            charset, _lang, text = text.split("'", 2)
        if encoded:
            out.append(_percent_decode(text))
        else:
            out.append(text.encode("utf-8", "replace"))
    return decode_text(b"".join(out), charset)


def _percent_decode(text: str) -> bytes:
    pieces = text.encode("utf-8", "replace").split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        try:
            out.append(bytes([int(piece[:2], 16)]) + piece[2:] if len(piece) >= 2 else b"%" + piece)
        except ValueError:
            out.append(b"%" + piece)
    return b"".join(out)


def valid_content_type(value: str) -> str:
    """`type/subtype` in lower case when it is two RFC 2045 §5.1 tokens, else ''."""
    value = (value or "").strip().lower()
    return value if _VALID_TYPE.fullmatch(value) else ""


def safe_content_type(value: str) -> str:
    """The type to store and serve an attachment with: `type/subtype` tokens, else
    application/octet-stream (a browser must never be handed a header it can misread)."""
    return valid_content_type((value or "").split(";", 1)[0]) or "application/octet-stream"


# ---------------------------------------------------------------- transfer encodings

def _uu_decode(data: bytes) -> bytes:
    out, started = [], False
    for line in data.splitlines():
        if not started:
            started = line.startswith(b"begin ")
            continue
        if line.strip() == b"end":
            break
        # A line never gives more bytes than its characters carry: a short line claiming
        # 45 bytes would otherwise turn a message into an attachment 45 times its size.
        most = max(0, (len(line) - 1) * 3 // 4)
        try:
            out.append(binascii.a2b_uu(line)[:most])
        except binascii.Error:
            try:   # a line some encoders pad wrongly: its stated length decides
                nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
                out.append(binascii.a2b_uu(line[:nbytes])[:most])
            except (binascii.Error, IndexError):
                pass
    return b"".join(out) if started else data


def transfer_decode(data: bytes, cte: str) -> bytes:
    """A part's content with its Content-Transfer-Encoding (RFC 2045 §6) undone;
    unknown encodings are kept as they came."""
    if cte == "base64":   # content that is not base64 at all is kept, lines joined, as the email package does
        return _b_decode(data, undecodable=b"".join(data.splitlines()))
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return _uu_decode(data)
    return data


# ---------------------------------------------------------------- the MIME walk

_PADDING = re.compile(rb"[ \t]*")


def _delimiters(data: bytes, start: int, end: int, boundary: bytes, max_parts: int) -> list:
    """[(delimiter line start, next line start, closing)] of a multipart body, RFC 2046
    §5.1.1: a line that is "--" boundary, optionally "--", then only spaces or tabs."""
    delim = b"--" + boundary
    found, search = [], start
    while True:
        i = data.find(delim, search, end)
        if i < 0:
            return found
        if i == start or data[i - 1] in b"\r\n":
            j = i + len(delim)
            closing = data.startswith(b"--", j, end)
            if closing:
                j += 2
            j = _PADDING.match(data, j, end).end()   # RFC 2046 §5.1.1: transport-padding
            if j >= end or data[j] in b"\r\n":
                nxt = j + 2 if data.startswith(b"\r\n", j, end) else min(j + 1, end)
                found.append((i, nxt, closing))
                if closing:
                    return found
                if len(found) > max_parts:
                    raise MimeLimitError(f"more than {max_parts} MIME parts")
                search = nxt
                continue
        search = i + 1


def _before_line_break(data: bytes, start: int, pos: int) -> int:
    """RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter."""
    if pos > start and data[pos - 1] == 10:
        pos -= 1
    if pos > start and data[pos - 1] == 13:
        pos -= 1
    return pos


@functools.lru_cache(maxsize=1024)   # most mail carries one of a few dozen Content-Types
def _content_type(value: str) -> tuple:
    main, params = parse_params(value)
    # `application/pdf name="x.pdf"` (a missing ";") is read as its first word. A type that
    # still does not parse is read as text/plain (RFC 2045 §5.2), but stored as
    # application/octet-stream: nothing says what the bytes are.
    words = main.split(None, 1)
    ctype = valid_content_type(main) or valid_content_type(words[0] if words else "")
    return (ctype or "text/plain"), params, (ctype or "application/octet-stream")


class _Walk:
    def __init__(self, raw: bytes, max_parts: int, max_depth: int, deadline):
        self.raw = raw
        self.max_parts, self.max_depth, self.deadline = max_parts, max_depth, deadline
        self.parts = 0
        self.text, self.html, self.attachments = [], [], []

    def run(self) -> dict:
        raw = self.raw
        top, body = _read_head(raw, 0, len(raw), _MESSAGE_HEADERS)
        stack = [(top, body, len(raw), 0, "text/plain")]
        while stack:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise MimeLimitError("could not be read in the time allowed")
            headers, start, end, depth, default_type = stack.pop()
            ctype, params, stored_type = self._content_type(headers, default_type)
            if ctype.startswith("multipart/"):
                children = self._children(headers, params, start, end, depth)
                if children is not None:
                    child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
                    for child_start, child_end in reversed(children):
                        child_headers, child_body = _read_head(raw, child_start, child_end, _PART_HEADERS)
                        stack.append((child_headers, child_body, child_end, depth + 1, child_default))
                    continue
                ctype, params, stored_type = "text/plain", {}, "text/plain"   # no delimiter: show what is there
            self._leaf(headers, ctype, params, stored_type, start, end)
        return top

    def _content_type(self, headers: dict, default_type: str) -> tuple:
        """(type to read the part as, parameters, type to store it as if an attachment)."""
        value = _first(headers, "content-type")
        if not value:
            return default_type, {}, default_type
        return _content_type(value) if len(value) <= 256 else _content_type.__wrapped__(value)

    def _children(self, headers, params, start, end, depth):
        boundary = params.get("boundary", "").rstrip()
        if not boundary:
            return None
        if depth >= self.max_depth:
            raise MimeLimitError(f"MIME parts nested more than {self.max_depth} deep")
        delimiters = _delimiters(self.raw, start, end, boundary.encode("utf-8", "replace"), self.max_parts)
        if not delimiters:
            return None
        self.parts += len(delimiters) - (1 if delimiters[-1][2] else 0)
        if self.parts > self.max_parts:
            raise MimeLimitError(f"more than {self.max_parts} MIME parts")
        children = []
        for (_s, part_start, closing), nxt in zip(delimiters, delimiters[1:] + [(end, end, True)]):
            if closing:
                break
            children.append((part_start, max(part_start, _before_line_break(self.raw, part_start, nxt[0]))
                             if nxt[0] < end else end))
        return children

    def _leaf(self, headers, ctype, params, stored_type, start, end):
        disposition, dparams = parse_params(_first(headers, "content-disposition"))
        filename = dparams.get("filename") or params.get("name") or ""
        filename = one_line(filename)
        cte = _first(headers, "content-transfer-encoding").strip().lower().split(None, 1)
        data = transfer_decode(self.raw[start:end], cte[0] if cte else "")
        # RFC 2183 §2.8: an unknown disposition is treated as an attachment.
        attachment = disposition not in ("", "inline")
        if ctype in ("message/rfc822", "message/global"):
            self.attachments.append((filename or "message.eml", ctype, data))
        elif ctype.startswith("text/") and not attachment:
            text = decode_text(data, params.get("charset"))
            (self.html if ctype == "text/html" else self.text).append(text)
            if filename:
                self.attachments.append((filename, ctype, data))
        else:
            self.attachments.append((filename or "attachment", stored_type, data))


# ---------------------------------------------------------------- addresses

_MSGID = re.compile(r"<[^<>\s]+>")
# One plain address (`a@b.c`, `Name <a@b.c>` or `"Name" <a@b.c>`) in an address header:
# nearly every From, and most To, take this shape. Anything else goes to the email package.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_MAILBOX = re.compile(
    rf'[ \t]*(?:({_PLAIN_ADDR})|(?:"([^"\\]*)"|({_ATEXT}(?:[ \t]+{_ATEXT})*))?[ \t]*<({_PLAIN_ADDR})>)[ \t]*')


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


def _bounded(values: list) -> list:
    """The values of an address header, cut to ADDRESS_HEADER_MAX_CHARS in all (at the last
    comma before the cut, so no address is read half)."""
    out, left = [], ADDRESS_HEADER_MAX_CHARS
    for value in values:
        if len(value) > left:
            cut = value.rfind(",", 0, left)
            if cut > 0:
                out.append(value[:cut])
            break
        out.append(value)
        left -= len(value)
    return out


def addresses(headers: dict, name: str) -> list:
    values = _bounded(headers.get(name.lower(), []))
    plain = _plain_mailbox(values)
    if plain is not None:
        return [(decode_words(n), a) for n, a in plain]
    try:
        pairs = email.utils.getaddresses(values)
        return [(decode_words(n), one_line(a)) for n, a in pairs if a and "@" in a]
    except Exception:   # e.g. RecursionError on deeply nested comments
        return []


# ---------------------------------------------------------------- the message

def parse(raw: bytes, *, max_parts: int = MAX_PARTS, max_depth: int = MAX_DEPTH,
          timeout_seconds: float = None) -> dict:
    """The fields mu keeps from a message. MimeLimitError past a limit."""
    deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
    walk = _Walk(raw, max_parts, max_depth, deadline)
    headers = walk.run()
    text = "\n".join(t for t in walk.text if t.strip()).replace("\r\n", "\n")
    html = "\n".join(h for h in walk.html if h.strip())
    if not text and html:
        text = html_to_text(html)
    from_list = addresses(headers, "From")
    from_name, from_addr = from_list[0] if from_list else ("", "")
    references = _MSGID.findall(_first(headers, "references"))
    in_reply_to = _MSGID.findall(_first(headers, "in-reply-to"))
    message_id = _MSGID.findall(_first(headers, "message-id"))
    return {
        "subject": decode_words(_first(headers, "subject")),
        "from_name": from_name,
        "from_addr": from_addr,
        "to": [a for _, a in addresses(headers, "To")],
        "cc": [a for _, a in addresses(headers, "Cc")],
        "date": decode_words(_first(headers, "date")),
        "message_id": message_id[0] if message_id else "",
        "in_reply_to": in_reply_to[0] if in_reply_to else "",
        "references": references[-100:],
        "text": text,
        "html": html,
        "attachments": [(name, safe_content_type(ctype), data) for name, ctype, data in walk.attachments],
    }


# ---------------------------------------------------------------- HTML to text

# Elements that start a new line when shown (HTML's block-level and line-breaking ones).
_BLOCK_NAMES = ("address article aside blockquote br dd div dl dt fieldset figcaption figure footer form "
                "h1 h2 h3 h4 h5 h6 header hr li main nav ol p section table td th tr ul").split()


def _any_case(word: str) -> str:
    """`br` -> `[bB][rR]`: the regex engine is several times slower with re.I."""
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in word)


def _names_pattern(names) -> str:
    """An alternation of tag names grouped by first letter, in any case: one character
    class test rules out most candidates before any alternative is tried."""
    by_first = {}
    for name in sorted(names, key=len, reverse=True):
        by_first.setdefault(name[0], []).append(name[1:])
    firsts = "".join(sorted(by_first)) + "".join(sorted(by_first)).upper()
    return f"(?=[{firsts}])(?:" + "|".join(f"{_any_case(first)}(?:{'|'.join(map(_any_case, rests))})"
                                         for first, rests in by_first.items()) + ")"


# Each of these stops at the next "<" or ">", so no attempt rescans what another scanned.
_BLOCK_TAG = re.compile(rf"</?(?:{_names_pattern(_BLOCK_NAMES)})(?=[\s/>])[^<>]*>")
_ANY_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
# What the one loop handles: comments, elements whose content is not shown, <pre>.
_SPECIAL = re.compile(rf"<(?:!--|({_names_pattern(('script', 'style', 'title', 'pre', '/pre'))})(?=[\s/>]))")
_RAW_TEXT_END = {name: re.compile(rf"</{_any_case(name)}(?=[\s/>])") for name in ("script", "style", "title")}
_SPACES = re.compile(r"[ \t\r\n\f]+")
_SPACE_AT_BREAK = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n[ \n]*\n")


def _shown(segment: str, pre: bool) -> str:
    """An HTML fragment holding no comment, script, style or <pre> as text."""
    if not pre:
        segment = _SPACES.sub(" ", segment)
    segment = _ANY_TAG.sub("", _BLOCK_TAG.sub("\n", segment))
    return segment if pre else _SPACE_AT_BREAK.sub("\n", segment)


def html_to_text(html: str) -> str:
    """The text a reader sees in an HTML body: tags, comments, scripts and styles removed,
    whitespace collapsed as a browser does outside <pre>, a line break for each block
    element, entities decoded.

    Linear in the input: a tag is "<" up to the next ">" with no "<" between, so no scan
    goes past the start of the next; the loop runs once per comment, script, style or
    <pre>, and an unclosed one ends the text (HTML5 §13.2.5 reads it to the end)."""
    out, pos, n, pre = [], 0, len(html), 0
    while True:
        special = _SPECIAL.search(html, pos)
        end = n if special is None else special.start()
        if end > pos:
            out.append(_shown(html[pos:end], pre > 0))
        if special is None:
            break
        if special.group(0) == "<!--":
            close = html.find("-->", special.end())
            if close < 0:
                break
            pos = close + 3
            continue
        gt = html.find(">", special.end())
        if gt < 0:
            break
        pos = gt + 1
        name = special.group(1).lower()
        if name.endswith("pre"):
            pre = max(0, pre - 1) if name.startswith("/") else pre + 1
            out.append("\n")
        elif html[gt - 1] != "/":   # <script/> has no content
            close = _RAW_TEXT_END[name].search(html, pos)
            if close is None:
                break
            gt = html.find(">", close.end())
            pos = n if gt < 0 else gt + 1
    text = htmllib.unescape("".join(out))
    return _BLANK_LINES.sub("\n\n", text).strip()


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
