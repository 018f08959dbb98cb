"""The tables the journal replays into, and the indexes derived from them.

`apply(record)` is the only way state changes, for live commits and replay alike,
so the two can never disagree. Records are plain JSON objects named by `op`.
Indexes (folder lists, unread counts, Message-ID map) are rebuilt on load, never stored.
"""

import bisect
import time

FOLDERS = ("inbox", "sent")
BLOB_FIELDS = ("raw_blob", "body_blob", "html_blob")   # message fields that hold a blob ref


class State:
    def __init__(self):
        self.users = {}      # name -> {name, role, credits, pw, created_at, disabled, display_name}
        self.tokens = {}     # sha256(token) -> {user, created_at, last_used?}
        self.invites = {}    # sha256(invitation code) -> {by, created_at, expires}
        self.sessions = {}   # sha256(session id) -> {user, csrf, expires}
        self.messages = {}   # id -> message (with "boxes": {user: {"folder", "read"}})
        self.queue = {}      # queue id -> outbound delivery entry
        self.folders = {}    # (user, folder) -> ids, ascending (ids sort by time)
        self.unread = {}     # (user, folder) -> count
        self.by_message_id = {}  # RFC 5322 Message-ID -> id
        self.threads = {}    # thread id -> ids of its messages, ascending

    # ------------------------------------------------------------ persistence

    def dump(self) -> dict:
        now = time.time()
        return {
            "users": self.users,
            "tokens": self.tokens,
            "invites": {k: v for k, v in self.invites.items() if v.get("expires", 0) > now},
            "sessions": {k: v for k, v in self.sessions.items() if v.get("expires", 0) > now},
            "messages": {k: m for k, m in self.messages.items()
                         if m["boxes"] or any(q["msg"] == k for q in self.queue.values())},
            "queue": self.queue,
        }

    @classmethod
    def from_dump(cls, data: dict) -> "State":
        state = cls()
        state.users = data.get("users", {})
        state.tokens = data.get("tokens", {})
        state.invites = data.get("invites", {})
        state.sessions = data.get("sessions", {})
        state.queue = data.get("queue", {})
        for msg_id in sorted(data.get("messages", {})):
            state._index_message(data["messages"][msg_id])
        return state

    def blob_holders(self):
        """Every (dict, key) where dict[key] is a blob ref (`pack:offset:length`)."""
        for msg in self.messages.values():
            for key in BLOB_FIELDS:
                if msg.get(key):
                    yield msg, key
            for att in msg.get("attachments", ()):
                if att.get("blob"):
                    yield att, "blob"

    # ------------------------------------------------------------ indexes

    def _index_message(self, msg: dict) -> None:
        self.messages[msg["id"]] = msg
        if msg.get("message_id"):
            self.by_message_id.setdefault(msg["message_id"], msg["id"])
        members = self.threads.setdefault(msg["thread_id"], [])
        if not members or members[-1] < msg["id"]:
            members.append(msg["id"])
        else:
            bisect.insort(members, msg["id"])
        for user, box in msg.get("boxes", {}).items():
            self._box_add(user, box, msg["id"])

    def _box_add(self, user, box, msg_id) -> None:
        ids = self.folders.setdefault((user, box["folder"]), [])
        if not ids or ids[-1] < msg_id:
            ids.append(msg_id)
        else:
            bisect.insort(ids, msg_id)
        if not box.get("read"):
            key = (user, box["folder"])
            self.unread[key] = self.unread.get(key, 0) + 1

    def _box_remove(self, user, box, msg_id) -> None:
        ids = self.folders.get((user, box["folder"]), [])
        i = bisect.bisect_left(ids, msg_id)
        if i < len(ids) and ids[i] == msg_id:
            del ids[i]
        if not box.get("read"):
            key = (user, box["folder"])
            self.unread[key] = max(0, self.unread.get(key, 0) - 1)

    # ------------------------------------------------------------ replay

    def apply(self, r: dict) -> None:
        getattr(self, "_op_" + r["op"].replace(".", "_"))(r)

    def _op_user_put(self, r):
        user = self.users.setdefault(r["name"], {"name": r["name"], "credits": 0, "role": "user"})
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

    def _op_msg_add(self, r):
        if r["msg"]["id"] not in self.messages:
            self._index_message(r["msg"])

    def _op_msg_set(self, r):
        msg = self.messages.get(r["id"])
        if msg is not None:
            msg.update(r["fields"])

    def _op_box_add(self, r):
        msg = self.messages.get(r["id"])
        if msg is not None and r["user"] not in msg["boxes"]:
            box = {"folder": r["folder"], "read": r.get("read", False)}
            msg["boxes"][r["user"]] = box
            self._box_add(r["user"], box, r["id"])

    def _op_box_read(self, r):
        msg = self.messages.get(r["id"])
        box = msg and msg["boxes"].get(r["user"])
        if box and box.get("read") != r["read"]:
            key = (r["user"], box["folder"])
            self.unread[key] = max(0, self.unread.get(key, 0) + (-1 if r["read"] else 1))
            box["read"] = r["read"]

    def _op_box_del(self, r):
        msg = self.messages.get(r["id"])
        box = msg and msg["boxes"].pop(r["user"], None)
        if box:
            self._box_remove(r["user"], box, r["id"])
            if not msg["boxes"] and not any(q["msg"] == r["id"] for q in self.queue.values()):
                del self.messages[r["id"]]
                if self.by_message_id.get(msg.get("message_id")) == r["id"]:
                    del self.by_message_id[msg["message_id"]]
                members = self.threads.get(msg["thread_id"], [])
                if r["id"] in members:
                    members.remove(r["id"])
                if not members:
                    self.threads.pop(msg["thread_id"], None)

    def _op_queue_put(self, r):
        self.queue[r["id"]] = r["entry"]

    def _op_queue_del(self, r):
        self.queue.pop(r["id"], None)
