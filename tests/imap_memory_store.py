"""An in-memory MailStore with exactly the API in mu/mailstore.py, for the IMAP tests.

Scaffolding until the real store lands: small and honest (every method does what the API
says, including UIDs that never go back, MODSEQs, change tracking and `wait`), nothing
persistent. Also holds the additions the IMAP server asked for (see
notes/mailstore_api_requests.md): `search_text(..., body_only=)`.
"""

import bisect
import os
import sys
import threading
import time
from array import array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mu import mimeinfo  # noqa: E402
from mu.mailstore import (SPECIAL_USE, SYSTEM_FLAGS, BadMailboxName, CannotDelete,  # noqa: E402
                          MailboxExists, MailboxInfo, MessageInfo, NoSuchMailbox, TooBig)

DEFAULTS = ("INBOX",) + tuple(SPECIAL_USE)
_SYSTEM = {f.lower(): f for f in SYSTEM_FLAGS}


class _Message:
    __slots__ = ("raw", "flags", "modseq", "date", "tz", "description", "email_id", "message_id")


class _Mailbox:
    def __init__(self, name, special_use, uidvalidity):
        self.name = name
        self.special_use = special_use
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.highestmodseq = 1
        self.uids = []            # ascending
        self.messages = {}        # uid -> _Message
        self.expunged = []        # [(modseq, uid)] ascending
        self.keywords = {}        # lower -> first spelling

    def bump(self) -> int:
        self.highestmodseq += 1
        return self.highestmodseq


class _View:
    def __init__(self, box: _Mailbox):
        self.name = box.name
        self.uidvalidity = box.uidvalidity
        self.uidnext = box.uidnext
        self.highestmodseq = box.highestmodseq
        self.uids = array("I", box.uids)
        msgs = [box.messages[u] for u in box.uids]
        self._flags = [m.flags for m in msgs]
        self._modseq = array("Q", [m.modseq for m in msgs])
        self._date = array("q", [m.date for m in msgs])
        self._size = array("Q", [len(m.raw) for m in msgs])
        self.keywords = tuple(box.keywords.values())

    def flags(self, i):
        return self._flags[i]

    def modseq(self, i):
        return self._modseq[i]

    def internal_date(self, i):
        return self._date[i]

    def size(self, i):
        return self._size[i]

    def index_of(self, uid):
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None


class MemoryMailStore:
    def __init__(self, max_message_bytes: int = 10 * 1024 * 1024):
        self.max_message_bytes = max_message_bytes
        self._users = {}
        self._subscriptions = {}
        self._generation = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._next_uidvalidity = int(time.time())
        self._email_ids = 0

    # ------------------------------------------------------------ internals

    def _boxes(self, user: str) -> dict:
        boxes = self._users.get(user)
        if boxes is None:
            boxes = self._users[user] = {}
            self._subscriptions[user] = set()
            for name in DEFAULTS:
                boxes[name] = _Mailbox(name, SPECIAL_USE.get(name, ""), self._uidvalidity())
                self._subscriptions[user].add(name)
        return boxes

    def _uidvalidity(self) -> int:
        self._next_uidvalidity += 1
        return self._next_uidvalidity

    @staticmethod
    def _key(name: str) -> str:
        return "INBOX" if name.upper() == "INBOX" else name

    def _box(self, user: str, name: str) -> _Mailbox:
        box = self._boxes(user).get(self._key(name))
        if box is None:
            raise NoSuchMailbox(f"Mailbox does not exist: {name}")
        return box

    def _touch(self, user: str) -> None:
        self._generation[user] = self._generation.get(user, 1) + 1
        self._changed.notify_all()

    def _canonical_flags(self, box: _Mailbox, flags) -> frozenset:
        out = set()
        for flag in flags:
            if flag.startswith("\\"):
                system = _SYSTEM.get(flag.lower())
                if system:
                    out.add(system)
                continue   # \Recent and unknown system flags are not stored
            out.add(box.keywords.setdefault(flag.lower(), flag))
        return frozenset(out)

    def _info(self, box: _Mailbox) -> MailboxInfo:
        msgs = box.messages.values()
        return MailboxInfo(box.name, box.special_use, box.name in self._subscriptions[self._owner(box)],
                           box.uidvalidity, box.uidnext, box.highestmodseq, len(box.uids),
                           sum(1 for m in msgs if "\\Seen" not in m.flags), sum(len(m.raw) for m in msgs))

    def _owner(self, box: _Mailbox) -> str:
        for user, boxes in self._users.items():
            if boxes.get(box.name) is box:
                return user
        raise NoSuchMailbox(box.name)

    def _add(self, box: _Mailbox, raw: bytes, flags, date, tz, description=None, email_id=None) -> int:
        msg = _Message()
        msg.raw = raw
        msg.flags = self._canonical_flags(box, flags)
        msg.modseq = box.bump()
        msg.date = int(time.time()) if date is None else int(date)
        msg.tz = tz
        msg.description = description or mimeinfo.describe(raw)
        if email_id is None:
            self._email_ids += 1
            email_id = f"m{self._email_ids}"
        msg.email_id = email_id
        msg.message_id = ""
        env_fields = mimeinfo.message_header(raw)
        mid = mimeinfo.first(env_fields, b"message-id")
        msg.message_id = mimeinfo.unfold(mid).decode("utf-8", "replace") if mid else ""
        uid = box.uidnext
        box.uidnext += 1
        box.uids.append(uid)
        box.messages[uid] = msg
        return uid

    def _remove(self, box: _Mailbox, uids) -> list:
        gone = sorted(u for u in set(uids) if u in box.messages)
        if not gone:
            return []
        modseq = box.bump()
        for uid in gone:
            del box.messages[uid]
            box.expunged.append((modseq, uid))
        drop = set(gone)
        box.uids = [u for u in box.uids if u not in drop]
        return gone

    # ------------------------------------------------------------ mailboxes

    def mailboxes(self, user):
        with self._lock:
            boxes = self._boxes(user)
            names = sorted(boxes, key=lambda n: (n != "INBOX", n))
            return [self._info(boxes[n]) for n in names]

    def mailbox(self, user, name):
        with self._lock:
            return self._info(self._box(user, name))

    def create_mailbox(self, user, name, special_use=""):
        with self._lock:
            boxes = self._boxes(user)
            name = self._key(name)
            if (not name or name.startswith("/") or name.endswith("/") or "//" in name
                    or any(ord(c) < 0x20 or c in "*%" for c in name)):
                raise BadMailboxName(f"Bad mailbox name: {name}")
            if name in boxes:
                raise MailboxExists(f"Mailbox already exists: {name}")
            boxes[name] = _Mailbox(name, special_use, self._uidvalidity())
            self._touch(user)
            return self._info(boxes[name])

    def delete_mailbox(self, user, name):
        with self._lock:
            box = self._box(user, name)
            if box.name in DEFAULTS:
                raise CannotDelete(f"{box.name} cannot be deleted")
            del self._boxes(user)[box.name]
            self._touch(user)

    def rename_mailbox(self, user, old, new):
        with self._lock:
            boxes = self._boxes(user)
            box = self._box(user, old)
            new = self._key(new)
            if new in boxes:
                raise MailboxExists(f"Mailbox already exists: {new}")
            if not new or new.startswith("/") or new.endswith("/") or "//" in new:
                raise BadMailboxName(f"Bad mailbox name: {new}")
            if box.name == "INBOX":
                moved = _Mailbox(new, "", self._uidvalidity())
                for uid in list(box.uids):
                    m = box.messages[uid]
                    self._add(moved, m.raw, m.flags, m.date, m.tz, m.description, m.email_id)
                self._remove(box, list(box.uids))
                boxes[new] = moved
            else:
                old_name = box.name
                for name in [n for n in boxes if n == old_name or n.startswith(old_name + "/")]:
                    child = boxes.pop(name)
                    child.name = new + name[len(old_name):]
                    boxes[child.name] = child
            self._touch(user)

    def subscribe(self, user, name, subscribed=True):
        with self._lock:
            self._boxes(user)
            subs = self._subscriptions[user]
            (subs.add if subscribed else subs.discard)(self._key(name))
            self._touch(user)

    def subscriptions(self, user):
        with self._lock:
            self._boxes(user)
            return sorted(self._subscriptions[user])

    # ------------------------------------------------------------ reading

    def view(self, user, name):
        with self._lock:
            return _View(self._box(user, name))

    def _message_info(self, uid, m) -> MessageInfo:
        d = m.description
        return MessageInfo(uid, len(m.raw), m.date, m.tz, m.flags, m.modseq, d.envelope, d.bodystructure,
                           d.body, m.message_id, m.email_id)

    def message(self, user, name, uid):
        with self._lock:
            m = self._box(user, name).messages.get(uid)
            return None if m is None else self._message_info(uid, m)

    def messages(self, user, name, uids):
        with self._lock:
            box = self._box(user, name)
            return [self._message_info(u, box.messages[u]) for u in sorted(set(uids)) if u in box.messages]

    def raw(self, user, name, uid):
        with self._lock:
            m = self._box(user, name).messages.get(uid)
            return None if m is None else m.raw

    def search_text(self, user, name, needle, uids=None, body_only=False):
        with self._lock:
            box = self._box(user, name)
            candidates = box.uids if uids is None else [u for u in uids if u in box.messages]
            raws = [(u, box.messages[u].raw) for u in candidates]
        needle = needle.casefold()
        found = set()
        for uid, raw in raws:
            root = mimeinfo.parse(raw)
            text = mimeinfo.body_text(raw, root)
            if not body_only:
                text = mimeinfo.header_text(root) + "\n" + text
            if needle in text.casefold():
                found.add(uid)
        return found

    # ------------------------------------------------------------ changing

    def set_flags(self, user, name, uids, mode, flags, unchanged_since=None):
        with self._lock:
            box = self._box(user, name)
            wanted = self._canonical_flags(box, flags)
            changed, failed = {}, []
            for uid in sorted(set(uids)):
                m = box.messages.get(uid)
                if m is None:
                    continue
                if unchanged_since is not None and m.modseq > unchanged_since:
                    failed.append(uid)
                    continue
                if mode == "replace":
                    new = wanted
                elif mode == "add":
                    new = m.flags | wanted
                elif mode == "remove":
                    new = m.flags - wanted
                else:
                    raise ValueError(mode)
                if new != m.flags:
                    m.flags = frozenset(new)
                    m.modseq = box.bump()
                    changed[uid] = (m.flags, m.modseq)
            if changed:
                self._touch(user)
            return changed, failed

    def append(self, user, name, raw, flags=(), internal_date=None, internal_tz=0):
        if len(raw) > self.max_message_bytes:
            raise TooBig(f"Message is over the size limit of {self.max_message_bytes} octets")
        description = mimeinfo.describe(raw)
        with self._lock:
            box = self._box(user, name)
            uid = self._add(box, raw, flags, internal_date, internal_tz, description)
            self._touch(user)
            return box.uidvalidity, uid

    def copy(self, user, name, uids, dest):
        with self._lock:
            src, dst = self._box(user, name), self._box(user, dest)
            pairs = []
            for uid in sorted(set(uids)):
                m = src.messages.get(uid)
                if m is not None:
                    pairs.append((uid, self._add(dst, m.raw, m.flags, m.date, m.tz, m.description, m.email_id)))
            if pairs:
                self._touch(user)
            return dst.uidvalidity, pairs

    def move(self, user, name, uids, dest):
        with self._lock:
            uidvalidity, pairs = self.copy(user, name, uids, dest)
            self._remove(self._box(user, name), [s for s, _ in pairs])
            return uidvalidity, pairs

    def expunge(self, user, name, uids=None):
        with self._lock:
            box = self._box(user, name)
            candidates = box.uids if uids is None else uids
            gone = self._remove(box, [u for u in candidates
                                      if u in box.messages and "\\Deleted" in box.messages[u].flags])
            if gone:
                self._touch(user)
            return gone

    # ------------------------------------------------------------ change tracking

    def changes(self, user, name, since_modseq):
        with self._lock:
            box = self._box(user, name)
            expunged = sorted(u for ms, u in box.expunged if ms > since_modseq)
            changed = [(u, box.messages[u].flags, box.messages[u].modseq) for u in box.uids
                       if box.messages[u].modseq > since_modseq]
            return expunged, changed

    def wait(self, user, since_generation, timeout):
        deadline = time.monotonic() + timeout
        with self._changed:
            since = since_generation or self._generation.get(user, 1)
            while self._generation.get(user, 1) == since:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._generation.get(user, 1)

    def generation(self, user):
        """Never 0, so that wait(user, 0, ...) ("from now") is never mistaken for it."""
        with self._lock:
            return self._generation.get(user, 1)
