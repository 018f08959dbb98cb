"""Upgrading a store written by an earlier release, in place, when it is opened.

Format 1 (`mu-store-1`) kept every message's metadata in the snapshot and in memory, with
per-user "boxes" (`inbox`/`sent` and a read bit). Format 2 keeps message records in meta
segments and mailboxes as columns (mu/state.py). The upgrade reads the old snapshot and
journal, writes each message's record to a fresh meta segment (re-using the old blob packs
where they are: blob positions carry over), puts every box entry in INBOX or Sent with
`\\Seen` for read ones, then replaces the snapshot atomically and empties the journal.

A crash at any instant is harmless: until the new snapshot is renamed into place the old
one and its journal are untouched (records an unfinished upgrade appended to the packs are
dead bytes nothing points at); after it, the journal's records are all at or below the
snapshot's seq.
"""

import json

from . import compose, safeio
from .folders import SEEN
from .log import log
from .segments import parse_legacy_ref
from .state import FORMAT, State, content_hash, message_id_hash

LEGACY_FORMAT = "mu-store-1"
_LEGACY_FOLDERS = {"inbox": "INBOX", "sent": "Sent"}
_BATCH = 5000


class UpgradeError(Exception):
    pass


def upgrade_if_needed(store) -> bool:
    """Upgrade `store`'s files if they are in an older format (caller holds the exclusive
    flock). Returns whether it did."""
    with open(store.snapshot_path, "rb") as f:
        head = f.read(64)
    if b'"format":"' + FORMAT.encode() + b'"' in head.replace(b" ", b""):
        return False
    with open(store.snapshot_path, "rb") as f:
        snapshot = json.load(f)
    if snapshot.get("format") == FORMAT:
        return False
    if snapshot.get("format") != LEGACY_FORMAT:
        raise UpgradeError(f"{store.snapshot_path}: unknown store format {snapshot.get('format')!r}")
    legacy = _replay_legacy(snapshot, store.journal_path)
    state, count = _convert(store, legacy)
    safeio.write_json_atomic(store.snapshot_path, {"format": FORMAT, "seq": legacy["seq"], "moves": 0, "state": state.dump()})
    safeio.replace_with_empty(store.journal_path)
    log("store", f"upgraded {store.home} from {LEGACY_FORMAT} to {FORMAT} ({count} messages)")
    return True


def _replay_legacy(snapshot: dict, journal_path: str) -> dict:
    """Format 1's tables as plain dicts, with its journal applied."""
    data = snapshot.get("state", {})
    legacy = {"seq": snapshot.get("seq", 0), "users": data.get("users", {}), "tokens": data.get("tokens", {}),
              "sessions": data.get("sessions", {}), "messages": data.get("messages", {}),
              "queue": data.get("queue", {})}
    try:
        with open(journal_path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            r = json.loads(line) if line.strip() else None
        except ValueError:
            continue   # a torn last line: never acknowledged
        if r is None or r.get("seq", 0) <= legacy["seq"]:
            continue
        _apply_legacy(legacy, r)
        legacy["seq"] = r["seq"]
    return legacy


def _apply_legacy(t: dict, r: dict) -> None:
    op, msgs = r["op"], t["messages"]
    if op == "user.put":
        t["users"].setdefault(r["name"], {"name": r["name"], "credits": 0, "role": "user"}).update(r["fields"])
    elif op == "user.credit":
        t["users"][r["name"]]["credits"] += r["delta"]
    elif op == "token.add":
        t["tokens"][r["hash"]] = {"user": r["user"], "created_at": r["at"]}
    elif op == "session.add":
        t["sessions"][r["hash"]] = {"user": r["user"], "csrf": r["csrf"], "expires": r["expires"]}
    elif op == "session.del":
        t["sessions"].pop(r["hash"], None)
    elif op == "msg.add":
        msgs.setdefault(r["msg"]["id"], r["msg"])
    elif op == "msg.set":
        if r["id"] in msgs:
            msgs[r["id"]].update(r["fields"])
    elif op == "box.add":
        if r["id"] in msgs:
            msgs[r["id"]]["boxes"].setdefault(r["user"], {"folder": r["folder"], "read": r.get("read", False)})
    elif op == "box.read":
        box = msgs.get(r["id"], {}).get("boxes", {}).get(r["user"])
        if box:
            box["read"] = r["read"]
    elif op == "box.del":
        msg = msgs.get(r["id"])
        if msg and msg["boxes"].pop(r["user"], None) is not None and not msg["boxes"] \
                and not any(q["msg"] == r["id"] for q in t["queue"].values()):
            del msgs[r["id"]]
    elif op == "queue.put":
        t["queue"][r["id"]] = r["entry"]
    elif op == "queue.del":
        t["queue"].pop(r["id"], None)


def _convert(store, legacy: dict) -> tuple:
    state = State()
    state.users, state.tokens, state.sessions = legacy["users"], legacy["tokens"], legacy["sessions"]
    for name, user in state.users.items():
        state._ensure_default_mailboxes(name, user.get("created_at", 0))
    live = {k: m for k, m in legacy["messages"].items() if m.get("boxes") or any(
        q["msg"] == k for q in legacy["queue"].values())}
    ids = sorted(live)
    number = {msg_id: n for n, msg_id in enumerate(ids)}
    for start in range(0, len(ids), _BATCH):
        batch = [live[i] for i in ids[start:start + _BATCH]]
        records, blob_lists, new_raws = [], [], []
        for msg in batch:
            record, blobs, raw = _record_from_legacy(store, msg)
            records.append(record)
            blob_lists.append(blobs)
            new_raws.append(raw)
        # (A crash before the new snapshot leaves these lines unreferenced: dead bytes the
        # next upgrade attempt and reclamation pass over.)
        built = store.blobs.append([r for r in new_raws if r is not None])
        metas = store.meta.append([safeio.json_bytes(r) for r in records])
        for msg, record, blobs, raw, meta in zip(batch, records, blob_lists, new_raws, metas):
            if raw is not None:
                blobs[record["raw_blob"]] = built.pop(0)
                size = len(raw)
            else:
                size = msg.get("size") or blobs[record["raw_blob"]][1] * 3 // 4
            n = number[msg["id"]]
            first_blob = len(state.blobs)
            for pos, length in blobs:
                state.blobs.pos.append(pos)
                state.blobs.len.append(length)
            state.messages.add(msg["id"], meta, first_blob, number.get(msg.get("thread_id"), n),
                               message_id_hash(msg.get("message_id", "")), content_hash(msg["id"].encode()), size)
            for user, box in sorted(msg.get("boxes", {}).items()):
                index = state.mailbox(user, _LEGACY_FOLDERS.get(box.get("folder"), "INBOX"))
                if index is None:
                    continue
                index.add(index.uidnext, n, SEEN if box.get("read") else 0, index.highestmodseq + 1,
                          int(msg.get("created_at", 0)), 0)
    state.queue = legacy["queue"]
    state.sum_sizes()
    return state, len(ids)


def _record_from_legacy(store, msg: dict) -> tuple:
    """(format-2 record, [(position, length)] of its blobs, raw bytes to store or None)."""
    blobs = []

    def take(ref):
        blobs.append(parse_legacy_ref(ref))
        return len(blobs) - 1

    record = {k: msg[k] for k in ("kind", "from", "from_addr", "from_name", "to", "subject", "created_at",
                                  "message_id", "in_reply_to", "references", "snippet", "auth",
                                  "envelope_from", "peer_ip", "status", "status_detail", "charged",
                                  "refunded", "delivery", "next_try") if k in msg}
    record["owners"] = sorted(msg.get("boxes", {}))
    if "body" in msg:
        record["body"] = msg["body"]
    elif msg.get("body_blob"):
        record["body_blob"] = take(msg["body_blob"])
    if msg.get("html_blob"):
        record["html_blob"] = take(msg["html_blob"])
    record["attachments"] = [{"name": a["name"], "type": a["type"], "size": a["size"], "blob": take(a["blob"])}
                             for a in msg.get("attachments", [])]
    raw = None
    if msg.get("raw_blob"):
        record["raw_blob"] = take(msg["raw_blob"])
    else:
        # Format 1 built a direct message's RFC 5322 form on demand; IMAP needs the same
        # bytes every time, so it is built once now and kept.
        body = msg.get("body")
        if body is None and msg.get("body_blob"):
            body = store.blobs.read(*parse_legacy_ref(msg["body_blob"])).decode("utf-8", "replace")
        domain = (msg.get("from_addr") or "@localhost").rpartition("@")[2]
        to = [t if "@" in t else f"{t}@{domain}" for t in msg.get("to", [])]
        attachments = [(a["name"], a["type"], store.blobs.read(*parse_legacy_ref(a["blob"])))
                       for a in msg.get("attachments", [])]
        raw = compose.build(from_name=msg.get("from_name", ""), from_addr=msg.get("from_addr", ""), to=to,
                            subject=msg.get("subject", ""), body=body or "", message_id=msg.get("message_id", ""),
                            date=msg.get("created_at", 0), in_reply_to=msg.get("in_reply_to"),
                            references=msg.get("references", []), attachments=attachments)
        record["raw_blob"] = len(blobs)
        blobs.append(None)   # filled in with the new blob's position
    return record, blobs, raw
