"""The outbound queue: durable entries in the store, a scheduler and delivery workers.

An entry is one message's recipients at one domain. It is written (fsynced) with the
message before the sender is told "queued", and removed in the same commit that records
its final outcome, so a restart resumes exactly the entries still open. 4xx replies and
connection failures are retried on a growing schedule until MAIL_QUEUE_LIFETIME; a 5xx
fails at once, bounces an RFC 3464 report to the sender and refunds the credits when no
recipient of the message was reached.
"""

import queue as queue_mod
import threading
import time

from .. import mime
from ..dnsresolver import DNSTempError
from ..log import log
from . import client, dsn, mx

# Multiples of MAIL_RETRY_BASE_SECONDS (1 m, 5 m, 15 m, 30 m, 1 h, 2 h, 4 h with the default).
RETRY_STEPS = (1, 5, 15, 30, 60, 120, 240)
MAX_MESSAGES_PER_CONNECTION = 100
SCAN_INTERVAL_SECONDS = 1.0


def retry_delay(attempts: int, base: float) -> float:
    return base * RETRY_STEPS[min(attempts, len(RETRY_STEPS)) - 1]


def aggregate_status(delivery: dict) -> str:
    states = {d["status"] for d in delivery.values()}
    if "deferred" in states:
        return "deferred"
    if "queued" in states:
        return "queued"
    if states == {"sent"}:
        return "sent"
    return "failed"


class DeliveryQueue:
    def __init__(self, config, store, mailbox, resolver, signer, events=None):
        self.config = config
        self.store = store
        self.mailbox = mailbox
        self.resolver = resolver
        self.signer = signer
        self.events = events
        self._work = queue_mod.Queue()
        self._in_flight = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stopping = threading.Event()
        self._threads = []

    # ------------------------------------------------------------ threads

    def start(self) -> None:
        t = threading.Thread(target=self._schedule_loop, name="queue-scheduler", daemon=True)
        self._threads.append(t)
        for i in range(self.config.queue_workers):
            self._threads.append(threading.Thread(target=self._work_loop, name=f"queue-worker-{i}", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self._wake.set()
        for _ in self._threads:
            self._work.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def kick(self) -> None:
        """Look at the queue now (a message was queued, or an admin asked for a retry)."""
        self._wake.set()

    def retry_now(self) -> int:
        """Make every deferred entry due now; return how many."""
        def build(state, _refs):
            records = []
            for qid, entry in state.queue.items():
                if entry["status"] in ("deferred", "queued"):
                    records.append({"op": "queue.put", "id": qid, "entry": dict(entry, next_try=0)})
            return records, len(records)
        count = self.store.commit(build)
        self.kick()
        return count

    def _schedule_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._dispatch_due()
            except Exception as exc:
                log("mail", f"queue scheduler error: {exc!r}")
            self._wake.wait(SCAN_INTERVAL_SECONDS)
            self._wake.clear()

    def _dispatch_due(self) -> None:
        now = time.time()
        by_domain = {}
        with self.store.reading() as state:
            for qid, entry in sorted(state.queue.items()):
                if entry["status"] in ("queued", "deferred") and entry["next_try"] <= now:
                    by_domain.setdefault(entry["domain"], []).append(qid)
        with self._lock:
            for domain, qids in by_domain.items():
                if domain in self._in_flight:
                    continue
                self._in_flight.add(domain)
                self._work.put((domain, qids))

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            domain, qids = item
            try:
                self.deliver_domain(domain, qids)
            except Exception as exc:
                log("mail", f"delivery to {domain} failed unexpectedly: {exc!r}")
            finally:
                with self._lock:
                    self._in_flight.discard(domain)
                self._wake.set()

    # ------------------------------------------------------------ delivery

    def deliver_domain(self, domain: str, qids: list) -> None:
        try:
            hosts = mx.route(domain, self.resolver)
        except mx.PermanentRouteError as exc:
            for qid in qids:
                self._record(qid, {}, default=client.Outcome(False, True, str(exc)))
            return
        except DNSTempError as exc:
            for qid in qids:
                self._record(qid, {}, default=client.Outcome(False, False, str(exc)))
            return
        pending = list(qids)
        last_error = "no MX host could be reached"
        for host in hosts:
            if not pending or self.stopping.is_set():
                break
            try:
                addresses = self.resolver.addresses(host)
            except DNSTempError as exc:
                last_error = str(exc)
                continue
            for address in addresses:
                # Several connections to one address when there is more mail than one carries.
                while pending and not self.stopping.is_set():
                    sent_before = len(pending)
                    error = self._deliver_over_one_connection(host, address, pending)
                    if error:
                        last_error = error
                    if error or len(pending) == sent_before:
                        break
                if not pending:
                    break
        for qid in pending:
            self._record(qid, {}, default=client.Outcome(False, False, last_error))

    def _deliver_over_one_connection(self, host: str, address: str, pending: list):
        """Send queued entries from `pending` (removing each one done); an error text if the
        connection failed."""
        port = self.config.outbound_port
        try:
            session = client.RemoteSession(host, address, port, self.config.domain,
                                           self.config.outbound_timeout_seconds)
        except client.TEMPORARY_ERRORS as exc:
            return f"connect to {host}[{address}]:{port}: {_describe(exc)}"
        try:
            for _ in range(MAX_MESSAGES_PER_CONNECTION):
                if not pending or self.stopping.is_set():
                    break
                qid = pending[0]
                job = self._load(qid)
                if job is None:
                    pending.pop(0)
                    continue
                entry, message = job
                try:
                    results = session.send(entry["from_addr"], entry["rcpts"], message)
                except client.TEMPORARY_ERRORS as exc:
                    return f"{host}[{address}]: {_describe(exc)}"   # try the next address
                pending.pop(0)
                self._record(qid, results)
        finally:
            session.close()
        return None

    def _message_number(self, state, entry):
        return state.messages.number_of(entry["msg"]) if entry else None

    def _load(self, qid: str):
        with self.store.reading() as state:
            entry = state.queue.get(qid)
            n = self._message_number(state, entry)
            if n is None:
                return None
            entry = dict(entry)
        return entry, self.signer.sign(self.mailbox.mailstore.raw_of(n))

    def _record(self, qid: str, results: dict, default=None) -> None:
        """Commit one entry's outcome: done, deferred, or failed (with bounce and refund)."""
        now = time.time()
        bounce = {}

        def build(state, _refs):
            entry = state.queue.get(qid)
            if entry is None:
                return [], None
            n = self._message_number(state, entry)
            msg = self.store.meta_record(n) if n is not None else None
            attempts = entry["attempts"] + 1
            expired = now - entry["created_at"] >= self.config.queue_lifetime_seconds
            delivery = dict(msg.get("delivery", {})) if msg else {}
            still_open, last_detail = [], ""
            for rcpt in entry["rcpts"]:
                outcome = results.get(rcpt, default)
                last_detail = outcome.detail
                if outcome.ok:
                    status = "sent"
                elif outcome.permanent or expired:
                    status = "failed"
                    bounce[rcpt] = outcome.detail + (" (gave up after the queue lifetime)" if expired and not outcome.permanent else "")
                else:
                    status = "deferred"
                    still_open.append(rcpt)
                delivery[rcpt] = {"status": status, "detail": outcome.detail}
            records = []
            next_try = now + retry_delay(attempts, self.config.retry_base_seconds)
            if still_open:
                records.append({"op": "queue.put", "id": qid, "entry": dict(
                    entry, rcpts=still_open, attempts=attempts, next_try=next_try, status="deferred",
                    detail=last_detail)})
            else:
                records.append({"op": "queue.del", "id": qid})
            if msg:
                status = aggregate_status(delivery)
                fields = {"delivery": delivery, "status": status, "status_detail": last_detail,
                          "next_try": next_try if still_open else None}
                others_open = any(q["msg"] == entry["msg"] and k != qid for k, q in state.queue.items())
                if status == "failed" and not others_open and msg.get("charged") and \
                        not any(d["status"] == "sent" for d in delivery.values()):
                    records.append({"op": "user.credit", "name": entry["sender"], "delta": msg["charged"]})
                    fields["charged"] = 0
                    fields["refunded"] = True
                records.append({"op": "msg.set", "id": entry["msg"], "fields": fields})
            return records, (entry, msg and dict(msg))

        result = self.store.commit(build)
        if result is None:
            return
        entry, msg = result
        for rcpt, outcome in ((r, results.get(r, default)) for r in entry["rcpts"]):
            verdict = "sent" if outcome.ok else ("failed" if rcpt in bounce else "deferred")
            log("mail", f"delivery {verdict}: {entry['from_addr']} -> {rcpt}: {outcome.detail}")
            if self.events:
                self.events("outbound", {"id": entry["msg"], "rcpt": rcpt, "status": verdict, "detail": outcome.detail})
        if bounce and msg:
            self._bounce(entry, msg, bounce)

    def _bounce(self, entry: dict, msg: dict, failures: dict) -> None:
        with self.store.reading() as state:
            n = self._message_number(state, entry)
        raw = self.mailbox.mailstore.raw_of(n) if n is not None else b""
        headers = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        report = dsn.build_bounce(domain=self.config.domain, reporting_host=self.config.domain,
                                  sender=entry["from_addr"], original_subject=msg.get("subject", ""),
                                  failures=failures, original_headers=headers)
        parsed = mime.parse(report)
        parsed["in_reply_to"] = msg.get("message_id", "")
        try:
            self.mailbox.deliver_inbound([entry["sender"]], parsed, report,
                                         {"kind": "bounce", "envelope_from": ""})
        except Exception as exc:
            log("mail", f"could not store bounce for {entry['sender']}: {exc}")


def _describe(exc) -> str:
    if isinstance(exc, client.smtplib.SMTPResponseException):
        return client._reply_text(exc.smtp_code, exc.smtp_error)
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
