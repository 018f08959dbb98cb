"""The IMAP command grammar (RFC 9051 §9): a reader over one complete command.

The server hands over a command as it arrived: line segments with the literals between
them already read (`[bytes, Literal, bytes, Literal, bytes]`). Command methods pull what
their syntax needs from a `CommandReader` and anything malformed raises `BadSyntax`, which
the session answers with a tagged BAD. Nothing here knows about mailboxes or messages.
"""

import calendar
import re

from ..folders import encode_uid_set

MAX_NUMBER = 2 ** 32 - 1          # RFC 9051 §9 number / nz-number
MAX_NUMBER64 = 2 ** 63 - 1        # RFC 9051 §9 number64 (MODSEQ, RFC 7162)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
ATOM_CHARS = frozenset(range(256)) - _ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}
LIST_CHARS = ASTRING_CHARS | {ord("%"), ord("*")}
SEQUENCE_CHARS = frozenset(b"0123456789:,*$")
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME = re.compile(rb"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


class BadSyntax(Exception):
    """The command does not follow the grammar; the text says where."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class Literal:
    """A literal's octets; `binary` for literal8 (`~{n}`, RFC 3516)."""
    __slots__ = ("data", "binary")

    def __init__(self, data: bytes, binary: bool = False):
        self.data, self.binary = data, binary


class _LiteralMark:
    def __repr__(self):
        return "LITERAL"


LITERAL = _LiteralMark()   # what peek() shows when a literal comes next


class SequenceSet:
    """A sequence-set (RFC 9051 §9): ranges with None standing for "*", or the saved
    search result ("$", RFC 5182). `resolve()` gives the members given what "*" means."""
    __slots__ = ("ranges", "saved")

    def __init__(self, ranges: list, saved: bool = False):
        self.ranges, self.saved = ranges, saved

    def bounds(self, star: int) -> list:
        """[(low, high)] with "*" replaced and each range ordered."""
        out = []
        for lo, hi in self.ranges:
            lo = star if lo is None else lo
            hi = star if hi is None else hi
            out.append((lo, hi) if lo <= hi else (hi, lo))
        return out

    def contains(self, n: int, star: int) -> bool:
        return any(lo <= n <= hi for lo, hi in self.bounds(star))

    def largest_explicit(self) -> int:
        return max((x for r in self.ranges for x in r if x is not None), default=0)


# Ascending numbers as a compact sequence-set ("1:3,7"; "" for none): the store writes UID
# sets in its records the same way.
format_set = encode_uid_set


def format_set_ordered(numbers) -> str:
    """Numbers in the given order, runs of +1 joined (for ESORT/PARTIAL results)."""
    out, run = [], []
    for n in numbers:
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else f"{run[0]}")
        run = [n]
    if run:
        out.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else f"{run[0]}")
    return ",".join(out)


class CommandReader:
    def __init__(self, parts: list):
        if not parts or not isinstance(parts[0], bytes):
            raise ValueError("a command starts with a line")
        self.parts = parts
        self.i = 0
        self.pos = 0

    # ------------------------------------------------------------ position

    @property
    def _seg(self) -> bytes:
        return self.parts[self.i]

    def peek(self):
        seg = self._seg
        if self.pos < len(seg):
            return seg[self.pos:self.pos + 1]
        if self.i + 1 < len(self.parts):
            return LITERAL
        return b""

    def peek_bytes(self, n: int) -> bytes:
        """The next n octets of the current line segment (fewer at its end)."""
        return self._seg[self.pos:self.pos + n]

    def at_end(self) -> bool:
        return self.peek() == b""

    def end(self) -> None:
        if not self.at_end():
            raise BadSyntax("Unexpected text at the end of the command")

    def rest_of_line(self) -> bytes:
        """Everything up to the end of the current line segment."""
        seg = self._seg
        data, self.pos = seg[self.pos:], len(seg)
        return data

    def _take_while(self, allowed) -> bytes:
        seg, start = self._seg, self.pos
        end = start
        n = len(seg)
        while end < n and seg[end] in allowed:
            end += 1
        self.pos = end
        return seg[start:end]

    def expect(self, token: bytes) -> None:
        seg = self._seg
        if seg[self.pos:self.pos + len(token)].upper() != token.upper():
            want = token.decode("ascii", "replace")
            raise BadSyntax(f"Expected {want!r}" if want != " " else "Expected a space")
        self.pos += len(token)

    def sp(self) -> None:
        self.expect(b" ")

    def maybe(self, token: bytes) -> bool:
        seg = self._seg
        if seg[self.pos:self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def literal(self) -> Literal:
        if self.peek() is not LITERAL:
            raise BadSyntax("Expected a literal")
        lit = self.parts[self.i + 1]
        self.i += 2
        self.pos = 0
        return lit

    # ------------------------------------------------------------ tokens

    def tag(self) -> bytes:
        tag = self._take_while(TAG_CHARS)
        if not tag:
            raise BadSyntax("Missing or malformed tag")
        return tag

    def atom(self) -> bytes:
        value = self._take_while(ATOM_CHARS)
        if not value:
            raise BadSyntax("Expected an atom")
        return value

    def word(self) -> str:
        """An atom read as an upper-case keyword (command names, FETCH items, SEARCH keys)."""
        return self.atom().decode("ascii", "replace").upper()

    def quoted(self) -> bytes:
        self.expect(b'"')
        seg = self._seg
        out = bytearray()
        i = self.pos
        n = len(seg)
        while True:
            if i >= n:
                raise BadSyntax("Unterminated quoted string")
            c = seg[i]
            if c == 0x22:
                break
            if c == 0x5C:
                if i + 1 >= n or seg[i + 1] not in b'"\\':
                    raise BadSyntax("Bad escape in quoted string")
                i += 1
                c = seg[i]
            elif c in (0x00, 0x0A, 0x0D):
                raise BadSyntax("Bad character in quoted string")
            out.append(c)
            i += 1
        self.pos = i + 1
        return bytes(out)

    def string(self) -> bytes:
        p = self.peek()
        if p == b'"':
            return self.quoted()
        if p is LITERAL:
            return self.literal().data
        raise BadSyntax("Expected a string")

    def astring(self) -> bytes:
        p = self.peek()
        if p == b'"' or p is LITERAL:
            return self.string()
        value = self._take_while(ASTRING_CHARS)
        if not value:
            raise BadSyntax("Expected a string or atom")
        return value

    def nstring(self):
        if self.maybe_nil():
            return None
        return self.string()

    def maybe_nil(self) -> bool:
        seg = self._seg
        if seg[self.pos:self.pos + 3].upper() == b"NIL" and (
                self.pos + 3 == len(seg) or seg[self.pos + 3] not in ATOM_CHARS):
            self.pos += 3
            return True
        return False

    def list_mailbox(self) -> bytes:
        p = self.peek()
        if p == b'"' or p is LITERAL:
            return self.string()
        value = self._take_while(LIST_CHARS)
        if not value:
            raise BadSyntax("Expected a mailbox pattern")
        return value

    def number(self, maximum: int = MAX_NUMBER) -> int:
        digits = self._take_while(b"0123456789")
        if not digits:
            raise BadSyntax("Expected a number")
        if len(digits) > 20 or int(digits) > maximum:
            raise BadSyntax("Number out of range")
        return int(digits)

    def nz_number(self, maximum: int = MAX_NUMBER) -> int:
        n = self.number(maximum)
        if n == 0:
            raise BadSyntax("Expected a non-zero number")
        return n

    def flag(self) -> str:
        """A flag as the client spelled it: "\\Seen" or a keyword atom."""
        if self.maybe(b"\\"):
            if self.maybe(b"*"):
                return "\\*"
            return "\\" + self.atom().decode("ascii", "replace")
        return self.atom().decode("ascii", "replace")

    def flag_list(self, allow_bare: bool = False) -> list:
        """flag-list = "(" [flag *(SP flag)] ")"; STORE also takes flags without parentheses."""
        if not self.maybe(b"("):
            if not allow_bare:
                raise BadSyntax("Expected a flag list")
            flags = [self.flag()]
            while self.maybe(b" "):
                flags.append(self.flag())
            return flags
        flags = []
        if not self.maybe(b")"):
            flags.append(self.flag())
            while self.maybe(b" "):
                flags.append(self.flag())
            self.expect(b")")
        return flags

    def sequence_set(self) -> SequenceSet:
        text = self._take_while(SEQUENCE_CHARS)
        if not text:
            raise BadSyntax("Expected a sequence set")
        if text == b"$":
            return SequenceSet([], saved=True)
        ranges = []
        for item in text.split(b","):
            lo, colon, hi = item.partition(b":")
            try:
                a = _seq_number(lo)
                b = _seq_number(hi) if colon else a
            except ValueError:
                raise BadSyntax("Malformed sequence set") from None
            ranges.append((a, b))
        return SequenceSet(ranges)

    def date(self) -> tuple:
        """SEARCH's date (RFC 9051 §9 date): (year, month, day), quoted or not."""
        quoted = self.maybe(b'"')
        m = _DATE.match(self._seg, self.pos)
        if not m:
            raise BadSyntax("Expected a date like 1-Feb-2024")
        day, month, year = int(m.group(1)), m.group(2).decode().lower(), int(m.group(3))
        if month not in MONTHS or not 1 <= day <= 31:
            raise BadSyntax("Bad date")
        self.pos = m.end()
        if quoted:
            self.expect(b'"')
        return year, MONTHS.index(month) + 1, day

    def date_time(self) -> tuple:
        """APPEND's date-time: (Unix seconds, minutes east of UTC)."""
        value = self.quoted()
        m = _DATE_TIME.fullmatch(value)
        if not m:
            raise BadSyntax("Expected a date-time like \"01-Feb-2024 10:00:00 +0000\"")
        day, month, year = int(m.group(1)), m.group(2).decode().lower(), int(m.group(3))
        hh, mm, ss = int(m.group(4)), int(m.group(5)), int(m.group(6))
        if month not in MONTHS or not 1 <= day <= 31 or hh > 23 or mm > 59 or ss > 60:
            raise BadSyntax("Bad date-time")
        zone = (int(m.group(8)) * 60 + int(m.group(9))) * (1 if m.group(7) == b"+" else -1)
        try:
            local = calendar.timegm((year, MONTHS.index(month) + 1, day, hh, mm, ss))
        except (ValueError, OverflowError):
            raise BadSyntax("Bad date-time") from None
        return local - zone * 60, zone

    def parenthesized(self) -> bool:
        return self.maybe(b"(")


def _seq_number(text: bytes):
    if text == b"*":
        return None
    if not text.isdigit() or len(text) > 10:
        raise ValueError(text)
    n = int(text)
    if not 0 < n <= MAX_NUMBER:
        raise ValueError(text)
    return n
