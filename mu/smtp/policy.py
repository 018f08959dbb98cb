"""What the SMTP receiver accepts: the blocklist, rate limits, local recipients only
(never a relay), then authentication (SPF, DKIM, DMARC) and durable storage."""

import email.utils
import re
import socket
import time

from .. import addr
from ..auth import dkim as dkim_auth, dmarc, spf as spf_auth
from ..log import log
from ..mime import MimeLimitError, parse as parse_mime
from . import replies as R
from .replies import ReplyError


class ReceivePolicy:
    def __init__(self, config, mailbox, blocklist, connection_limiter, message_limiter, resolver,
                 events=None):
        self.config = config
        self.mailbox = mailbox
        self.blocklist = blocklist
        self.connection_limiter = connection_limiter
        self.message_limiter = message_limiter
        self.resolver = resolver
        self.events = events   # optional callable(kind, dict) for the admin mail log
        self.hostname = config.domain if config.domain != "localhost" else (socket.getfqdn() or "localhost")
        spf_auth.use_resolver(resolver)

    def _event(self, kind, **fields):
        if self.events:
            self.events(kind, fields)

    # Blocked before rate limiting, as the guide says: a blocked sender never uses quota.
    def connect(self, ip: str):
        if self.blocklist.blocked(ip):
            log("smtp", f"Rejected blocked sender: {ip} (IP: {ip})")
            self._event("blocked", ip=ip, sender="")
            return R.BLOCKED
        if not self.connection_limiter.allow(ip):
            self._event("rate-limited", ip=ip, what="connections")
            return R.RATE_CONNECTIONS
        return None

    def mail_from(self, envelope, address: str):
        if address:
            try:
                addr.parse(address)
            except addr.AddressError:
                return R.SYNTAX_ADDRESS
        if self.blocklist.blocked(envelope.peer_ip, address):
            log("smtp", f"Rejected blocked sender: {address or '<>'} (IP: {envelope.peer_ip})")
            self._event("blocked", ip=envelope.peer_ip, sender=address)
            return R.BLOCKED
        key = address.lower() if address else f"<>@{envelope.peer_ip}"
        if not self.message_limiter.allow(key):
            self._event("rate-limited", ip=envelope.peer_ip, sender=address, what="messages")
            return R.RATE_MESSAGES
        return None

    def rcpt_to(self, envelope, address: str) -> list:
        try:
            local, domain = addr.parse(address)
        except addr.AddressError:
            if address.lower() == "postmaster":  # RFC 5321 §4.5.1: <Postmaster> without a domain
                local, domain = "postmaster", self.config.domain
            else:
                raise ReplyError(R.SYNTAX_ADDRESS)
        if domain != self.config.domain:
            raise ReplyError(R.RELAY_DENIED)
        with self.mailbox.store.reading() as state:
            users = self.mailbox.local_user_for(f"{local}@{domain}", state)
        if not users:
            raise ReplyError(R.USER_NOT_FOUND)
        return users

    def deliver(self, envelope, data: bytes):
        if not data.strip():
            return R.EMPTY_MESSAGE
        users = []
        for _address, names in envelope.recipients:
            users += [n for n in names if n not in users]
        try:
            parsed = parse_mime(data, max_parts=self.config.max_mime_parts, max_depth=self.config.max_mime_depth,
                                timeout_seconds=self.config.mime_timeout_seconds)
        except MimeLimitError as exc:
            log("smtp", f"refused a message from {envelope.mail_from or '<>'} (IP: {envelope.peer_ip}): {exc}")
            return R.MIME_LIMIT.with_text(R.MIME_LIMIT.text.format(reason=exc))
        except Exception:  # mime.parse never raises on broken MIME; this is a last resort
            parsed = {"subject": "", "from_name": "", "from_addr": envelope.mail_from or "", "to": [],
                      "cc": [], "message_id": "", "in_reply_to": "", "references": [],
                      "text": data.decode("utf-8", "replace"), "html": "", "attachments": []}
        # RFC 7489 §3.1: DMARC aligns with the domain of the header From.
        header_from_domain = parsed["from_addr"].rpartition("@")[2].lower()
        trace, auth = self._authenticate(envelope, data, header_from_domain)
        if not parsed["from_addr"]:
            parsed["from_addr"] = envelope.mail_from or ""
        if not parsed["to"] and not parsed["cc"]:   # no To/Cc header: show the envelope recipients
            parsed["to"] = [address for address, _users in envelope.recipients]
        kind = "bounce" if not envelope.mail_from else "inbound"
        try:
            msg_id = self.mailbox.deliver_inbound(
                users, parsed, trace + data,
                {"kind": kind, "envelope_from": envelope.mail_from or "", "peer_ip": envelope.peer_ip,
                 "auth": auth})
        except Exception as exc:
            log("smtp", f"storing a message from {envelope.mail_from!r} failed: {exc}")
            return R.STORAGE_FAILED
        self._event("received", id=msg_id, sender=envelope.mail_from or "", ip=envelope.peer_ip,
                    rcpts=users, **auth)
        return R.QUEUED.with_text(R.QUEUED.text.format(id=msg_id))

    def _authenticate(self, envelope, data: bytes, parsed_from: str) -> tuple:
        """The trace headers to prepend (Received, Received-SPF, Authentication-Results)."""
        ip, helo, sender = envelope.peer_ip, envelope.helo, envelope.mail_from or ""
        spf_result, spf_expl = spf_auth.check(ip, sender, helo, timeout=self.config.dns_timeout_seconds)
        if spf_result in ("fail", "softfail", "permerror", "temperror"):
            log("smtp", f"SPF {spf_result} for {sender or '<>'} from {ip}: {spf_expl}")
        dkim_results = dkim_auth.verify(data, self.resolver) if b"dkim-signature" in data[:65536].lower() else []
        spf_domain = sender.rpartition("@")[2].lower() if sender else helo.lower()
        dmarc_result, dmarc_policy = dmarc.evaluate(parsed_from, spf_result, spf_domain, dkim_results, self.resolver)
        host = self.hostname
        now = email.utils.formatdate(time.time())
        proto = ("UTF8" if envelope.smtputf8 else "") + ("ESMTPS" if envelope.tls else "ESMTP" if envelope.esmtp else "SMTP")
        if proto.startswith("UTF8"):
            proto = "UTF8SMTPS" if envelope.tls else "UTF8SMTP"
        rcpt = envelope.recipients[0][0] if len(envelope.recipients) == 1 else None
        received = (f"Received: from {_clean(helo)} ([{ip}])\r\n\tby {host} (mu) with {proto}"
                    + (f"\r\n\tfor <{_clean(rcpt)}>" if rcpt else "") + f"; {now}\r\n")
        received_spf = (f"Received-SPF: {spf_result} ({host}: {_clean(spf_expl)}) client-ip={ip};"
                        f" envelope-from=\"{_clean(sender)}\"; helo={_clean(helo)};\r\n")
        dkim_part = "; ".join(f"dkim={r} header.d={d}" for r, d in dkim_results) or "dkim=none"
        auth_results = (f"Authentication-Results: {host};\r\n\tspf={spf_result} smtp.mailfrom={_clean(sender) or '<>'};"
                        f"\r\n\t{dkim_part};\r\n\tdmarc={dmarc_result} (p={dmarc_policy}) header.from={parsed_from or 'unknown'}\r\n")
        auth = {"spf": spf_result, "dkim": dkim_results[0][0] if dkim_results else "none",
                "dkim_domains": [d for _, d in dkim_results], "dmarc": dmarc_result, "dmarc_policy": dmarc_policy}
        return (received + received_spf + auth_results).encode("utf-8"), auth


_UNSAFE_IN_TRACE = re.compile(r'[^\x20-\x7e\u00a0-\uffff]|[;"\\]')


def _clean(text) -> str:
    """Text safe inside a trace header: printable, no quotes or separators, bounded."""
    return _UNSAFE_IN_TRACE.sub("", str(text or ""))[:200]
