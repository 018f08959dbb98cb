"""The outbound queue: durable entries in the store, a scheduler and delivery workers.

An entry (`mu.outbox` owns its format) is one message's recipients at one domain. It is
written (fsynced) with the message before the sender is told "queued", and removed in
the same commit that records its final outcome, so a restart resumes exactly the
entries still open.

Every attempt ends in a recorded outcome for each entry it took, whatever went wrong:
4xx replies, DNS, TLS, a connection lost mid-DATA, the DKIM signer failing, a store
read failing or any unforeseen exception become a deferral on the retry schedule
(`outbox.retry_delay`) until MAIL_QUEUE_LIFETIME; a 5xx fails at once. A failure is
committed together with its RFC 3464 bounce to the sender and, when no recipient of the
message was reached, the refund of its credits (`outbox.refund_records`).

An outcome that cannot be written (a full disk) is held in memory and written again
every HELD_RETRY_SECONDS; an entry whose outcome is held is not dispatched, so this
process never sends again a message a remote has accepted. (A crash before the write
can repeat it, as with any MTA: RFC 5321 §6.1 prefers that to losing it.)

Threads: one scheduler (`queue-scheduler`) that dispatches due entries by domain, and
MAIL_QUEUE_WORKERS workers (`queue-worker-N`), one domain at a time each.
"""

import queue as queue_mod
import threading
import time

from .. import compose, mime, outbox
from ..dnsresolver import DNSTempError
from ..log import log
from ..outbox import Outcome
from . import client, dsn, mx
from .signer import SigningError

MAX_MESSAGES_PER_CONNECTION = 100
SCAN_INTERVAL_SECONDS = 1.0
HELD_RETRY_SECONDS = 2.0
DNS_FAILURE = "4.4.3"     # RFC 3463: directory server failure
NO_ROUTE = "4.4.1"        # RFC 3463: no answer from host


class _Held:
    """An outcome the store could not take yet."""
    __slots__ = ("number", "results", "default", "now", "due")

    def __init__(self, number, results, default, now):
        self.number, self.results, self.default, self.now = number, results, default, now
        self.due = time.monotonic() + HELD_RETRY_SECONDS


class _Job:
    """One entry, loaded and signed, ready to send."""
    __slots__ = ("qid", "number", "entry", "message", "smtputf8")

    def __init__(self, qid, number, entry, message):
        self.qid, self.number, self.entry, self.message = qid, number, entry, message
        self.smtputf8 = (not entry["from_addr"].isascii() or not all(r.isascii() for r in entry["rcpts"])
                         or compose.needs_smtputf8(message))


class _Attempt:
    """The entries one worker took for a domain: (qid, attempt number) not yet recorded."""

    def __init__(self, domain: str, jobs: list):
        self.domain = domain
        self.pending = list(jobs)
        self.prepared = None
        self.error = "no MX host could be reached"
        self.status = NO_ROUTE

    def done(self, qid: str) -> None:
        self.pending = [(q, n) for q, n in self.pending if q != qid]
        if self.prepared is not None and self.prepared.qid == qid:
            self.prepared = None


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
        self._held = {}        # qid -> _Held
        self._held_lock = threading.Lock()
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
        self._write_held(force=True)
        if self._held:
            log("mail", f"{len(self._held)} delivery outcomes could not be written before shutdown; "
                        "their messages will be tried again")

    def kick(self) -> None:
        """Look at the queue now (a message was queued, or an admin asked for a retry)."""
        self._wake.set()

    def retry_now(self) -> int:
        """Make every deferred entry due now; return how many."""
        def build(state, _refs):
            records = []
            for qid, entry in state.queue.items():
                if entry["status"] in outbox.OPEN_STATES:
                    records.append({"op": "queue.put", "id": qid, "entry": dict(entry, next_try=0)})
            return records, len(records)
        count = self.store.commit(build)
        self.kick()
        return count

    def _schedule_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._write_held()
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
                if entry["status"] in outbox.OPEN_STATES and entry["next_try"] <= now and qid not in self._held:
                    by_domain.setdefault(entry["domain"], []).append((qid, entry["attempts"] + 1))
        with self._lock:
            for domain, jobs in by_domain.items():
                if domain in self._in_flight:
                    continue
                self._in_flight.add(domain)
                self._work.put((domain, jobs))

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            domain, jobs = item
            try:
                self.deliver_domain(domain, jobs)
            except Exception as exc:   # deliver_domain records every outcome; this is a last guard
                log("mail", f"delivery to {domain} failed unexpectedly: {exc!r}")
            finally:
                with self._lock:
                    self._in_flight.discard(domain)
                self._wake.set()

    # ------------------------------------------------------------ delivery

    def deliver_domain(self, domain: str, jobs: list) -> None:
        """Try every (qid, attempt number) in `jobs`; each ends with a recorded outcome
        (except those never tried because the server is stopping)."""
        attempt = _Attempt(domain, jobs)
        try:
            self._deliver(attempt)
        except Exception as exc:
            log("mail", f"delivery to {domain}: internal error: {exc!r}")
            attempt.error, attempt.status = f"internal error: {client.describe(exc)}", ""
        if self.stopping.is_set():
            return   # left as they are: the next start tries them
        for qid, number in attempt.pending:
            self._record(qid, number, {}, Outcome(False, False, attempt.error, attempt.status))

    def _deliver(self, attempt: _Attempt) -> None:
        try:
            hosts = mx.route(attempt.domain, self.resolver)
        except mx.PermanentRouteError as exc:
            attempt.error = str(exc)
            for qid, number in list(attempt.pending):
                attempt.done(qid)
                self._record(qid, number, {}, Outcome(False, True, str(exc), exc.status))
            return
        except DNSTempError as exc:
            attempt.error, attempt.status = str(exc), DNS_FAILURE
            return
        for host in hosts:
            if not attempt.pending or self.stopping.is_set():
                return
            try:
                addresses = self.resolver.addresses(host)
            except DNSTempError as exc:
                attempt.error, attempt.status = str(exc), DNS_FAILURE
                continue
            if not addresses:
                attempt.error = f"MX host {host} has no address record"
                continue
            for address in addresses:
                if not attempt.pending or self.stopping.is_set():
                    return
                error = self._deliver_to_address(host, address, attempt)
                if error:
                    attempt.error, attempt.status = error, NO_ROUTE

    def _deliver_to_address(self, host: str, address: str, attempt: _Attempt):
        """Send what `attempt` holds over connections to one address; an error text when
        this address could not take the rest (the caller tries the next one)."""
        skip_tls = ""
        while attempt.pending and not self.stopping.is_set():
            job = self._next_job(attempt)
            if job is None:
                return None
            try:
                session = client.RemoteSession(host, address, self.config.outbound_port, self.config.domain,
                                               self.config.outbound_timeout_seconds, skip_tls=skip_tls)
            except client.TLSHandshakeFailed as exc:
                if skip_tls:
                    return str(exc)
                # As Postfix at `may`: a server whose TLS does not work with ours still gets
                # its mail, in cleartext, on a new connection (see README "Decisions").
                log("mail", f"{exc}; trying again without TLS")
                skip_tls = f"handshake failed: {exc}"
                continue
            except client.ConnectionFailed as exc:
                return str(exc)
            try:
                for _ in range(MAX_MESSAGES_PER_CONNECTION):
                    try:
                        results = session.send(job.entry["from_addr"], job.entry["rcpts"], job.message,
                                               job.smtputf8)
                    except client.TransactionBroken as exc:
                        attempt.done(job.qid)
                        self._record(job.qid, job.number, {}, Outcome(
                            False, False, f"lost connection with {exc}", "4.4.2", host, session.describe_tls()))
                        return str(exc)
                    attempt.done(job.qid)
                    self._record(job.qid, job.number, results, None)
                    if self.stopping.is_set():
                        return None
                    job = self._next_job(attempt)
                    if job is None:
                        return None
            finally:
                session.close()
        return None

    def _next_job(self, attempt: _Attempt):
        """The next pending entry loaded and signed, or None; an entry that cannot be
        prepared (its message unreadable, signing failing) gets its deferral here."""
        while attempt.pending:
            if attempt.prepared is not None:
                return attempt.prepared
            qid, number = attempt.pending[0]
            try:
                job = self._load(qid, number)
            except Exception as exc:
                attempt.done(qid)
                detail = str(exc) if isinstance(exc, SigningError) else \
                    f"cannot prepare the queued message: {client.describe(exc)}"
                self._record(qid, number, {}, Outcome(False, False, detail))
                continue
            if job is None:
                attempt.done(qid)
                continue
            attempt.prepared = job
        return None

    def _load(self, qid: str, number: int):
        with self.store.reading() as state:
            entry = state.queue.get(qid)
            n = state.messages.number_of(entry["msg"]) if entry else None
            if n is None or entry["attempts"] + 1 != number:
                return None
            entry = dict(entry)
        return _Job(qid, number, entry, self.signer.sign(self.mailbox.mailstore.raw_of(n)))

    def _message_record(self, msg_id: str):
        """The message's record with its current delivery fields, or None if it is gone."""
        with self.store.reading() as state:
            n = state.messages.number_of(msg_id)
        return self.store.meta_record(n) if n is not None else None

    # ------------------------------------------------------------ outcomes

    def _record(self, qid: str, number: int, results: dict, default, now: float = None) -> bool:
        """Commit attempt `number` of entry `qid`; hold it in memory if the store cannot
        take it now. True once written."""
        now = now or time.time()
        default = default or Outcome(False, False, "no reply for this recipient")
        try:
            report = self._commit_outcome(qid, number, results, default, now)
        except Exception as exc:
            with self._held_lock:
                first = qid not in self._held
                self._held[qid] = _Held(number, results, default, now)
            if first:
                log("mail", f"could not record the outcome of delivery {qid} ({exc}); "
                            f"kept in memory, writing it again every {HELD_RETRY_SECONDS:g} s")
            return False
        with self._held_lock:
            was_held = self._held.pop(qid, None)
        if was_held:
            log("mail", f"recorded the outcome of delivery {qid}, held since {time.ctime(was_held.now)}")
        if report is not None:
            self._report(report)
        return True

    def _write_held(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._held_lock:
            due = [(q, h) for q, h in self._held.items() if force or h.due <= now]
        for qid, held in due:
            if not self._record(qid, held.number, held.results, held.default, held.now):
                with self._held_lock:
                    if qid in self._held:
                        self._held[qid].due = time.monotonic() + HELD_RETRY_SECONDS

    def _commit_outcome(self, qid, number, results, default, now):
        lifetime, base = self.config.queue_lifetime_seconds, self.config.retry_base_seconds
        with self.store.reading() as state:
            entry = state.queue.get(qid)
            entry = entry and dict(entry)
        msg = self._message_record(entry["msg"]) if entry else None
        msg = msg and dict(msg)
        if entry is None or entry["attempts"] + 1 != number:
            return None
        failures = outbox.final_failures(entry, results, default, now, lifetime)
        bounce = self._bounce(entry, msg, failures, now) if failures and msg else None

        def build(state, refs):
            records, report = outbox.outcome_records(state, qid, number, results, default, now, lifetime, base,
                                                     self._message_record)
            if report is not None and bounce is not None:
                records += bounce[0](state, refs)[0]
            return records, report

        return self.store.commit(build, bounce[1] if bounce else (), bounce[2] if bounce else ())

    def _bounce(self, entry: dict, msg: dict, failures: dict, now: float):
        """(build, blobs, metas) storing the bounce in the sender's inbox, or None if it cannot be
        made (the failure is then recorded without one, and the log says so)."""
        try:
            with self.store.reading() as state:
                n = state.messages.number_of(entry["msg"])
            raw = self.mailbox.mailstore.raw_of(n) if n is not None else b""
        except Exception:
            raw = b""
        headers = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n" if raw else b""
        try:
            report = dsn.build_bounce(domain=self.config.domain, reporting_host=self.config.domain,
                                      sender=entry["from_addr"], original_subject=msg.get("subject", ""),
                                      failures=failures, original_headers=headers,
                                      arrival_date=entry["created_at"], attempt_date=now)
            parsed = mime.parse(report)
            parsed["in_reply_to"] = msg.get("message_id", "")
            return self.mailbox.inbound_commit([entry["sender"]], parsed, report,
                                               {"kind": "bounce", "envelope_from": ""})
        except Exception as exc:
            log("mail", f"could not make the bounce for {entry['sender']}: {exc!r}")
            return None

    def _report(self, report: outbox.Report) -> None:
        entry = report.entry
        for rcpt, (verdict, outcome) in report.verdicts.items():
            via = f" via {outcome.remote}, {outcome.tls}" if outcome.remote else ""
            log("mail", _printable(f"delivery {verdict}: {entry['from_addr']} -> {rcpt}{via}: {outcome.detail}"))
            if self.events:
                self.events("outbound", {"id": entry["msg"], "rcpt": rcpt, "status": verdict,
                                         "detail": outcome.detail, "tls": outcome.tls})
        if report.refunded:
            log("mail", f"refunded {report.msg.get('charged', 0)} credits to {entry['sender']}: "
                        "no recipient could be reached")


def _printable(text: str) -> str:
    """A log line with no character that could end or forge one (controls, NEL, U+2028)."""
    return "".join(c if c.isprintable() else f"\\x{{{ord(c):x}}}" for c in text)
