"""SEARCH: search keys parsed into a tree and matched against a mailbox (RFC 9051 §6.4.4),
with RFC 3501's NEW/OLD/RECENT, RFC 7162 MODSEQ, RFC 5032 OLDER/YOUNGER, RFC 5182 "$",
and the ESEARCH result options (RFC 4731, RFC 5267 PARTIAL).

A key is a tuple `(NAME, args...)`. `Matcher` evaluates one tree over the session's
messages; data is fetched only when a key needs it (flags and sizes from the view, headers
from the raw message, TEXT/BODY from the store's text search, once per key).
"""

import calendar
import email.utils

from .. import mimeinfo
from .parser import BadSyntax, MAX_NUMBER64

# Keys and what follows them (RFC 9051 §9 search-key).
_NO_ARG = {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
           "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"}
_FLAG_KEYS = {"ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
              "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
              "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
              "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False)}
_STRING_KEYS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_ADDRESS_HEADERS = {"FROM": b"from", "TO": b"to", "CC": b"cc", "BCC": b"bcc"}
_KEYS_WITH_ARGUMENTS = _STRING_KEYS | _DATE_KEYS | {"KEYWORD", "UNKEYWORD", "HEADER", "LARGER", "SMALLER", "OLDER",
                                                   "YOUNGER", "UID", "NOT", "OR", "MODSEQ"}
RETURN_OPTIONS = {"MIN", "MAX", "ALL", "COUNT", "SAVE", "UPDATE", "CONTEXT", "PARTIAL"}
MAX_DEPTH = 50


def parse_return(reader) -> tuple:
    """RETURN (options) after SEARCH/SORT: (set of options, partial range or None)."""
    reader.expect(b"(")
    options, partial = set(), None
    if not reader.maybe(b")"):
        while True:
            word = reader.word()
            if word not in RETURN_OPTIONS:
                raise BadSyntax(f"Unknown RETURN option {word}")
            if word == "PARTIAL":   # RFC 5267 §4.4: PARTIAL low:high, both non-zero numbers
                reader.sp()
                lo = reader.nz_number()
                reader.expect(b":")
                hi = reader.nz_number()
                partial = (min(lo, hi), max(lo, hi))
            options.add(word)
            if not reader.maybe(b" "):
                break
        reader.expect(b")")
    if not options:   # RFC 4731 §3.1: RETURN () means ALL
        options = {"ALL"}
    return options, partial


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_keys(reader) -> tuple:
    """One or more search keys up to the end of the command: ("AND", [keys])."""
    keys = [parse_key(reader, 0)]
    while reader.maybe(b" "):
        keys.append(parse_key(reader, 0))
    reader.end()
    return keys[0] if len(keys) == 1 else ("AND", keys)


def parse_key(reader, depth: int) -> tuple:
    if depth > MAX_DEPTH:
        raise BadSyntax("Search keys nested too deeply")
    p = reader.peek()
    if p == b"(":
        reader.expect(b"(")
        keys = [parse_key(reader, depth + 1)]
        while reader.maybe(b" "):
            keys.append(parse_key(reader, depth + 1))
        reader.expect(b")")
        return keys[0] if len(keys) == 1 else ("AND", keys)
    if p and (p.isdigit() or p in b"*$"):
        return ("SEQ", reader.sequence_set())
    word = reader.word()
    if word in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[word]
        return ("FLAG", flag, present)
    if word in _NO_ARG:
        return (word,)
    if word not in _KEYS_WITH_ARGUMENTS:
        raise BadSyntax(f"Unknown search key {word}")
    reader.sp()
    if word in _STRING_KEYS:
        return (word, _text(reader.astring()))
    if word in _DATE_KEYS:
        return (word, reader.date())
    if word in ("KEYWORD", "UNKEYWORD"):
        return ("FLAG", reader.atom().decode("ascii", "replace"), word == "KEYWORD")
    if word == "HEADER":
        name = reader.astring().decode("ascii", "replace").lower()
        reader.sp()
        return ("HEADER", name, _text(reader.astring()))
    if word in ("LARGER", "SMALLER"):
        return (word, reader.number(MAX_NUMBER64))
    if word in ("OLDER", "YOUNGER"):
        return (word, reader.nz_number())
    if word == "UID":
        return ("UID", reader.sequence_set())
    if word == "NOT":
        return ("NOT", parse_key(reader, depth + 1))
    if word == "OR":
        a = parse_key(reader, depth + 1)
        reader.sp()
        return ("OR", a, parse_key(reader, depth + 1))
    if word == "MODSEQ":   # RFC 7162 §3.1.5: MODSEQ [entry-name entry-type] mod-sequence
        if reader.peek() == b'"' or not (reader.peek() or b"x").isdigit():
            reader.astring()
            reader.sp()
            entry_type = reader.word()
            if entry_type not in ("PRIV", "SHARED", "ALL"):
                raise BadSyntax("Bad MODSEQ entry type")
            reader.sp()
        return ("MODSEQ", reader.number(MAX_NUMBER64))
    raise BadSyntax(f"Unknown search key {word}")


def uses_modseq(key) -> bool:
    if key[0] == "MODSEQ":
        return True
    if key[0] in ("AND",):
        return any(uses_modseq(k) for k in key[1])
    if key[0] == "NOT":
        return uses_modseq(key[1])
    if key[0] == "OR":
        return uses_modseq(key[1]) or uses_modseq(key[2])
    return False


def _date_seconds(ymd: tuple) -> int:
    return calendar.timegm((ymd[0], ymd[1], ymd[2], 0, 0, 0))


def _sent_day(date_value: bytes):
    """The date of a Date header as written, time and zone disregarded (RFC 9051 §6.4.4)."""
    parsed = email.utils.parsedate_tz(mimeinfo.unfold(date_value).decode("ascii", "replace"))
    if not parsed:
        return None
    try:
        return calendar.timegm((parsed[0], parsed[1], parsed[2], 0, 0, 0))
    except (ValueError, OverflowError, TypeError):
        return None


class Matcher:
    """Evaluates a key tree over positions of `uids` (the session's sequence order).

    `source` supplies the data: view (flags, size, modseq, dates), recent(uid), headers(uid),
    text_matches(needle, body_only, uids), internal_day(uid), star values and saved results.
    """

    def __init__(self, source, uids):
        self.source = source
        self.uids = uids
        self._text_cache = {}

    def matches(self, key) -> list:
        """Positions (0-based) of the messages that match, ascending."""
        return [pos for pos in range(len(self.uids)) if self._match(key, pos)]

    def _match(self, key, pos) -> bool:
        name = key[0]
        src = self.source
        uid = self.uids[pos]
        if name == "AND":
            return all(self._match(k, pos) for k in key[1])
        if name == "OR":
            return self._match(key[1], pos) or self._match(key[2], pos)
        if name == "NOT":
            return not self._match(key[1], pos)
        if name == "ALL":
            return True
        if name == "SEQ":
            if key[1].saved:
                return uid in src.saved_uids()
            return key[1].contains(pos + 1, len(self.uids))
        if name == "UID":
            if key[1].saved:
                return uid in src.saved_uids()
            return key[1].contains(uid, src.max_uid())
        vi = src.view_index(uid)
        if vi is None:
            return False   # expunged meanwhile: it matches nothing but sequence and UID keys
        view = src.view
        if name == "FLAG":
            flags = view.flags(vi)
            flag = key[1]
            present = flag in flags if flag.startswith("\\") else flag.lower() in {f.lower() for f in flags}
            return present == key[2]
        if name == "RECENT":
            return src.is_recent(uid)
        if name == "NEW":
            return src.is_recent(uid) and "\\Seen" not in view.flags(vi)
        if name == "OLD":
            return not src.is_recent(uid)
        if name == "LARGER":
            return view.size(vi) > key[1]
        if name == "SMALLER":
            return view.size(vi) < key[1]
        if name == "MODSEQ":
            return view.modseq(vi) >= key[1]
        if name in ("OLDER", "YOUNGER"):
            age = src.now() - view.internal_date(vi)
            return age >= key[1] if name == "OLDER" else age <= key[1]
        if name in ("BEFORE", "ON", "SINCE"):
            day, target = src.internal_day(uid), _date_seconds(key[1])
            return _compare(name, day, target)
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            fields = src.header_fields(uid)
            date_value = mimeinfo.first(fields, b"date") if fields is not None else None
            day = _sent_day(date_value) if date_value is not None else None
            if day is None:
                day = src.internal_day(uid)
            return _compare(name[4:], day, _date_seconds(key[1]))
        if name in ("BODY", "TEXT"):
            found = self._text_cache.get((name, key[1]))
            if found is None:
                found = self._text_cache[(name, key[1])] = src.text_matches(key[1], name == "BODY", self.uids)
            return uid in found
        if name == "SUBJECT":
            return _header_contains(src.header_fields(uid), b"subject", key[1])
        if name in _ADDRESS_HEADERS:
            return _address_contains(src.header_fields(uid), _ADDRESS_HEADERS[name], key[1])
        if name == "HEADER":
            return _header_contains(src.header_fields(uid), key[1].encode("ascii", "replace"), key[2])
        raise BadSyntax(f"Unknown search key {name}")


def _compare(name: str, day, target: int) -> bool:
    if day is None:
        return False
    if name == "BEFORE":
        return day < target
    if name == "ON":
        return target <= day < target + 86400
    return day >= target   # SINCE


def _header_contains(fields, name: bytes, needle: str) -> bool:
    if fields is None:
        return False
    needle = needle.casefold()
    for field_name, _whole, value in fields:
        if field_name == name and needle in mimeinfo.decode_words(value).casefold():
            return True
    return False


def _address_contains(fields, name: bytes, needle: str) -> bool:
    """Address headers match on their parsed form, "Name <mailbox@host>" and group names,
    so comments and odd spacing do not hide an address."""
    if fields is None:
        return False
    needle = needle.casefold()
    for field_name, _whole, value in fields:
        if field_name != name:
            continue
        if not needle:
            return True
        parts = []
        for a in mimeinfo.addresses(value):
            if a.mailbox is None:
                continue
            display = mimeinfo.decode_words(a.name) if a.name else ""
            if a.host is None:
                parts.append(display or a.mailbox.decode("utf-8", "replace"))
            else:
                addr = (a.mailbox + b"@" + a.host).decode("utf-8", "replace")
                parts.append(f"{display} <{addr}>" if display else addr)
        if needle in ", ".join(parts).casefold() or needle in mimeinfo.decode_words(value).casefold():
            return True
    return False


def esearch_response(tag: bytes, uid: bool, options: set, results: list, partial, modseq) -> bytes:
    """`* ESEARCH (TAG "x") [UID] MIN a MAX b ALL set COUNT n [MODSEQ m]` (RFC 4731 §3.1)."""
    from .parser import format_set, format_set_ordered
    out = [b"* ESEARCH (TAG " + _quote(tag) + b")"]
    if uid:
        out.append(b"UID")
    if results:
        if "MIN" in options:
            out.append(b"MIN %d" % min(results))
        if "MAX" in options:
            out.append(b"MAX %d" % max(results))
        if "ALL" in options:
            out.append(b"ALL " + format_set(sorted(results)).encode())
    if "COUNT" in options:
        out.append(b"COUNT %d" % len(results))
    if "PARTIAL" in options and partial is not None:
        lo, hi = partial
        window = results[lo - 1:hi]
        shown = format_set_ordered(window).encode() if window else b"NIL"
        out.append(b"PARTIAL (%d:%d " % (lo, hi) + shown + b")")
    if modseq is not None and results:
        out.append(b"MODSEQ %d" % modseq)
    return b" ".join(out) + b"\r\n"


def _quote(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
