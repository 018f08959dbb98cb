"""Mailboxes as IMAP sees them: per user, per mailbox, by UID (RFC 9051, RFC 7162, RFC 4315).

The web app and the API (mu/mailbox.py) and the IMAP and submission servers all change
mail through this module, so a message read on the web is \\Seen in IMAP, a message moved
in Thunderbird is in that folder on the web, and every change is one journal record.

Every method takes the user; a user never sees another user's mailboxes. Refusals raise a
`MailStoreError` whose `code` is the IMAP response code that fits (RFC 5530).
"""

import bisect
import random
import threading
import time
from dataclasses import dataclass
from typing import Optional

from . import records as recordmod
from .folders import (DEFAULT_MAILBOXES, DELETED, DELIMITER, SEEN, SPECIAL_USE, SYSTEM_FLAGS,
                      count_with, encode_uid_set, first_without, flag_names, positions_of)
from .state import canonical_mailbox_name, content_hash, format_id, message_id_hash

MAX_MAILBOX_NAME_CHARS = 255
MAX_MAILBOX_DEPTH = 16
POLL_OTHER_PROCESSES_SECONDS = 0.5


class MailStoreError(Exception):
    code = "CANNOT"

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class NoSuchMailbox(MailStoreError):
    code = "NONEXISTENT"


class MailboxExists(MailStoreError):
    code = "ALREADYEXISTS"


class BadMailboxName(MailStoreError):
    code = "CANNOT"


class CannotDelete(MailStoreError):
    code = "CANNOT"


class TooBig(MailStoreError):
    code = "TOOBIG"


class TooComplex(MailStoreError):
    """A message past the MIME limits (parts, nesting, reading time): RFC 5530 LIMIT."""
    code = "LIMIT"


@dataclass(frozen=True)
class MailboxInfo:
    name: str
    special_use: str
    subscribed: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    total: int
    unseen: int
    size: int


class MailboxView:
    """A point-in-time copy of one mailbox's index. Position i is sequence number i+1."""

    def __init__(self, box, sizes):
        self.name = box.name
        self.special_use = box.special_use
        self.uidvalidity = box.uidvalidity
        self.uidnext = box.uidnext
        self.highestmodseq = box.highestmodseq
        self.uids = box.uids[:]
        self.msgs = box.msgs[:]
        self._flags = box.flags[:]
        self._modseqs = box.modseqs[:]
        self._dates = box.dates[:]
        self._zones = box.zones[:]
        self._keywords = list(box.keywords)
        self.keywords = tuple(box.keywords)
        self.keywords_full = box.keywords_full
        self._sizes = sizes   # the store's size column: append-only, so safe to read
        self.unseen = box.unseen
        self._first_unseen = False

    def __len__(self) -> int:
        return len(self.uids)

    def flags(self, i: int) -> frozenset:
        return flag_names(self._flags[i], self._keywords)

    def flag_mask(self, i: int) -> int:
        return self._flags[i]

    def count_deleted(self) -> int:
        return count_with(self._flags, DELETED)

    def first_unseen(self):
        """The position of the first message without \\Seen, or None (worked out once: a
        view is shared until its mailbox changes)."""
        if self._first_unseen is False:
            self._first_unseen = first_without(self._flags, SEEN) if self.unseen else None
        return self._first_unseen

    def modseq(self, i: int) -> int:
        return self._modseqs[i]

    def internal_date(self, i: int) -> int:
        return self._dates[i]

    def internal_zone(self, i: int) -> int:
        return self._zones[i]

    internal_tz = internal_zone

    def size(self, i: int) -> int:
        return self._sizes[self.msgs[i]]

    def index_of(self, uid: int):
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None


class MessageInfo:
    """What a FETCH needs of one message without reading its body. Built for every message
    of a FETCH 1:*, so each field is worked out only when asked for: the FETCH strings are
    read out of the record's line as they are needed (one JSON string each)."""

    __slots__ = ("uid", "size", "internal_date", "internal_tz", "modseq", "_mask", "_keywords",
                 "_line", "_fields", "_id")

    def __init__(self, uid, size, internal_date, internal_tz, modseq, mask, keywords, line, id_parts,
                 fields=None):
        self.uid, self.size, self.internal_date, self.internal_tz = uid, size, internal_date, internal_tz
        self.modseq, self._mask, self._keywords = modseq, mask, keywords
        self._line, self._id, self._fields = line, id_parts, fields or {}

    @property
    def flags(self) -> frozenset:
        return flag_names(self._mask, self._keywords)

    def _field(self, name: str) -> str:
        value = self._fields.get(name)
        if value is None:
            within = b"" if name == "message_id" else b'"imap":{'
            value = self._fields[name] = recordmod.record_string(self._line, name, within) or ""
        return value

    @property
    def envelope(self) -> str:
        return self._field("envelope") or "NIL"

    @property
    def bodystructure(self) -> str:
        return self._field("bodystructure") or "NIL"

    @property
    def body(self) -> str:
        return self._field("body") or "NIL"

    @property
    def message_id(self) -> str:
        return self._field("message_id")

    @property
    def email_id(self) -> str:
        """The API id of the message (RFC 8474 EMAILID): the same across mailboxes."""
        return format_id(*self._id)


class Allocator:
    """Numbers handed out inside one commit's build, before its records are applied: message
    numbers and ids, and per mailbox the next UID and the MODSEQ of this change."""

    def __init__(self, state, now: float = None):
        self.state = state
        self.now = time.time() if now is None else now
        self._next_n = len(state.messages)
        table = state.messages
        self._last_id_time = table.id_time[-1] if len(table) else 0
        self._uids = {}
        self._modseqs = {}

    def message(self) -> tuple:
        """(number, API id) for a new message."""
        n = self._next_n
        self._next_n += 1
        t = max(int(self.now * 1_000_000), self._last_id_time + 1)
        self._last_id_time = t
        return n, f"{t:016x}{random.getrandbits(16):04x}"

    def uid(self, box) -> int:
        uid = self._uids.get(id(box), box.uidnext)
        self._uids[id(box)] = uid + 1
        return uid

    def modseq(self, box) -> int:
        return self._modseqs.setdefault(id(box), box.highestmodseq + 1)


def valid_mailbox_name(name: str) -> str:
    """The name as stored, or BadMailboxName. RFC 9051 §5.1: names are Unicode; mu also keeps
    out what breaks listing ("%", "*"), control characters and empty hierarchy levels."""
    if not isinstance(name, str) or not name or len(name) > MAX_MAILBOX_NAME_CHARS:
        raise BadMailboxName("mailbox names are 1 to 255 characters")
    if any(ord(c) < 32 or ord(c) == 127 or 0x80 <= ord(c) < 0xA0 or c in "%*\u2028\u2029" for c in name):
        raise BadMailboxName("mailbox names cannot hold control characters, '%' or '*'")
    parts = name.split(DELIMITER)
    if any(not p or p != p.strip() for p in parts) or len(parts) > MAX_MAILBOX_DEPTH:
        raise BadMailboxName(f"mailbox names are levels separated by '{DELIMITER}', none empty")
    return canonical_mailbox_name(name)


class MailStore:
    def __init__(self, store, config):
        self.store = store
        self.config = config
        self._changed = threading.Condition()
        self._describe_cache = {}   # message number -> FETCH strings, for records without them
        store.listeners.append(self._on_change)

    # ------------------------------------------------------------ change tracking

    def _on_change(self, users) -> None:
        with self._changed:
            self._changed.notify_all()

    def generation(self, user: str) -> int:
        with self.store.reading() as state:
            um = state.mail.get(user)
            return um.generation if um else 0

    def wait(self, user: str, since_generation: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            current = self.generation(user)   # (catches up with other processes too)
            left = deadline - time.monotonic()
            if current > since_generation or left <= 0:
                return current
            with self._changed:
                self._changed.wait(min(left, POLL_OTHER_PROCESSES_SECONDS))

    def changes(self, user: str, name: str, since_modseq: int) -> tuple:
        with self.store.reading() as state:
            box = self._box(state, user, name)
            expunged, changed = box.changes_since(since_modseq)
            return expunged, [(uid, box.names_for(box.flags[i]), box.modseqs[i]) for uid, i in changed]

    # ------------------------------------------------------------ mailboxes

    @staticmethod
    def _user_mail(state, user):
        um = state.mail.get(user)
        if um is None or user not in state.users:
            raise NoSuchMailbox(f"no such user: {user}")
        return um

    def _box(self, state, user, name):
        box = self._user_mail(state, user).get(name)
        if box is None:
            raise NoSuchMailbox(f"no mailbox named {name!r}")
        return box

    @staticmethod
    def _info(um, box, sizes) -> MailboxInfo:
        return MailboxInfo(box.name, box.special_use, box.name in um.subscriptions, box.uidvalidity,
                           box.uidnext, box.highestmodseq, len(box), box.unseen, box.total_size)

    def mailboxes(self, user: str) -> list:
        with self.store.reading() as state:
            um = self._user_mail(state, user)
            order = sorted(um.boxes, key=lambda n: (n != "INBOX", n not in SPECIAL_USE, n.lower(), n))
            return [self._info(um, um.boxes[n], state.messages.size) for n in order]

    def mailbox(self, user: str, name: str) -> MailboxInfo:
        with self.store.reading() as state:
            um = self._user_mail(state, user)
            return self._info(um, self._box(state, user, name), state.messages.size)

    def create_mailbox(self, user: str, name: str, special_use: str = "") -> MailboxInfo:
        name = valid_mailbox_name(name)

        def build(state, _written):
            um = self._user_mail(state, user)
            if um.get(name) is not None:
                raise MailboxExists(f"mailbox {name!r} already exists")
            return [{"op": "mbox.create", "user": user, "name": name,
                     "uidvalidity": um.new_uidvalidity(time.time()), "special_use": special_use}], None

        self.store.commit(build)
        return self.mailbox(user, name)

    def delete_mailbox(self, user: str, name: str) -> None:
        def build(state, _written):
            box = self._box(state, user, name)
            if box.name in DEFAULT_MAILBOXES:
                raise CannotDelete(f"{box.name} cannot be deleted")
            return [{"op": "mbox.delete", "user": user, "name": box.name}], None

        self.store.commit(build)

    def rename_mailbox(self, user: str, old: str, new: str) -> None:
        new = valid_mailbox_name(new)

        def build(state, _written):
            um = self._user_mail(state, user)
            box = self._box(state, user, old)
            if box.name in SPECIAL_USE:
                raise CannotDelete(f"{box.name} cannot be renamed")
            if um.get(new) is not None:
                raise MailboxExists(f"mailbox {new!r} already exists")
            if new == box.name or new.startswith(box.name + DELIMITER):
                raise BadMailboxName("a mailbox cannot be renamed into itself")
            return [{"op": "mbox.rename", "user": user, "old": box.name, "new": new,
                     "uidvalidity": um.new_uidvalidity(time.time())}], None

        self.store.commit(build)

    def subscribe(self, user: str, name: str, subscribed: bool = True) -> None:
        name = canonical_mailbox_name(name)

        def build(state, _written):
            self._user_mail(state, user)
            return [{"op": "mbox.subscribe", "user": user, "name": name, "on": bool(subscribed)}], None

        self.store.commit(build)

    def subscriptions(self, user: str) -> list:
        with self.store.reading() as state:
            return sorted(self._user_mail(state, user).subscriptions)

    # ------------------------------------------------------------ reading

    def view(self, user: str, name: str) -> MailboxView:
        """A copy of the mailbox's columns, shared by every reader until the mailbox next
        changes: each IMAP command looks at its mailbox, and copying a million entries
        for each would make a command's cost grow with the mailbox."""
        with self.store.reading() as state:
            box = self._box(state, user, name)
            key = (box.version, box.name, box.uidvalidity, box.special_use)
            cached = box.cached_view
            if cached is None or cached[0] != key:
                cached = box.cached_view = (key, MailboxView(box, state.messages.size))
            return cached[1]

    def _describe(self, n: int) -> dict:
        """FETCH strings for a message stored before they were kept in its record."""
        cached = self._describe_cache.get(n)
        if cached is None:
            cached = recordmod.imap_description(self.raw_of(n)) or {}
            if len(self._describe_cache) > 10000:
                self._describe_cache.clear()
            self._describe_cache[n] = cached
        return cached

    def message(self, user: str, name: str, uid: int) -> Optional[MessageInfo]:
        found = self.messages(user, name, [uid])
        return found[0] if found else None

    def messages(self, user: str, name: str, uids) -> list:
        """[MessageInfo] of those UIDs still in the mailbox, in UID order. What the index
        holds is taken under the lock (no copy of the mailbox); the records' lines are read
        after, in the order they lie on disk."""
        with self.store.reading() as state:
            box = self._box(state, user, name)
            table = state.messages
            keywords = tuple(box.keywords)
            picks = []
            box_uids = box.uids
            i = -2
            for uid in sorted(set(uids)):
                # The UIDs asked for are often the mailbox's next ones: try there first.
                i = i + 1 if 0 <= i + 1 < len(box_uids) and box_uids[i + 1] == uid else box.index_of(uid)
                if i is None:
                    i = -2
                else:
                    n = box.msgs[i]
                    picks.append((uid, n, table.meta_pos[n], table.meta_len[n], table.size[n], box.flags[i],
                                  box.modseqs[i], box.dates[i], box.zones[i], (table.id_time[n], table.id_suffix[n])))
        on_disk = sorted(picks, key=lambda p: p[2])
        lines = {pick[1]: line for pick, line in
                 zip(on_disk, self.store.meta.read_lines([(p[2], p[3]) for p in on_disk]))}
        out = []
        for uid, n, _pos, _len, size, mask, modseq, date, zone, id_parts in picks:
            line = lines[n]
            fields = None if b'"imap":{' in line else self._describe(n)
            out.append(MessageInfo(uid, size, date, zone, modseq, mask, keywords, line, id_parts, fields))
        return out

    def raw_of(self, n: int) -> bytes:
        with self.store.reading() as state:
            first = state.messages.first_blob[n]
            pos, length = state.messages.meta_pos[n], state.messages.meta_len[n]
        _imap, _mid, raw_index = recordmod.fetch_fields(self.store.meta.read_line(pos, length))
        return self.store.blob(first + raw_index)

    def headers(self, user: str, name: str, uids) -> dict:
        """{uid: the raw header block} for those still present (SEARCH FROM/SUBJECT/HEADER,
        SORT, THREAD): read up to the blank line only."""
        out = {}
        for uid in uids:
            raw = self.raw(user, name, uid)
            if raw is not None:
                end = raw.find(b"\r\n\r\n")
                out[uid] = raw[:end + 4] if end >= 0 else raw
        return out

    def raw(self, user: str, name: str, uid: int) -> Optional[bytes]:
        with self.store.reading() as state:
            box = self._box(state, user, name)
            i = box.index_of(uid)
            if i is None:
                return None
            n = box.msgs[i]
        return self.raw_of(n)

    def index_for_search(self, progress=None) -> None:
        """Bring the search index up to date; `progress(done, goal)` is called every few
        seconds while that takes long (see search.index_fully)."""
        from .search import index_fully
        index_fully(self, progress)

    def search_text(self, user: str, name: str, needle: str, uids=None, body_only: bool = False) -> set:
        """UIDs whose header fields or body text (`body_only`: body text only) hold `needle`,
        case-insensitively (RFC 9051 §6.4.4 TEXT and BODY)."""
        from .search import text_matches
        with self.store.reading() as state:
            box = self._box(state, user, name)
            wanted = set(uids) if uids is not None else None
            candidates = [(box.uids[i], box.msgs[i]) for i in range(len(box))
                          if wanted is None or box.uids[i] in wanted]
        hits = text_matches(self, user, needle, {n for _, n in candidates}, "body" if body_only else "imap-text")
        return {uid for uid, n in candidates if n in hits}

    # ------------------------------------------------------------ changing

    def set_flags(self, user: str, name: str, uids, mode: str, flags, unchanged_since: int = None) -> tuple:
        if mode not in ("replace", "add", "remove"):
            raise ValueError(f"bad flag mode {mode!r}")
        flags = [f for f in flags if f.lower() != "\\recent"]
        wanted = sorted(set(uids))

        def build(state, _written):
            box = self._box(state, user, name)
            known = box.bits_for(flags, create=False)
            unknown = any(f.lower() not in {s.lower() for s in SYSTEM_FLAGS} and not box.bits_for([f], create=False)
                          for f in flags) and not box.keywords_full
            changed, failed = [], []
            for uid in wanted:
                i = box.index_of(uid)
                if i is None:
                    continue
                if unchanged_since is not None and box.modseqs[i] > unchanged_since:
                    failed.append(uid)
                    continue
                old = box.flags[i]
                if mode == "replace":
                    differs = old != known or unknown
                elif mode == "add":
                    differs = (old & known) != known or unknown
                else:
                    differs = bool(old & known)
                if differs:
                    changed.append(uid)
            if not changed:
                return [], ([], failed, box)
            modseq = box.highestmodseq + 1
            return [{"op": "mail.flags", "user": user, "box": box.name, "uids": encode_uid_set(changed),
                     "mode": mode, "flags": list(flags), "modseq": modseq}], (changed, failed, box)

        changed, failed, _box = self.store.commit(build)
        out = {}
        with self.store.reading() as state:
            box = self._box(state, user, name)
            for uid in changed:
                i = box.index_of(uid)
                if i is not None:
                    out[uid] = (box.names_for(box.flags[i]), box.modseqs[i])
        return out, failed

    def _add_entries_records(self, alloc, state, user, box, n, flag_names, date, zone) -> tuple:
        uid = alloc.uid(box)
        return uid, {"op": "mail.add", "user": user, "box": box.name, "uid": uid, "n": n,
                     "flags": sorted(flag_names), "date": int(date), "zone": zone, "modseq": alloc.modseq(box)}

    def store_message(self, new: recordmod.NewMessage, entries, *, thread_of=None, extra_records=None,
                      before=None) -> dict:
        """Store a new message with entries [(user, mailbox name, flags, internal date, zone)].

        `thread_of(state, n) -> root` picks its thread (default: its own), `extra_records(
        state, n, msg_id) -> [records]` adds records to the same commit (credits, queue),
        `before(state)` may raise to refuse. Returns {"n", "id", "uids": {(user, box): uid}}.
        """
        return self.store_messages([(new, entries)], thread_of=thread_of, extra_records=extra_records,
                                   before=before)[0]

    def store_messages(self, items, *, thread_of=None, extra_records=None, before=None) -> list:
        """Store several messages [(NewMessage, entries)] in one commit (one fsync: imports)."""
        return self.store.commit(*self.message_commit(items, thread_of=thread_of, extra_records=extra_records,
                                                      before=before))

    def message_commit(self, items, *, thread_of=None, extra_records=None, before=None) -> tuple:
        """(build, blobs, metas) for `store.commit` storing these messages, for a caller that
        commits them together with records of its own (a bounce and the failure it reports).
        The build's result is [{"n", "id", "uids"}], one per message."""
        metas = [new.meta_bytes() for new, _ in items]
        hashes = [(message_id_hash(new.message_id), content_hash(new.raw)) for new, _ in items]
        blobs = [b for new, _ in items for b in new.blobs]

        def build(state, written):
            if before is not None:
                before(state)
            alloc = Allocator(state)
            records, results, b = [], [], 0
            for k, (new, entries) in enumerate(items):
                n, msg_id = alloc.message()
                thread = thread_of(state, n) if thread_of else n
                mine = written.blobs[b:b + len(new.blobs)]
                b += len(new.blobs)
                records.append({"op": "msg.add", "n": n, "id": msg_id, "meta": list(written.metas[k]),
                                "blobs": [list(x) for x in mine], "thread": thread, "mid": hashes[k][0],
                                "hash": hashes[k][1], "size": new.size})
                uids = {}
                for user, name, flags, date, zone in entries:
                    box = self._box(state, user, name)
                    uid, record = self._add_entries_records(alloc, state, user, box, n, flags, date, zone)
                    records.append(record)
                    uids[(user, box.name)] = uid
                if extra_records is not None:
                    records += extra_records(state, n, msg_id)
                results.append({"n": n, "id": msg_id, "uids": uids})
            return records, results

        return build, blobs, metas

    def append(self, user: str, name: str, raw: bytes, flags=(), internal_date: int = None,
               internal_tz: int = 0) -> tuple:
        if len(raw) > self.config.max_message_bytes:
            raise TooBig(f"message larger than {self.config.max_message_bytes} bytes")
        now = time.time()
        date = int(internal_date if internal_date is not None else now)
        flags = [f for f in flags if f.lower() != "\\recent"]
        with self.store.reading() as state:
            box = self._box(state, user, name)
            duplicate = self._sent_duplicate(state, user, box, raw) if box.special_use == "\\Sent" else None
        if duplicate is not None:
            return duplicate
        from .mime import MimeLimitError
        try:
            new = recordmod.from_raw(raw, "draft" if box.special_use == "\\Drafts" else "imported", [user], now,
                                     limits=self.config)
        except MimeLimitError as exc:
            raise TooComplex(str(exc)) from None
        result = self.store_message(new, [(user, box.name, flags, date, internal_tz)])
        with self.store.reading() as state:
            box = self._box(state, user, name)
            return box.uidvalidity, result["uids"][(user, box.name)]

    def _sent_duplicate(self, state, user, box, raw: bytes):
        """(uidvalidity, uid) of the copy mu itself put in Sent of the message a client now
        APPENDs there (same Message-ID), so it is not in Sent twice."""
        from .mime import message_id_of
        mid = message_id_of(raw)
        for n in state.messages.by_message_id.lookup(message_id_hash(mid)):
            for i in box.positions_of_message(n):
                if self.store.meta_record(n).get("message_id") == mid:
                    return box.uidvalidity, box.uids[i]
        return None

    def copy(self, user: str, name: str, uids, dest: str, move: bool = False) -> tuple:
        wanted = sorted(set(uids))

        def build(state, _written):
            src = self._box(state, user, name)
            dst = self._box(state, user, dest)
            alloc = Allocator(state)
            records, pairs = [], []
            for uid in wanted:
                i = src.index_of(uid)
                if i is None:
                    continue
                new_uid, record = self._add_entries_records(
                    alloc, state, user, dst, src.msgs[i], src.names_for(src.flags[i]), src.dates[i], src.zones[i])
                records.append(record)
                pairs.append((uid, new_uid))
            if move and pairs:   # (into the same mailbox too: new UIDs, RFC 6851 §3.3)
                records.append({"op": "mail.expunge", "user": user, "box": src.name,
                                "uids": encode_uid_set([p[0] for p in pairs]), "modseq": alloc.modseq(src)})
            return records, (dst.uidvalidity, pairs)

        return self.store.commit(build)

    def move(self, user: str, name: str, uids, dest: str) -> tuple:
        return self.copy(user, name, uids, dest, move=True)

    def expunge(self, user: str, name: str, uids=None, deleted_only: bool = True) -> list:
        wanted = set(uids) if uids is not None else None

        def build(state, _written):
            box = self._box(state, user, name)
            gone = [box.uids[i] for i in range(len(box))
                    if (not deleted_only or box.flags[i] & DELETED) and (wanted is None or box.uids[i] in wanted)]
            if not gone:
                return [], []
            return [{"op": "mail.expunge", "user": user, "box": box.name, "uids": encode_uid_set(gone),
                     "modseq": box.highestmodseq + 1}], gone

        return self.store.commit(build)

    # ------------------------------------------------------------ by message (the web's view)

    def entries_of(self, state, user: str, n: int) -> list:
        """[(box, position)] of message n in the user's mailboxes."""
        um = state.mail.get(user)
        return um.entries_of(n) if um else []

    def count_entries(self, state, n: int) -> int:
        return sum(len(positions_of(box.msgs, n)) for um in state.mail.values() for box in um.boxes.values())

    def seen_mask(self) -> int:
        return SEEN
