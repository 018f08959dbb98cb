"""The selected mailbox as one session knows it, and the untagged updates that catch it up.

A session's sequence numbers are its own: `uids` is what the client has been told, in
order. Changes made elsewhere (SMTP delivery, the web, another session) are found by
comparing with the store (`view()` and `changes()`), and reported where RFC 9051 §7.5.1
allows: EXISTS and FETCH FLAGS after any command, EXPUNGE (or VANISHED with QRESYNC,
RFC 7162 §3.2.10) only when no sequence numbers are in use (not during FETCH, STORE, SEARCH).

\\Recent (IMAP4rev1 only) is per process: `RecentClaims` remembers the highest UID some
read-write session has already been told about, per mailbox; messages above it are recent
to the next session that learns of them.
"""

import bisect
import threading
from array import array

from .parser import format_set


class RecentClaims:
    def __init__(self):
        self._claimed = {}
        self._lock = threading.Lock()

    def touch(self, key: tuple, uidvalidity: int, uidnext: int) -> None:
        """First sight of a mailbox in this process: nothing in it yet is recent."""
        with self._lock:
            seen = self._claimed.get(key)
            if seen is None or seen[0] != uidvalidity:
                self._claimed[key] = (uidvalidity, uidnext - 1)

    def claimed(self, key: tuple, uidvalidity: int) -> int:
        with self._lock:
            seen = self._claimed.get(key)
            return seen[1] if seen and seen[0] == uidvalidity else 0

    def claim(self, key: tuple, uidvalidity: int, upto: int) -> int:
        """Claim UIDs up to `upto`; returns the highest UID claimed before (by anyone)."""
        with self._lock:
            seen = self._claimed.get(key)
            before = seen[1] if seen and seen[0] == uidvalidity else 0
            if upto > before:
                self._claimed[key] = (uidvalidity, upto)
            return before


def format_flags(flags, recent: bool = False) -> bytes:
    system = sorted(f for f in flags if f.startswith("\\"))
    keywords = sorted((f for f in flags if not f.startswith("\\")), key=str.lower)
    if recent:
        system.append("\\Recent")
    return ("(" + " ".join(system + keywords) + ")").encode("utf-8", "replace")


class Selected:
    """Sequence numbers, recent UIDs and what has been reported, for one session."""

    def __init__(self, name: str, view, readonly: bool, recent_key: tuple):
        self.name = name
        self.readonly = readonly
        self.uidvalidity = view.uidvalidity
        self.uids = view.uids                      # the view's (never changed): copied on first change
        self._own_uids = False
        self.uidnext = view.uidnext                # above every UID the client was told of
        self.modseq = view.highestmodseq           # changes up to here are reported
        self.keywords = tuple(view.keywords)
        self.view = view
        self.recent_key = recent_key
        self.recent = []                           # [(low, high)] UID ranges recent to us
        self.pending_expunge = set()               # expunged, not yet reported
        self.told = {}                             # uid -> modseq already in a response
        self.saved = None                          # SEARCHRES result (RFC 5182): UIDs
        self.updates = {}                          # CONTEXT=SEARCH UPDATE: tag -> search
        self.last_new = []                         # UIDs the latest refresh announced

    # ------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int):
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def is_recent(self, uid: int) -> bool:
        return any(lo < uid <= hi for lo, hi in self.recent)

    def recent_count(self) -> int:
        count = 0
        for lo, hi in self.recent:
            count += bisect.bisect_right(self.uids, hi) - bisect.bisect_right(self.uids, lo)
        return count

    def note_recent(self, claims: RecentClaims, upto: int, rev1: bool) -> None:
        """Messages up to `upto` are now known to this session: claim the unclaimed ones as
        \\Recent (read-write) or merely see them as recent (read-only: EXAMINE keeps them)."""
        if not rev1:
            return
        if self.readonly:
            before = claims.claimed(self.recent_key, self.uidvalidity)
        else:
            before = claims.claim(self.recent_key, self.uidvalidity, upto)
        if upto > before:
            self.recent.append((before, upto))

    def _own(self) -> None:
        """A private copy of the UID list before changing it: until then it is the shared
        view's (a SELECT of a million messages copies nothing)."""
        if not self._own_uids:
            self.uids = array("I", self.uids)
            self._own_uids = True

    # ------------------------------------------------------------ catching up

    def refresh(self, store, user: str, claims, *, allow_expunge: bool, rev1: bool,
                condstore: bool, qresync: bool, uid_in_fetch: bool) -> list:
        """Untagged responses (bytes lines) that bring the client up to date."""
        view = store.view(user, self.name)
        lines = []
        flag_updates = []
        if view.highestmodseq != self.modseq or view.uidnext != self.uidnext:
            expunged, changed = store.changes(user, self.name, self.modseq)
            if expunged is None:   # beyond the store's horizon: compare UID lists
                present = set(view.uids)
                expunged = [u for u in self.uids if u not in present]
            for uid in expunged:
                if self.seq_of(uid) is not None:
                    self.pending_expunge.add(uid)
            for uid, flags, modseq in changed:
                if uid >= self.uidnext or uid in self.pending_expunge:
                    continue
                if self.told.get(uid, 0) >= modseq or self.seq_of(uid) is None:
                    continue
                flag_updates.append((uid, flags, modseq))
            self.modseq = view.highestmodseq
            self.told.clear()
        self.view = view
        if tuple(view.keywords) != self.keywords:
            self.keywords = tuple(view.keywords)
            lines += flags_lines(self.keywords)
        if allow_expunge and self.pending_expunge:
            gone = sorted(self.pending_expunge)
            self.pending_expunge.clear()
            self._own()
            if qresync:
                for uid in gone:
                    del self.uids[self.seq_of(uid) - 1]
                lines.append(b"* VANISHED " + format_set(gone).encode() + b"\r\n")
            else:
                for uid in reversed(gone):
                    seq = self.seq_of(uid)
                    del self.uids[seq - 1]
                    lines.append(b"* %d EXPUNGE\r\n" % seq)
        new_at = bisect.bisect_left(view.uids, self.uidnext)
        if new_at < len(view.uids):
            self.last_new = list(view.uids[new_at:])
            self._own()
            self.uids.extend(view.uids[new_at:])
            self.note_recent(claims, view.uids[-1], rev1)
            lines.append(b"* %d EXISTS\r\n" % len(self.uids))
            if rev1:
                lines.append(b"* %d RECENT\r\n" % self.recent_count())
        self.uidnext = max(self.uidnext, view.uidnext)
        for uid, flags, modseq in flag_updates:
            seq = self.seq_of(uid)
            if seq is None:
                continue
            items = [b"FLAGS " + format_flags(flags, rev1 and self.is_recent(uid))]
            if uid_in_fetch or qresync:
                items.append(b"UID %d" % uid)
            if condstore:
                items.append(b"MODSEQ (%d)" % modseq)
            lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n")
        return lines


def flags_lines(keywords) -> list:
    """FLAGS and PERMANENTFLAGS for a mailbox with these keywords (RFC 9051 §7.3.5)."""
    flags = " ".join(("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft") + tuple(keywords))
    return [f"* FLAGS ({flags})\r\n".encode("utf-8", "replace"),
            f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted\r\n".encode("utf-8", "replace")]
