"""Messages as the web app and the API see them: by message id, across a user's mailboxes.

Sending (direct and external), receiving, listing a mailbox, reading, threads, search,
read/star/move/junk/archive, Trash and drafts. Every change goes through
`mailstore.MailStore`, so IMAP sees the same mailboxes, flags and messages.

A message is stored once; each user who can see it has an entry in one (or, after an IMAP
COPY, several) of their mailboxes. An API id names the message, so `GET /api/mail/<id>`
shows it from whichever of the caller's mailboxes hold it, and `DELETE` removes it from all
of them: never from anyone else's.
"""

import datetime
import random
import secrets
import threading
import time

from . import addr, compose, outbox, records as recordmod
from .accounts import NotFound as UserNotFound, normalize_name
from .folders import DEFAULT_MAILBOXES, DELIMITER, DRAFT, FLAGGED, SEEN, positions_of
from .mailstore import MailboxExists, MailStore, MailStoreError, NoSuchMailbox, valid_mailbox_name
from .records import MAX_SUBJECT_CHARS

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAILER_DAEMON = "MAILER-DAEMON"
CONVERSATION_WINDOW = 5000   # entries looked at to group one page of conversations
MAX_BATCH_IDS = 1000         # messages one batch action may name
LOCATE_ONE_BY_ONE_IDS = 8    # up to this many ids, each is looked for on its own
FOLDER_ORDER = ("INBOX", "Drafts", "Sent", "Archive", "Junk", "Trash")
EMPTYABLE_FOLDERS = ("Trash", "Junk")
BATCH_ACTIONS = ("read", "unread", "flag", "unflag", "move", "archive", "junk", "trash", "delete")


class MailError(ValueError):
    """Bad input to a mail operation; `status` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class MessageNotFound(MailError):
    def __init__(self):
        super().__init__("message not found", 404)


class FolderNotFound(MailError):
    def __init__(self, name: str):
        super().__init__(f"no such folder: {name}", 404)


_id_lock = threading.Lock()
_last_id = [0]
_id_suffix = random.Random(secrets.randbits(64))


def new_id() -> str:
    """20 hex digits: microseconds since the epoch, then 16 bits telling processes apart;
    ids sort by time. For queue entries (messages get theirs inside the commit)."""
    with _id_lock:
        now = max(time.time_ns() // 1000, _last_id[0] + 1)
        _last_id[0] = now
        suffix = _id_suffix.getrandbits(16)
    return f"{now:016x}{suffix:04x}"


def rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


# The API's names for the two folders it always had.
_API_FOLDER_NAMES = {"inbox": "INBOX", "sent": "Sent"}


class Mailbox:
    def __init__(self, store, config, accounts, mailstore: MailStore = None):
        self.store = store
        self.config = config
        self.accounts = accounts
        self.mailstore = mailstore or MailStore(store, config)

    # ------------------------------------------------------------ addressing

    def local_user_for(self, address: str, state) -> list:
        """Users an address at MAIL_DOMAIN delivers to ([] if none); postmaster/abuse reach admins."""
        try:
            local, domain = addr.parse(address)
        except addr.AddressError:
            return []
        if domain != self.config.domain:
            return []
        name = addr.base_local(local)
        if name in ("postmaster", "abuse"):  # RFC 5321 §4.5.1, RFC 2142
            return sorted(n for n, u in state.users.items() if u["role"] == "admin" and not u.get("disabled"))
        user = state.users.get(name)
        return [name] if user and not user.get("disabled") else []

    def resolve_recipients(self, to, state) -> tuple:
        """(local usernames, external addresses) for a To field; MailError for bad entries."""
        items = to if isinstance(to, list) else str(to or "").split(",")
        # ASCII blanks only: str.strip() would also remove U+2028, U+0085 and the like, and
        # an address carrying them must be refused, not quietly repaired.
        items = [str(i).strip(" \t\r\n") for i in items if str(i).strip(" \t\r\n")]
        if not items:
            raise MailError("no recipient: 'to' is empty")
        local, external = [], []
        for item in items:
            if "@" not in item:
                name = normalize_name(item)
                user = state.users.get(name)
                if not user or user.get("disabled"):
                    raise MailError(f"unknown recipient: {item}")
                targets = [name]
            else:
                try:
                    local_part, domain = addr.parse(item)
                except addr.AddressError as exc:
                    raise MailError(f"invalid address {item!r}: {exc}") from None
                if domain == self.config.domain:
                    targets = self.local_user_for(item, state)
                    if not targets:
                        raise MailError(f"unknown recipient: {item}")
                else:
                    targets = None
                    address = f"{local_part}@{domain}"
                    if address.lower() not in (e.lower() for e in external):
                        external.append(address)
            for name in targets or []:
                if name not in local:
                    local.append(name)
        if len(local) + len(external) > self.config.max_recipients:
            raise MailError(f"too many recipients (at most {self.config.max_recipients})")
        return local, external

    def address_of(self, username: str) -> str:
        return f"{username}@{self.config.domain}"

    # ------------------------------------------------------------ locating

    def _folder(self, state, user: str, folder: str):
        um = state.mail.get(user)
        name = _API_FOLDER_NAMES.get((folder or "inbox").lower(), folder or "INBOX")
        box = um.find(name) if um else None
        if box is None:
            raise FolderNotFound(folder)
        return box

    def _locate(self, state, user: str, msg_id: str) -> tuple:
        """(message number, [(box, position)] of the user's entries); MessageNotFound if the
        user has none."""
        n = state.messages.number_of(str(msg_id))
        if n is None:
            raise MessageNotFound()
        entries = self.mailstore.entries_of(state, user, n)
        if not entries:
            raise MessageNotFound()
        return n, entries

    @staticmethod
    def _primary(entries):
        """The entry a view shows: INBOX first, then whatever comes first."""
        for box, i in entries:
            if box.name == "INBOX":
                return box, i
        return entries[0]

    # ------------------------------------------------------------ sending

    def send(self, sender: str, to, subject: str, body: str, reply_to: str = None,
             attachments=(), draft_id: str = None) -> dict:
        """Store a message from a local user; queue external recipients (charging credits)."""
        subject = subject if isinstance(subject, str) else ""
        body = body if isinstance(body, str) else ""
        if len(subject) > MAX_SUBJECT_CHARS:
            raise MailError(f"subject longer than {MAX_SUBJECT_CHARS} characters")
        subject = compose.clean_header_text(subject)
        size = len(body.encode("utf-8")) + sum(len(a[2]) for a in attachments)
        if size > self.config.max_message_bytes:
            raise MailError(f"message larger than {self.config.max_message_bytes} bytes", 413)
        with self.store.reading() as state:
            local, external = self.resolve_recipients(to, state)
            parent = None
            if reply_to:
                pn, _entries = self._locate(state, sender, reply_to)
                parent = (pn, state.messages.thread[pn])
        parent_record = self.store.meta_record(parent[0]) if parent else None
        now = time.time()
        message_id = compose.new_message_id(self.config.domain)
        if parent and not subject:
            ps = parent_record.get("subject", "")
            subject = ps if ps.lower().startswith("re:") else "Re: " + ps
        references = []
        if parent:
            references = list(parent_record.get("references") or [])
            if parent_record.get("message_id"):
                references.append(parent_record["message_id"])
        in_reply_to = parent_record.get("message_id", "") if parent else ""
        from_addr = self.address_of(sender)
        raw = compose.build(from_name=sender, from_addr=from_addr,
                            to=[self.address_of(u) for u in local] + external, subject=subject, body=body,
                            message_id=message_id, date=now, in_reply_to=in_reply_to,
                            references=references[-20:], attachments=attachments)
        record = {"kind": "outbound" if external else "internal", "from": sender, "from_addr": from_addr,
                  "from_name": sender, "to": local + external, "subject": subject, "created_at": now,
                  "message_id": message_id, "in_reply_to": in_reply_to, "references": references[-20:],
                  "owners": sorted(set(local) | {sender}), "attachments": []}
        new = recordmod.NewMessage(record, raw)
        new.set_body(body)
        new.add_attachments(attachments)
        new.describe_for_imap()
        draft = self._draft_entries(sender, draft_id, "draft_id") if draft_id else None

        def expunge_draft(state):
            records = []
            for box_name, uid in draft or ():
                box = state.mailbox(sender, box_name)
                if box is not None and box.index_of(uid) is not None:
                    records.append({"op": "mail.expunge", "user": sender, "box": box_name, "uids": str(uid),
                                    "modseq": box.highestmodseq + 1})
            return records

        result = self._store_sent(sender, local, external, new, now, thread=parent[1] if parent else None,
                                  more_records=expunge_draft)
        return self.get(sender, result["id"], mark_read=False)

    def submit(self, sender: str, local: list, external: list, raw: bytes, parsed: dict) -> str:
        """Store a message a user's mail client submitted (RFC 6409), as it is: in the
        sender's Sent, local recipients' INBOX, and queued for `external` addresses with
        their credits charged, all in one commit, exactly as `send` does. `parsed` is
        `mime.parse(raw)`; the API record shows the To and Cc headers (never the envelope,
        which holds Bcc recipients). Returns the message id once durable; MailError (402)
        when the credits do not cover it."""
        now = time.time()
        from_addr = self.address_of(sender)
        record = {"kind": "outbound" if external else "internal", "from": sender, "from_addr": from_addr,
                  "from_name": parsed["from_name"] or sender, "to": parsed["to"] + parsed["cc"],
                  "subject": parsed["subject"][:MAX_SUBJECT_CHARS], "created_at": now,
                  "message_id": parsed["message_id"], "in_reply_to": parsed["in_reply_to"],
                  "references": parsed["references"][-20:], "owners": sorted(set(local) | {sender}),
                  "attachments": []}
        new = recordmod.NewMessage(record, raw)
        new.set_body(parsed["text"], parsed["html"])
        new.add_attachments(parsed["attachments"])
        new.describe_for_imap()
        thread = self._thread_for(record["owners"], [parsed["in_reply_to"]] + list(reversed(parsed["references"])))
        return self._store_sent(sender, local, external, new, now, thread=thread)["id"]

    def _store_sent(self, sender: str, local: list, external: list, new, now: float, thread=None,
                    more_records=None) -> dict:
        """The one commit of a message a local user sends: the sender's Sent copy (once),
        each local recipient's INBOX entry, and for external recipients the credit charge
        (CREDIT_COST_EMAIL per message) and the queue entries. MailError (402) when the
        balance is short, checked inside the commit."""
        cost = self.config.credit_cost_email if external else 0
        if external:
            new.record.update(outbox.message_fields(external, cost))
        entries = [(sender, "Sent", ["\\Seen"], now, 0)]
        for name in local:   # a note to self also lands in the inbox
            entries.append((name, "INBOX", [], now, 0))
        from_addr = self.address_of(sender)

        def before(state):
            user = state.users.get(sender)
            if user is None:
                raise UserNotFound(f"no such user: {sender}")
            if cost and user["credits"] < cost:
                raise MailError(f"not enough credits: external mail costs {cost}, "
                                f"balance is {user['credits']}", 402)

        def extra(state, n, msg_id):
            records = []
            if cost:
                records.append(outbox.charge_record(sender, cost))
            records += outbox.entry_records(msg_id, sender, from_addr, external, now, new_id)
            if more_records is not None:
                records += more_records(state)
            return records

        return self.store_message(new, entries, thread=thread, before=before, extra_records=extra)

    def save_draft(self, user: str, to: str, subject: str, body: str, attachments=(), replace: str = None,
                   reply_to: str = None) -> dict:
        """Keep an unsent message in Drafts (`\\Draft`); `replace` is the draft it supersedes,
        `reply_to` the message it answers (kept for when it is sent)."""
        subject = compose.clean_header_text(subject if isinstance(subject, str) else "")[:MAX_SUBJECT_CHARS]
        body = body if isinstance(body, str) else ""
        now = time.time()
        message_id = compose.new_message_id(self.config.domain)
        items = to if isinstance(to, list) else str(to or "").split(",")
        recipients = [str(t).strip() for t in items if str(t).strip()]
        in_reply_to, references = "", []
        if reply_to:
            with self.store.reading() as state:
                try:
                    pn, _entries = self._locate(state, user, reply_to)
                except MessageNotFound:
                    raise MailError("reply_to: no such message") from None
            parent = self.store.meta_record(pn)
            in_reply_to = parent.get("message_id", "")
            references = (list(parent.get("references") or []) + [in_reply_to] if in_reply_to else [])[-20:]
        old = self._draft_entries(user, replace, "replace") if replace else []
        raw = compose.build(from_name=user, from_addr=self.address_of(user),
                            to=[r if "@" in r else self.address_of(r) for r in recipients], subject=subject,
                            body=body, message_id=message_id, date=now, in_reply_to=in_reply_to,
                            references=references, attachments=attachments)
        record = {"kind": "draft", "from": user, "from_addr": self.address_of(user), "from_name": user,
                  "to": recipients, "subject": subject, "created_at": now, "message_id": message_id,
                  "in_reply_to": in_reply_to, "references": references, "owners": [user], "attachments": []}
        if reply_to:
            record["draft_reply_to"] = str(reply_to)
        new = recordmod.NewMessage(record, raw)
        new.set_body(body)
        new.add_attachments(attachments)
        new.describe_for_imap()

        def extra(state, n, msg_id):
            out = []
            for box_name, uid in old:
                box = state.mailbox(user, box_name)
                if box is not None and box.index_of(uid) is not None:
                    out.append({"op": "mail.expunge", "user": user, "box": box_name, "uids": str(uid),
                                "modseq": box.highestmodseq + 1})
            return out

        result = self.store_message(new, [(user, "Drafts", ["\\Draft", "\\Seen"], now, 0)], extra_records=extra)
        return self.get(user, result["id"], mark_read=False)

    def _draft_entries(self, user: str, draft_id: str, field: str) -> list:
        """[(mailbox name, uid)] of the user's draft entries of a message; MailError (400,
        naming `field`) when the user has no such draft."""
        with self.store.reading() as state:
            try:
                _n, entries = self._locate(state, user, draft_id)
            except MessageNotFound:
                entries = []
            found = [(box.name, box.uids[i]) for box, i in entries if box.flags[i] & DRAFT]
        if not found:
            raise MailError(f"{field}: no such draft")
        return found

    def store_message(self, new, entries, thread=None, before=None, extra_records=None) -> dict:
        try:
            return self.mailstore.store_message(
                new, entries, thread_of=(lambda state, n: thread) if thread is not None else None,
                before=before, extra_records=extra_records)
        except MailStoreError as exc:
            raise MailError(exc.text) from None

    def deliver_inbound(self, users: list, parsed: dict, raw_with_trace: bytes, extra: dict,
                        folder: str = "INBOX") -> str:
        """Store a received message in each user's inbox (or `folder`); return its id once
        durable. A DMARC quarantine verdict puts it in Junk."""
        build, blobs, metas = self.inbound_commit(users, parsed, raw_with_trace, extra, folder)
        return self.store.commit(build, blobs, metas)

    def inbound_commit(self, users: list, parsed: dict, raw_with_trace: bytes, extra: dict,
                       folder: str = "INBOX") -> tuple:
        """(build, blobs, metas) for `store.commit` that store a received message, for a caller
        that commits it together with records of its own (a bounce is written in the same
        commit as the failure it reports); the build's result is the message's id."""
        extra = dict(extra)
        kind = extra.pop("kind", "inbound")
        if (extra.get("auth") or {}).get("dmarc_disposition") == "quarantine":
            folder = "Junk"
        now = time.time()
        new = recordmod.from_parsed(parsed, raw_with_trace, kind, users, now, extra)
        thread = self._thread_for(users, [parsed["in_reply_to"]] + list(reversed(parsed["references"])))
        build, blobs, metas = self.mailstore.message_commit(
            [(new, [(u, folder, [], now, 0) for u in users])],
            thread_of=(lambda state, n: thread) if thread is not None else None)

        def build_one(state, written):
            records, results = build(state, written)
            return records, results[0]["id"]

        return build_one, blobs, metas

    def _thread_for(self, users, message_ids):
        """The thread of the first of these Message-IDs that one of `users` has, or None."""
        from .state import message_id_hash
        for mid in message_ids:
            if not mid:
                continue
            with self.store.reading() as state:
                candidates = state.messages.by_message_id.lookup(message_id_hash(mid))
                threads = {n: state.messages.thread[n] for n in candidates}
            for n in reversed(candidates):
                record = self.store.meta_record(n)
                if record.get("message_id") == mid and set(record.get("owners", ())) & set(users):
                    return threads[n]
        return None

    # ------------------------------------------------------------ reading

    def folders(self, user: str) -> list:
        """The user's mailboxes: the defaults in the order mail clients show them, then the
        user's own by name, each level compared in turn (so "A/b" follows "A", not "A-z")."""
        def order(box):
            rank = FOLDER_ORDER.index(box.name) if box.name in FOLDER_ORDER else len(FOLDER_ORDER)
            return rank, [level.lower() for level in box.name.split(DELIMITER)], box.name

        with self.store.reading() as state:
            um = state.mail.get(user)
            boxes = sorted(um.boxes.values(), key=order) if um else []
            return [{"name": b.name, "special_use": b.special_use, "total": len(b), "unread": b.unseen}
                    for b in boxes]

    def folder(self, user: str, name: str) -> dict:
        """One entry of `folders`, found as `GET /api/mail?folder=` finds it."""
        with self.store.reading() as state:
            found = self._folder(state, user, name).name
        return next(f for f in self.folders(user) if f["name"] == found)

    # A user's own folders can be made, renamed and deleted; INBOX and the special-use
    # mailboxes are always there (403 for trying), as IMAP clients expect them to be.

    def create_folder(self, user: str, name: str) -> dict:
        """Create a folder, and the folders above it that are missing (RFC 9051 §6.3.4)."""
        try:
            valid_mailbox_name(name)
            levels = name.split(DELIMITER)
            for depth in range(1, len(levels)):
                with self.store.reading() as state:
                    missing = state.mailbox(user, DELIMITER.join(levels[:depth])) is None
                if missing:
                    try:
                        self.mailstore.create_mailbox(user, DELIMITER.join(levels[:depth]))
                    except MailboxExists:
                        pass   # made meanwhile
            info = self.mailstore.create_mailbox(user, name)
        except MailboxExists as exc:
            raise MailError(exc.text, 400) from None
        except MailStoreError as exc:
            raise MailError(exc.text) from None
        return self.folder(user, info.name)

    def _own_folder(self, state, user: str, name: str):
        box = state.mailbox(user, name)
        if box is None:
            raise FolderNotFound(name)
        if box.name in DEFAULT_MAILBOXES:
            raise MailError(f"{box.name} is one of the folders every account has; it cannot be "
                            f"renamed or deleted", 403)
        return box

    def rename_folder(self, user: str, name: str, new: str) -> dict:
        """Rename a folder and the folders under it ("A" to "B" makes "A/x" "B/x")."""
        with self.store.reading() as state:
            old = self._own_folder(state, user, name).name
        try:
            self.mailstore.rename_mailbox(user, old, new)
        except MailboxExists as exc:
            raise MailError(exc.text, 400) from None
        except NoSuchMailbox:
            raise FolderNotFound(name) from None
        except MailStoreError as exc:
            raise MailError(exc.text) from None
        return self.folder(user, new)

    def subfolders(self, user: str, name: str) -> list:
        """Names of the folders under `name` ("A/x", "A/x/y" under "A")."""
        with self.store.reading() as state:
            um = state.mail.get(user)
            return sorted(key for key in (um.boxes if um else ()) if key.startswith(name + DELIMITER))

    def delete_folder(self, user: str, name: str) -> int:
        """Delete a folder and the folders under it. Their messages go to Trash, except those
        the user also has in another folder; returns how many went to Trash."""
        with self.store.reading() as state:
            box = self._own_folder(state, user, name)
            um = state.mail[user]
            doomed = [b for key, b in um.boxes.items() if key == box.name or key.startswith(box.name + DELIMITER)]
            doomed_names = {b.name for b in doomed}
            kept = set()   # message numbers that stay (elsewhere, or already bound for Trash)
            for b in um.boxes.values():
                if b.name not in doomed_names:
                    kept.update(b.msgs)
            plan = []
            for b in doomed:
                uids = []
                for i, n in enumerate(b.msgs):
                    if n not in kept:
                        kept.add(n)
                        uids.append(b.uids[i])
                plan.append((b.name, uids))
        moved = 0
        for box_name, uids in plan:
            if uids:
                moved += len(self.mailstore.move(user, box_name, uids, "Trash")[1])
        for box_name in sorted(doomed_names, key=len, reverse=True):   # the deepest first
            try:
                self.mailstore.delete_mailbox(user, box_name)
            except NoSuchMailbox:
                pass   # deleted meanwhile (by an IMAP client)
        return moved

    def list(self, user: str, folder: str = "inbox", limit: int = DEFAULT_PAGE, before: str = None,
             with_body: bool = False) -> tuple:
        """(newest-first page of message views, unread count of the whole folder)."""
        limit = max(1, min(int(limit), MAX_PAGE))
        with self.store.reading() as state:
            box = self._folder(state, user, folder)
            end = len(box)
            if before:
                n = state.messages.number_of(str(before))
                found = positions_of(box.msgs, n) if n is not None else []
                if not found:
                    raise MailError(f"before: no message {before} in this folder", 400)
                end = found[0]
            picks = [self._pick(state, box, i) for i in range(end - 1, max(-1, end - 1 - limit), -1)]
            unread = box.unseen
        return [self._view_of(p, with_body) for p in picks], unread

    def _pick(self, state, box, i) -> tuple:
        """What a view needs from the index, taken under the lock."""
        n = box.msgs[i]
        return (n, state.messages.id_of(n), state.messages.id_of(state.messages.thread[n]),
                box.name, box.flags[i], box.dates[i])

    def _view_of(self, pick, with_body: bool, folders=None) -> dict:
        n, msg_id, thread_id, box_name, mask, _date = pick
        record = self.store.meta_record(n)
        return self.view(record, n, msg_id, thread_id, box_name, mask, with_body=with_body, folders=folders)

    def conversations(self, user: str, folder: str = "inbox", limit: int = DEFAULT_PAGE, before: str = None) -> list:
        """The folder grouped by thread, newest thread first: each entry is the thread's newest
        message in the folder, with `count` (its messages in the folder, among the newest
        CONVERSATION_WINDOW) and `unread_count`."""
        limit = max(1, min(int(limit), MAX_PAGE))
        with self.store.reading() as state:
            box = self._folder(state, user, folder)
            end = len(box)
            if before:
                n = state.messages.number_of(str(before))
                found = positions_of(box.msgs, n) if n is not None else []
                end = found[0] if found else end
            threads, order = {}, []
            for i in range(end - 1, max(-1, end - 1 - CONVERSATION_WINDOW), -1):
                root = state.messages.thread[box.msgs[i]]
                entry = threads.get(root)
                if entry is None:
                    if len(order) >= limit:
                        continue
                    entry = threads[root] = {"pick": self._pick(state, box, i), "count": 0, "unread": 0}
                    order.append(root)
                entry["count"] += 1
                entry["unread"] += 0 if box.flags[i] & SEEN else 1
        out = []
        for root in order:
            t = threads[root]
            view = self._view_of(t["pick"], with_body=False)
            view.update(count=t["count"], unread_count=t["unread"], read=t["unread"] == 0)
            out.append(view)
        return out

    def unread_count(self, user: str) -> int:
        with self.store.reading() as state:
            box = state.mailbox(user, "INBOX")
            return box.unseen if box else 0

    def get(self, user: str, msg_id: str, mark_read: bool = True) -> dict:
        with self.store.reading() as state:
            n, entries = self._locate(state, user, msg_id)
            box, i = self._primary(entries)
            pick = self._pick(state, box, i)
            folders = sorted({b.name for b, _ in entries})
            unread = any(not b.flags[j] & SEEN for b, j in entries)
        if mark_read and unread:
            self.set_read(user, msg_id, True)
            pick = pick[:4] + (pick[4] | SEEN,) + pick[5:]
        return self._view_of(pick, with_body=True, folders=folders)

    def thread(self, user: str, msg_id: str) -> list:
        with self.store.reading() as state:
            n, _entries = self._locate(state, user, msg_id)
            members = positions_of(state.messages.thread, state.messages.thread[n])
            picks = []
            for m in members:
                entries = self.mailstore.entries_of(state, user, m)
                if entries:
                    box, i = self._primary(entries)
                    picks.append(self._pick(state, box, i))
        return [self._view_of(p, with_body=True) for p in picks]

    def search(self, user: str, query: str, limit: int = DEFAULT_PAGE, with_body: bool = False,
               folder: str = None) -> list:
        from .search import search_user
        needle = (query or "").strip()
        if not needle:
            return []
        with self.store.reading() as state:
            box = self._folder(state, user, folder) if folder else None
        picks = []
        for n in search_user(self.mailstore, user, needle):
            with self.store.reading() as state:
                entries = self.mailstore.entries_of(state, user, n)
                if box is not None:
                    entries = [(b, i) for b, i in entries if b.name == box.name]
                if not entries:
                    continue
                picks.append(self._pick(state, *self._primary(entries)))
            if len(picks) >= limit:
                break
        return [self._view_of(p, with_body) for p in picks]

    def search_pending(self) -> int:
        """Messages stored but not yet searchable (the index catches up in the background)."""
        from .search import not_indexed
        return not_indexed(self.mailstore)

    # ------------------------------------------------------------ changing

    def _change_flags(self, user: str, msg_id: str, mode: str, flags) -> None:
        with self.store.reading() as state:
            _n, entries = self._locate(state, user, msg_id)
            targets = [(box.name, box.uids[i]) for box, i in entries]
        for box_name, uid in targets:
            try:
                self.mailstore.set_flags(user, box_name, [uid], mode, flags)
            except MailStoreError:
                pass   # the mailbox went meanwhile: nothing left to flag

    def set_read(self, user: str, msg_id: str, read: bool) -> None:
        self._change_flags(user, msg_id, "add" if read else "remove", ["\\Seen"])

    def set_flagged(self, user: str, msg_id: str, flagged: bool) -> None:
        self._change_flags(user, msg_id, "add" if flagged else "remove", ["\\Flagged"])

    def move(self, user: str, msg_id: str, folder: str) -> dict:
        """Move the message (every entry the user has of it) into `folder`."""
        with self.store.reading() as state:
            dest = self._folder(state, user, folder)
            _n, entries = self._locate(state, user, msg_id)
            sources = [(box.name, box.uids[i]) for box, i in entries]
            dest_name = dest.name
        in_dest = [s for s in sources if s[0] == dest_name]
        for i, (box_name, uid) in enumerate(s for s in sources if s[0] != dest_name):
            if in_dest or i > 0:   # one entry in the destination is enough
                self.mailstore.expunge(user, box_name, [uid], deleted_only=False)
            else:
                self.mailstore.move(user, box_name, [uid], dest_name)
        return self.get(user, msg_id, mark_read=False)

    def delete(self, user: str, msg_id: str) -> None:
        """Gone from the user's view at once, in every mailbox (the API's DELETE)."""
        with self.store.reading() as state:
            _n, entries = self._locate(state, user, msg_id)
            targets = [(box.name, box.uids[i]) for box, i in entries]
        for box_name, uid in targets:
            self.mailstore.expunge(user, box_name, [uid], deleted_only=False)

    def trash(self, user: str, msg_id: str) -> str:
        """The web's Delete: to Trash, or for good when it is already there. Returns which."""
        with self.store.reading() as state:
            _n, entries = self._locate(state, user, msg_id)
            in_trash = all(box.name == "Trash" for box, _ in entries)
        if in_trash:
            self.delete(user, msg_id)
            return "deleted"
        self.move(user, msg_id, "Trash")
        return "trashed"

    def empty_trash(self, user: str) -> int:
        return self.empty_folder(user, "Trash")

    def empty_folder(self, user: str, folder: str) -> int:
        """Delete everything in Trash or Junk for good; returns how many messages went."""
        with self.store.reading() as state:
            name = self._folder(state, user, folder).name
        if name not in EMPTYABLE_FOLDERS:
            raise MailError(f"only {' and '.join(EMPTYABLE_FOLDERS)} can be emptied")
        try:
            return len(self.mailstore.expunge(user, name, None, deleted_only=False))
        except MailStoreError:
            raise FolderNotFound(folder) from None

    def _entries_of_many(self, state, user: str, ids) -> list:
        """[(box, position)] of each id's entries, in the order of `ids`. Beyond a few ids one
        pass over the user's mailboxes is cheaper than a search of every mailbox per id."""
        numbers = [state.messages.number_of(msg_id) for msg_id in ids]
        if len(ids) <= LOCATE_ONE_BY_ONE_IDS:
            return [self.mailstore.entries_of(state, user, n) if n is not None else [] for n in numbers]
        wanted = {n: [] for n in numbers if n is not None}
        um = state.mail.get(user)
        for box in (um.boxes.values() if um else ()):
            for i, n in enumerate(box.msgs):
                entries = wanted.get(n)
                if entries is not None:
                    entries.append((box, i))
        return [wanted[n] if n is not None else [] for n in numbers]

    def batch(self, user: str, ids, action: str, folder: str = None) -> int:
        """One action on several messages: `read`, `unread`, `flag`, `unflag`, `move` (to
        `folder`), `archive`, `junk`, `trash` (the web's Delete) or `delete` (the API's).
        Returns how many of `ids` the user has; the others are skipped. One commit per
        mailbox touched, not one per message."""
        if action not in BATCH_ACTIONS:
            raise MailError(f"action must be one of {', '.join(BATCH_ACTIONS)}")
        ids = list(ids)
        if len(ids) > MAX_BATCH_IDS:
            raise MailError(f"at most {MAX_BATCH_IDS} messages at once")
        ids = list(dict.fromkeys(str(i) for i in ids))
        if action in ("archive", "junk"):
            action, folder = "move", action.capitalize()
        if action == "move" and not folder:
            raise MailError("'folder' is required to move messages")
        with self.store.reading() as state:
            dest = self._folder(state, user, folder).name if action == "move" else None
            found = []
            for entries in self._entries_of_many(state, user, ids):
                if entries:
                    primary = self._primary(entries)
                    found.append([(b.name, b.uids[i]) for b, i in [primary] + [e for e in entries if e != primary]])
        target = dest or "Trash"
        moves, expunges, flags = {}, {}, {}
        for entries in found:
            if action in ("read", "unread", "flag", "unflag"):
                for box_name, uid in entries:
                    flags.setdefault(box_name, []).append(uid)
            elif action == "delete" or (action == "trash" and all(b == "Trash" for b, _ in entries)):
                for box_name, uid in entries:
                    expunges.setdefault(box_name, []).append(uid)
            else:
                keep = next(((b, u) for b, u in entries if b == target), None)
                for box_name, uid in entries:
                    if box_name == target:
                        continue
                    if keep is None:   # one entry moves; any others are redundant there
                        keep = (box_name, uid)
                        moves.setdefault(box_name, []).append(uid)
                    else:
                        expunges.setdefault(box_name, []).append(uid)
        mode, flag = {"read": ("add", "\\Seen"), "unread": ("remove", "\\Seen"), "flag": ("add", "\\Flagged"),
                      "unflag": ("remove", "\\Flagged")}.get(action, (None, None))
        # Moves first: a crash between commits leaves a message in two mailboxes, never in none.
        for box_name, uids in moves.items():
            try:
                self.mailstore.move(user, box_name, uids, target)
            except MailStoreError:
                with self.store.reading() as state:
                    if state.mailbox(user, target) is None:
                        raise FolderNotFound(folder or target) from None
                # otherwise the source went meanwhile, and its entries with it
        for box_name, uids in expunges.items():
            try:
                self.mailstore.expunge(user, box_name, uids, deleted_only=False)
            except MailStoreError:
                pass   # the mailbox went meanwhile, and its entries with it
        for box_name, uids in flags.items():
            try:
                self.mailstore.set_flags(user, box_name, uids, mode, [flag])
            except MailStoreError:
                pass
        return len(found)

    # ------------------------------------------------------------ bodies

    def _blob(self, n: int, index: int) -> bytes:
        with self.store.reading() as state:
            first = state.messages.first_blob[n]
        return self.store.blob(first + index)

    def body_text(self, record: dict, n: int) -> str:
        if "body" in record:
            return record["body"]
        index = recordmod.blob_index(record, "body_blob")
        return self._blob(n, index).decode("utf-8", "replace") if index is not None else ""

    def html(self, user: str, msg_id: str) -> str:
        with self.store.reading() as state:
            n, _entries = self._locate(state, user, msg_id)
        index = recordmod.blob_index(self.store.meta_record(n), "html_blob")
        return self._blob(n, index).decode("utf-8", "replace") if index is not None else ""

    def raw(self, user: str, msg_id: str) -> bytes:
        with self.store.reading() as state:
            n, _entries = self._locate(state, user, msg_id)
        return self.mailstore.raw_of(n)

    def attachment(self, user: str, msg_id: str, index: int) -> tuple:
        with self.store.reading() as state:
            n, _entries = self._locate(state, user, msg_id)
        atts = self.store.meta_record(n).get("attachments", [])
        if not 0 <= index < len(atts):
            raise MessageNotFound()
        att = atts[index]
        return att["name"], att["type"], self._blob(n, att["blob"])

    # ------------------------------------------------------------ the API's message object

    def view(self, record: dict, n: int, msg_id: str, thread_id: str, folder: str, mask: int,
             with_body: bool = True, folders=None) -> dict:
        out = {
            "id": msg_id, "from": record.get("from", ""),
            "from_name": record.get("from_name") or record.get("from", ""),
            "from_addr": record.get("from_addr", ""), "to": list(record.get("to", [])),
            "subject": record.get("subject", ""), "snippet": record.get("snippet", ""),
            "created_at": rfc3339(record.get("created_at", 0)), "read": bool(mask & SEEN),
            "flagged": bool(mask & FLAGGED), "draft": bool(mask & DRAFT), "folder": folder, "thread_id": thread_id,
            "message_id": record.get("message_id", ""), "in_reply_to": record.get("in_reply_to", ""),
            "kind": record.get("kind", "internal"), "has_html": recordmod.blob_index(record, "html_blob") is not None,
            "attachments": [{"name": a["name"], "type": a["type"], "size": a["size"],
                             "url": f"/api/mail/{msg_id}/attachments/{i}"}
                            for i, a in enumerate(record.get("attachments", []))],
        }
        if folders is not None:
            out["folders"] = folders
        if record.get("draft_reply_to"):
            out["reply_to"] = record["draft_reply_to"]
        if with_body:
            out["body"] = self.body_text(record, n)
        if "status" in record:
            out["status"] = record["status"]
            out["status_detail"] = record.get("status_detail", "")
            if record.get("next_try"):
                out["next_try"] = rfc3339(record["next_try"])
        if "auth" in record:
            out["auth"] = record["auth"]
        return out
