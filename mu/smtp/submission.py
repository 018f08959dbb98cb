"""Message submission (RFC 6409): mail clients sending as their user, after AUTH (RFC 4954).

The same listener, connection, bounded reads and deadlines as the receiver (server.py);
what differs is here. `SubmissionSession` is the receiver's state machine plus AUTH PLAIN
(RFC 4616) and LOGIN (the one Outlook uses), offered only on an encrypted connection or to
a loopback client (RFC 4954 §4, RFC 8314 §3); MAIL needs a login first (RFC 6409 §4.3).
`SubmissionPolicy` decides: whose the envelope sender may be (the user's own address,
`name+tag` included), which recipients (local users, or any external address while the
credits cover it), and what is stored: the message exactly as submitted, below a Received
field (RFC 5321 §4.4, RFC 3848 `ESMTPSA`) and with the From, Date and Message-ID fields
added when missing (RFC 6409 §8.2, §8.3). Storing is `Mailbox.submit`: the Sent copy,
local INBOXes, the queue entries and the credit charge in one commit, as a web send, so
250 after the final dot means all of it is on disk.
"""

import base64
import binascii
import email.utils
import ipaddress
import re
import time

from .. import addr, compose
from ..accounts import LoginThrottled
from ..auth import dmarc
from ..log import log
from ..mailbox import MailError
from ..mime import MimeLimitError, parse as parse_mime
from . import replies as R
from .policy import _for_log, _helo_domain, _storable, server_hostname
from .replies import Reply, ReplyError
from .session import COMMAND_LINE_LIMIT, PROTOCOL_ERRORS, Session

# RFC 4954 §4: 12288 octets is enough for any deployed mechanism's responses. An AUTH line
# with an initial response, and each response line, may be that long; others keep 512.
AUTH_LINE_LIMIT = 12288
MECHANISMS = ("PLAIN", "LOGIN")
# The LOGIN mechanism's prompts, "Username:" and "Password:" in base64, as every client expects.
_LOGIN_USERNAME = "VXNlcm5hbWU6"
_LOGIN_PASSWORD = "UGFzc3dvcmQ6"


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class SubmissionSession(Session):
    line_limit = AUTH_LINE_LIMIT
    # A client that guesses passwords, or probes for an open relay, spends the error budget.
    protocol_errors = PROTOCOL_ERRORS | {530, 535, 538}

    def __init__(self, policy, config, peer_ip: str, tls_active: bool = False, tls_available: bool = False):
        super().__init__(policy, config, peer_ip, tls_active=tls_active, tls_available=tls_available)
        self.user = None      # the user dict once AUTH succeeded (Accounts.authenticate_client)
        self._sasl = None     # the AUTH exchange waiting for the client's next line

    @property
    def secret_next(self) -> bool:
        return self._sasl is not None

    @property
    def auth_offered(self) -> bool:
        """Plain-text passwords only where no one can read them on the way."""
        return self.tls_active or is_loopback(self.peer_ip)

    # ------------------------------------------------------------ lines

    def command(self, line: bytes) -> Reply:
        if self._sasl is not None:
            step, self._sasl = self._sasl, None
            try:
                reply = self._sasl_response(step, line)
            except ReplyError as exc:
                reply = exc.reply
            return self._account(reply)
        if len(line) > COMMAND_LINE_LIMIT - 2 and line[:5].upper() != b"AUTH ":
            return self._account(R.LINE_TOO_LONG)   # only AUTH lines may use AUTH_LINE_LIMIT
        return super().command(line)

    def line_too_long(self) -> Reply:
        if self._sasl is not None:
            self._sasl = None
            return self._account(R.AUTH_LINE_TOO_LONG)
        return super().line_too_long()

    def _extensions(self) -> list:
        lines = super()._extensions()
        if self.auth_offered:
            lines.append("AUTH " + " ".join(MECHANISMS))
        return lines

    def _mail_parameter(self, key: str, value) -> bool:
        # RFC 4954 §5: AUTH=<mailbox or "<>">. mu trusts no client's claim about who
        # submitted a message, so it parses the parameter and discards it, as §5 allows.
        return key == "AUTH" and bool(value)

    # ------------------------------------------------------------ verbs

    def smtp_HELP(self, argument):
        return R.SUBMISSION_HELP

    def smtp_AUTH(self, argument):
        self._require_greeted()
        if not self.envelope.esmtp:
            raise ReplyError(R.AUTH_NEEDS_EHLO)
        if self.user is not None:
            raise ReplyError(R.ALREADY_AUTHENTICATED)   # RFC 4954 §4
        if self.state in ("MAIL", "RCPT"):
            raise ReplyError(R.AUTH_IN_TRANSACTION)
        mechanism, _, initial = argument.partition(" ")
        mechanism, initial = mechanism.upper(), initial.strip()
        if not mechanism:
            raise ReplyError(R.AUTH_NEEDS_MECHANISM)
        if mechanism not in MECHANISMS:
            raise ReplyError(R.AUTH_MECHANISM_UNKNOWN)
        if not self.auth_offered:
            raise ReplyError(R.AUTH_NEEDS_TLS)
        if mechanism == "PLAIN":
            if not initial:
                return self._challenge(("PLAIN",), "")
            return self._plain(_decode(initial, initial_response=True))
        if not initial:
            return self._challenge(("LOGIN",), _LOGIN_USERNAME)
        return self._challenge(("LOGIN", _decode(initial, initial_response=True)), _LOGIN_PASSWORD)

    def smtp_MAIL(self, argument):
        self._require_greeted()
        if self.user is None:
            raise ReplyError(R.AUTH_REQUIRED)   # RFC 6409 §4.3
        if self.state == "READY" and not self.policy.still_valid(self.user):
            self.user = None
            raise ReplyError(R.AUTH_NO_LONGER_VALID)
        self.envelope.user = self.user
        return super().smtp_MAIL(argument)

    # ------------------------------------------------------------ SASL

    def _challenge(self, step: tuple, challenge: str) -> Reply:
        self._sasl = step
        return R.AUTH_CHALLENGE.with_text(challenge)

    def _sasl_response(self, step: tuple, line: bytes) -> Reply:
        if line.strip() == b"*":   # RFC 4954 §4: the client gives up
            return R.AUTH_CANCELLED
        text = _decode(line.strip().decode("ascii", "replace"))
        if step[0] == "PLAIN":
            return self._plain(text)
        if len(step) == 1:   # LOGIN: that was the username
            return self._challenge(("LOGIN", text), _LOGIN_PASSWORD)
        return self._login(step[1], text)

    def _plain(self, text: str) -> Reply:
        """RFC 4616 §2: [authzid] NUL authcid NUL passwd."""
        fields = text.split("\0")
        if len(fields) != 3:
            raise ReplyError(R.AUTH_BAD_RESPONSE)
        authzid, authcid, password = fields
        return self._login(authcid, password, authzid)

    def _login(self, name: str, password: str, authzid: str = "") -> Reply:
        self.user = self.policy.authenticate(name, password, self.peer_ip, authzid)   # ReplyError to refuse
        return R.AUTH_OK


def _decode(text: str, initial_response: bool = False) -> str:
    """A SASL response: base64 (RFC 4954 §4; "=" is an empty initial response) of UTF-8."""
    if initial_response and text == "=":
        return ""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ReplyError(R.AUTH_BAD_BASE64) from None
    return data.decode("utf-8", "replace")


# ---------------------------------------------------------------- policy

# A header field's name and colon (RFC 5322 §2.2; the obsolete blanks before the colon as
# the email package reads them, §4.5.3.1 of RFC 5322's obsolete syntax).
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")


def header_fields(data: bytes) -> tuple:
    """(lower-case names of the fields in the message's header section, whether the
    message starts with something that is neither a field nor the blank line ending an
    empty header section: text a client sent without any header). Linear in the header."""
    names, pos, first = set(), 0, True
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[pos:end].rstrip(b"\r")
        if not line:
            return names, False
        if line[:1] in (b" ", b"\t"):
            if first:
                return names, True
        else:
            match = _FIELD.match(line)
            if match is None:
                return names, first
            names.add(match.group(1).lower().decode("ascii"))
        first = False
        pos = end + 1
    return names, False


class SubmissionPolicy:
    def __init__(self, config, mailbox, accounts, blocklist, queue=None, events=None):
        self.config = config
        self.mailbox = mailbox
        self.accounts = accounts
        self.blocklist = blocklist
        self.queue = queue        # kicked when external mail was queued
        self.events = events      # optional callable(kind, dict) for the admin mail log
        self.hostname = server_hostname(config)

    def _event(self, kind, **fields):
        if self.events:
            self.events(kind, fields)

    # An address the admin blocked is kept out of submission too (its users included).
    def connect(self, ip: str):
        if self.blocklist.blocked(ip):
            log("submission", f"Rejected blocked client: {_for_log(ip)}")
            self._event("blocked", ip=ip, sender="", service="submission")
            return R.BLOCKED
        return None

    # ------------------------------------------------------------ who

    def authenticate(self, name: str, secret: str, peer_ip: str, authzid: str = "") -> dict:
        """The user, or ReplyError 535 (wrong credentials; an authorization identity other
        than the user's own too, RFC 4616 §2) or 454 (throttled)."""
        shown = _for_log(name[:64])
        if authzid and self.accounts.login_name(authzid) != self.accounts.login_name(name):
            log("submission", f"authentication failed for {shown} from {peer_ip}: may not act as {_for_log(authzid[:64])}")
            raise ReplyError(R.AUTH_FAILED)
        try:
            user = self.accounts.authenticate_client(name, secret, peer_ip)
        except LoginThrottled as exc:
            log("submission", f"authentication refused for {shown} from {peer_ip}: {exc}")
            raise ReplyError(R.LOGIN_THROTTLED) from None
        if user is None:
            log("submission", f"authentication failed for {shown} from {peer_ip}")
            self._event("auth-failed", user=name[:64], ip=peer_ip, service="submission")
            raise ReplyError(R.AUTH_FAILED)
        return user

    def still_valid(self, user: dict) -> bool:
        return self.accounts.still_valid(user)

    def own_address(self, user: str, address: str) -> bool:
        """`user@MAIL_DOMAIN` or `user+tag@MAIL_DOMAIN`, in any case (RFC 6409 §6.1)."""
        try:
            local, domain = addr.parse(address)
        except addr.AddressError:
            return False
        return domain == self.config.domain and addr.base_local(local) == user

    def mail_from(self, envelope, address: str):
        user = envelope.user["name"]
        if not self.own_address(user, address):
            return R.NOT_YOUR_ADDRESS.with_text(R.NOT_YOUR_ADDRESS.text.format(user=user, domain=self.config.domain))
        return None

    def rcpt_to(self, envelope, address: str) -> list:
        """The local users `address` reaches, or [] for an external one; refusals raise."""
        try:
            local, domain = addr.parse(address)
        except addr.AddressError:
            raise ReplyError(R.SYNTAX_ADDRESS) from None
        if domain == self.config.domain:
            with self.mailbox.store.reading() as state:
                users = self.mailbox.local_user_for(f"{local}@{domain}", state)
            if not users:
                raise ReplyError(R.USER_NOT_FOUND)
            return users
        if not any(not users for _address, users in envelope.recipients):   # the first external one
            self._check_credits(envelope.user["name"])
        return []

    def _check_credits(self, user: str) -> None:
        cost = self.config.credit_cost_email
        balance = (self.accounts.get(user) or {}).get("credits", 0)
        if cost and balance < cost:
            raise ReplyError(R.NOT_ENOUGH_CREDITS.with_text(
                R.NOT_ENOUGH_CREDITS.text.format(cost=cost, balance=balance)))

    # ------------------------------------------------------------ the message

    def deliver(self, envelope, data: bytes):
        if not data.strip():
            return R.EMPTY_MESSAGE
        user = envelope.user["name"]
        own = self.mailbox.address_of(user)
        refusal = self._check_from(user, own, data)
        if refusal is not None:
            return refusal
        message = self._trace(envelope) + self._missing_fields(data, own) + data
        try:
            parsed = parse_mime(message, max_parts=self.config.max_mime_parts, max_depth=self.config.max_mime_depth,
                                timeout_seconds=self.config.mime_timeout_seconds)
        except MimeLimitError as exc:
            return R.MIME_LIMIT.with_text(R.MIME_LIMIT.text.format(reason=exc))
        local, external = [], []
        for address, users in envelope.recipients:
            local += [u for u in users if u not in local]
            if not users:
                mailbox, domain = addr.parse(address)
                external_address = f"{mailbox}@{domain}"
                if external_address.lower() not in (e.lower() for e in external):
                    external.append(external_address)
        try:
            msg_id = self.mailbox.submit(user, local, external, message, _storable(parsed))
        except MailError as exc:
            if exc.status == 402:
                try:
                    self._check_credits(user)
                except ReplyError as refusal:
                    return refusal.reply
            log("submission", f"storing a message from {user} failed: {_for_log(str(exc))}")
            return R.STORAGE_FAILED
        except Exception as exc:
            log("submission", f"storing a message from {user} failed: {_for_log(repr(exc))}")
            return R.STORAGE_FAILED
        if external and self.queue is not None:
            self.queue.kick()
        self._event("submitted", id=msg_id, user=user, ip=envelope.peer_ip, local=len(local), external=len(external))
        return R.QUEUED.with_text(R.QUEUED.text.format(id=msg_id))

    def _check_from(self, user: str, own: str, data: bytes):
        """The author must be the user (From decides whom DMARC, and every reader, takes the
        message to be from; mu signs it for MAIL_DOMAIN). None when the From fields name
        only the user's own address, or when there is none (one is added)."""
        values = dmarc.author_from_fields(data)
        if not values:
            return None
        try:
            found = [a for _name, a in email.utils.getaddresses([v for v in values if v is not None])]
        except Exception:   # e.g. RecursionError on deeply nested comments
            found = []
        if None not in values and found and all(self.own_address(user, a) for a in found):
            return None
        shown = next((a for a in found if not self.own_address(user, a)), "") or "an unreadable address"
        return R.FROM_NOT_YOURS.with_text(R.FROM_NOT_YOURS.text.format(address=own, found=_for_log(shown[:100])))

    def _missing_fields(self, data: bytes, own: str) -> bytes:
        """From, Date (RFC 6409 §8.2) and Message-ID (§8.3), each only when missing. The
        client's Message-ID is never replaced: its own copy, APPENDed to Sent, is known by it."""
        names, headless = header_fields(data)
        added = []
        if not dmarc.author_from_fields(data):
            added.append(f"From: <{own}>")
        if "date" not in names:
            added.append(f"Date: {compose.format_date(time.time())}")
        if "message-id" not in names:
            added.append(f"Message-ID: {compose.new_message_id(self.config.domain)}")
        out = "".join(f"{field}\r\n" for field in added).encode("ascii")
        return out + b"\r\n" if headless and out else out

    def _trace(self, envelope) -> bytes:
        """Received (RFC 5321 §4.4) with RFC 3848's ESMTPA/ESMTPSA (RFC 6531 §3.7.3: UTF8SMTPA/-SA).
        No "for" clause: with Bcc recipients it would tell every reader who else got it."""
        ip = envelope.peer_ip
        ip_literal = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"   # RFC 5321 §4.1.3
        proto = ("UTF8SMTP" if envelope.smtputf8 else "ESMTP") + ("SA" if envelope.tls else "A")
        return (f"Received: from {_helo_domain(envelope.helo or '') or 'unknown'} ({ip_literal})\r\n"
                f"\tby {self.hostname} (mu) with {proto}; {compose.format_date(time.time())}\r\n").encode("ascii")
