"""The IMAP protocol state machine: one method per command (RFC 9051 §6).

    NOT AUTHENTICATED --LOGIN/AUTHENTICATE--> AUTHENTICATED --SELECT/EXAMINE--> SELECTED
    SELECTED --CLOSE/UNSELECT--> AUTHENTICATED; LOGOUT from anywhere.

`handle(parts)` takes one complete command (line segments and literals, as the server read
it), writes every response through `conn.write`, and returns. A command method parses its
arguments with a CommandReader, does its work against the store, writes untagged data and
returns the tagged completion (or raises `No`/`Bad`, or a store error, which become one).
The session knows nothing about sockets: `conn` gives it write/flush, a line reader for
AUTHENTICATE, and a wait for IDLE.
"""

import base64
import binascii
import bisect
import re
import time
import urllib.parse

from ..accounts import LoginThrottled
from .. import mimeinfo
from ..log import log
from ..mailstore import MailStoreError, NoSuchMailbox, TooBig
from . import fetch as F
from . import listing as L
from . import mutf7
from . import notify as N
from . import responses as R
from . import search as S
from . import sort as SORT
from .parser import BadSyntax, CommandReader, Literal, SequenceSet, format_set
from .selected import Selected, flags_lines, format_flags

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "NOT AUTHENTICATED", "AUTHENTICATED", "SELECTED", "LOGOUT"
MAX_ERRORS = 20          # BAD responses in a row before the server says goodbye
MAX_UPDATES = 5          # CONTEXT=SEARCH searches with UPDATE at once (RFC 5267 §4.2 NOUPDATE)
FETCH_BATCH = 1000       # messages asked of the store at once during FETCH
CREDENTIAL_RECHECK_SECONDS = 30.0   # how stale a session's check of its login may be
NO_EXPUNGE_COMMANDS = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD"}
MAX_USERNAME_CHARS = 320  # longer than any valid login (name@domain): refused before any look-up
MAX_ID_PAIRS = 30         # RFC 2971 §3.3


class No(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class Bad(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def _quote(data: bytes, utf8: bool = False) -> bytes:
    """A quoted string, or a literal when it cannot be one (8-bit text is quoted only
    where UTF-8 strings are allowed: RFC 9051 and RFC 6855 after ENABLE)."""
    if b"\r" in data or b"\n" in data or b"\0" in data or not (utf8 or data.isascii()):
        return b"{%d}\r\n%s" % (len(data), data.replace(b"\0", b""))
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class _Source:
    """What SEARCH, SORT and THREAD read about the selected mailbox's messages."""

    def __init__(self, session, view):
        self.session = session
        self.view = view
        self.sel = session.selected
        self._fields = {}
        self._days = None
        self._now = time.time()

    def view_index(self, uid):
        return self.view.index_of(uid)

    def max_uid(self):
        return self.sel.max_uid()

    def saved_uids(self):
        if self.sel.saved is None:
            raise BadSyntax(R.BAD_NO_SAVED)
        return self.sel.saved

    def is_recent(self, uid):
        return self.session.rev1 and self.sel.is_recent(uid)

    def now(self):
        return self._now

    def header_fields(self, uid):
        if uid not in self._fields:
            raw = self.session.store.raw(self.session.user, self.sel.name, uid)
            if raw is None:
                self._fields[uid] = None
            else:
                self._fields[uid] = mimeinfo.message_header(raw)
        return self._fields[uid]

    def internal_day(self, uid):
        """The day a message arrived, in the zone it arrived in (RFC 9051 §6.4.4)."""
        if self._days is None:
            infos = self.session.store.messages(self.session.user, self.sel.name, list(self.sel.uids))
            self._days = {i.uid: (i.internal_date + i.internal_tz * 60) // 86400 * 86400 for i in infos}
        return self._days.get(uid)

    def text_matches(self, needle, body_only, uids):
        self.session.store.index_for_search(self.session.search_progress)
        return self.session.store.search_text(self.session.user, self.sel.name, needle, list(uids),
                                              body_only=body_only)


class Session:
    def __init__(self, ctx, conn, peer_ip: str, tls_active: bool = False, tls_available: bool = False):
        self.ctx = ctx
        self.store = ctx.store
        self.config = ctx.config
        self.conn = conn
        self.peer_ip = peer_ip
        self.current_tag = b""
        self.tls_active = tls_active
        self.tls_available = tls_available and not tls_active
        self.state = NOT_AUTHENTICATED
        self.user = None
        self.selected = None
        self.enabled = set()
        self.condstore = False
        self.notify = None          # NOTIFY SET (RFC 5465): a notify.Spec
        self.notify_seen = None     # the notify.Snapshot last reported
        self.errors = 0
        self.closing = False        # the server closes after writing what is queued
        self.login = None           # what authenticate_client answered (for still_valid)
        self._credentials_checked = 0.0
        self.start_tls = False      # the server starts TLS after writing what is queued

    # ------------------------------------------------------------ capabilities and modes

    @property
    def rev1(self) -> bool:
        """IMAP4rev1 behaviour (\\Recent, SEARCH responses) until the client ENABLEs IMAP4rev2."""
        return "IMAP4REV2" not in self.enabled

    @property
    def utf8_names(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def plaintext_allowed(self) -> bool:
        return self.tls_active or self.ctx.is_loopback(self.peer_ip)

    def capabilities(self) -> list:
        caps = list(R.CAPABILITIES)
        caps.append(f"APPENDLIMIT={self.config.max_message_bytes}")
        if self.state == NOT_AUTHENTICATED:
            if self.tls_available:
                caps.append(R.STARTTLS)
            if self.plaintext_allowed():
                caps += R.PRE_LOGIN_CAPABILITIES
            else:
                caps.append(R.LOGINDISABLED)
        return caps

    def greeting(self) -> bytes:
        return b"* OK [CAPABILITY " + " ".join(self.capabilities()).encode() + b"] " + R.GREETING.encode() + b"\r\n"

    # ------------------------------------------------------------ output

    def _write(self, data: bytes) -> None:
        self.conn.write(data)

    def untagged(self, text) -> None:
        self._write(b"* " + (text.encode("utf-8", "replace") if isinstance(text, str) else text) + b"\r\n")

    def _tagged(self, tag: bytes, status: str, text: str) -> None:
        self._write(tag + b" " + status.encode() + b" " + text.encode("utf-8", "replace") + b"\r\n")

    def search_progress(self, done: int, goal: int) -> None:
        """While a text search waits for the search index to catch up (after a large
        import), the client hears how far it is (RFC 9585 INPROGRESS), so it does not give
        up on a command that is working."""
        # A tag holds no quoted-specials (RFC 9051 §9: tag), so it quotes as it is.
        tag = b'"' + self.current_tag + b'"' if self.current_tag else b"NIL"
        self.untagged(b"OK [INPROGRESS (%s %d %d)] Indexing messages for search" % (tag, done, goal))
        self.conn.flush()

    def bye(self, text: str) -> None:
        self.untagged("BYE " + text)
        self.closing = True
        self.state = LOGOUT

    # ------------------------------------------------------------ dispatch

    def handle(self, parts: list) -> None:
        """One complete command: respond to it, completely."""
        reader = CommandReader(parts)
        try:
            tag = reader.tag()
            reader.sp()
            name = reader.word()
        except BadSyntax:
            self._bad_command(b"*", R.BAD_NO_TAG)
            return
        self.current_tag = tag
        uid = False
        try:
            if name == "UID":
                reader.sp()
                name = reader.word()
                if name not in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD"):
                    raise Bad(R.BAD_UNKNOWN)
                uid = True
            method = getattr(self, "cmd_" + name.replace("-", "_"), None)
            if method is None:
                raise Bad(R.BAD_UNKNOWN)
            self._check_state(name)
            if self.state in (AUTHENTICATED, SELECTED) and not self._credentials_still_valid():
                self.bye(R.BYE_CREDENTIALS_REVOKED)
                return
            result = method(tag, reader, uid) if name in self._UID_COMMANDS else method(tag, reader)
            if self.state == SELECTED and self.selected is not None and name not in ("IDLE",):
                self._report(allow_expunge=name not in NO_EXPUNGE_COMMANDS)
            if self.notify is not None and name != "NOTIFY" and self.state in (AUTHENTICATED, SELECTED):
                self._notify_report()
            if result is not None:
                self._tagged(tag, "OK", result)
            self.errors = 0
        except BadSyntax as exc:
            self._bad_command(tag, exc.text)
        except Bad as exc:
            self._bad_command(tag, exc.text)
        except No as exc:
            self._report_quietly()
            self._tagged(tag, "NO", exc.text)
        except MailStoreError as exc:
            self._report_quietly()
            self._tagged(tag, "NO", f"[{exc.code}] {exc.text}")
        except mimeinfo.UnknownEncoding:
            self._tagged(tag, "NO", R.NO_UNKNOWN_CTE)
        except (ConnectionError, TimeoutError, OSError):
            raise
        except Exception as exc:   # a bug costs one command, never the connection
            log("imap", f"error in {name} from {self.peer_ip}: {exc!r}")
            self._tagged(tag, "NO", R.NO_SERVERBUG)

    def _credentials_still_valid(self) -> bool:
        """Whether the password or app password this session logged in with still works
        (checked at most every CREDENTIAL_RECHECK_SECONDS): a revoked app password, a changed
        password or a disabled account ends the session at its next command."""
        now = time.monotonic()
        if now - self._credentials_checked < CREDENTIAL_RECHECK_SECONDS:
            return True
        self._credentials_checked = now
        return self.login is None or self.ctx.accounts.still_valid(self.login)

    _UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD"})

    def _bad_command(self, tag: bytes, text: str) -> None:
        self.errors += 1
        self._tagged(tag, "BAD", text)
        if self.errors >= MAX_ERRORS:
            self.bye(R.BYE_TOO_MANY_ERRORS)

    def _report_quietly(self) -> None:
        if self.state == SELECTED and self.selected is not None:
            try:
                self._report(allow_expunge=False)
            except MailStoreError:
                pass

    _ANY_STATE = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
    _NOT_AUTHENTICATED_ONLY = frozenset({"LOGIN", "AUTHENTICATE", "STARTTLS"})
    _SELECTED_ONLY = frozenset({"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
                                "MOVE", "SORT", "THREAD", "CANCELUPDATE"})

    def _check_state(self, name: str) -> None:
        if name in self._ANY_STATE:
            return
        if name in self._NOT_AUTHENTICATED_ONLY:
            if self.state != NOT_AUTHENTICATED:
                raise Bad(R.BAD_STATE_AUTHENTICATED)
            return
        if self.state == NOT_AUTHENTICATED:
            raise Bad(R.BAD_STATE_NOT_AUTHENTICATED)
        if name in self._SELECTED_ONLY and self.state != SELECTED:
            raise Bad(R.BAD_STATE_NOT_SELECTED)

    # ------------------------------------------------------------ mailbox names

    def _name(self, raw: bytes) -> str:
        """A mailbox name from the wire: modified UTF-7 for IMAP4rev1 clients, UTF-8 once
        enabled; INBOX in any case is INBOX (RFC 9051 §5.1)."""
        try:
            name = raw.decode("utf-8") if self.utf8_names else mutf7.decode(raw)
        except (UnicodeDecodeError, ValueError):
            raise No(R.NO_NONEXISTENT) from None
        if name.upper() == "INBOX" or name.upper().startswith("INBOX/"):
            name = "INBOX" + name[5:]
        return name

    def _wire_name(self, name: str) -> bytes:
        return _quote(name.encode("utf-8"), True) if self.utf8_names else _quote(mutf7.encode(name))

    def _mailbox_arg(self, reader) -> str:
        return self._name(reader.astring())

    def _key(self, name: str) -> tuple:
        return (self.user, name)

    def _touch(self, name: str) -> None:
        try:
            info = self.store.mailbox(self.user, name)
        except MailStoreError:
            return
        self.ctx.recent.touch(self._key(info.name), info.uidvalidity, info.uidnext)

    # ------------------------------------------------------------ any state

    def cmd_CAPABILITY(self, tag, r):
        r.end()
        self.untagged("CAPABILITY " + " ".join(self.capabilities()))
        return R.OK_CAPABILITY

    def cmd_NOOP(self, tag, r):
        r.end()
        return R.OK_NOOP

    def cmd_LOGOUT(self, tag, r):
        r.end()
        self.untagged("BYE " + R.BYE_LOGOUT)
        self.state = LOGOUT
        self.closing = True
        self.selected = None
        return R.OK_DONE.format(command="LOGOUT")

    def cmd_ID(self, tag, r):
        """RFC 2971: what the client says is only logged; mu says its name."""
        r.sp()
        if not r.maybe_nil():
            r.expect(b"(")
            pairs = 0
            if not r.maybe(b")"):
                while True:
                    field = r.string()
                    r.sp()
                    value = r.nstring()
                    pairs += 1
                    if len(field) > 30 or (value is not None and len(value) > 1024) or pairs > MAX_ID_PAIRS:
                        raise Bad("ID field too long or too many fields (RFC 2971 3.3)")
                    if not r.maybe(b" "):
                        break
                r.expect(b")")
        r.end()
        self.untagged('ID ("name" "mu" "vendor" "mu")')
        return R.OK_ID

    # ------------------------------------------------------------ not authenticated

    def cmd_STARTTLS(self, tag, r):
        r.end()
        if self.tls_active:
            raise Bad(R.BAD_TLS_ACTIVE)
        if not self.tls_available:
            raise Bad(R.BAD_TLS_UNAVAILABLE)
        self.start_tls = True
        return R.OK_STARTTLS

    def cmd_LOGIN(self, tag, r):
        r.sp()
        name = r.astring()
        r.sp()
        password = r.astring()
        r.end()
        if not self.plaintext_allowed():
            raise No(R.NO_PLAINTEXT)
        return self._login(name, password)

    def cmd_AUTHENTICATE(self, tag, r):
        r.sp()
        mechanism = r.word()
        initial = None
        if r.maybe(b" "):
            initial = r.atom() if r.peek() != b"=" else (r.expect(b"=") or b"=")
        r.end()
        if mechanism != "PLAIN":
            raise No("[CANNOT] Unsupported authentication mechanism")
        if not self.plaintext_allowed():
            raise No(R.NO_PLAINTEXT)
        if initial is None:
            self._write(b"+ \r\n")
            self.conn.flush()
            initial = self.conn.read_line().rstrip(b"\r\n")
            if initial == b"*":
                raise Bad(R.NO_AUTH_CANCELLED)
        try:
            decoded = b"" if initial == b"=" else base64.b64decode(initial, validate=True)
        except (binascii.Error, ValueError):
            raise Bad(R.BAD_BASE64) from None
        fields = decoded.split(b"\0")
        if len(fields) != 3:
            raise No(R.NO_LOGIN)
        authzid, authcid, password = fields
        if authzid and authzid != authcid:
            raise No(R.NO_LOGIN)
        return self._login(authcid, password)

    def _login(self, raw_name: bytes, raw_password: bytes) -> str:
        name = raw_name.decode("utf-8", "replace").strip()
        password = raw_password.decode("utf-8", "replace")
        if len(name) > MAX_USERNAME_CHARS or not name or len(password) > 1024:
            raise No(R.NO_LOGIN)
        # The account password or an app password, counted in the throttles every login
        # shares (web, IMAP, submission): mu/accounts.py authenticate_client.
        try:
            user = self.ctx.accounts.authenticate_client(name, password, self.peer_ip)
        except LoginThrottled:
            raise No(R.NO_THROTTLED) from None
        if user is None:
            raise No(R.NO_LOGIN)
        name = user["name"]
        self.login, self._credentials_checked = user, time.monotonic()
        self.user = name
        self.state = AUTHENTICATED
        self.conn.authenticated()
        # Capabilities in the OK: clients like K-9 do not ask again (RFC 9051 §7.1).
        return "[CAPABILITY " + " ".join(self.capabilities()) + "] " + R.OK_LOGIN

    # ------------------------------------------------------------ authenticated

    def cmd_ENABLE(self, tag, r):
        """RFC 5161; answers with what was enabled now."""
        names = []
        while r.maybe(b" "):
            names.append(r.atom().decode("ascii", "replace").upper())
        r.end()
        if not names:
            raise BadSyntax("ENABLE needs a capability")
        enabled = []
        for name in names:
            if name in R.ENABLEABLE and name not in self.enabled:
                self.enabled.add(name)
                enabled.append({"IMAP4REV2": "IMAP4rev2"}.get(name, name))
                if name == "QRESYNC":   # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
                    self.condstore = True
                if name == "CONDSTORE":
                    self.condstore = True
        self.untagged("ENABLED" + "".join(" " + n for n in enabled))
        return R.OK_ENABLE

    def _enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 §3.1): from now on MODSEQ everywhere."""
        if not self.condstore:
            self.condstore = True
            if self.selected is not None:
                self.untagged(f"OK [HIGHESTMODSEQ {self.selected.modseq}] Highest")

    def cmd_SELECT(self, tag, r, readonly=False):
        r.sp()
        name = self._mailbox_arg(r)
        qresync = None
        if r.maybe(b" "):
            r.expect(b"(")
            while True:
                word = r.word()
                if word == "CONDSTORE":
                    self._enable_condstore()
                elif word == "QRESYNC":
                    if not self.qresync:
                        raise Bad("ENABLE QRESYNC first")
                    qresync = self._qresync_params(r)
                else:
                    raise BadSyntax(f"Unknown SELECT parameter {word}")
                if not r.maybe(b" "):
                    break
            r.expect(b")")
        r.end()
        if self.selected is not None:
            self.selected = None
            self.state = AUTHENTICATED
            if self.qresync:   # RFC 7162 §3.2.11
                self.untagged("OK [CLOSED] Previous mailbox closed")
        self._touch(name)
        try:
            view = self.store.view(self.user, name)
        except NoSuchMailbox:
            raise No(R.NO_NONEXISTENT) from None
        key = self._key(view.name)
        sel = Selected(view.name, view, readonly, key)
        sel.note_recent(self.ctx.recent, sel.max_uid(), self.rev1)
        self.untagged(b"%d EXISTS" % len(sel))
        if self.rev1:
            self.untagged(b"%d RECENT" % sel.recent_count())
            first_unseen = view.first_unseen()
            if first_unseen is not None:
                self.untagged(f"OK [UNSEEN {first_unseen + 1}] First unseen")
        for line in flags_lines(sel.keywords):
            self._write(line)
        if not self.rev1:   # RFC 9051 §6.3.2: IMAP4rev2's SELECT names the mailbox in a LIST
            self._list([view.name.encode("utf-8") if self.utf8_names else mutf7.encode(view.name)], b"",
                       False, set(), set(), None, True)
        self.untagged(f"OK [UIDVALIDITY {view.uidvalidity}] UIDs valid")
        self.untagged(f"OK [UIDNEXT {view.uidnext}] Predicted next UID")
        if self.condstore:
            self.untagged(f"OK [HIGHESTMODSEQ {view.highestmodseq}] Highest")
        self.selected = sel
        self.state = SELECTED
        if qresync is not None:
            self._qresync_select(sel, view, *qresync)
        access = "READ-ONLY" if readonly else "READ-WRITE"
        return f"[{access}] " + (R.OK_EXAMINE if readonly else R.OK_SELECT)

    def cmd_EXAMINE(self, tag, r):
        return self.cmd_SELECT(tag, r, readonly=True)

    def _qresync_params(self, r) -> tuple:
        """QRESYNC (uidvalidity modseq [known-uids [(seq-set uid-set)]]) (RFC 7162 §3.2.5)."""
        r.sp()
        r.expect(b"(")
        uidvalidity = r.nz_number()
        r.sp()
        modseq = r.number(2 ** 63 - 1)
        known = None
        if r.maybe(b" "):
            if r.peek() != b"(":
                known = r.sequence_set()
                r.maybe(b" ")
            if r.maybe(b"("):
                r.sequence_set()
                r.sp()
                r.sequence_set()
                r.expect(b")")
        r.expect(b")")
        return uidvalidity, modseq, known

    def _qresync_select(self, sel, view, uidvalidity, modseq, known) -> None:
        if uidvalidity != view.uidvalidity:
            return
        expunged, changed = self.store.changes(self.user, sel.name, modseq)
        if expunged is None:
            present = set(view.uids)
            if known is not None:
                candidates = [u for lo, hi in known.bounds(sel.max_uid() or 1) for u in range(lo, min(hi, view.uidnext - 1) + 1)]
            else:
                candidates = range(1, view.uidnext)
            expunged = [u for u in candidates if u not in present]
        if known is not None:
            expunged = [u for u in expunged if known.contains(u, view.uidnext)]
        if expunged:
            self.untagged(b"VANISHED (EARLIER) " + format_set(sorted(set(expunged))).encode())
        for uid, flags, ms in changed:
            seq = sel.seq_of(uid)
            if seq is None:
                continue
            self.untagged(b"%d FETCH (UID %d FLAGS " % (seq, uid) + format_flags(flags, self.rev1 and sel.is_recent(uid))
                          + b" MODSEQ (%d))" % ms)

    def cmd_CREATE(self, tag, r):
        r.sp()
        name = self._mailbox_arg(r)
        r.end()
        name = name.rstrip("/") or name
        if name.upper() == "INBOX":
            raise No("[ALREADYEXISTS] INBOX always exists")
        existing = {m.name for m in self.store.mailboxes(self.user)}
        if name in existing:
            raise No(f"[ALREADYEXISTS] Mailbox already exists: {name}")
        parts = name.split("/")
        for i in range(1, len(parts)):   # RFC 9051 §6.3.4: superiors are created as needed
            parent = "/".join(parts[:i])
            if parent and parent not in existing and parent.upper() != "INBOX":
                self.store.create_mailbox(self.user, parent)
        info = self.store.create_mailbox(self.user, name)
        self.ctx.recent.touch(self._key(info.name), info.uidvalidity, info.uidnext)
        return R.OK_DONE.format(command="CREATE")

    def cmd_DELETE(self, tag, r):
        r.sp()
        name = self._mailbox_arg(r)
        r.end()
        if self.selected is not None and self.selected.name == name:
            self.selected = None
            self.state = AUTHENTICATED
        self.store.delete_mailbox(self.user, name)
        return R.OK_DONE.format(command="DELETE")

    def cmd_RENAME(self, tag, r):
        r.sp()
        old = self._mailbox_arg(r)
        r.sp()
        new = self._mailbox_arg(r).rstrip("/")
        r.end()
        if new == old or new.startswith(old + "/"):
            raise No(R.NO_CANNOT_RENAME_TO_CHILD)
        existing = {m.name for m in self.store.mailboxes(self.user)}
        if old not in existing:
            raise No(R.NO_NONEXISTENT)
        if new in existing or new.upper() == "INBOX":
            raise No(f"[ALREADYEXISTS] Mailbox already exists: {new}")
        parts = new.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in existing and parent.upper() != "INBOX" and not (parent + "/").startswith(old + "/"):
                self.store.create_mailbox(self.user, parent)
        self.store.rename_mailbox(self.user, old, new)
        if self.selected is not None and (self.selected.name == old or self.selected.name.startswith(old + "/")):
            self.selected.name = new + self.selected.name[len(old):]
        return R.OK_DONE.format(command="RENAME")

    def cmd_SUBSCRIBE(self, tag, r, subscribed=True):
        r.sp()
        name = self._mailbox_arg(r)
        r.end()
        self.store.subscribe(self.user, name, subscribed)
        return R.OK_DONE.format(command="SUBSCRIBE" if subscribed else "UNSUBSCRIBE")

    def cmd_UNSUBSCRIBE(self, tag, r):
        return self.cmd_SUBSCRIBE(tag, r, subscribed=False)

    def cmd_NAMESPACE(self, tag, r):
        r.end()
        self.untagged('NAMESPACE (("" "/")) NIL NIL')
        return R.OK_DONE.format(command="NAMESPACE")

    # ------------------------------------------------------------ LIST and LSUB

    def _pattern(self, reference: bytes, pattern: bytes):
        try:
            text = self._name(reference + pattern) if (reference + pattern) else ""
        except No:
            return None   # not a valid name in this session's encoding: it matches nothing
        return L.compile_pattern(text)

    def cmd_LIST(self, tag, r, lsub=False):
        r.sp()
        selection = set()
        extended = False
        if r.peek() == b"(" and not lsub:
            extended = True
            r.expect(b"(")
            if not r.maybe(b")"):
                while True:
                    word = r.word()
                    if word not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
                        raise Bad(f"Unknown LIST selection option {word}")
                    selection.add(word)
                    if not r.maybe(b" "):
                        break
                r.expect(b")")
            if "RECURSIVEMATCH" in selection and not selection & {"SUBSCRIBED", "SPECIAL-USE"}:
                raise Bad("RECURSIVEMATCH needs another selection option (RFC 5258 3.1)")
            r.sp()
        reference = r.astring()
        r.sp()
        patterns = []
        if r.peek() == b"(" and not lsub:
            extended = True
            r.expect(b"(")
            patterns.append(r.list_mailbox())
            while r.maybe(b" "):
                patterns.append(r.list_mailbox())
            r.expect(b")")
        else:
            patterns.append(r.list_mailbox())
        returns, status_items = set(), None
        if r.maybe(b" "):
            r.expect(b"RETURN")
            r.sp()
            r.expect(b"(")
            extended = True
            if not r.maybe(b")"):
                while True:
                    word = r.word()
                    if word == "STATUS":
                        r.sp()
                        status_items = self._status_items(r)
                    elif word not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                        raise Bad(f"Unknown LIST return option {word}")
                    returns.add(word)
                    if not r.maybe(b" "):
                        break
                r.expect(b")")
        r.end()
        if not lsub and len(patterns) == 1 and patterns[0] == b"" and not selection:
            # RFC 9051 §6.3.9: an empty pattern asks for the delimiter and root.
            self.untagged(b'LIST (\\Noselect) "/" ""')
            return R.OK_DONE.format(command="LIST")
        self._list(patterns, reference, lsub, selection, returns, status_items, extended)
        return R.OK_DONE.format(command="LSUB" if lsub else "LIST")

    def cmd_LSUB(self, tag, r):
        return self.cmd_LIST(tag, r, lsub=True)

    def _list(self, patterns, reference, lsub, selection, returns, status_items, extended):
        boxes = {m.name: m for m in self.store.mailboxes(self.user)}
        compiled = [p for p in (self._pattern(reference, pat) for pat in patterns) if p is not None]
        request = L.Request(compiled, lsub, selection, returns, nonexistent=extended or not self.rev1)
        verb = b"LSUB" if lsub else b"LIST"
        for name, attrs, extra in L.rows(boxes, set(self.store.subscriptions(self.user)), request):
            self.untagged(verb + b" (" + " ".join(attrs).encode() + b') "/" ' + self._wire_name(name) + (extra or b""))
            if status_items is not None and name in boxes:
                self._status_response(name, status_items)

    # ------------------------------------------------------------ STATUS

    _STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE",
                     "DELETED", "APPENDLIMIT")

    def _status_items(self, r) -> list:
        r.expect(b"(")
        items = [r.word()]
        while r.maybe(b" "):
            items.append(r.word())
        r.expect(b")")
        for item in items:
            if item not in self._STATUS_ITEMS:
                raise BadSyntax(f"Unknown STATUS item {item}")
        return items

    def cmd_STATUS(self, tag, r):
        r.sp()
        name = self._mailbox_arg(r)
        r.sp()
        items = self._status_items(r)
        r.end()
        if "HIGHESTMODSEQ" in items:
            self._enable_condstore()
        self._touch(name)
        try:
            self._status_response(name, items)
        except NoSuchMailbox:
            raise No(R.NO_NONEXISTENT) from None
        return R.OK_DONE.format(command="STATUS")

    def _status_response(self, name: str, items: list) -> None:
        info = self.store.mailbox(self.user, name)
        view = None
        if "RECENT" in items or "DELETED" in items:
            view = self.store.view(self.user, name)
        values = []
        for item in items:
            if item == "MESSAGES":
                values.append(f"MESSAGES {info.total}")
            elif item == "RECENT":
                claimed = self.ctx.recent.claimed(self._key(info.name), info.uidvalidity)
                recent = len(view.uids) - bisect.bisect_right(view.uids, claimed) if self.rev1 else 0
                values.append(f"RECENT {recent}")
            elif item == "UIDNEXT":
                values.append(f"UIDNEXT {info.uidnext}")
            elif item == "UIDVALIDITY":
                values.append(f"UIDVALIDITY {info.uidvalidity}")
            elif item == "UNSEEN":
                values.append(f"UNSEEN {info.unseen}")
            elif item == "HIGHESTMODSEQ":
                values.append(f"HIGHESTMODSEQ {info.highestmodseq}")
            elif item == "SIZE":
                values.append(f"SIZE {info.size}")
            elif item == "DELETED":
                values.append(f"DELETED {view.count_deleted()}")
            elif item == "APPENDLIMIT":
                values.append(f"APPENDLIMIT {self.config.max_message_bytes}")
        self.untagged(b"STATUS " + self._wire_name(info.name) + b" (" + " ".join(values).encode() + b")")

    # ------------------------------------------------------------ APPEND

    def cmd_APPEND(self, tag, r):
        r.sp()
        name = self._mailbox_arg(r)
        messages = []
        while r.maybe(b" "):
            flags, date = [], None
            if r.peek() == b"(":
                flags = r.flag_list()
                r.sp()
            if r.peek() == b'"':
                date = r.date_time()
                r.sp()
            if r.maybe(b"CATENATE"):
                r.sp()
                messages.append((flags, date, self._catenate_parts(r), True))
            else:
                lit = r.literal()
                messages.append((flags, date, [("TEXT", lit.data)], lit.binary))
        r.end()
        if not messages:
            raise BadSyntax("APPEND needs a message")
        for flags, _date, _parts, _binary in messages:
            for flag in flags:
                if flag.startswith("\\") and flag.lower() not in {f.lower() for f in R.SYSTEM_FLAGS}:
                    raise BadSyntax(f"Unknown system flag {flag}")
        try:
            target = self.store.mailbox(self.user, name)
        except NoSuchMailbox:
            raise No(R.NO_TRYCREATE) from None
        self.ctx.recent.touch(self._key(target.name), target.uidvalidity, target.uidnext)
        built = []
        total = 0
        for flags, date, parts, binary in messages:
            raw = self._assemble(parts)
            if binary or b"\0" in raw:
                raw = mimeinfo.encode_binary_parts(raw)
            total += len(raw)
            if len(raw) > self.config.max_message_bytes or not raw:
                if not raw:
                    raise No("Empty message")
                raise No(R.NO_TOOBIG.format(limit=self.config.max_message_bytes))
            built.append((flags, date, raw))
        uids, uidvalidity = [], None
        for flags, date, raw in built:
            when, zone = date if date else (None, 0)
            if when is None:
                zone = -time.timezone // 60 if time.localtime().tm_isdst == 0 else -time.altzone // 60
            try:
                uidvalidity, uid = self.store.append(self.user, name, raw, [f for f in flags if f != "\\Recent"],
                                                     internal_date=when, internal_tz=zone)
            except TooBig:
                raise No(R.NO_TOOBIG.format(limit=self.config.max_message_bytes)) from None
            uids.append(uid)
        return f"[APPENDUID {uidvalidity} {format_set(uids) if len(uids) > 1 else uids[0]}] " + R.OK_APPEND

    def _catenate_parts(self, r) -> list:
        """CATENATE (TEXT literal / URL "url" ...) (RFC 4469 §5)."""
        r.expect(b"(")
        parts = []
        while True:
            kind = r.word()
            r.sp()
            if kind == "TEXT":
                parts.append(("TEXT", r.literal().data))
            elif kind == "URL":
                parts.append(("URL", r.astring()))
            else:
                raise BadSyntax("CATENATE parts are TEXT or URL")
            if not r.maybe(b" "):
                break
        r.expect(b")")
        return parts

    def _assemble(self, parts: list) -> bytes:
        out = []
        for kind, data in parts:
            out.append(data if kind == "TEXT" else self._resolve_url(data))
        return b"".join(out)

    _URL = re.compile(r"/(?P<box>[^;/]*(?:/[^;/]+)*?)(?:;UIDVALIDITY=(?P<uidv>\d+))?/;UID=(?P<uid>\d+)"
                      r"(?:/;SECTION=(?P<section>[^/]*))?(?:/;PARTIAL=(?P<origin>\d+)(?:\.(?P<count>\d+))?)?\Z", re.I)

    def _resolve_url(self, url: bytes) -> bytes:
        """An IMAP URL relative to this server (RFC 5092 §6, as CATENATE uses it)."""
        text = url.decode("utf-8", "replace")
        m = self._URL.match(text)
        bad = No(R.NO_BADURL.format(url=text))
        if not m:
            raise bad
        box = self._name(urllib.parse.unquote_to_bytes(m.group("box")))
        try:
            info = self.store.mailbox(self.user, box)
        except NoSuchMailbox:
            raise bad from None
        if m.group("uidv") and int(m.group("uidv")) != info.uidvalidity:
            raise bad
        raw = self.store.raw(self.user, box, int(m.group("uid")))
        if raw is None:
            raise bad
        data = raw
        if m.group("section"):
            section = _url_section(urllib.parse.unquote(m.group("section")))
            if section is None:
                raise bad
            data = mimeinfo.section_bytes(raw, section)
            if data is None:
                raise bad
        if m.group("origin"):
            origin = int(m.group("origin"))
            data = data[origin:origin + int(m.group("count"))] if m.group("count") else data[origin:]
        return data

    # ------------------------------------------------------------ IDLE

    def cmd_IDLE(self, tag, r):
        """RFC 2177: changes reach the client as they happen, until DONE."""
        r.end()
        self._write(b"+ " + R.CONTINUE_IDLE.encode() + b"\r\n")
        deadline = time.monotonic() + self.ctx.idle_timeout_seconds
        with self.ctx.watch(self.user) as waker:
            if self.selected is not None:
                self._report(allow_expunge=True)
            self.conn.flush()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.bye(R.BYE_IDLE_TIMEOUT)
                    return None
                event = self.conn.wait_for_input(waker, left)
                if event == "input":
                    line = self.conn.read_line().rstrip(b"\r\n")
                    if line.upper() != b"DONE":
                        raise Bad("Expected DONE")
                    break
                if event == "changed":
                    waker.clear()
                    if self.selected is not None:
                        self._report(allow_expunge=True)
                    self.conn.flush()
        if self.selected is not None:
            self._report(allow_expunge=True)
        return R.OK_IDLE

    # ------------------------------------------------------------ selected: simple ones

    def _report(self, allow_expunge: bool) -> None:
        """Untagged updates for changes made elsewhere; with CONTEXT=SEARCH updates the
        REMOVEFROMs go first (numbered as the client still numbers) and ADDTOs last."""
        sel = self.selected
        if sel is None:
            return
        before = list(sel.uids) if sel.updates else None
        try:
            lines = sel.refresh(self.store, self.user, self.ctx.recent, allow_expunge=allow_expunge,
                                rev1=self.rev1, condstore=self.condstore, qresync=self.qresync,
                                uid_in_fetch=False)
        except NoSuchMailbox:
            self.bye(R.BYE_MAILBOX_GONE)
            return
        removes, adds = self._search_updates(before) if before is not None else ([], [])
        for line in removes + lines + adds:
            self._write(line)
        if sel.last_new and self.notify is not None and self.notify.fetch_items:
            # RFC 5465 §5.2: MessageNew's fetch attributes for each new message
            self._send_fetch(sel.last_new, self.notify.fetch_items, uid=False)
        sel.last_new = []

    # ------------------------------------------------------------ NOTIFY (RFC 5465)

    def cmd_NOTIFY(self, tag, r):
        r.sp()
        if r.maybe(b"NONE"):
            r.end()
            self.notify = self.notify_seen = None
            self.conn.notifying(False)
            return R.OK_DONE.format(command="NOTIFY")
        r.expect(b"SET")
        try:
            spec = N.parse(r, self._name)
        except N.NotifyRefused as exc:
            raise No(f"[{exc.code}] {exc.text}") from None
        snap = N.snapshot(self.store, self.user)
        selected = self.selected.name if self.selected is not None else None
        if spec.status:
            for line in N.initial_status(spec, snap, selected, self._wire_name, self.condstore):
                self._write(line)
        self.notify, self.notify_seen = spec, snap
        self.conn.notifying(True)
        return R.OK_DONE.format(command="NOTIFY")

    def _notify_report(self) -> None:
        snap = N.snapshot(self.store, self.user)
        selected = self.selected.name if self.selected is not None else None
        for line in N.changes(self.notify, self.notify_seen, snap, selected, self._wire_name, self.condstore):
            self._write(line)
        self.notify_seen = snap

    def notify_between_commands(self) -> None:
        """Changes reported while no command is in progress (the server calls this when the
        user's mailboxes changed and NOTIFY is set)."""
        if self.notify is None or self.state not in (AUTHENTICATED, SELECTED):
            return
        if self.selected is not None and self.notify.selected_events:
            self._report(allow_expunge=self.notify.selected_immediate)
        if self.notify is not None:
            self._notify_report()

    def cmd_CHECK(self, tag, r):
        r.end()
        return R.OK_DONE.format(command="CHECK")

    def cmd_CLOSE(self, tag, r):
        r.end()
        sel = self.selected
        if not sel.readonly:
            self.store.expunge(self.user, sel.name)   # silently (RFC 9051 §6.4.1)
        self.selected = None
        self.state = AUTHENTICATED
        return R.OK_CLOSE

    def cmd_UNSELECT(self, tag, r):
        r.end()
        self.selected = None
        self.state = AUTHENTICATED
        return R.OK_DONE.format(command="UNSELECT")

    def cmd_EXPUNGE(self, tag, r, uid=False):
        sel = self.selected
        uids = None
        if uid:
            r.sp()
            uids = self._uids(r.sequence_set(), True)
        r.end()
        if sel.readonly:
            raise No(R.NO_READ_ONLY)
        self.store.expunge(self.user, sel.name, uids)
        return R.OK_EXPUNGE

    # ------------------------------------------------------------ message sets

    def _uids(self, seqset: SequenceSet, uid: bool) -> list:
        """The UIDs (ascending, present in this session's view) a sequence set names."""
        sel = self.selected
        if seqset.saved:
            if sel.saved is None:
                raise Bad(R.BAD_NO_SAVED)
            return [u for u in sel.saved if sel.seq_of(u) is not None]
        if uid:
            star = sel.max_uid()
            out = set()
            for lo, hi in seqset.bounds(star):
                i = bisect.bisect_left(sel.uids, lo)
                j = bisect.bisect_right(sel.uids, hi)
                out.update(sel.uids[i:j])
            return sorted(out)
        count = len(sel)
        if seqset.largest_explicit() > count or (count == 0 and seqset.ranges):
            raise Bad(R.BAD_SEQUENCE)
        seqs = set()
        for lo, hi in seqset.bounds(count):
            seqs.update(range(lo, hi + 1))
        return [sel.uids[s - 1] for s in sorted(seqs)]

    # ------------------------------------------------------------ FETCH

    def cmd_FETCH(self, tag, r, uid=False):
        sel = self.selected
        r.sp()
        seqset = r.sequence_set()
        r.sp()
        items = F.parse_items(r)
        modifiers = F.parse_modifiers(r)
        r.end()
        if "VANISHED" in modifiers and (not uid or not self.qresync or "CHANGEDSINCE" not in modifiers):
            raise Bad("VANISHED needs UID FETCH with CHANGEDSINCE and QRESYNC enabled")
        uids = self._uids(seqset, uid)
        plan = F.Plan(items)
        if plan.wants_modseq or "CHANGEDSINCE" in modifiers:
            self._enable_condstore()
        view = self.store.view(self.user, sel.name)
        if "CHANGEDSINCE" in modifiers:
            since = modifiers["CHANGEDSINCE"]
            if modifiers.get("VANISHED"):
                expunged, _ = self.store.changes(self.user, sel.name, since)
                if expunged:
                    # "*" here reaches the highest UID ever given, so a client asking 1:*
                    # hears of messages above today's last one too (RFC 7162 §3.2.6)
                    gone = [u for u in expunged if seqset.contains(u, max(sel.max_uid(), view.uidnext - 1))]
                    if gone:
                        self.untagged(b"VANISHED (EARLIER) " + format_set(gone).encode())
            uids = [u for u in uids if (view.index_of(u) is not None and view.modseq(view.index_of(u)) > since)]
            plan.force_modseq = True   # RFC 7162 §3.1.4.1: CHANGEDSINCE answers with MODSEQ
        seen_now = set()
        if plan.sets_seen and not sel.readonly:
            unseen = [u for u in uids if view.index_of(u) is not None and "\\Seen" not in view.flags(view.index_of(u))]
            if unseen:
                changed, _ = self.store.set_flags(self.user, sel.name, unseen, "add", ["\\Seen"])
                seen_now = set(changed)
                for u, (_f, ms) in changed.items():
                    sel.told[u] = ms
                view = self.store.view(self.user, sel.name)
        missing = self._send_fetch(uids, items, uid, plan=plan, view=view, seen_now=seen_now)
        if missing and not uid:
            raise No(R.NO_EXPUNGEISSUED)
        return R.OK_DONE.format(command="UID FETCH" if uid else "FETCH")

    def _send_fetch(self, uids, items, uid, plan=None, view=None, seen_now=frozenset()) -> bool:
        """`* n FETCH` for these messages; True if some were no longer there."""
        sel = self.selected
        plan = plan or F.Plan(items)
        view = view or self.store.view(self.user, sel.name)
        missing = False
        flag_texts = {}   # (flag mask, recent) -> (flags, their text): most messages share a few
        names = {i.name for i in items}
        vi = si = -2   # positions in the view and the session's list; UIDs mostly run in step
        view_uids, session_uids = view.uids, sel.uids
        for start in range(0, len(uids), FETCH_BATCH):
            batch = uids[start:start + FETCH_BATCH]
            infos = {}
            if plan.needs_info:
                infos = {i.uid: i for i in self.store.messages(self.user, sel.name, batch)}
            for u in batch:
                vi = vi + 1 if 0 <= vi + 1 < len(view_uids) and view_uids[vi + 1] == u else _position(view_uids, u)
                si = si + 1 if 0 <= si + 1 < len(session_uids) and session_uids[si + 1] == u else _position(session_uids, u)
                info = infos.get(u)
                seq = si + 1
                if vi < 0 or si < 0 or (plan.needs_info and info is None):
                    missing = True
                    continue
                raw = None
                if plan.needs_raw:
                    raw = self.store.raw(self.user, sel.name, u)
                    if raw is None:
                        missing = True
                        continue
                key = (view.flag_mask(vi), self.rev1 and sel.is_recent(u))
                cached = flag_texts.get(key)
                if cached is None:
                    flags = view.flags(vi)
                    cached = flag_texts[key] = (flags, format_flags(flags, key[1]))
                flags, flags_text = cached
                msg = F.Message(u, flags, view.modseq(vi), view.size(vi), view.internal_date(vi), info, raw)
                data = F.render(items, msg, flags_text, uid, u in seen_now,
                                plan.force_modseq or (self.condstore and u in seen_now), names)
                if plan.wants_flags or u in seen_now:
                    sel.told[u] = max(sel.told.get(u, 0), view.modseq(vi))
                self._write(b"* %d FETCH " % seq + data + b"\r\n")
        return missing

    # ------------------------------------------------------------ STORE

    def cmd_STORE(self, tag, r, uid=False):
        sel = self.selected
        r.sp()
        seqset = r.sequence_set()
        r.sp()
        unchanged_since = None
        if r.maybe(b"("):
            r.expect(b"UNCHANGEDSINCE")
            r.sp()
            unchanged_since = r.number(2 ** 63 - 1)
            r.expect(b")")
            r.sp()
            self._enable_condstore()
        word = r.word()
        m = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", word)
        if not m:
            raise BadSyntax("Expected FLAGS, +FLAGS or -FLAGS")
        mode = {"": "replace", "+": "add", "-": "remove"}[m.group(1)]
        silent = bool(m.group(2))
        r.sp()
        flags = r.flag_list(allow_bare=True)
        r.end()
        for flag in flags:
            if flag.startswith("\\") and flag.lower() not in {f.lower() for f in R.SYSTEM_FLAGS + ("\\Recent",)}:
                raise BadSyntax(f"Unknown system flag {flag}")
        flags = [f for f in flags if f.lower() != "\\recent"]
        uids = self._uids(seqset, uid)
        if sel.readonly:
            raise No(R.NO_READ_ONLY)
        changed, failed = self.store.set_flags(self.user, sel.name, uids, mode, flags, unchanged_since)
        view = self.store.view(self.user, sel.name)
        if tuple(view.keywords) != sel.keywords:
            sel.keywords = tuple(view.keywords)
            for line in flags_lines(sel.keywords):
                self._write(line)
        failed_set = set(failed)
        for u in uids:
            if u in failed_set:
                continue
            vi = view.index_of(u)
            if vi is None:
                continue
            was_changed = u in changed
            if silent and not (was_changed and self.condstore):
                continue
            items = []
            if not silent:
                items.append(b"FLAGS " + format_flags(view.flags(vi), self.rev1 and sel.is_recent(u)))
            if uid or self.qresync:
                items.append(b"UID %d" % u)
            if self.condstore:
                items.append(b"MODSEQ (%d)" % view.modseq(vi))
            sel.told[u] = max(sel.told.get(u, 0), view.modseq(vi))
            self._write(b"* %d FETCH (" % sel.seq_of(u) + b" ".join(items) + b")\r\n")
        if failed:
            numbers = sorted(failed) if uid else sorted(sel.seq_of(u) for u in failed)
            return f"[MODIFIED {format_set(numbers)}] " + R.OK_STORE_MODIFIED
        return R.OK_DONE.format(command="UID STORE" if uid else "STORE")

    # ------------------------------------------------------------ COPY and MOVE

    def cmd_COPY(self, tag, r, uid=False, move=False):
        sel = self.selected
        r.sp()
        seqset = r.sequence_set()
        r.sp()
        dest = self._mailbox_arg(r)
        r.end()
        uids = self._uids(seqset, uid)
        try:
            info = self.store.mailbox(self.user, dest)
        except NoSuchMailbox:
            raise No(R.NO_TRYCREATE) from None
        self.ctx.recent.touch(self._key(info.name), info.uidvalidity, info.uidnext)
        if move and sel.readonly:
            raise No(R.NO_READ_ONLY)
        if not uids:
            return (R.OK_MOVE if move else R.OK_COPY)
        operation = self.store.move if move else self.store.copy
        uidvalidity, pairs = operation(self.user, sel.name, uids, dest)
        if not pairs:
            return (R.OK_MOVE if move else R.OK_COPY)
        code = f"[COPYUID {uidvalidity} {format_set([s for s, _ in pairs])} {format_set([d for _, d in pairs])}]"
        if move:   # RFC 6851 §4.3: COPYUID untagged before the expunges
            self.untagged(f"OK {code} Moved")
            return R.OK_MOVE
        return f"{code} " + R.OK_COPY

    def cmd_MOVE(self, tag, r, uid=False):
        return self.cmd_COPY(tag, r, uid, move=True)

    # ------------------------------------------------------------ SEARCH, SORT, THREAD

    def _charset(self, r) -> None:
        charset = r.astring().decode("ascii", "replace").upper()
        if charset not in ("US-ASCII", "UTF-8"):
            raise No(R.NO_BAD_CHARSET)

    def _run_search(self, key, view=None) -> list:
        """UIDs matching `key`, in sequence order."""
        sel = self.selected
        view = view or self.store.view(self.user, sel.name)
        source = _Source(self, view)
        positions = S.Matcher(source, sel.uids).matches(key)
        return [sel.uids[p] for p in positions]

    def cmd_SEARCH(self, tag, r, uid=False):
        sel = self.selected
        r.sp()
        options, partial, esearch = None, None, False
        if r.maybe(b"RETURN "):
            options, partial = S.parse_return(r)
            esearch = True
            r.sp()
        if r.maybe(b"CHARSET "):
            self._charset(r)
            r.sp()
        key = S.parse_keys(r)
        if S.uses_modseq(key):
            self._enable_condstore()
        view = self.store.view(self.user, sel.name)
        uids = self._run_search(key, view)
        modseq = None
        if S.uses_modseq(key) and uids:
            # RFC 4731 §3.2: the highest MODSEQ of the messages the response returns
            returned = uids
            if esearch and not options & {"ALL", "COUNT", "PARTIAL"}:
                returned = [u for u in (uids[0] if "MIN" in options else None,
                                        uids[-1] if "MAX" in options else None) if u is not None] or uids
            modseq = max(view.modseq(view.index_of(u)) for u in returned)
        numbers = uids if uid else [sel.seq_of(u) for u in uids]
        if not esearch and not self.rev1:
            esearch, options = True, {"ALL"}
        if not esearch:
            line = b"SEARCH" + b"".join(b" %d" % n for n in numbers)
            if modseq is not None:
                line += b" (MODSEQ %d)" % modseq
            self.untagged(line)
            return R.OK_DONE.format(command="UID SEARCH" if uid else "SEARCH")
        if "SAVE" in options:
            if "PARTIAL" in options:
                lo, hi = partial
                sel.saved = sorted(uids[lo - 1:hi])
            elif options & {"MIN", "MAX"} and "ALL" not in options and "COUNT" not in options:
                chosen = set()
                if uids and "MIN" in options:
                    chosen.add(uids[0])
                if uids and "MAX" in options:
                    chosen.add(uids[-1])
                sel.saved = sorted(chosen)
            else:
                sel.saved = list(uids)
        shown = options - {"SAVE", "UPDATE", "CONTEXT"}
        if "UPDATE" in options:
            if len(sel.updates) >= MAX_UPDATES:
                raise No(R.NO_TOO_MANY_UPDATES.format(tag=tag.decode("ascii", "replace")))
            sel.updates[tag] = {"key": key, "uid": uid, "result": list(uids)}
        if options != {"SAVE"}:   # RFC 5182 §2.1: SAVE alone gives no ESEARCH
            self._write(S.esearch_response(tag, uid, shown, numbers, partial, modseq))
        return R.OK_DONE.format(command="UID SEARCH" if uid else "SEARCH")

    def cmd_CANCELUPDATE(self, tag, r):
        """RFC 5267 §4.3: stop the updates of these searches."""
        tags = []
        while r.maybe(b" "):
            tags.append(r.string())
        r.end()
        if not tags:
            raise BadSyntax("CANCELUPDATE needs a tag")
        for t in tags:
            self.selected.updates.pop(t, None)
        return R.OK_DONE.format(command="CANCELUPDATE")

    def _search_updates(self, before: list) -> tuple:
        """ADDTO/REMOVEFROM lines for searches with RETURN (UPDATE) (RFC 5267 §4.4): removals
        numbered by `before` (the sequence the client had), additions by the current one."""
        sel = self.selected
        removes, adds = [], []
        view = self.store.view(self.user, sel.name)
        for tag, search in sel.updates.items():
            current = self._run_search(search["key"], view)
            old, now = set(search["result"]), set(current)
            removed, added = sorted(old - now), sorted(now - old)
            prefix = b"* ESEARCH (TAG " + _quote(tag) + b")" + (b" UID" if search["uid"] else b"")
            if removed:
                numbers = removed if search["uid"] else [bisect.bisect_left(before, u) + 1 for u in removed
                                                         if u in old]
                removes.append(prefix + b" REMOVEFROM (0 " + format_set(sorted(numbers)).encode() + b")\r\n")
            if added:
                numbers = added if search["uid"] else [sel.seq_of(u) for u in added]
                adds.append(prefix + b" ADDTO (0 " + format_set(sorted(numbers)).encode() + b")\r\n")
            search["result"] = current
        return removes, adds

    def _facts(self, uids: list, view) -> list:
        sel = self.selected
        source = _Source(self, view)
        infos = {i.uid: i for i in self.store.messages(self.user, sel.name, uids)}
        out = []
        for u in uids:
            vi = view.index_of(u)
            if vi is None or u not in infos:
                continue
            fields = source.header_fields(u) or []
            out.append(SORT.Facts(sel.seq_of(u), u, view.size(vi), infos[u].internal_date, fields))
        return out

    def cmd_SORT(self, tag, r, uid=False):
        sel = self.selected
        r.sp()
        options, partial, esearch = None, None, False
        if r.maybe(b"RETURN "):
            options, partial = S.parse_return(r)
            if options & {"UPDATE", "CONTEXT"}:
                raise Bad("SORT does not take UPDATE")
            if "PARTIAL" in options:
                raise Bad("SORT does not take PARTIAL")
            esearch = True
            r.sp()
        criteria = SORT.parse_criteria(r)
        r.sp()
        ordered = SORT.sort(self._charset_and_search(r, sel), criteria)
        numbers = [f.uid if uid else f.seq for f in ordered]
        if esearch:
            if "SAVE" in options:
                sel.saved = sorted(f.uid for f in ordered)
            shown = options - {"SAVE"}
            if shown:
                self._write(_esort_response(tag, uid, shown, numbers))
        else:
            self.untagged(b"SORT" + b"".join(b" %d" % n for n in numbers))
        return R.OK_DONE.format(command="UID SORT" if uid else "SORT")

    def _charset_and_search(self, r, sel) -> list:
        """The `charset SP search-key` tail that SORT and THREAD share (RFC 5256 §3): the
        facts of the selected mailbox's messages that match."""
        self._charset(r)
        r.sp()
        key = S.parse_keys(r)
        view = self.store.view(self.user, sel.name)
        return self._facts(self._run_search(key, view), view)

    def cmd_THREAD(self, tag, r, uid=False):
        sel = self.selected
        r.sp()
        algorithm = r.word()
        if algorithm not in SORT.THREAD_ALGORITHMS:
            raise BadSyntax(f"Unknown THREAD algorithm {algorithm}")
        r.sp()
        roots = SORT.thread(self._charset_and_search(r, sel), algorithm)
        line = SORT.format_threads(roots, (lambda f: f.uid) if uid else (lambda f: f.seq))
        self.untagged(b"THREAD " + line if line else b"THREAD")
        return R.OK_DONE.format(command="UID THREAD" if uid else "THREAD")


def _position(uids, uid: int) -> int:
    """The position of `uid` in an ascending array of UIDs, or -2 when it is not there."""
    i = bisect.bisect_left(uids, uid)
    return i if i < len(uids) and uids[i] == uid else -2


def _esort_response(tag: bytes, uid: bool, options: set, numbers: list) -> bytes:
    """ESEARCH for SORT RETURN (RFC 5267 §3): MIN/MAX by sort order, ALL in sort order."""
    from .parser import format_set_ordered
    out = [b"* ESEARCH (TAG " + _quote(tag) + b")"]
    if uid:
        out.append(b"UID")
    if numbers:
        if "MIN" in options:
            out.append(b"MIN %d" % numbers[0])
        if "MAX" in options:
            out.append(b"MAX %d" % numbers[-1])
        if "ALL" in options:
            out.append(b"ALL " + format_set_ordered(numbers).encode())
    if "COUNT" in options:
        out.append(b"COUNT %d" % len(numbers))
    return b" ".join(out) + b"\r\n"


def _url_section(text: str):
    """An IMAP URL section ("HEADER", "1.MIME", "HEADER.FIELDS (A B)") as a Section."""
    from .parser import CommandReader
    try:
        reader = CommandReader([text.encode() + b"]"])
        section, _label = F._section_spec(reader, False)
        reader.end()
        return section
    except BadSyntax:
        return None


__all__ = ["Session", "Literal"]
