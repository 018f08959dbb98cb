"""SORT and THREAD (RFC 5256), with DISPLAYFROM/DISPLAYTO (RFC 5957).

Both work on `Facts`, what the algorithms need of one message: the base subject, the sent
date, the first From/To/Cc addresses, Message-ID, References and In-Reply-To. Strings
compare with i;ascii-casemap (RFC 4790 §9.2: ASCII letters upper-cased, octet order).
"""

import email.utils
import re

from .. import mimeinfo
from .parser import BadSyntax

SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
THREAD_ALGORITHMS = ("REFERENCES", "ORDEREDSUBJECT")

_WS = re.compile(r"\s+")
_TRAILER = re.compile(r"(?:\s|\(fwd\))+\Z", re.I)
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"(?:(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:|\s+)", re.I)
_LEADING_BLOB = re.compile(_BLOB)
_MSGID = re.compile(rb"<[^<>]+>")


def parse_criteria(reader) -> list:
    """sort-criteria: "(" [REVERSE] key *(SP [REVERSE] key) ")" -> [(key, reverse)]."""
    reader.expect(b"(")
    criteria = []
    while True:
        word = reader.word()
        reverse = word == "REVERSE"
        if reverse:
            reader.sp()
            word = reader.word()
        if word not in SORT_KEYS:
            raise BadSyntax(f"Unknown sort key {word}")
        criteria.append((word, reverse))
        if not reader.maybe(b" "):
            break
    reader.expect(b")")
    return criteria


def casemap(text: str) -> bytes:
    """i;ascii-casemap: only ASCII letters fold."""
    return text.encode("utf-8", "replace").upper()


def base_subject(subject: str) -> tuple:
    """(base subject, whether anything reply/forward-like was removed) per RFC 5256 §2.1."""
    text = _WS.sub(" ", subject).strip(" ")
    was_reply = False
    while True:
        # (2) trailing "(fwd)" and whitespace
        stripped = _TRAILER.sub("", text)
        if stripped != text:
            was_reply = was_reply or "(fwd)" in text[len(stripped):].lower()
            text = stripped
        # (3)-(5) leading "re:", "fwd:", blobs
        while True:
            m = _LEADER.match(text)
            if m and m.end() > 0:
                if m.group(0).strip():
                    was_reply = True
                text = text[m.end():]
                continue
            m = _LEADING_BLOB.match(text)
            if m and text[m.end():].strip():
                text = text[m.end():]
                continue
            break
        # (6) "[fwd: ... ]"
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            was_reply = True
            continue
        return text.strip(" "), was_reply


def _date_seconds(value):
    if value is None:
        return None
    parsed = email.utils.parsedate_tz(mimeinfo.unfold(value).decode("ascii", "replace"))
    if not parsed:
        return None
    try:
        return email.utils.mktime_tz(parsed)
    except (OverflowError, ValueError, TypeError):
        return None


class Facts:
    __slots__ = ("seq", "uid", "size", "arrival", "sent", "subject", "base", "is_reply",
                 "from_", "to", "cc", "display_from", "display_to", "message_id", "references")

    def __init__(self, seq, uid, size, arrival, fields):
        self.seq, self.uid, self.size, self.arrival = seq, uid, size, arrival
        get = lambda n: mimeinfo.first(fields, n)   # noqa: E731
        sent = _date_seconds(get(b"date"))
        self.sent = arrival if sent is None else sent   # RFC 5256 §2.2: fall back to arrival
        subject = get(b"subject")
        self.subject = mimeinfo.decode_words(subject) if subject is not None else ""
        self.base, self.is_reply = base_subject(self.subject)
        self.from_, self.display_from = _first_address(get(b"from"))
        self.to, self.display_to = _first_address(get(b"to"))
        self.cc, _ = _first_address(get(b"cc"))
        mid = _MSGID.findall(get(b"message-id") or b"")
        self.message_id = mid[0].decode("utf-8", "replace") if mid else None
        refs = _MSGID.findall(get(b"references") or b"")
        if not refs:
            refs = _MSGID.findall(get(b"in-reply-to") or b"")[:1]
        self.references = [r.decode("utf-8", "replace") for r in refs]


def _first_address(value) -> tuple:
    """(addr-mailbox, display form) of the first address in an address header (RFC 5256
    §2.3, RFC 5957 §3: the display name, else the addr-spec). A group counts by its name."""
    for a in mimeinfo.addresses(value):
        if a.mailbox is None:
            continue
        mailbox = a.mailbox.decode("utf-8", "replace")
        if a.host is None:
            return mailbox, mailbox
        display = mimeinfo.decode_words(a.name) if a.name else ""
        if not display:
            display = mailbox + ("@" + a.host.decode("utf-8", "replace") if a.host else "")
        return mailbox, display
    return "", ""


def _key(facts: Facts, name: str):
    if name == "ARRIVAL":
        return facts.arrival
    if name == "DATE":
        return facts.sent
    if name == "SIZE":
        return facts.size
    if name == "SUBJECT":
        return casemap(facts.base)
    if name == "FROM":
        return casemap(facts.from_)
    if name == "TO":
        return casemap(facts.to)
    if name == "CC":
        return casemap(facts.cc)
    if name == "DISPLAYFROM":
        return casemap(facts.display_from)
    if name == "DISPLAYTO":
        return casemap(facts.display_to)
    raise BadSyntax(name)


def sort(facts: list, criteria: list) -> list:
    """Facts sorted by the criteria; ties keep sequence order (RFC 5256 §3)."""
    ordered = sorted(facts, key=lambda f: f.seq)
    for name, reverse in reversed(criteria):
        ordered.sort(key=lambda f: _key(f, name), reverse=reverse)
    return ordered


# ---------------------------------------------------------------- THREAD

class _Node:
    __slots__ = ("facts", "parent", "children", "id")

    def __init__(self, ident):
        self.id = ident
        self.facts = None
        self.parent = None
        self.children = []

    def is_ancestor_of(self, other) -> bool:
        node = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def unlink(self):
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link_under(self, parent):
        self.unlink()
        self.parent = parent
        parent.children.append(self)

    def sort_date(self):
        if self.facts is not None:
            return (self.facts.sent, self.facts.seq)
        first = min((c.sort_date() for c in self.children), default=(0, 0))
        return first


def _ordered_subject(facts: list) -> list:
    """THREAD=ORDEREDSUBJECT (RFC 5256 §3): by base subject, then date; one thread per subject."""
    ordered = sorted(facts, key=lambda f: (casemap(f.base), f.sent, f.seq))
    threads = []
    for f in ordered:
        if threads and casemap(threads[-1][0].base) == casemap(f.base):
            threads[-1].append(f)
        else:
            threads.append([f])
    threads.sort(key=lambda t: (t[0].sent, t[0].seq))
    roots = []
    for t in threads:
        root = _Node(None)
        root.facts = t[0]
        for f in t[1:]:
            child = _Node(None)
            child.facts = f
            child.link_under(root)
        roots.append(root)
    return roots


def _references(facts: list) -> list:
    """THREAD=REFERENCES (RFC 5256 §3), steps 1 to 7."""
    table = {}
    ordered = sorted(facts, key=lambda f: f.seq)
    for f in ordered:
        # (1A) the message's own container; a missing or duplicate Message-ID gets a unique one
        mid = f.message_id
        node = table.get(mid) if mid else None
        if node is None or node.facts is not None:
            mid = mid if mid and mid not in table else f"\0unique{f.seq}"
            node = table[mid] = _Node(mid)
        node.facts = f
        # (1A) link the references chain, parent before child, never making a loop
        prev = None
        for ref in f.references:
            ref_node = table.get(ref)
            if ref_node is None:
                ref_node = table[ref] = _Node(ref)
            if prev is not None and ref_node.parent is None and not ref_node.is_ancestor_of(prev) \
                    and ref_node is not prev:
                ref_node.link_under(prev)
            prev = ref_node
        # (1B) the message's parent is the last reference
        if prev is not None and (prev is node or node.is_ancestor_of(prev)):
            prev = None
        node.unlink()
        if prev is not None:
            node.link_under(prev)
    # (2) the root set
    roots = [n for n in table.values() if n.parent is None]
    # (4) prune dummies
    roots = _prune(roots, at_root=True)
    # (5) sort the root set by date (a dummy by its first child's date)
    for r in roots:
        if r.facts is None:
            r.children.sort(key=lambda c: c.sort_date())
    roots.sort(key=lambda n: n.sort_date())
    # (6) merge threads with the same base subject
    roots = _merge_subjects(roots)
    # (7) sort every set of siblings by date
    stack = list(roots)
    while stack:
        n = stack.pop()
        n.children.sort(key=lambda c: c.sort_date())
        stack.extend(n.children)
    roots.sort(key=lambda n: n.sort_date())
    return roots


def _prune(nodes: list, at_root: bool) -> list:
    out = []
    for node in nodes:
        node.children = _prune(node.children, at_root=False)
        for c in node.children:
            c.parent = node
        if node.facts is None:
            if not node.children:
                continue                                # (4A) an empty dummy goes
            if not at_root or len(node.children) == 1:  # (4B) its children move up
                for c in node.children:
                    c.parent = node.parent
                out.extend(node.children)
                continue
        out.append(node)
    if at_root:
        for n in out:
            n.parent = None
    return out


def _thread_subject(node):
    facts = node.facts if node.facts is not None else (node.children[0].facts if node.children else None)
    if facts is None:
        return None, False
    return casemap(facts.base), facts.is_reply


def _merge_subjects(roots: list) -> list:
    subjects = {}
    for node in roots:                      # (6B)
        key, is_reply = _thread_subject(node)
        if not key:
            continue
        old = subjects.get(key)
        if old is None or (old.facts is not None and node.facts is None) or (
                old.facts is not None and old.facts.is_reply and node.facts is not None and not is_reply):
            subjects[key] = node
    result = list(roots)
    for node in roots:                      # (6C)
        key, is_reply = _thread_subject(node)
        old = subjects.get(key) if key else None
        if old is None or old is node:
            continue
        result.remove(node)
        if old.facts is None and node.facts is None:
            for c in list(node.children):
                c.link_under(old)
        elif old.facts is None:
            node.link_under(old)
        elif node.facts is not None and is_reply and not old.facts.is_reply:
            node.link_under(old)
        else:
            dummy = _Node(None)
            result[result.index(old)] = dummy
            old.link_under(dummy)
            node.link_under(dummy)
            subjects[key] = dummy
    return result


def thread(facts: list, algorithm: str) -> list:
    if algorithm == "ORDEREDSUBJECT":
        return _ordered_subject(facts)
    return _references(facts)


def format_threads(roots: list, number) -> bytes:
    """thread-list per RFC 5256 §4; `number(facts)` is the sequence number or UID."""
    def members(node) -> str:
        parts = []
        while True:
            if node.facts is not None:
                parts.append(str(number(node.facts)))
            if len(node.children) == 1:
                node = node.children[0]
                continue
            if node.children:
                nested = "".join("(" + members(c) + ")" for c in node.children)
                parts.append(nested)
            return " ".join(parts)

    return "".join("(" + members(r) + ")" for r in roots).encode()
