"""Message records: what the store keeps about one message, built once when it is stored.

A record is a JSON object in a meta segment (mu/segments.py); its blobs (the raw RFC 5322
message, a long text body, the HTML body, attachments) are consecutive blobs of the
message and the record names them by their index among those (`"raw_blob": 0`). Fields:

    kind            inbound | internal | outbound | bounce | draft | imported
    from, from_addr, from_name, to, cc, subject, created_at, message_id, in_reply_to,
    references, snippet, body (short text inline) or body_blob, html_blob, raw_blob,
    attachments [{name, type, size, blob}], owners (users it was stored for),
    auth, envelope_from, peer_ip (received mail),
    status, status_detail, charged, refunded, delivery, next_try (external outbound mail),
    imap {envelope, bodystructure, body} (the FETCH strings, computed once)
"""


import json
import re

from . import mime, safeio

INLINE_BODY_CHARS = 1024
SNIPPET_CHARS = 160
MAX_SUBJECT_CHARS = 998   # RFC 5322 §2.1.1: a header line is at most 998 octets


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


def imap_description(raw: bytes):
    """The IMAP FETCH strings of a message (ENVELOPE, BODYSTRUCTURE, BODY), or None when
    the IMAP module cannot describe it (they are then computed when first fetched)."""
    try:
        from . import mimeinfo
    except ImportError:
        return None
    try:
        d = mimeinfo.describe(raw)
    except Exception:
        return None
    return d if isinstance(d, dict) else {"envelope": d.envelope, "bodystructure": d.bodystructure, "body": d.body}


class NewMessage:
    """A message about to be stored: its record and its blobs, in order."""

    __slots__ = ("record", "blobs", "size", "message_id", "raw")

    def __init__(self, record: dict, raw: bytes):
        self.record = record
        self.blobs = []
        self.raw = raw
        self.size = len(raw)
        self.message_id = record.get("message_id", "")
        record["raw_blob"] = self.add_blob(raw)

    def add_blob(self, data: bytes) -> int:
        self.blobs.append(data)
        return len(self.blobs) - 1

    def set_body(self, text: str, html: str = "") -> None:
        self.record["snippet"] = snippet(text)
        if len(text) <= INLINE_BODY_CHARS:
            self.record["body"] = text
        else:
            self.record["body_blob"] = self.add_blob(text.encode("utf-8"))
        if html:
            self.record["html_blob"] = self.add_blob(html.encode("utf-8"))

    def add_attachments(self, attachments) -> None:
        out = self.record.setdefault("attachments", [])
        for name, ctype, data in attachments:
            out.append({"name": name, "type": ctype, "size": len(data), "blob": self.add_blob(data)})

    def describe_for_imap(self) -> None:
        description = imap_description(self.raw)
        if description:
            self.record["imap"] = description

    def meta_bytes(self) -> bytes:
        return safeio.json_bytes(self.record)


def from_parsed(parsed: dict, raw: bytes, kind: str, owners, created_at: float, extra: dict = None) -> NewMessage:
    """The record of a message read from its bytes (received, APPENDed or imported)."""
    record = {
        "kind": kind, "from": parsed["from_addr"] or (extra or {}).get("envelope_from") or "",
        "from_addr": parsed["from_addr"], "from_name": parsed["from_name"],
        "to": parsed["to"] + parsed["cc"], "subject": parsed["subject"][:MAX_SUBJECT_CHARS],
        "created_at": created_at, "message_id": parsed["message_id"],
        "in_reply_to": parsed["in_reply_to"], "references": parsed["references"][-20:],
        "owners": sorted(owners), "attachments": [],
    }
    record.update(extra or {})
    message = NewMessage(record, raw)
    message.set_body(parsed["text"], parsed["html"])
    message.add_attachments(parsed["attachments"])
    message.describe_for_imap()
    return message


def from_raw(raw: bytes, kind: str, owners, created_at: float, extra: dict = None, limits=None) -> NewMessage:
    """`limits`: the config whose MIME limits apply (MimeLimitError past one)."""
    if limits is not None:
        parsed = mime.parse(raw, max_parts=limits.max_mime_parts, max_depth=limits.max_mime_depth,
                            timeout_seconds=limits.mime_timeout_seconds)
    else:
        parsed = mime.parse(raw)
    return from_parsed(parsed, raw, kind, owners, created_at, extra)


_DECODER = json.JSONDecoder()
_RAW_BLOB = re.compile(rb'"raw_blob":(\d+)')


def fetch_fields(line: bytes) -> tuple:
    """(the "imap" FETCH strings or None, Message-ID, raw_blob) read from a record's line
    without decoding all of it: a FETCH of ENVELOPE over a whole mailbox reads one record
    a message, and the short parts it needs are all it parses."""
    text = line.decode("utf-8", "surrogateescape")
    imap = None
    at = text.rfind('"imap":{')
    if at >= 0:
        try:
            imap = _DECODER.raw_decode(text, at + 7)[0]
        except ValueError:
            imap = None
    message_id = ""
    at = text.find('"message_id":"')
    if at >= 0:
        try:
            message_id = json.decoder.scanstring(text, at + 14)[0]
        except ValueError:
            message_id = ""
    raw = _RAW_BLOB.search(line)
    if imap is None or raw is None:   # an older or unusual record: read it whole
        record = json.loads(line)
        return record.get("imap"), record.get("message_id", ""), record.get("raw_blob", 0)
    return imap, message_id, int(raw.group(1))


def record_string(line: bytes, name: str, within: bytes = b""):
    """The string value of key `name` in a record's line, read without decoding the rest:
    the first one after `within` (e.g. b'"imap":{' for the FETCH strings, since the record's
    own "body" comes first); None when absent."""
    start = 0
    if within:
        start = line.rfind(within)
        if start < 0:
            return None
    key = f'"{name}":"'.encode()
    at = line.find(key, start)
    if at < 0:
        return None
    text = line[at + len(key):].decode("utf-8", "surrogateescape")
    try:
        return json.decoder.scanstring(text, 0)[0]   # the string from after its opening quote
    except ValueError:
        return None


def blob_index(record: dict, field: str):
    value = record.get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
