"""The mailbox API the IMAP server (and the web app, and submission) use.

This is the contract between the protocol layers and the store. The real implementation
(`mu/mailstore.py`, class `MailStore`, reachable as `app.mailstore`) is being written in
parallel with the IMAP server; this file is the agreement. Everything is per user: a user
never sees another user's mailboxes. Names are full mailbox names with "/" as the
hierarchy delimiter, "INBOX" case-insensitive (RFC 9051 §5.1); stored names are the user's
spelling, Unicode (IMAP's modified UTF-7 is the protocol layer's business, RFC 9051 §5.1.3).

Flags are str: system flags "\\Seen" "\\Answered" "\\Flagged" "\\Deleted" "\\Draft" with their
backslash and canonical capitalisation, keywords as atoms (case-insensitive per RFC 9051
§2.3.2: the store keeps the first spelling it saw in that mailbox). "\\Recent" is not stored
(IMAP4rev2 dropped it; a rev1 session may compute it itself).

Errors: every method raises `MailStoreError(code, text)` subclasses for refusals:
`NoSuchMailbox` (IMAP [NONEXISTENT]), `MailboxExists` ([ALREADYEXISTS]), `BadMailboxName`
([CANNOT]), `MailboxInUse`/`CannotDelete` ([CANNOT], e.g. INBOX or a default special-use
mailbox), `TooBig` ([TOOBIG], over MAIL_MAX_SIZE), `OverQuota` ([OVERQUOTA]).
`.code` is the IMAP response code text, `.text` the human text.
"""

from array import array
from dataclasses import dataclass
from typing import Iterable, Optional, Protocol


SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
               "Archive": "\\Archive"}   # every user has these and INBOX


class MailStoreError(Exception):
    code = "CANNOT"

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class NoSuchMailbox(MailStoreError): code = "NONEXISTENT"
class MailboxExists(MailStoreError): code = "ALREADYEXISTS"
class BadMailboxName(MailStoreError): code = "CANNOT"
class CannotDelete(MailStoreError): code = "CANNOT"
class TooBig(MailStoreError): code = "TOOBIG"


@dataclass(frozen=True)
class MailboxInfo:
    name: str                 # e.g. "INBOX", "Sent", "Projects/2026"
    special_use: str          # "\\Sent" ... or "" (RFC 6154)
    subscribed: bool
    uidvalidity: int          # never changes for this name unless it is deleted and re-created
    uidnext: int
    highestmodseq: int        # RFC 7162; starts at 1 for an empty mailbox
    total: int                # messages
    unseen: int               # messages without \Seen
    size: int                 # sum of RFC822.SIZE (STATUS SIZE, RFC 8438)


class MailboxView(Protocol):
    """A point-in-time copy of one mailbox's index, cheap to take (array copies), never
    changing under the holder. Position i (0-based) is message sequence number i+1."""
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    uids: array               # array('I'), ascending
    keywords: tuple           # keywords defined in this mailbox (for FLAGS/PERMANENTFLAGS)

    def flags(self, i: int) -> frozenset: ...
    def modseq(self, i: int) -> int: ...
    def internal_date(self, i: int) -> int: ...   # Unix seconds
    def size(self, i: int) -> int: ...            # RFC822.SIZE, octets of the raw message
    def index_of(self, uid: int) -> Optional[int]: ...   # binary search; None if absent


@dataclass(frozen=True)
class MessageInfo:
    """What a FETCH needs without reading the message body."""
    uid: int
    size: int                 # octets of raw()
    internal_date: int        # Unix seconds; the timezone the message arrived in is kept too:
    internal_tz: int          # minutes east of UTC, for INTERNALDATE's zone (RFC 9051 §2.3.3)
    flags: frozenset
    modseq: int
    envelope: str             # the IMAP ENVELOPE, already formatted (RFC 9051 §7.5.2)
    bodystructure: str        # the IMAP BODYSTRUCTURE (extensible form), already formatted
    body: str                 # the non-extensible BODY form
    message_id: str           # for clients' dedupe and for Sent-copy dedupe in APPEND
    email_id: str             # the API id of the message (the same across mailboxes and users)


class MailStore(Protocol):
    # ---------------------------------------------------------------- mailboxes
    def mailboxes(self, user: str) -> list:                       # [MailboxInfo], INBOX first
        ...

    def mailbox(self, user: str, name: str) -> MailboxInfo: ...   # NoSuchMailbox

    def create_mailbox(self, user: str, name: str, special_use: str = "") -> MailboxInfo:
        """Parents are not created implicitly (the IMAP layer creates them per RFC 9051 §6.3.4)."""

    def delete_mailbox(self, user: str, name: str) -> None:
        """Its messages are expunged. INBOX and the five default special-use mailboxes:
        CannotDelete. A mailbox with children may be deleted (the children stay)."""

    def rename_mailbox(self, user: str, old: str, new: str) -> None:
        """Children move with it. Renaming INBOX moves its messages to `new` and leaves an
        empty INBOX (RFC 9051 §6.3.6). The renamed mailbox keeps its UIDVALIDITY."""

    def subscribe(self, user: str, name: str, subscribed: bool = True) -> None:
        """Subscribing a name that does not exist is allowed (RFC 9051 §6.3.7)."""

    def subscriptions(self, user: str) -> list: ...              # [name]

    # ---------------------------------------------------------------- reading
    def view(self, user: str, name: str) -> MailboxView: ...

    def message(self, user: str, name: str, uid: int) -> Optional[MessageInfo]:
        """None if that UID is no longer in the mailbox (expunged meanwhile)."""

    def messages(self, user: str, name: str, uids: Iterable[int]) -> list:
        """[MessageInfo] for those still present, in UID order: one call for a FETCH range,
        so the store can read them in disk order."""

    def raw(self, user: str, name: str, uid: int) -> Optional[bytes]:
        """The message exactly as stored (inbound: as received with mu's trace headers on
        top). Stable: the same bytes every time, len == MessageInfo.size."""

    def search_text(self, user: str, name: str, needle: str, uids=None) -> set:
        """UIDs whose text (headers and decoded body text) contains `needle`, case-
        insensitively (RFC 9051 §6.4.4 TEXT / BODY). `uids` narrows the candidates."""

    # ---------------------------------------------------------------- changing
    def set_flags(self, user: str, name: str, uids: Iterable[int], mode: str, flags: Iterable[str],
                  unchanged_since: Optional[int] = None) -> tuple:
        """mode: "replace" | "add" | "remove". Returns (changed, failed):
        changed = {uid: (frozenset flags, modseq)} for every UID whose flags changed (each
        gets a new MODSEQ), failed = [uid] whose MODSEQ was > unchanged_since (CONDSTORE
        UNCHANGEDSINCE, RFC 7162 §3.1.3) and so were left alone. Unknown UIDs are ignored."""

    def append(self, user: str, name: str, raw: bytes, flags: Iterable[str] = (),
               internal_date: Optional[int] = None, internal_tz: int = 0) -> tuple:
        """Store a message; (uidvalidity, uid) for APPENDUID (RFC 4315). TooBig over the limit.
        A copy APPENDed to Sent of a message that mu itself put in Sent (submission or web,
        same Message-ID, same user, recent) is not stored twice: the existing (uidvalidity,
        uid) is returned."""

    def copy(self, user: str, name: str, uids: Iterable[int], dest: str) -> tuple:
        """(dest uidvalidity, [(src uid, dest uid)]) in source UID order (COPYUID)."""

    def move(self, user: str, name: str, uids: Iterable[int], dest: str) -> tuple:
        """Like copy, then the source messages are expunged, atomically (RFC 6851)."""

    def expunge(self, user: str, name: str, uids: Optional[Iterable[int]] = None) -> list:
        """Remove the messages flagged \\Deleted (only those among `uids` when given:
        UID EXPUNGE, RFC 4315); returns the expunged UIDs ascending."""

    # ---------------------------------------------------------------- change tracking
    def changes(self, user: str, name: str, since_modseq: int) -> tuple:
        """(expunged UIDs since that MODSEQ ascending, [(uid, flags, modseq)] changed since,
        ascending by uid). For IDLE/NOOP updates and QRESYNC. Expunged UIDs are complete only
        back to a horizon; before it, `None` is returned in their place and the caller
        compares its own UID list with view()."""

    def wait(self, user: str, since_generation: int, timeout: float) -> int:
        """Block until something in the user's mailboxes changed after `since_generation`
        (a counter; 0 for "now") or `timeout` seconds passed; return the current generation.
        Changes by this process (SMTP, web, other IMAP sessions) wake it at once; changes
        by another process (the CLI) within a second."""

    def generation(self, user: str) -> int: ...
