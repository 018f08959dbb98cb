"""LIST and LSUB: which mailbox names a request matches and each one's attributes
(RFC 9051 §6.3.9, RFC 3501 §6.3.9 LSUB, RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE,
RFC 3348 CHILDREN). Pure functions of the user's mailboxes and subscriptions."""

import re
from dataclasses import dataclass, field

CHILDINFO_SUBSCRIBED = b' ("CHILDINFO" ("SUBSCRIBED"))'


def compile_pattern(text: str):
    """A LIST pattern as a regex: "*" anything, "%" anything but the delimiter; a leading
    INBOX in any case means INBOX (RFC 9051 §5.1)."""
    out = [".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in text]
    regex = "".join(out)
    if text[:5].upper() == "INBOX" and (len(text) == 5 or text[5] in "/*%"):
        regex = "INBOX" + "".join(out[5:])
    return re.compile(regex + r"\Z", re.S)


@dataclass
class Request:
    patterns: list                              # compiled
    lsub: bool = False
    selection: set = field(default_factory=set)  # SUBSCRIBED REMOTE RECURSIVEMATCH SPECIAL-USE
    returns: set = field(default_factory=set)    # SUBSCRIBED CHILDREN SPECIAL-USE STATUS
    nonexistent: bool = False                    # \NonExistent (LIST-EXTENDED, IMAP4rev2), else \Noselect


def _parents(names) -> set:
    return {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}


def rows(boxes: dict, subscribed: set, req: Request) -> list:
    """[(name, [attributes], extended data bytes or None)] in listing order, INBOX first."""
    parents = _parents(boxes)
    subscribed_parents = _parents(subscribed)
    names = set(boxes) | parents | _parents(subscribed)
    if req.lsub or "SUBSCRIBED" in req.selection:
        names |= subscribed

    def matches(name):
        return any(p.match(name) for p in req.patterns)

    out = []
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        exists, is_sub, info = name in boxes, name in subscribed, boxes.get(name)
        if not matches(name):
            continue
        if req.lsub:
            if is_sub:
                out.append((name, [] if exists else ["\\Noselect"], None))
            elif name in subscribed_parents:
                out.append((name, ["\\Noselect"], None))   # "%" reaching a parent of subscriptions
            continue
        if "SPECIAL-USE" in req.selection and not (info and info.special_use):
            continue
        child_info = None
        if "SUBSCRIBED" in req.selection and not is_sub:
            if "RECURSIVEMATCH" in req.selection and any(
                    s.startswith(name + "/") and not matches(s) for s in subscribed):
                child_info = CHILDINFO_SUBSCRIBED
            else:
                continue
        attrs = []
        if not exists:
            if name not in parents and not is_sub:
                continue
            attrs.append("\\NonExistent" if req.nonexistent else "\\Noselect")
        if is_sub and ("SUBSCRIBED" in req.selection or "SUBSCRIBED" in req.returns):
            attrs.append("\\Subscribed")
        if exists or name in parents:
            attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if info and info.special_use:
            attrs.append(info.special_use)
        out.append((name, attrs, child_info))
    return out
