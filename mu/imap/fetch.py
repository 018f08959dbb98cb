"""FETCH: the items a client asks for and the data items that answer them (RFC 9051 §6.4.5,
§7.5.2; RFC 3516 BINARY; RFC 7162 MODSEQ and CHANGEDSINCE).

`parse_items` reads the item list into `Item`s; `Plan` says which sources a FETCH needs (the
session's view, the store's MessageInfo, the raw message); `render` turns one message's
sources into the parenthesised data of its `* n FETCH` response.
"""

import time
from dataclasses import dataclass
from typing import Optional

from .. import mimeinfo
from .parser import LITERAL, BadSyntax

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Macros (RFC 9051 §6.4.5): ALL, FAST and FULL stand for these.
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
SIMPLE = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
                    "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ", "X-SAVEDATE"})
NEEDS_INFO = frozenset({"INTERNALDATE", "ENVELOPE", "BODY", "BODYSTRUCTURE"})
NEEDS_RAW = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODY[]", "BINARY", "BINARY.SIZE"})
SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})


@dataclass(frozen=True)
class Item:
    name: str                                  # "FLAGS", "BODY[]" (any section), "BINARY" ...
    section: Optional[mimeinfo.Section] = None
    partial: Optional[tuple] = None            # (origin, count)
    peek: bool = False
    label: bytes = b""                         # the name as the response spells it

    @property
    def sets_seen(self) -> bool:
        return self.name in SETS_SEEN or (self.name in ("BODY[]", "BINARY") and not self.peek)


def _section_spec(reader, binary: bool) -> tuple:
    """The text between [ and ] (the [ already read): (Section, label text)."""
    parts = []
    text, fields = "", ()
    label = bytearray()
    if reader.maybe(b"]"):
        return mimeinfo.Section(), b""
    while True:
        p = reader.peek()
        if p and p.isdigit():
            parts.append(reader.nz_number())
            label += b"%d" % parts[-1]
            if reader.maybe(b"."):
                label += b"."
                continue
            break
        if binary:
            raise BadSyntax("BINARY takes part numbers only")
        word = reader.atom().upper()
        if word.endswith(b"]"):
            raise BadSyntax("Bad section")
        if word in (b"HEADER", b"TEXT") or (word == b"MIME" and parts):
            text = word.decode()
            label += word
        elif word in (b"HEADER.FIELDS", b"HEADER.FIELDS.NOT"):
            text = word.decode()
            reader.sp()
            reader.expect(b"(")
            names = [reader.astring()]
            while reader.maybe(b" "):
                names.append(reader.astring())
            reader.expect(b")")
            fields = tuple(n.lower() for n in names)
            label += word + b" (" + b" ".join(names) + b")"
        else:
            raise BadSyntax("Bad section")
        break
    reader.expect(b"]")
    return mimeinfo.Section(tuple(parts), text, fields), bytes(label)


def _partial(reader):
    if not reader.maybe(b"<"):
        return None
    origin = reader.number()
    reader.expect(b".")
    count = reader.nz_number()
    reader.expect(b">")
    return origin, count


def _item(reader) -> list:
    word = reader._take_while(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-"))
    name = word.decode("ascii").upper()
    if not name:
        raise BadSyntax("Expected a FETCH item")
    if name in MACROS:
        return [Item(n, label=n.encode()) for n in MACROS[name]]
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") and reader.maybe(b"["):
        binary = name.startswith("BINARY")
        section, label = _section_spec(reader, binary)
        partial = _partial(reader) if name != "BINARY.SIZE" else None
        base = name.split(".")[0] if name != "BINARY.SIZE" else "BINARY.SIZE"
        kind = "BODY[]" if base == "BODY" else base
        return [Item(kind, section, partial, peek=name.endswith(".PEEK"), label=base.encode() + b"[" + label + b"]")]
    if name in ("BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        raise BadSyntax(f"{name} needs a section")
    if name in ("EMAILID", "THREADID"):
        return [Item(name, label=name.encode())]
    if name not in SIMPLE:
        raise BadSyntax(f"Unknown FETCH item {name}")
    return [Item(name, label=name.encode())]


def parse_items(reader) -> list:
    """fetch-att, a macro, or a parenthesised list of fetch-att."""
    if reader.maybe(b"("):
        items = _item(reader)
        while reader.maybe(b" "):
            items += _item(reader)
        reader.expect(b")")
    else:
        items = _item(reader)
    for item in items:
        if item.name in MACROS:
            raise BadSyntax("Macros cannot be combined")
    return items


def parse_modifiers(reader) -> dict:
    """RFC 7162 §3.1.4 / §3.2.6: (CHANGEDSINCE n [VANISHED])."""
    mods = {}
    if not reader.maybe(b" "):
        return mods
    reader.expect(b"(")
    while True:
        word = reader.word()
        if word == "CHANGEDSINCE":
            reader.sp()
            mods["CHANGEDSINCE"] = reader.number(2 ** 63 - 1)
        elif word == "VANISHED":
            mods["VANISHED"] = True
        else:
            raise BadSyntax(f"Unknown FETCH modifier {word}")
        if not reader.maybe(b" "):
            break
    reader.expect(b")")
    return mods


class Plan:
    """Which sources a FETCH needs, decided once for the whole command."""

    def __init__(self, items: list):
        names = {i.name for i in items}
        self.items = items
        self.needs_info = bool(names & NEEDS_INFO) or "EMAILID" in names
        self.needs_raw = bool(names & NEEDS_RAW)
        self.sets_seen = any(i.sets_seen for i in items)
        self.wants_flags = "FLAGS" in names
        self.wants_modseq = "MODSEQ" in names
        self.force_modseq = False   # MODSEQ added to every response (CHANGEDSINCE)


def internal_date(seconds: int, tz_minutes: int) -> bytes:
    """date-time (RFC 9051 §9): "17-Jul-1996 02:44:25 -0700" in the zone it arrived in."""
    tm = time.gmtime(seconds + tz_minutes * 60)
    sign = "+" if tz_minutes >= 0 else "-"
    hours, minutes = divmod(abs(tz_minutes), 60)
    return (f'"{tm.tm_mday:02d}-{MONTH_NAMES[tm.tm_mon - 1]}-{tm.tm_year:04d} '
            f'{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {sign}{hours:02d}{minutes:02d}"').encode()


def literal(data: bytes, binary: bool = False) -> bytes:
    if binary and b"\0" in data:
        return b"~{%d}\r\n%s" % (len(data), data)   # literal8 (RFC 3516 §4.2)
    return b"{%d}\r\n%s" % (len(data), data)


def _cut(data: bytes, partial) -> bytes:
    if partial is None:
        return data
    origin, count = partial
    return data[origin:origin + count]


class Message:
    """One message's sources for rendering: view values always, info and raw when planned."""
    __slots__ = ("uid", "flags", "modseq", "size", "date", "info", "raw", "root")

    def __init__(self, uid, flags, modseq, size, date, info=None, raw=None):
        self.uid, self.flags, self.modseq, self.size, self.date = uid, flags, modseq, size, date
        self.info, self.raw, self.root = info, raw, None

    def tree(self):
        if self.root is None:
            self.root = mimeinfo.parse(self.raw)
        return self.root


def render(items: list, msg: Message, flags_text: bytes, uid_first: bool, extra_flags: bool,
           condstore: bool, names: set = None) -> bytes:
    """The "(...)" of a FETCH response. `uid_first`: a UID command (UID always included);
    `extra_flags`: FLAGS added because \\Seen was just set; `condstore`: MODSEQ included
    once CONDSTORE is on (RFC 7162 §3.1.4); `names`: the items' names, when the caller
    renders many messages. Raises mimeinfo.UnknownEncoding for BINARY."""
    out = []
    names = names if names is not None else {i.name for i in items}
    if uid_first and "UID" not in names:
        out.append(b"UID %d" % msg.uid)
    for item in items:
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % msg.uid)
        elif name == "FLAGS":
            out.append(b"FLAGS " + flags_text)
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % msg.modseq)
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % msg.size)
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + internal_date(msg.info.internal_date, msg.info.internal_tz))
        elif name == "ENVELOPE":
            out.append(b"ENVELOPE " + mimeinfo.wire(msg.info.envelope))
        elif name == "BODYSTRUCTURE":
            out.append(b"BODYSTRUCTURE " + mimeinfo.wire(msg.info.bodystructure))
        elif name == "BODY":
            out.append(b"BODY " + mimeinfo.wire(msg.info.body))
        elif name == "EMAILID":
            out.append(b"EMAILID (" + msg.info.email_id.encode() + b")")
        elif name == "THREADID":
            out.append(b"THREADID NIL")
        elif name == "X-SAVEDATE":
            out.append(b"X-SAVEDATE NIL")
        elif name == "RFC822":
            out.append(b"RFC822 " + literal(msg.raw))
        elif name == "RFC822.HEADER":
            out.append(b"RFC822.HEADER " + literal(msg.tree().header))
        elif name == "RFC822.TEXT":
            out.append(b"RFC822.TEXT " + literal(msg.tree().body))
        elif name == "BODY[]":
            data = mimeinfo.section_bytes(msg.raw, item.section, msg.tree())
            label = item.label + (b"<%d>" % item.partial[0] if item.partial else b"")
            out.append(label + b" " + (b"NIL" if data is None else literal(_cut(data, item.partial))))
        elif name == "BINARY":
            data = mimeinfo.binary_bytes(msg.raw, item.section.part, msg.tree())
            label = item.label + (b"<%d>" % item.partial[0] if item.partial else b"")
            out.append(label + b" " + (b"NIL" if data is None else literal(_cut(data, item.partial), True)))
        elif name == "BINARY.SIZE":
            data = mimeinfo.binary_bytes(msg.raw, item.section.part, msg.tree())
            out.append(item.label + b" " + (b"NIL" if data is None else b"%d" % len(data)))
    if extra_flags and "FLAGS" not in names:
        out.append(b"FLAGS " + flags_text)
    if condstore and "MODSEQ" not in names:
        out.append(b"MODSEQ (%d)" % msg.modseq)
    return b"(" + b" ".join(out) + b")"


__all__ = ["Item", "Plan", "parse_items", "parse_modifiers", "render", "internal_date", "literal", "LITERAL"]
