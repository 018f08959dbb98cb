"""NOTIFY (RFC 5465): which mailboxes and events a client wants pushed to it, and the
STATUS and LIST responses that report changes to mailboxes other than the selected one.

`parse` reads NOTIFY SET's arguments into a `Spec`; `snapshot` reads what the events are
about (each mailbox's UIDVALIDITY, UIDNEXT, counts and HIGHESTMODSEQ; the names; the
subscriptions); `changes` turns two snapshots into responses. The selected mailbox is
reported by the session's usual EXISTS/EXPUNGE/FETCH updates, sent between commands when
the SELECTED filter asks for them.
"""

from dataclasses import dataclass, field

from . import fetch as F
from .parser import BadSyntax

EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange", "MailboxName",
          "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange")
SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
MESSAGE_EVENTS = {"MessageNew", "MessageExpunge", "FlagChange"}
MAX_NAMES = 100   # mailbox names in one NOTIFY before NOTIFICATIONOVERFLOW


class NotifyRefused(Exception):
    """A NOTIFY SET that is valid but cannot be done; `.code` is the response code."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code, self.text = code, text


@dataclass
class Group:
    filter: str                    # INBOXES PERSONAL SUBSCRIBED SUBTREE MAILBOXES
    names: tuple = ()
    events: frozenset = frozenset()

    def covers(self, name: str, subscriptions) -> bool:
        if self.filter == "PERSONAL":
            return True
        if self.filter == "INBOXES":   # where new mail is delivered: INBOX
            return name == "INBOX"
        if self.filter == "SUBSCRIBED":
            return name in subscriptions
        if self.filter == "MAILBOXES":
            return name in self.names
        return any(name == n or name.startswith(n + "/") for n in self.names)   # SUBTREE


@dataclass
class Spec:
    groups: list = field(default_factory=list)
    selected_events: frozenset = frozenset()
    selected_immediate: bool = False   # SELECTED (not SELECTED-DELAYED): expunges as they happen
    fetch_items: list = None           # MessageNew's fetch-att for the selected mailbox
    status: bool = False

    def events_for(self, name: str, subscriptions) -> set:
        out = set()
        for g in self.groups:
            if g.covers(name, subscriptions):
                out |= g.events
        return out

    @property
    def uses_flag_change(self) -> bool:
        return any("FlagChange" in g.events for g in self.groups) or "FlagChange" in self.selected_events


def _events(reader, selected: bool, spec: Spec) -> frozenset:
    if reader.maybe(b"NONE"):
        return frozenset()
    reader.expect(b"(")
    events = set()
    while True:
        word = reader.atom().decode("ascii", "replace")
        name = next((e for e in EVENTS if e.lower() == word.lower()), None)
        if name is None:
            raise BadSyntax(f"Unknown NOTIFY event {word}")
        events.add(name)
        if name == "MessageNew" and reader.peek_bytes(2) == b" (":
            reader.sp()
            if not selected:
                raise BadSyntax("FETCH attributes only for the selected mailbox")
            spec.fetch_items = F.parse_items(reader)
        if not reader.maybe(b" "):
            break
    reader.expect(b")")
    return frozenset(events)


def parse(reader, mailbox_name) -> Spec:
    """NOTIFY SET [STATUS] 1*(SP event-group), after "SET" (RFC 5465 §8)."""
    spec = Spec()
    reader.sp()
    if reader.maybe(b"STATUS "):
        spec.status = True
    selected_seen = False
    names = 0
    while True:
        reader.expect(b"(")
        kind = reader.word()
        if kind in ("SELECTED", "SELECTED-DELAYED"):
            if selected_seen:
                raise BadSyntax("Duplicate selected filter")
            selected_seen = True
            reader.sp()
            spec.selected_events = _events(reader, True, spec)
            spec.selected_immediate = kind == "SELECTED"
            ev = spec.selected_events
            if bool(ev & {"MessageNew", "MessageExpunge"}) and not {"MessageNew", "MessageExpunge"} <= ev:
                raise BadSyntax("MessageNew and MessageExpunge must be together")
            if "FlagChange" in ev and "MessageExpunge" not in ev:
                raise BadSyntax("FlagChange requires MessageNew and MessageExpunge")
        elif kind in ("INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES"):
            boxes = ()
            if kind in ("SUBTREE", "MAILBOXES"):
                reader.sp()
                if reader.maybe(b"("):
                    boxes = [mailbox_name(reader.astring())]
                    while reader.maybe(b" "):
                        boxes.append(mailbox_name(reader.astring()))
                    reader.expect(b")")
                else:
                    boxes = [mailbox_name(reader.astring())]
                names += len(boxes)
            reader.sp()
            events = _events(reader, False, spec)
            if events:
                spec.groups.append(Group(kind, tuple(boxes), events))
        else:
            raise BadSyntax(f"Unknown NOTIFY filter {kind}")
        reader.expect(b")")
        if not reader.maybe(b" "):
            break
    reader.end()
    used = set(spec.selected_events).union(*[g.events for g in spec.groups]) if spec.groups else set(spec.selected_events)
    unsupported = [e for e in EVENTS if e in used and e not in SUPPORTED]
    if unsupported:
        raise NotifyRefused("BADEVENT (" + " ".join(SUPPORTED) + ")", "Unsupported NOTIFY events")
    if names > MAX_NAMES:
        raise NotifyRefused("NOTIFICATIONOVERFLOW", "Too many mailbox names")
    return spec


@dataclass(frozen=True)
class Snapshot:
    boxes: dict            # name -> MailboxInfo
    subscriptions: frozenset


def snapshot(store, user) -> Snapshot:
    return Snapshot({m.name: m for m in store.mailboxes(user)}, frozenset(store.subscriptions(user)))


def status_line(wire_name, info, items) -> bytes:
    values = {"MESSAGES": info.total, "UIDNEXT": info.uidnext, "UIDVALIDITY": info.uidvalidity,
              "UNSEEN": info.unseen, "HIGHESTMODSEQ": info.highestmodseq}
    text = " ".join(f"{item} {values[item]}" for item in items)
    return b"* STATUS " + wire_name(info.name) + b" (" + text.encode() + b")\r\n"


def initial_status(spec: Spec, snap: Snapshot, selected: str, wire_name, condstore: bool) -> list:
    """NOTIFY SET STATUS: a STATUS for every mailbox the message events cover (RFC 5465 §3.1)."""
    items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"]
    if spec.uses_flag_change:
        items.append("HIGHESTMODSEQ")
    lines = []
    for name, info in snap.boxes.items():
        if name != selected and spec.events_for(name, snap.subscriptions) & MESSAGE_EVENTS:
            lines.append(status_line(wire_name, info, items))
    return lines


def _list_line(wire_name, name, attrs, old=None) -> bytes:
    line = b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + wire_name(name)
    if old is not None:
        line += b' ("OLDNAME" (' + wire_name(old) + b"))"
    return line + b"\r\n"


def changes(spec: Spec, old: Snapshot, new: Snapshot, selected: str, wire_name, condstore: bool) -> list:
    lines = []
    gone = {n: i for n, i in old.boxes.items() if n not in new.boxes}
    born = {n: i for n, i in new.boxes.items() if n not in old.boxes}
    by_validity = {i.uidvalidity: n for n, i in gone.items()}
    for name, info in born.items():
        previous = by_validity.pop(info.uidvalidity, None)   # RENAME keeps UIDVALIDITY
        if previous is not None:
            gone.pop(previous)
        if "MailboxName" in spec.events_for(name, new.subscriptions) | (
                spec.events_for(previous, old.subscriptions) if previous else set()):
            lines.append(_list_line(wire_name, name, [], previous))
    for name in gone:
        if "MailboxName" in spec.events_for(name, old.subscriptions):
            lines.append(_list_line(wire_name, name, ["\\NonExistent"]))
    for name in sorted(new.subscriptions ^ old.subscriptions):
        if "SubscriptionChange" in spec.events_for(name, new.subscriptions | old.subscriptions):
            attrs = ["\\Subscribed"] if name in new.subscriptions else []
            if name not in new.boxes:
                attrs.append("\\NonExistent")
            lines.append(_list_line(wire_name, name, attrs))
    for name, info in new.boxes.items():
        before = old.boxes.get(name)
        if name == selected or before is None:
            continue
        events = spec.events_for(name, new.subscriptions)
        items = []
        if before.uidvalidity != info.uidvalidity and events & MESSAGE_EVENTS:
            items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"]
        elif ("MessageNew" in events and before.uidnext != info.uidnext) or (
                "MessageExpunge" in events and before.total != info.total):
            items = ["MESSAGES", "UIDNEXT", "UNSEEN"]
        elif "FlagChange" in events and before.unseen != info.unseen:
            items = ["UNSEEN"]
        if "FlagChange" in events and condstore and before.highestmodseq != info.highestmodseq:
            items.append("HIGHESTMODSEQ")
        if items:
            lines.append(status_line(wire_name, info, items))
    return lines
