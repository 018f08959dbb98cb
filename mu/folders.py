"""One mailbox's index in memory: UIDs, flags, MODSEQs and dates in compact arrays.

A mailbox (INBOX, Sent, a user's own "Projects/2026") holds entries; an entry is a message
(by its number in the store) with the mailbox's UID for it, its flags, its MODSEQ and its
internal date (RFC 9051 §2.3). Columns are `array`s, a few bytes per entry, so a mailbox of
a million messages costs some 30 MB; positions are kept in UID order, so a UID is found by
binary search and message sequence number i+1 is position i.

Flags are a bit mask: the five system flags, then one bit per keyword in the order the
mailbox first saw it (RFC 9051 §2.3.2: keywords are case-insensitive; the first spelling
stays). A mailbox has room for 59 keywords; PERMANENTFLAGS stops offering `\\*` when full.

Changes are also kept in a short log (MODSEQ, UID, kind), so "what changed since MODSEQ m"
(IDLE, NOOP, CONDSTORE, QRESYNC) costs the number of changes, not the size of the mailbox.
"""

import bisect
import re
from array import array

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
_SYSTEM_BITS = {name.lower(): 1 << i for i, name in enumerate(SYSTEM_FLAGS)}
SEEN, ANSWERED, FLAGGED, DELETED, DRAFT = (1 << i for i in range(5))
KEYWORD_BITS = 64 - len(SYSTEM_FLAGS)
CHANGE_LOG_ENTRIES = 20000

# RFC 6154 special-use mailboxes every user has, besides INBOX.
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
               "Archive": "\\Archive"}
DEFAULT_MAILBOXES = ("INBOX",) + tuple(SPECIAL_USE)
DELIMITER = "/"


# ---------------------------------------------------------------- UID sets in records

def encode_uid_set(uids) -> str:
    """Ascending UIDs as an IMAP sequence set ("1:5,7,9:12", RFC 9051 §9 sequence-set):
    a STORE on 1:* of a million messages is one short journal record."""
    parts = []
    start = prev = None
    for uid in uids:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


def decode_uid_set(text: str) -> list:
    out = []
    for part in text.split(","):
        if not part:
            continue
        first, _, last = part.partition(":")
        if last:
            out.extend(range(int(first), int(last) + 1))
        else:
            out.append(int(first))
    return out


# ---------------------------------------------------------------- searching arrays

def positions_of(column: array, value: int) -> list:
    """Every position of `value` in an array of fixed-size integers, found by a byte search
    over the array's memory (C speed: a few ms for a million entries)."""
    width = column.itemsize
    pattern = re.compile(re.escape(value.to_bytes(width, "little" if _LITTLE else "big")))
    view = memoryview(column).cast("B")
    out = []
    pos = 0
    while True:
        m = pattern.search(view, pos)
        if m is None:
            return out
        start = m.start()
        if start % width == 0:
            out.append(start // width)
            pos = start + width
        else:
            pos = start + 1   # a match straddling two entries: look again one byte on


_LITTLE = array("H", [1]).tobytes() == b"\x01\x00"
_EVEN_TO_ZERO = bytes(i & 1 for i in range(256))


def _low_bytes(masks: array, start: int, stop: int) -> bytes:
    """The low byte of each mask from position start to stop (the system flags' byte)."""
    width = masks.itemsize
    low_byte = 0 if _LITTLE else width - 1
    return memoryview(masks).cast("B")[start * width + low_byte:stop * width:width].tobytes()


def _bit_table(bit: int) -> bytes:
    """translate() table: a byte becomes 1 if it has `bit`, else 0."""
    return _EVEN_TO_ZERO if bit == 1 else bytes((i & bit) and 1 for i in range(256))


def first_without(masks: array, bit: int, chunk: int = 16384):
    """The first position whose mask lacks `bit` (one of the low eight), or None: a byte
    search over the masks' low bytes, a chunk at a time from the start, so the first unseen
    message of a million read ones is found in milliseconds."""
    table = _bit_table(bit)
    for start in range(0, len(masks), chunk):
        at = _low_bytes(masks, start, start + chunk).translate(table).find(b"\x00")
        if at >= 0:
            return start + at
    return None


def count_with(masks: array, bit: int) -> int:
    """How many masks have `bit` (one of the low eight), counted at C speed."""
    return _low_bytes(masks, 0, len(masks)).translate(_bit_table(bit)).count(b"\x01")


def flag_names(mask: int, keywords) -> frozenset:
    """The flag names of a mask: the system flags, then the keywords by their bits."""
    out = [name for i, name in enumerate(SYSTEM_FLAGS) if mask >> i & 1]
    mask >>= len(SYSTEM_FLAGS)
    i = 0
    while mask:
        if mask & 1:
            out.append(keywords[i])
        mask >>= 1
        i += 1
    return frozenset(out)


class MailboxIndex:
    __slots__ = ("name", "special_use", "uidvalidity", "uidnext", "highestmodseq", "keywords",
                 "_keyword_bits", "uids", "msgs", "flags", "modseqs", "dates", "zones",
                 "unseen", "total_size", "log", "log_horizon", "version", "cached_view")

    def __init__(self, name: str, uidvalidity: int, special_use: str = ""):
        self.name = name
        self.special_use = special_use
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.highestmodseq = 1
        self.keywords = []            # bit position - 5 -> keyword as first spelled
        self._keyword_bits = {}       # lower-case keyword -> bit
        self.uids = array("I")
        self.msgs = array("I")        # message numbers in the store
        self.flags = array("Q")
        self.modseqs = array("Q")
        self.dates = array("q")       # internal date, Unix seconds
        self.zones = array("h")       # its zone, minutes east of UTC
        self.unseen = 0
        self.total_size = 0           # octets of its messages (STATUS SIZE), kept by the State
        self.log = []                 # (modseq, uid, expunged?) newest last
        self.log_horizon = 1          # the log holds every change with modseq > this
        self.version = 0              # bumped by every change to the columns or keywords
        self.cached_view = None       # (version, a reader's copy of the columns), see MailStore.view

    def __len__(self) -> int:
        return len(self.uids)

    def _changed(self) -> None:
        """Every change to the columns or keywords comes through here: readers' shared copy
        is out of date, and dropped at once rather than held until the next reader."""
        self.version += 1
        self.cached_view = None

    # ------------------------------------------------------------ flags

    def bits_for(self, names, create: bool = True) -> int:
        """The bit mask of flag names; new keywords get a bit while there is room (else
        they are dropped, as RFC 9051 §2.3.2 allows when PERMANENTFLAGS lacks \\*)."""
        mask = 0
        for name in names:
            low = name.lower()
            bit = _SYSTEM_BITS.get(low) or self._keyword_bits.get(low)
            if bit is None:
                if low.startswith("\\") or not create or len(self.keywords) >= KEYWORD_BITS:
                    continue
                bit = 1 << (len(SYSTEM_FLAGS) + len(self.keywords))
                self.keywords.append(name)
                self._changed()
                self._keyword_bits[low] = bit
            mask |= bit
        return mask

    def names_for(self, mask: int) -> frozenset:
        return flag_names(mask, self.keywords)

    @property
    def keywords_full(self) -> bool:
        return len(self.keywords) >= KEYWORD_BITS

    # ------------------------------------------------------------ entries

    def index_of(self, uid: int):
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def positions_of_message(self, n: int) -> list:
        return positions_of(self.msgs, n)

    def _note(self, modseq: int, uid: int, expunged: bool) -> None:
        self.log.append((modseq, uid, expunged))
        if len(self.log) > CHANGE_LOG_ENTRIES:
            cut = len(self.log) // 2
            self.log_horizon = self.log[cut - 1][0]
            del self.log[:cut]

    def add(self, uid: int, n: int, mask: int, modseq: int, date: int, zone: int) -> None:
        if self.uids and uid <= self.uids[-1]:
            raise ValueError(f"{self.name}: UID {uid} is not above {self.uids[-1]}")
        self._changed()
        self.uids.append(uid)
        self.msgs.append(n)
        self.flags.append(mask)
        self.modseqs.append(modseq)
        self.dates.append(date)
        self.zones.append(zone)
        if not mask & SEEN:
            self.unseen += 1
        self.uidnext = max(self.uidnext, uid + 1)
        self.highestmodseq = max(self.highestmodseq, modseq)
        self._note(modseq, uid, False)

    def change_flags(self, uids, mode: str, mask: int, modseq: int) -> None:
        """Apply `mode` (replace/add/remove) of `mask` to the entries with these UIDs."""
        self._changed()
        for uid in uids:
            i = self.index_of(uid)
            if i is None:
                continue
            old = self.flags[i]
            new = mask if mode == "replace" else (old | mask if mode == "add" else old & ~mask)
            self.flags[i] = new
            self.modseqs[i] = modseq
            if old & SEEN and not new & SEEN:
                self.unseen += 1
            elif not old & SEEN and new & SEEN:
                self.unseen -= 1
            self._note(modseq, uid, False)
        self.highestmodseq = max(self.highestmodseq, modseq)

    def remove(self, uids, modseq: int) -> list:
        """Drop the entries with these UIDs; return the message numbers they held."""
        self._changed()
        drop = set(uids)
        keep = [i for i, uid in enumerate(self.uids) if uid not in drop] if len(drop) * 8 > len(self.uids) else None
        gone_msgs = []
        if keep is None:   # a few: delete in place, from the end so positions hold
            positions = sorted((i for i in (self.index_of(u) for u in drop) if i is not None), reverse=True)
            for i in positions:
                gone_msgs.append(self.msgs[i])
                if not self.flags[i] & SEEN:
                    self.unseen -= 1
                for column in (self.uids, self.msgs, self.flags, self.modseqs, self.dates, self.zones):
                    del column[i]
        else:              # many: rebuild the columns once
            kept = set(keep)
            for i in range(len(self.uids)):
                if i not in kept:
                    gone_msgs.append(self.msgs[i])
                    if not self.flags[i] & SEEN:
                        self.unseen -= 1
            for attr in ("uids", "msgs", "flags", "modseqs", "dates", "zones"):
                old = getattr(self, attr)
                setattr(self, attr, array(old.typecode, (old[i] for i in keep)))
        for uid in sorted(drop):
            self._note(modseq, uid, True)
        self.highestmodseq = max(self.highestmodseq, modseq)
        return gone_msgs

    # ------------------------------------------------------------ changes

    def changes_since(self, modseq: int) -> tuple:
        """(expunged UIDs or None when the log no longer reaches back that far,
        [(uid, position)] of entries changed or added since)."""
        if modseq >= self.log_horizon:
            expunged, touched = [], set()
            for m, uid, gone in reversed(self.log):
                if m <= modseq:
                    break
                (expunged.append(uid) if gone else touched.add(uid))
            changed = []
            for uid in sorted(touched):
                i = self.index_of(uid)
                if i is not None:
                    changed.append((uid, i))
            return sorted(set(expunged)), changed
        changed = [(self.uids[i], i) for i, m in enumerate(self.modseqs) if m > modseq]
        return None, changed

    # ------------------------------------------------------------ persistence

    def dump(self) -> dict:
        from .columns import encode_column
        return {"name": self.name, "special_use": self.special_use, "uidvalidity": self.uidvalidity,
                "uidnext": self.uidnext, "highestmodseq": self.highestmodseq, "keywords": self.keywords,
                "unseen": self.unseen, "total_size": self.total_size,
                "columns": {attr: encode_column(getattr(self, attr))
                            for attr in ("uids", "msgs", "flags", "modseqs", "dates", "zones")}}

    @classmethod
    def load(cls, data: dict) -> "MailboxIndex":
        from .columns import decode_column
        box = cls(data["name"], data["uidvalidity"], data.get("special_use", ""))
        box.uidnext = data["uidnext"]
        box.highestmodseq = data["highestmodseq"]
        box.log_horizon = box.highestmodseq   # the change log starts empty after a load
        for kw in data.get("keywords", []):
            box.bits_for([kw])
        for attr, encoded in data["columns"].items():
            setattr(box, attr, decode_column(encoded))
        box.unseen = sum(1 for mask in box.flags if not mask & SEEN) if "unseen" not in data else data["unseen"]
        box.total_size = data.get("total_size")   # None: the State sums it from its sizes
        return box
