"""What the SMTP receiver accepts: the blocklist, rate limits, local recipients only
(never a relay), then authentication (SPF, DKIM, DMARC) and durable storage.

Authentication never stands between a message and the disk: whatever goes wrong inside
SPF, DKIM or DMARC becomes a temperror or permerror result (RFC 8601 §2.7) and the message
is stored. The one refusal it makes is the one a domain asks for: DMARC p=reject on a
real fail (RFC 7489 §6.6.4).
"""

import email.utils
import re
import socket
import time

from .. import addr
from ..auth import dkim as dkim_auth, dmarc, results, spf as spf_auth
from ..log import log
from ..mime import MimeLimitError, parse as parse_mime
from . import replies as R
from .replies import ReplyError


def server_hostname(config) -> str:
    """The name mu gives itself in greetings and trace fields: MAIL_DOMAIN, or the host's
    own name while MAIL_DOMAIN is `localhost`."""
    return config.domain if config.domain != "localhost" else (socket.getfqdn() or "localhost")


class ReceivePolicy:
    def __init__(self, config, mailbox, blocklist, connection_limiter, message_limiter, resolver,
                 events=None, dmarc_sample=None):
        self.config = config
        self.mailbox = mailbox
        self.blocklist = blocklist
        self.connection_limiter = connection_limiter
        self.message_limiter = message_limiter
        self.resolver = resolver
        self.events = events   # optional callable(kind, dict) for the admin mail log
        self.hostname = server_hostname(config)
        self.spf = spf_auth.Checker(resolver)
        dmarc.public_suffix_list()   # parsed at start-up, not by the first message's DMARC check
        # pct= sampling (RFC 7489 §6.6.4): callable(pct) -> whether this message gets the policy.
        self.dmarc_sample = dmarc_sample or dmarc._sampled
        # RFC 8601 §2.5: the authserv-id names this server; results claiming it are ours alone.
        self.authserv_ids = {self.hostname, config.domain}

    def _event(self, kind, **fields):
        if self.events:
            self.events(kind, fields)

    # Blocked before rate limiting, as the guide says: a blocked sender never uses quota.
    def connect(self, ip: str):
        if self.blocklist.blocked(ip):
            log("smtp", f"Rejected blocked sender: {_for_log(ip)} (IP: {_for_log(ip)})")
            self._event("blocked", ip=ip, sender="")
            return R.BLOCKED
        if not self.connection_limiter.allow(ip):
            self._event("rate-limited", ip=ip, what="connections")
            return R.RATE_CONNECTIONS
        return None

    def mail_from(self, envelope, address: str):
        if address:
            if not address.isascii() and not envelope.smtputf8:   # RFC 6531 §3.4
                return R.SMTPUTF8_REQUIRED
            try:
                addr.parse(address)
            except addr.AddressError:
                return R.SYNTAX_ADDRESS
        if self.blocklist.blocked(envelope.peer_ip, address):
            log("smtp", f"Rejected blocked sender: {_for_log(address) or '<>'} (IP: {_for_log(envelope.peer_ip)})")
            self._event("blocked", ip=envelope.peer_ip, sender=address)
            return R.BLOCKED
        key = address.lower() if address else f"<>@{envelope.peer_ip}"
        if not self.message_limiter.allow(key):
            self._event("rate-limited", ip=envelope.peer_ip, sender=address, what="messages")
            return R.RATE_MESSAGES
        return None

    def rcpt_to(self, envelope, address: str) -> list:
        if not address.isascii() and not envelope.smtputf8:   # RFC 6531 §3.4
            raise ReplyError(R.SMTPUTF8_REQUIRED)
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
            trace, auth, outcome = self._authenticate(envelope, data)
        except Exception as exc:   # a bug in authentication must not cost the message
            log("smtp", f"authentication of a message from {_for_log(envelope.mail_from) or '<>'} "
                        f"failed unexpectedly: {_for_log(repr(exc))}")
            trace, auth, outcome = self._unauthenticated(envelope)
        if outcome.disposition == "reject":
            log("smtp", f"DMARC reject: message from {_for_log(envelope.mail_from) or '<>'} "
                        f"(IP: {_for_log(envelope.peer_ip)}) fails the policy of {outcome.domain}")
            self._event("dmarc-rejected", sender=envelope.mail_from or "", ip=envelope.peer_ip, **auth)
            return R.DMARC_REJECTED.with_text(R.DMARC_REJECTED.text.format(domain=outcome.domain))
        data = results.remove_own_results(data, self.authserv_ids)
        try:
            parsed = parse_mime(data, max_parts=self.config.max_mime_parts, max_depth=self.config.max_mime_depth,
                                timeout_seconds=self.config.mime_timeout_seconds)
        except MimeLimitError as exc:
            log("smtp", f"refused a message from {_for_log(envelope.mail_from) or '<>'} "
                        f"(IP: {_for_log(envelope.peer_ip)}): {_for_log(str(exc))}")
            return R.MIME_LIMIT.with_text(R.MIME_LIMIT.text.format(reason=exc))
        except Exception:  # mime.parse never raises on broken MIME; this is a last resort
            parsed = {"subject": "", "from_name": "", "from_addr": envelope.mail_from or "", "to": [],
                      "cc": [], "message_id": "", "in_reply_to": "", "references": [],
                      "text": data.decode("utf-8", "replace"), "html": "", "attachments": []}
        parsed = _storable(parsed)
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
            log("smtp", f"storing a message from {_for_log(envelope.mail_from) or '<>'} failed: {_for_log(str(exc))}")
            return R.STORAGE_FAILED
        self._event("received", id=msg_id, sender=envelope.mail_from or "", ip=envelope.peer_ip,
                    rcpts=users, **auth)
        return R.QUEUED.with_text(R.QUEUED.text.format(id=msg_id))

    # ------------------------------------------------------------ authentication

    def _authenticate(self, envelope, data: bytes) -> tuple:
        """(trace headers to prepend, the message's `auth` record, the DMARC Outcome)."""
        ip, helo, sender = envelope.peer_ip, envelope.helo or "", envelope.mail_from or ""
        spf_result, spf_expl = self.spf.check(ip, sender, helo, timeout=self.config.dns_timeout_seconds)
        if spf_result in ("fail", "softfail", "permerror", "temperror"):
            log("smtp", f"SPF {spf_result} for {_for_log(sender) or '<>'} from {_for_log(ip)} "
                        f"(HELO {_for_log(helo)}): {_for_log(spf_expl)}")
        # One budget for the rest of the look-ups, so a message naming many slow domains
        # (signatures, From addresses) holds its connection for a bounded time.
        deadline = time.monotonic() + self.config.auth_timeout_seconds
        signed = b"dkim-signature" in data[:65536].lower()
        dkim_results = dkim_auth.verify(data, self.resolver, deadline) if signed else []
        # RFC 7489 §3.1.2: SPF's identifier is the MAIL FROM domain, or the HELO name for
        # the null sender (RFC 7208 §2.4).
        spf_domain = _domain_of(sender) if sender else _helo_domain(helo)
        from_domains = dmarc.header_from_domains(dmarc.author_from_fields(data))
        outcome = dmarc.evaluate(from_domains, spf_result, spf_domain, dkim_results, self.resolver,
                                 sample=self.dmarc_sample, deadline=deadline)
        auth = {"spf": spf_result, "dkim": _best_dkim_result(dkim_results),
                "dkim_domains": [d for _, d in dkim_results], "dmarc": outcome.result,
                "dmarc_policy": outcome.policy, "dmarc_disposition": outcome.disposition}
        return self._trace(envelope, spf_result, spf_expl, dkim_results, outcome), auth, outcome

    def _unauthenticated(self, envelope) -> tuple:
        outcome = dmarc.Outcome("permerror", "none", "none", "")
        dkim_results = [("permerror", "")]
        auth = {"spf": "permerror", "dkim": "permerror", "dkim_domains": [""], "dmarc": "permerror",
                "dmarc_policy": "none", "dmarc_disposition": "none"}
        try:
            trace = self._trace(envelope, "permerror", "", dkim_results, outcome)
        except Exception:   # the trace itself failed: one Received line with nothing from the peer
            ip = envelope.peer_ip
            trace = (f"Received: from unknown ([{'IPv6:' if ':' in ip else ''}{ip}])\r\n\tby {self.hostname} (mu);"
                     f" {email.utils.formatdate(time.time(), localtime=True)}\r\n").encode("ascii", "replace")
        return trace, auth, outcome

    def _trace(self, envelope, spf_result, spf_expl, dkim_results, outcome) -> bytes:
        """Received (RFC 5321 §4.4), Received-SPF (RFC 7208 §9.1), Authentication-Results
        (RFC 8601 §2.2). Every value that came from the peer is validated or quoted."""
        ip, helo, sender = envelope.peer_ip, envelope.helo or "", envelope.mail_from or ""
        host = self.hostname
        now = _trace_date()
        proto = ("UTF8" if envelope.smtputf8 else "") + ("ESMTPS" if envelope.tls else "ESMTP" if envelope.esmtp else "SMTP")
        if proto.startswith("UTF8"):   # RFC 6531 §3.7.3: UTF8SMTP, UTF8SMTPS
            proto = "UTF8SMTPS" if envelope.tls else "UTF8SMTP"
        # RFC 5321 §4.1.3: an IPv6 address literal carries the IPv6: tag.
        ip_literal = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
        rcpt = envelope.recipients[0][0] if len(envelope.recipients) == 1 else None
        received = (f"Received: from {_helo_domain(helo) or 'unknown'} ({ip_literal})\r\n\tby {host} (mu) with {proto}"
                    + (f"\r\n\tfor <{rcpt}>" if rcpt and addr.is_address(rcpt) else "") + f"; {now}\r\n")
        received_spf = (f"Received-SPF: {spf_result} ({host}: {results.comment_text(spf_expl)})"
                        f" client-ip={_key_value(ip)}; envelope-from={results.quoted(sender, utf8=True)};"
                        f" helo={_key_value(helo)};\r\n")
        if sender:
            spf_identity = f"smtp.mailfrom={results.address_value(sender)}"
        else:   # RFC 8601 §2.7.2: for the null sender SPF checked the HELO identity
            spf_identity = f"smtp.helo={results.domain_value(helo)}"
        dkim_part = "; ".join(f"dkim={r} header.d={results.domain_value(d)}" for r, d in dkim_results) or "dkim=none"
        dmarc_part = f"dmarc={outcome.result} (p={outcome.policy} dis={outcome.disposition})"
        if outcome.domain:
            dmarc_part += f" header.from={results.domain_value(outcome.domain)}"
        auth_results = (f"Authentication-Results: {host};\r\n\tspf={spf_result} {spf_identity};"
                        f"\r\n\t{dkim_part};\r\n\t{dmarc_part}\r\n")
        return (received + received_spf + auth_results).encode("utf-8")


_date_cache = [0, ""]


def _trace_date() -> str:
    """The RFC 5322 date for trace fields, in local time: worked out once a second."""
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache[:] = [second, email.utils.formatdate(second, localtime=True)]
    return _date_cache[1]


def _best_dkim_result(dkim_results: list) -> str:
    """The message's DKIM summary: pass if any signature passed, else the most telling."""
    order = ("pass", "fail", "temperror", "permerror")
    found = [r for r, _d in dkim_results]
    return next((r for r in order if r in found), "none")


def _storable(value):
    """`value` (the parsed message: dicts, lists, strings) with no lone surrogates left in
    its text: the email package gives undecodable header bytes back as surrogate escapes,
    which no JSON store can write, and one odd byte must not make a message unstorable."""
    if isinstance(value, str):
        if value.isascii():
            return value
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_storable(v) for v in value)
    return value


def _domain_of(address: str) -> str:
    try:
        return addr.parse(address)[1]
    except addr.AddressError:
        return ""


def _helo_domain(helo: str) -> str:
    """The HELO name as a domain or address literal in canonical form, or "" if it is neither."""
    try:
        return addr.idna_domain(helo) if helo and not helo.endswith(".") else ""
    except addr.AddressError:
        return ""


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def _key_value(text: str) -> str:
    """A Received-SPF value (RFC 7208 §9.1): a dot-atom as it is, anything else quoted."""
    return text if _DOT_ATOM.match(text or "") else results.quoted(text)


# C0 and C1 controls, DEL, line and paragraph separators, lone surrogates, bidi overrides.
_UNSAFE_IN_LOG = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
MAX_LOGGED_CHARS = 300


def _for_log(text) -> str:
    """Peer-supplied text made safe for a log line: every control or separator shown as an
    escape (\\x0a), so a value can never end the line or forge the next one."""
    text = str(text or "")
    if len(text) > MAX_LOGGED_CHARS:
        text = text[:MAX_LOGGED_CHARS] + "..."
    return _UNSAFE_IN_LOG.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                              else f"\\u{ord(m.group()):04x}", text)
