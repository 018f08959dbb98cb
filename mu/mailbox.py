"""Messages: sending (direct and external), receiving, folders, threads, read state, delete.

A message is stored once; each user who can see it has a box entry
(`{"folder": "inbox"|"sent", "read": bool}`), so deleting my copy never deletes yours.
Bodies, raw messages and attachments live in blob packs; the state keeps a snippet.
"""

import bisect
import datetime
import random
import secrets
import threading
import time

from . import addr, compose, outbox
from .accounts import NotFound as UserNotFound, normalize_name

INLINE_BODY_CHARS = 1024
SNIPPET_CHARS = 160
MAX_SUBJECT_CHARS = 998   # RFC 5322 §2.1.1: a header line is at most 998 octets
DEFAULT_PAGE = 50
MAX_PAGE = 500
MAILER_DAEMON = "MAILER-DAEMON"


class MailError(ValueError):
    """Bad input to a mail operation; `status` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class MessageNotFound(MailError):
    def __init__(self):
        super().__init__("message not found", 404)


_id_lock = threading.Lock()
_last_id = [0]
_id_suffix = random.Random(secrets.randbits(64))


def new_id() -> str:
    """20 hex digits: microseconds since the epoch, then 16 bits telling processes apart;
    ids sort by time. (Not secret: every id is checked against the reader's boxes.)"""
    with _id_lock:
        now = max(time.time_ns() // 1000, _last_id[0] + 1)
        _last_id[0] = now
        suffix = _id_suffix.getrandbits(16)
    return f"{now:016x}{suffix:04x}"


def rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


def snippet(text: str) -> str:
    """The first SNIPPET_CHARS of the text with runs of whitespace made one space.

    Only a growing prefix is normalised: the words of a prefix are the whole text's words
    with the last one perhaps cut short, so once that gives SNIPPET_CHARS they are the same
    characters (and a long body costs no more than a short one)."""
    text = text or ""
    window = SNIPPET_CHARS * 4
    while True:
        flat = " ".join(text[:window].split())
        if len(flat) >= SNIPPET_CHARS or window >= len(text):
            return flat[:SNIPPET_CHARS]
        window *= 4


def body_fields(text: str, html: str, blobs: list) -> dict:
    """Message fields for a body: inline when short, else a blob index (resolved at commit)."""
    fields = {"snippet": snippet(text)}
    if len(text) <= INLINE_BODY_CHARS:
        fields["body"] = text
    else:
        fields["body_blob"] = len(blobs)
        blobs.append(text.encode("utf-8"))
    if html:
        fields["html_blob"] = len(blobs)
        blobs.append(html.encode("utf-8"))
    return fields


def resolve_blob_indexes(msg: dict, refs: list) -> dict:
    """Replace `*_blob` indexes (positions in the commit's blob list) with blob refs."""
    for key in ("body_blob", "html_blob", "raw_blob"):
        if isinstance(msg.get(key), int):
            msg[key] = refs[msg[key]]
    for att in msg.get("attachments", []):
        if isinstance(att.get("blob"), int):
            att["blob"] = refs[att["blob"]]
    return msg


class Mailbox:
    def __init__(self, store, config, accounts):
        self.store = store
        self.config = config
        self.accounts = accounts

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
        items = [str(i).strip() for i in items if str(i).strip()]
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

    # ------------------------------------------------------------ sending

    def send(self, sender: str, to, subject: str, body: str, reply_to: str = None,
             attachments=()) -> dict:
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
                parent = state.messages.get(str(reply_to))
                if parent is None or sender not in parent["boxes"]:
                    raise MessageNotFound()
                parent = dict(parent)
        now = time.time()
        msg_id = new_id()
        message_id = compose.new_message_id(self.config.domain)
        if parent and not subject:
            subject = parent["subject"] if parent["subject"].lower().startswith("re:") else "Re: " + parent["subject"]
        references = []
        if parent:
            references = list(parent.get("references") or [])
            if parent.get("message_id"):
                references.append(parent["message_id"])
        blobs = []
        msg = {
            "id": msg_id, "kind": "outbound" if external else "internal",
            "from": sender, "from_addr": self.address_of(sender), "from_name": sender,
            "to": local + external, "subject": subject, "created_at": now,
            "message_id": message_id, "thread_id": parent["thread_id"] if parent else msg_id,
            "in_reply_to": parent.get("message_id", "") if parent else "",
            "references": references[-20:],
            "attachments": [],
        }
        msg.update(body_fields(body, "", blobs))
        for name, ctype, data in attachments:
            msg["attachments"].append({"name": name, "type": ctype, "size": len(data), "blob": len(blobs)})
            blobs.append(data)
        cost = self.config.credit_cost_email if external else 0
        if external:
            raw = compose.build(
                from_name=sender, from_addr=msg["from_addr"],
                to=[self.address_of(u) for u in local] + external, subject=subject, body=body,
                message_id=message_id, date=now, in_reply_to=msg["in_reply_to"],
                references=msg["references"], attachments=attachments)
            msg["raw_blob"] = len(blobs)
            blobs.append(raw)
            msg.update(outbox.message_fields(external, cost))

        def build(state, refs):
            user = state.users.get(sender)
            if user is None:
                raise UserNotFound(f"no such user: {sender}")
            records = []
            if cost:
                if user["credits"] < cost:
                    raise MailError(f"not enough credits: external mail costs {cost}, "
                                    f"balance is {user['credits']}", 402)
                records.append(outbox.charge_record(sender, cost))
            stored = resolve_blob_indexes(dict(msg), refs)
            boxes = {sender: {"folder": "sent", "read": True}}
            for name in local:
                if name != sender:
                    boxes[name] = {"folder": "inbox", "read": False}
            stored["boxes"] = boxes
            records.append({"op": "msg.add", "msg": stored})
            if sender in local:  # a note to self also lands in the inbox
                records.append({"op": "box.add", "id": msg_id, "user": sender, "folder": "inbox"})
            records += outbox.entry_records(msg_id, sender, stored["from_addr"], external, now, new_id)
            return records, stored

        stored = self.store.commit(build, blobs)
        return self.view(stored, sender)

    def deliver_inbound(self, users: list, parsed: dict, raw_with_trace: bytes, extra: dict) -> str:
        """Store a received message in each user's inbox; return its id once durable."""
        build, blobs = self.inbound_commit(users, parsed, raw_with_trace, extra)
        return self.store.commit(build, blobs)

    def inbound_commit(self, users: list, parsed: dict, raw_with_trace: bytes, extra: dict) -> tuple:
        """(build, blobs) for `store.commit` that store a received message in each user's
        inbox, for a caller that commits it together with records of its own (a bounce is
        written in the same commit as the failure it reports); build's result is the id."""
        blobs = [raw_with_trace]
        msg_id = new_id()
        msg = {
            "id": msg_id, "kind": extra.pop("kind", "inbound"),
            "from": parsed["from_addr"] or extra.get("envelope_from") or "",
            "from_addr": parsed["from_addr"], "from_name": parsed["from_name"],
            "to": parsed["to"] + parsed["cc"], "subject": parsed["subject"][:MAX_SUBJECT_CHARS],
            "created_at": time.time(), "message_id": parsed["message_id"],
            "in_reply_to": parsed["in_reply_to"], "references": parsed["references"][-20:],
            "raw_blob": 0, "attachments": [],
        }
        msg.update(extra)
        msg.update(body_fields(parsed["text"], parsed["html"], blobs))
        for name, ctype, data in parsed["attachments"]:
            msg["attachments"].append({"name": name, "type": ctype, "size": len(data), "blob": len(blobs)})
            blobs.append(data)

        def build(state, refs):
            stored = resolve_blob_indexes(dict(msg), refs)
            thread = msg_id
            for ref in [stored["in_reply_to"]] + list(reversed(stored["references"])):
                parent = state.messages.get(state.by_message_id.get(ref, ""))
                if parent and any(u in parent["boxes"] for u in users):
                    thread = parent["thread_id"]
                    break
            stored["thread_id"] = thread
            stored["boxes"] = {u: {"folder": "inbox", "read": False} for u in users}
            return [{"op": "msg.add", "msg": stored}], msg_id

        return build, blobs

    # ------------------------------------------------------------ reading

    def _visible(self, state, user: str, msg_id: str) -> dict:
        msg = state.messages.get(str(msg_id))
        if msg is None or user not in msg["boxes"]:
            raise MessageNotFound()
        return msg

    def list(self, user: str, folder: str = "inbox", limit: int = DEFAULT_PAGE, before: str = None,
             with_body: bool = False) -> tuple:
        """(newest-first page of message views, unread count of the whole folder)."""
        if folder not in ("inbox", "sent"):
            raise MailError("folder must be inbox or sent")
        limit = max(1, min(int(limit), MAX_PAGE))
        with self.store.reading() as state:
            ids = state.folders.get((user, folder), [])
            end = bisect.bisect_left(ids, before) if before else len(ids)
            msgs = [state.messages[i] for i in reversed(ids[max(0, end - limit):end])]
            page = [self.view(m, user, with_body=False) for m in msgs]
            unread = state.unread.get((user, folder), 0)
        if with_body:   # a long body is a blob read: outside the lock (bodies never change)
            for view, msg in zip(page, msgs):
                view["body"] = self.body_text(msg)
        return page, unread

    def conversations(self, user: str, folder: str = "inbox", limit: int = DEFAULT_PAGE, before: str = None) -> list:
        """The folder grouped by thread, newest thread first: each entry is the thread's newest
        message in the folder, with `count` (messages in the folder) and `unread_count`."""
        limit = max(1, min(int(limit), MAX_PAGE))
        seen, out = set(), []
        with self.store.reading() as state:
            ids = state.folders.get((user, folder), [])
            end = bisect.bisect_left(ids, before) if before else len(ids)
            for i in reversed(ids[:end]):
                msg = state.messages[i]
                if msg["thread_id"] in seen:
                    continue
                seen.add(msg["thread_id"])
                members = [state.messages[m] for m in state.threads.get(msg["thread_id"], [])
                           if m in state.messages and state.messages[m]["boxes"].get(user, {}).get("folder") == folder]
                entry = self.view(msg, user, with_body=False)
                entry["count"] = len(members)
                entry["unread_count"] = sum(1 for m in members if not m["boxes"][user].get("read"))
                entry["read"] = entry["unread_count"] == 0
                out.append(entry)
                if len(out) >= limit:
                    break
        return out

    def unread_count(self, user: str) -> int:
        with self.store.reading() as state:
            return state.unread.get((user, "inbox"), 0)

    def get(self, user: str, msg_id: str, mark_read: bool = True) -> dict:
        with self.store.reading() as state:
            msg = dict(self._visible(state, user, msg_id))
            unread = not msg["boxes"][user].get("read")
        if mark_read and unread:
            self.set_read(user, msg_id, True)
            msg["boxes"] = dict(msg["boxes"], **{user: dict(msg["boxes"][user], read=True)})
        return self.view(msg, user)

    def thread(self, user: str, msg_id: str) -> list:
        with self.store.reading() as state:
            msg = self._visible(state, user, msg_id)
            members = [dict(state.messages[i]) for i in state.threads.get(msg["thread_id"], [msg["id"]])
                       if i in state.messages and user in state.messages[i]["boxes"]]
        return [self.view(m, user) for m in members]

    def set_read(self, user: str, msg_id: str, read: bool) -> None:
        def build(state, _refs):
            self._visible(state, user, msg_id)
            return [{"op": "box.read", "id": msg_id, "user": user, "read": read}], None
        self.store.commit(build)

    def delete(self, user: str, msg_id: str) -> None:
        def build(state, _refs):
            self._visible(state, user, msg_id)
            return [{"op": "box.del", "id": msg_id, "user": user}], None
        self.store.commit(build)

    def search(self, user: str, query: str, limit: int = DEFAULT_PAGE, with_body: bool = False) -> list:
        needle = (query or "").strip().lower()
        if not needle:
            return []
        results = []
        with self.store.reading() as state:
            candidates = sorted({i for f in ("inbox", "sent") for i in state.folders.get((user, f), [])},
                                reverse=True)
            candidates = [dict(state.messages[i]) for i in candidates]
        for msg in candidates:
            hay = " ".join([msg.get("subject", ""), msg.get("from", ""), msg.get("from_name", ""),
                            msg.get("from_addr", "") or "", " ".join(msg.get("to", []))]).lower()
            body = None   # a long body is a blob read: only when the headers do not match
            if needle not in hay:
                body = self.body_text(msg)
                if needle not in body.lower():
                    continue
            results.append(self.view(msg, user, with_body=False))
            if with_body:
                results[-1]["body"] = body if body is not None else self.body_text(msg)
            if len(results) >= limit:
                break
        return results

    def body_text(self, msg: dict) -> str:
        if "body" in msg:
            return msg["body"]
        if msg.get("body_blob"):
            return self.store.read_blob(msg["body_blob"]).decode("utf-8", "replace")
        return ""

    def html(self, user: str, msg_id: str) -> str:
        with self.store.reading() as state:
            msg = self._visible(state, user, msg_id)
            ref = msg.get("html_blob")
        return self.store.read_blob(ref).decode("utf-8", "replace") if ref else ""

    def raw(self, user: str, msg_id: str) -> bytes:
        with self.store.reading() as state:
            msg = dict(self._visible(state, user, msg_id))
        if msg.get("raw_blob"):
            return self.store.read_blob(msg["raw_blob"])
        to = [t if "@" in t else self.address_of(t) for t in msg["to"]]
        return compose.build(from_name=msg["from_name"], from_addr=msg["from_addr"], to=to,
                             subject=msg["subject"], body=self.body_text(msg),
                             message_id=msg["message_id"], date=msg["created_at"],
                             in_reply_to=msg.get("in_reply_to"), references=msg.get("references", []),
                             attachments=[(a["name"], a["type"], self.store.read_blob(a["blob"]))
                                          for a in msg.get("attachments", [])])

    def attachment(self, user: str, msg_id: str, index: int) -> tuple:
        with self.store.reading() as state:
            msg = self._visible(state, user, msg_id)
            atts = msg.get("attachments", [])
            if not 0 <= index < len(atts):
                raise MessageNotFound()
            att = dict(atts[index])
        return att["name"], att["type"], self.store.read_blob(att["blob"])

    def view(self, msg: dict, user: str, with_body: bool = True) -> dict:
        """The message as the API shows it to `user`."""
        box = msg.get("boxes", {}).get(user, {})
        out = {
            "id": msg["id"], "from": msg["from"], "from_name": msg.get("from_name") or msg["from"],
            "from_addr": msg.get("from_addr", ""), "to": list(msg.get("to", [])),
            "subject": msg.get("subject", ""), "snippet": msg.get("snippet", ""),
            "created_at": rfc3339(msg["created_at"]), "read": bool(box.get("read", True)),
            "folder": box.get("folder", ""), "thread_id": msg["thread_id"],
            "message_id": msg.get("message_id", ""), "in_reply_to": msg.get("in_reply_to", ""),
            "kind": msg.get("kind", "internal"), "has_html": bool(msg.get("html_blob")),
            "attachments": [{"name": a["name"], "type": a["type"], "size": a["size"],
                             "url": f"/api/mail/{msg['id']}/attachments/{i}"}
                            for i, a in enumerate(msg.get("attachments", []))],
        }
        if with_body:
            out["body"] = self.body_text(msg)
        if "status" in msg:
            out["status"] = msg["status"]
            out["status_detail"] = msg.get("status_detail", "")
            if msg.get("next_try"):
                out["next_try"] = rfc3339(msg["next_try"])
        if "auth" in msg:
            out["auth"] = msg["auth"]
        return out
