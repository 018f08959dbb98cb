"""The tables the journal replays into, and the indexes derived from them.

`apply(record)` is the only way state changes, for live commits and replay alike, so the
two can never disagree. Records are plain JSON objects named by `op`.

Small tables are dicts: users, API tokens, web sessions, app passwords, the outbound queue.
Messages are columns: a message is a number `n` (0, 1, 2 … in the order they were stored)
with a few integers each in `MessageTable` (its API id, where its record and blobs are on
disk, its thread, hashes of its Message-ID and bytes, its size); the record itself (headers,
snippet, attachments, authentication results) stays on disk in a meta segment and is read
when needed. Each user's mailboxes are `folders.MailboxIndex`es of entries pointing at
message numbers. So memory grows by some 80 bytes a message, not by the message's size.
"""

import bisect
import hashlib
import time
from array import array

from .columns import decode_column, encode_column
from .folders import (DEFAULT_MAILBOXES, DELIMITER, SPECIAL_USE, MailboxIndex, decode_uid_set)

FORMAT = "mu-store-2"


def message_id_hash(message_id: str) -> int:
    """64 bits of a Message-ID (0 for none), for threading and duplicate checks."""
    if not message_id:
        return 0
    return int.from_bytes(hashlib.blake2b(message_id.strip().encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "little") or 1


def content_hash(raw: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") or 1


def parse_id(text: str):
    """An API message id (20 hex digits: microseconds, then 16 bits) -> (time, suffix), or None."""
    if not isinstance(text, str) or len(text) != 20:
        return None
    try:
        return int(text[:16], 16), int(text[16:], 16)
    except ValueError:
        return None


def format_id(time_us: int, suffix: int) -> str:
    return f"{time_us:016x}{suffix:04x}"


def canonical_mailbox_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 9051 §5.1); every other name is as the user spelled it."""
    return "INBOX" if name.upper() == "INBOX" else name


# ---------------------------------------------------------------- messages and blobs

_MESSAGE_COLUMNS = (("id_time", "Q"), ("id_suffix", "H"), ("meta_pos", "Q"), ("meta_len", "I"),
                    ("first_blob", "I"), ("thread", "I"), ("mid_hash", "Q"), ("content_hash", "Q"),
                    ("size", "I"))


class MessageTable:
    """Per-message integers, indexed by message number."""

    def __init__(self):
        for name, code in _MESSAGE_COLUMNS:
            setattr(self, name, array(code))
        self.by_message_id = HashIndex(self, "mid_hash")
        self.by_content = HashIndex(self, "content_hash")

    def __len__(self) -> int:
        return len(self.id_time)

    def add(self, id_text: str, meta: tuple, first_blob: int, thread: int, mid_hash: int,
            chash: int, size: int) -> int:
        n = len(self.id_time)
        t, s = parse_id(id_text)
        if n and (t, s) <= (self.id_time[-1], self.id_suffix[-1]):
            raise ValueError(f"message id {id_text} does not sort after the last one")
        self.id_time.append(t)
        self.id_suffix.append(s)
        self.meta_pos.append(meta[0])
        self.meta_len.append(meta[1])
        self.first_blob.append(first_blob)
        self.thread.append(thread)
        self.mid_hash.append(mid_hash)
        self.content_hash.append(chash)
        self.size.append(size)
        self.by_message_id.note(mid_hash, n)
        self.by_content.note(chash, n)
        return n

    def id_of(self, n: int) -> str:
        return format_id(self.id_time[n], self.id_suffix[n])

    def number_of(self, id_text: str):
        """The message number of an API id, or None. Ids ascend with the number, so this is
        a binary search."""
        parsed = parse_id(id_text)
        if parsed is None:
            return None
        t, s = parsed
        i = bisect.bisect_left(self.id_time, t)
        while i < len(self.id_time) and self.id_time[i] == t:
            if self.id_suffix[i] == s:
                return i
            i += 1
        return None

    def next_id(self, now_us: int, suffix: int) -> str:
        """A new id that sorts after every stored one (assigned inside a commit)."""
        last = self.id_time[-1] if len(self.id_time) else 0
        return format_id(max(now_us, last + 1), suffix)

    def dump(self) -> dict:
        return {name: encode_column(getattr(self, name)) for name, _ in _MESSAGE_COLUMNS}

    def load(self, data: dict) -> None:
        for name, code in _MESSAGE_COLUMNS:
            setattr(self, name, decode_column(data[name]) if name in data else array(code))
        self.by_message_id = HashIndex(self, "mid_hash")
        self.by_content = HashIndex(self, "content_hash")


class BlobTable:
    """Where each blob is: its position and length in the blob packs, by blob number."""

    def __init__(self):
        self.pos = array("Q")
        self.len = array("I")

    def __len__(self) -> int:
        return len(self.pos)

    def dump(self) -> dict:
        return {"pos": encode_column(self.pos), "len": encode_column(self.len)}

    def load(self, data: dict) -> None:
        self.pos = decode_column(data["pos"]) if data else array("Q")
        self.len = decode_column(data["len"]) if data else array("I")


class HashIndex:
    """Message numbers by one of MessageTable's hash columns: a sorted copy of the column,
    made the first time it is needed, plus what was added since. (A dict of a million
    entries would cost ~100 MB; this costs 12 bytes an entry.)"""

    REBUILD_AFTER = 50000

    def __init__(self, table, column: str):
        self.table, self.column = table, column
        self._keys = None
        self._nums = None
        self._recent = {}

    def _build(self) -> None:
        col = getattr(self.table, self.column)
        order = sorted(range(len(col)), key=col.__getitem__)
        self._keys = array("Q", (col[i] for i in order))
        self._nums = array("I", order)
        self._recent = {}

    def note(self, key: int, n: int) -> None:
        if self._keys is not None and key:
            self._recent.setdefault(key, []).append(n)
            if len(self._recent) > self.REBUILD_AFTER:
                self._keys = None   # rebuilt on the next look-up

    def lookup(self, key: int) -> list:
        if not key:
            return []
        if self._keys is None:
            self._build()
        i = bisect.bisect_left(self._keys, key)
        out = []
        while i < len(self._keys) and self._keys[i] == key:
            out.append(self._nums[i])
            i += 1
        out.extend(self._recent.get(key, ()))
        return sorted(out)


# ---------------------------------------------------------------- a user's mailboxes

class UserMail:
    __slots__ = ("boxes", "subscriptions", "generation", "last_uidvalidity")

    def __init__(self):
        self.boxes = {}               # canonical name -> MailboxIndex
        self.subscriptions = set()
        self.generation = 1           # bumped by every change (IDLE waits on it; 0 means "now")
        self.last_uidvalidity = 0     # a re-created mailbox must get a new one (RFC 9051 §2.3.1.1)

    def new_uidvalidity(self, now: float) -> int:
        return max(int(now), self.last_uidvalidity + 1, *(b.uidvalidity + 1 for b in self.boxes.values()))

    def get(self, name: str):
        return self.boxes.get(canonical_mailbox_name(name))

    def find(self, name: str):
        """The mailbox by exact name, else by a unique case-insensitive match (for the API's
        `folder=sent`)."""
        box = self.get(name)
        if box is None:
            matches = [b for key, b in self.boxes.items() if key.lower() == name.lower()]
            box = matches[0] if len(matches) == 1 else None
        return box

    def entries_of(self, n: int) -> list:
        """[(box, position)] of every entry of message n in this user's mailboxes."""
        return [(box, i) for box in self.boxes.values() for i in box.positions_of_message(n)]


def default_uidvalidity(created_at: float) -> int:
    return max(1, int(created_at)) & 0xFFFFFFFF or 1


class State:
    def __init__(self):
        self.users = {}      # name -> {name, role, credits, pw, created_at, disabled, ...}
        self.tokens = {}     # sha256(token) -> {user, created_at, last_used?}
        self.invites = {}    # sha256(invitation code) -> {by, created_at, expires}
        self.sessions = {}   # sha256(session id) -> {user, csrf, expires}
        self.app_passwords = {}   # user -> {label: {hash, created_at, last_used?}}
        self.queue = {}      # queue id -> outbound delivery entry
        self.messages = MessageTable()
        self.blobs = BlobTable()
        self.mail = {}       # user -> UserMail
        # Fields of message records changed after they were written (an outbound message's
        # delivery status), by message number; folded into a new version of the record
        # once final (Store.fold_overlays), so this holds only messages still in flight.
        self.overlay = {}

    # ------------------------------------------------------------ persistence

    def dump(self) -> dict:
        now = time.time()
        return {
            "users": self.users, "tokens": self.tokens,
            "invites": {k: v for k, v in self.invites.items() if v.get("expires", 0) > now},
            "sessions": {k: v for k, v in self.sessions.items() if v.get("expires", 0) > now},
            "app_passwords": self.app_passwords, "queue": self.queue,
            "messages": self.messages.dump(), "blobs": self.blobs.dump(),
            "overlay": {str(n): fields for n, fields in self.overlay.items()},
            "mail": {user: {"subscriptions": sorted(m.subscriptions), "last_uidvalidity": m.last_uidvalidity,
                            "boxes": [box.dump() for box in m.boxes.values()]}
                     for user, m in self.mail.items()},
        }

    @classmethod
    def from_dump(cls, data: dict) -> "State":
        state = cls()
        state.users = data.get("users", {})
        state.tokens = data.get("tokens", {})
        state.invites = data.get("invites", {})
        state.sessions = data.get("sessions", {})
        state.app_passwords = data.get("app_passwords", {})
        state.queue = data.get("queue", {})
        state.messages.load(data.get("messages", {}))
        state.blobs.load(data.get("blobs", {}))
        state.overlay = {int(n): fields for n, fields in data.get("overlay", {}).items()}
        for user, m in data.get("mail", {}).items():
            um = state.mail[user] = UserMail()
            um.subscriptions = set(m.get("subscriptions", []))
            um.last_uidvalidity = m.get("last_uidvalidity", 0)
            for box in m.get("boxes", []):
                index = MailboxIndex.load(box)
                um.boxes[index.name] = index
        for name, user in state.users.items():   # a user always has the default mailboxes
            state._ensure_default_mailboxes(name, user.get("created_at", 0))
        state.sum_sizes(only_unknown=True)
        return state

    def sum_sizes(self, only_unknown: bool = False) -> None:
        """Each mailbox's total size, from its messages' sizes (a store written before it was
        kept, or an upgrade)."""
        sizes = self.messages.size
        for um in self.mail.values():
            for box in um.boxes.values():
                if not only_unknown or box.total_size is None:
                    box.total_size = sum(sizes[n] for n in box.msgs)

    # ------------------------------------------------------------ helpers

    def user_mail(self, user: str) -> UserMail:
        um = self.mail.get(user)
        if um is None:
            um = self.mail[user] = UserMail()
        return um

    def _ensure_default_mailboxes(self, user: str, created_at: float) -> None:
        """Every user has INBOX and the five special-use mailboxes, each with a UIDVALIDITY
        of its own (the account's creation time, one apart)."""
        um = self.user_mail(user)
        for i, name in enumerate(DEFAULT_MAILBOXES):
            if name not in um.boxes:
                validity = default_uidvalidity(created_at) + i
                um.boxes[name] = MailboxIndex(name, validity, SPECIAL_USE.get(name, ""))
                um.subscriptions.add(name)
                um.last_uidvalidity = max(um.last_uidvalidity, validity)

    def mailbox(self, user: str, name: str):
        um = self.mail.get(user)
        return um.get(name) if um else None

    def blob_numbers(self, n: int) -> range:
        """The blob numbers of message n (its blobs are consecutive)."""
        end = self.messages.first_blob[n + 1] if n + 1 < len(self.messages) else len(self.blobs)
        return range(self.messages.first_blob[n], end)

    def live_messages(self) -> set:
        """Numbers of messages some mailbox or the queue still holds."""
        live = set()
        for um in self.mail.values():
            for box in um.boxes.values():
                live.update(box.msgs)
        for entry in self.queue.values():
            n = self.messages.number_of(entry.get("msg", ""))
            if n is not None:
                live.add(n)
        return live

    def _touch(self, user: str) -> None:
        um = self.mail.get(user)
        if um is not None:
            um.generation += 1

    # ------------------------------------------------------------ replay

    def apply(self, r: dict) -> None:
        getattr(self, "_op_" + r["op"].replace(".", "_"))(r)

    def _op_user_put(self, r):
        user = self.users.get(r["name"])
        if user is None:
            user = self.users[r["name"]] = {"name": r["name"], "credits": 0, "role": "user"}
            user.update(r["fields"])
            self._ensure_default_mailboxes(r["name"], user.get("created_at", 0))
        else:
            user.update(r["fields"])

    def _op_user_credit(self, r):
        self.users[r["name"]]["credits"] += r["delta"]

    def _op_token_add(self, r):
        self.tokens[r["hash"]] = {"user": r["user"], "created_at": r["at"]}

    def _op_token_used(self, r):
        if r["hash"] in self.tokens:
            self.tokens[r["hash"]]["last_used"] = r["at"]

    def _op_token_del(self, r):
        self.tokens.pop(r["hash"], None)

    def _op_user_sessions_del(self, r):
        """Every session of a user but `keep` (a password change signs out everywhere else)."""
        for key in [k for k, v in self.sessions.items() if v["user"] == r["user"] and k != r.get("keep")]:
            del self.sessions[key]

    def _op_invite_add(self, r):
        self.invites[r["hash"]] = {"by": r["by"], "created_at": r["at"], "expires": r["expires"]}

    def _op_invite_del(self, r):
        self.invites.pop(r["hash"], None)

    def _op_session_add(self, r):
        self.sessions[r["hash"]] = {"user": r["user"], "csrf": r["csrf"], "expires": r["expires"]}

    def _op_session_del(self, r):
        self.sessions.pop(r["hash"], None)

    def _op_apppw_add(self, r):
        self.app_passwords.setdefault(r["user"], {})[r["label"]] = {"hash": r["hash"], "created_at": r["at"]}

    def _op_apppw_used(self, r):
        entry = self.app_passwords.get(r["user"], {}).get(r["label"])
        if entry is not None:
            entry["last_used"] = r["at"]

    def _op_apppw_del(self, r):
        self.app_passwords.get(r["user"], {}).pop(r["label"], None)

    # -- messages

    def _op_msg_add(self, r):
        if r["n"] < len(self.messages):
            return   # already applied (a replay that overlaps the snapshot)
        if r["n"] > len(self.messages):
            raise ValueError(f"message {r['n']} recorded before message {len(self.messages)}")
        first_blob = len(self.blobs)
        for pos, length in r.get("blobs", ()):
            self.blobs.pos.append(pos)
            self.blobs.len.append(length)
        self.messages.add(r["id"], tuple(r["meta"]), first_blob, r.get("thread", r["n"]),
                          r.get("mid", 0), r.get("hash", 0), r.get("size", 0))

    def _op_msg_meta(self, r):
        self.messages.meta_pos[r["n"]], self.messages.meta_len[r["n"]] = r["meta"]
        if r.get("folded"):
            self.overlay.pop(r["n"], None)

    def _op_msg_set(self, r):
        n = r["n"] if "n" in r else self.messages.number_of(r.get("id", ""))
        if n is not None and n < len(self.messages):
            self.overlay.setdefault(n, {}).update(r["fields"])

    # -- mailbox entries

    def _op_mail_add(self, r):
        box = self.mailbox(r["user"], r["box"])
        if box is None or r["uid"] < box.uidnext:
            return
        box.add(r["uid"], r["n"], box.bits_for(r.get("flags", ())), r["modseq"], r.get("date", 0), r.get("zone", 0))
        box.total_size += self.messages.size[r["n"]]
        self._touch(r["user"])

    def _op_mail_flags(self, r):
        box = self.mailbox(r["user"], r["box"])
        if box is None:
            return
        box.change_flags(decode_uid_set(r["uids"]), r["mode"], box.bits_for(r.get("flags", ())), r["modseq"])
        self._touch(r["user"])

    def _op_mail_expunge(self, r):
        box = self.mailbox(r["user"], r["box"])
        if box is None:
            return
        gone = box.remove(decode_uid_set(r["uids"]), r["modseq"])
        box.total_size -= sum(self.messages.size[n] for n in gone)
        self._touch(r["user"])

    # -- mailboxes

    def _op_mbox_create(self, r):
        um = self.user_mail(r["user"])
        name = canonical_mailbox_name(r["name"])
        if name not in um.boxes:
            um.boxes[name] = MailboxIndex(name, r["uidvalidity"], r.get("special_use", ""))
            um.last_uidvalidity = max(um.last_uidvalidity, r["uidvalidity"])
            self._touch(r["user"])

    def _op_mbox_delete(self, r):
        um = self.user_mail(r["user"])
        if um.boxes.pop(canonical_mailbox_name(r["name"]), None) is not None:
            self._touch(r["user"])

    def _op_mbox_rename(self, r):
        um = self.user_mail(r["user"])
        old, new = canonical_mailbox_name(r["old"]), r["new"]
        moves = [(name, new + name[len(old):]) for name in um.boxes
                 if name == old or name.startswith(old + DELIMITER)]
        if old == "INBOX":   # RFC 9051 §6.3.6: INBOX's messages move; INBOX stays, empty
            moves = [("INBOX", new)]
        for src, dst in moves:
            box = um.boxes.pop(src)
            box.name = dst
            box.special_use = "" if src == "INBOX" else box.special_use
            um.boxes[dst] = box
        if old == "INBOX":
            um.boxes["INBOX"] = MailboxIndex("INBOX", r["uidvalidity"])
            um.last_uidvalidity = max(um.last_uidvalidity, r["uidvalidity"])
        self._touch(r["user"])

    def _op_mbox_subscribe(self, r):
        um = self.user_mail(r["user"])
        (um.subscriptions.add if r["on"] else um.subscriptions.discard)(r["name"])
        self._touch(r["user"])

    # -- the outbound queue

    def _op_queue_put(self, r):
        self.queue[r["id"]] = r["entry"]

    def _op_queue_del(self, r):
        self.queue.pop(r["id"], None)
