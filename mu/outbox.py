"""Outbound mail's records: the queue entry, a message's delivery fields, credits and refunds.

The one owner of these formats. `mailbox.send` creates them when a user sends external
mail (charging the credits in the same commit); the delivery queue rewrites them as
attempts end (`outcome_records`), refunding by the rule here. Both build store records
from these functions, so the two can never disagree about what an entry holds.

A queue entry is one message's recipients at one domain, stored as `state.queue[qid]`:

    {"msg": message id, "sender": username, "from_addr": envelope sender,
     "domain": recipient domain (A-label), "rcpts": [still open recipients],
     "attempts": N, "created_at": when queued, "next_try": epoch seconds,
     "status": "queued"|"deferred", "detail": last reply or error}

The message carries `status`, `status_detail`, `next_try`, `charged` (credits reserved),
`refunded`, and `delivery`: {recipient: {"status": queued|sent|deferred|failed, "detail"}}.
"""

# Multiples of MAIL_RETRY_BASE_SECONDS (1 m, 5 m, 15 m, 30 m, 1 h, 2 h, 4 h with the default).
RETRY_STEPS = (1, 5, 15, 30, 60, 120, 240)
OPEN_STATES = ("queued", "deferred")
EXPIRED_NOTE = " (gave up after the queue lifetime)"


class Outcome:
    """What happened to one recipient in one attempt: chasquid's "(error, permanent)" bit
    that chooses between retry and bounce, with the remote's reply or the error as `detail`.

    `status` is the RFC 3463 enhanced code when mu decided it (else read from `detail`);
    `remote` names the host that answered; `tls` says how the session was protected."""

    __slots__ = ("ok", "permanent", "detail", "status", "remote", "tls")

    def __init__(self, ok: bool, permanent: bool, detail: str, status: str = "", remote: str = "",
                 tls: str = ""):
        self.ok, self.permanent, self.detail = ok, permanent, detail
        self.status, self.remote, self.tls = status, remote, tls

    def __repr__(self):
        return f"Outcome(ok={self.ok}, permanent={self.permanent}, detail={self.detail!r})"

    def enhanced_status(self) -> str:
        """The RFC 3463 status for a report: mu's own, the reply's, or one from the reply code."""
        if self.status:
            return self.status
        words = self.detail.split(" ", 2)
        if len(words) > 1 and words[1][:1] in "245" and words[1].count(".") == 2 \
                and all(p.isdigit() for p in words[1].split(".")):
            return words[1]
        if self.ok:
            return "2.0.0"
        if words[0][:1] in "45" and words[0].isdigit():
            return words[0][0] + ".0.0"
        return "5.0.0" if self.permanent else "4.0.0"


def retry_delay(attempts: int, base_seconds: float) -> float:
    return base_seconds * RETRY_STEPS[min(max(attempts, 1), len(RETRY_STEPS)) - 1]


def aggregate_status(delivery: dict) -> str:
    states = {d["status"] for d in delivery.values()}
    if "deferred" in states:
        return "deferred"
    if "queued" in states:
        return "queued"
    if states == {"sent"}:
        return "sent"
    return "failed"


# ------------------------------------------------------------ sending (mailbox.send)

def message_fields(external: list, cost: int) -> dict:
    """The outbound fields of a message just sent to `external` addresses."""
    return {"status": "queued", "status_detail": "", "charged": cost,
            "delivery": {a: {"status": "queued", "detail": ""} for a in external}}


def charge_record(sender: str, cost: int) -> dict:
    """Credits reserved when the message is queued (the caller checked the balance)."""
    return {"op": "user.credit", "name": sender, "delta": -cost}


def entry_records(msg_id: str, sender: str, from_addr: str, external: list, now: float, new_id) -> list:
    """`queue.put` records: one entry per recipient domain, due at once."""
    by_domain = {}
    for address in external:
        by_domain.setdefault(address.rsplit("@", 1)[1].lower(), []).append(address)
    return [{"op": "queue.put", "id": new_id(), "entry": {
        "msg": msg_id, "sender": sender, "from_addr": from_addr, "domain": domain, "rcpts": rcpts,
        "attempts": 0, "created_at": now, "next_try": now, "status": "queued", "detail": ""}}
        for domain, rcpts in sorted(by_domain.items())]


# ------------------------------------------------------------ attempts (the delivery queue)

def final_failures(entry: dict, results: dict, default, now: float, lifetime_seconds: float) -> dict:
    """{recipient: Outcome} of the entry's recipients that this attempt fails for good:
    a permanent reply, or a temporary one after the queue lifetime."""
    expired = now - entry["created_at"] >= lifetime_seconds
    failures = {}
    for rcpt in entry["rcpts"]:
        outcome = results.get(rcpt, default)
        if outcome.ok:
            continue
        if outcome.permanent:
            failures[rcpt] = outcome
        elif expired:
            failures[rcpt] = Outcome(False, True, outcome.detail + EXPIRED_NOTE,
                                     outcome.status or "", outcome.remote, outcome.tls)
    return failures


class Report:
    """What one committed attempt did: per recipient, "sent", "deferred" or "failed"."""

    __slots__ = ("entry", "msg", "verdicts", "failures", "refunded")

    def __init__(self, entry, msg, verdicts, failures, refunded):
        self.entry, self.msg, self.verdicts = entry, msg, verdicts
        self.failures, self.refunded = failures, refunded


def outcome_records(state, qid: str, attempts: int, results: dict, default, now: float,
                    lifetime_seconds: float, retry_base_seconds: float, message_record) -> tuple:
    """(records, Report) that end attempt number `attempts` of entry `qid`: the entry
    rewritten for its next try or removed, the message's delivery fields, and the refund
    when it is due. ([], None) when the entry is gone or another attempt was recorded.
    `message_record(message id)` reads the message's record (None if it is gone)."""
    entry = state.queue.get(qid)
    if entry is None or entry["attempts"] + 1 != attempts:
        return [], None
    msg = message_record(entry["msg"])
    failures = final_failures(entry, results, default, now, lifetime_seconds)
    delivery = dict(msg.get("delivery", {})) if msg else {}
    verdicts, still_open, last_detail = {}, [], ""
    for rcpt in entry["rcpts"]:
        outcome = failures.get(rcpt) or results.get(rcpt, default)
        verdict = "sent" if outcome.ok else ("failed" if rcpt in failures else "deferred")
        if verdict == "deferred":
            still_open.append(rcpt)
        verdicts[rcpt] = (verdict, outcome)
        delivery[rcpt] = {"status": verdict, "detail": outcome.detail}
        last_detail = outcome.detail
    next_try = now + retry_delay(attempts, retry_base_seconds)
    if still_open:
        records = [{"op": "queue.put", "id": qid, "entry": dict(
            entry, rcpts=still_open, attempts=attempts, next_try=next_try, status="deferred",
            detail=last_detail)}]
    else:
        records = [{"op": "queue.del", "id": qid}]
    refunded = False
    if msg:
        fields = {"delivery": delivery, "status": aggregate_status(delivery), "status_detail": last_detail,
                  "next_try": next_try if still_open else None}
        refund = refund_records(msg, delivery, entry["sender"])
        if refund:
            records += refund
            fields.update(charged=0, refunded=True)
            refunded = True
        records.append({"op": "msg.set", "id": entry["msg"], "fields": fields})
    return records, Report(dict(entry), msg and dict(msg), verdicts, failures, refunded)


def refund_records(msg: dict, delivery: dict, sender: str) -> list:
    """The refund rule: the credits come back once every external recipient has failed
    (none reached, none still open); a message that reached anyone stays paid for."""
    if not msg.get("charged") or msg.get("refunded") or not delivery:
        return []
    if any(d["status"] != "failed" for d in delivery.values()):
        return []
    return [{"op": "user.credit", "name": sender, "delta": msg["charged"]}]
