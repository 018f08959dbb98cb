"""The SMTP protocol state machine: one method per verb, each returning one Reply.

The session knows RFC 5321 and nothing about sockets or policy. The server feeds it
command lines (or tells it a line was too long) and finished DATA; a `policy` object
decides who may send to whom and stores the message. Message submission (submission.py)
is a subclass that adds AUTH; the hooks it uses are `line_limit`, `secret_next`,
`protocol_errors`, `_extensions` and `_mail_parameter`. States:

    GREETED --EHLO/HELO--> READY --MAIL--> MAIL --RCPT--> RCPT --DATA--> (data) --> READY
    RSET or a new EHLO/HELO returns to READY; STARTTLS starts a fresh session.
    A 554 greeting leaves the session REFUSED: 503 to everything until QUIT.

One error budget per session (`MAIL_MAX_ERRORS`): every reply in PROTOCOL_ERRORS spends
from it, whatever caused it, and past it the session answers 421 and ends. Junk commands
(JUNK_VERBS, which move no mail) are free up to `MAIL_MAX_JUNK_COMMANDS` since the last
accepted message, then each spends from the same budget (Postfix's
smtpd_junk_command_limit), so a client cannot hold a connection with NOOPs.
"""

from dataclasses import dataclass, field
from typing import Optional

from . import replies as R
from .parse import decimal, parse_path, split_command
from .replies import Reply, ReplyError

# Bad, unknown or out-of-sequence commands, and bad parameters: what a garbage stream,
# or a cross-protocol attack (an HTTP request sent to port 25), earns.
PROTOCOL_ERRORS = frozenset({500, 501, 502, 503, 504, 555})
JUNK_VERBS = frozenset({"NOOP", "RSET", "VRFY", "HELP", "EHLO", "HELO"})
# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
COMMAND_LINE_LIMIT = 512


@dataclass
class Envelope:
    peer_ip: str
    helo: str = ""
    esmtp: bool = False
    tls: bool = False
    mail_from: Optional[str] = None
    smtputf8: bool = False
    declared_size: Optional[int] = None
    recipients: list = field(default_factory=list)   # [(address, [usernames])]
    user: Optional[dict] = None   # who authenticated (submission): Accounts.authenticate_client's user


class Session:
    line_limit = COMMAND_LINE_LIMIT   # the longest line the server reads for the next command
    protocol_errors = PROTOCOL_ERRORS
    secret_next = False               # the next line carries a secret: the transcript hides it

    def __init__(self, policy, config, peer_ip: str, tls_active: bool = False, tls_available: bool = False):
        self.policy = policy
        self.config = config
        self.peer_ip = peer_ip
        self.tls_active = tls_active
        self.tls_available = tls_available and not tls_active
        self.state = "GREETED"
        self.envelope = Envelope(peer_ip, tls=tls_active)
        self.max_errors = config.smtp_max_errors
        self.max_junk = config.smtp_max_junk_commands
        self.errors = 0
        self.junk = 0
        self.closing = False       # the server closes after sending the reply
        self.start_tls = False     # the server starts TLS after sending the reply
        self.in_data = False       # the server reads message data next

    # ------------------------------------------------------------ entry points

    def greeting(self) -> Reply:
        reply = self.policy.connect(self.peer_ip)
        if reply is not None:
            if reply.code == 554:
                # RFC 5321 §3.1: after a 554 greeting the server MUST wait for QUIT and
                # SHOULD answer anything else 503.
                self.state = "REFUSED"
            else:
                self.closing = True
            return reply
        return R.READY.with_text(R.READY.text.format(host=self.policy.hostname))

    def command(self, line: bytes) -> Reply:
        try:
            reply = self._dispatch(line)
        except ReplyError as exc:
            reply = exc.reply
        return self._account(reply)

    def line_too_long(self) -> Reply:
        """The server read a command line over the limit to its end (RFC 5321 §4.5.3.1.4)."""
        return self._account(R.LINE_TOO_LONG)

    @property
    def in_transaction(self) -> bool:
        """Between MAIL and the reply to the final dot: a shutdown lets it finish."""
        return self.in_data or self.state in ("MAIL", "RCPT")

    def data_received(self, data: Optional[bytes], error: Optional[Reply]) -> Reply:
        """The server read DATA to its final dot; `error` if it had to drop the content."""
        self.in_data = False
        envelope = self.envelope
        self._reset_transaction()
        if error is not None:
            return error
        try:
            reply = self.policy.deliver(envelope, data)
        except ReplyError as exc:
            reply = exc.reply
        if reply.code < 400:
            self.junk = 0   # a client that delivers mail is not idling
        return reply

    def _account(self, reply: Reply) -> Reply:
        """Spend from the error budget; past it, 421, which may answer any command (RFC 5321 §4.3.2)."""
        if reply.code in self.protocol_errors:
            self.errors += 1
        if self.errors > self.max_errors:
            self.closing = True
            return R.TOO_MANY_ERRORS
        if reply.code == 421:
            self.closing = True
        return reply

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, line: bytes) -> Reply:
        if b"\0" in line:
            raise ReplyError(R.SYNTAX.with_text("NUL byte in command"))
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ReplyError(R.SYNTAX.with_text("Command contains invalid 8-bit bytes")) from None
        verb, argument = split_command(text)
        if not verb.isascii() or not verb.isalpha():
            return R.UNRECOGNIZED
        if self.state == "REFUSED" and verb != "QUIT":
            return R.ONLY_QUIT
        handler = getattr(self, "smtp_" + verb, None)
        if handler is None:
            return R.UNRECOGNIZED
        if verb in JUNK_VERBS:
            self.junk += 1
            if self.junk > self.max_junk:
                self.errors += 1
        return handler(argument)

    def _reset_transaction(self) -> None:
        self.envelope = Envelope(self.peer_ip, helo=self.envelope.helo, esmtp=self.envelope.esmtp,
                                 tls=self.tls_active)
        if self.state in ("MAIL", "RCPT"):
            self.state = "READY"

    def _require_greeted(self) -> None:
        if self.state == "GREETED":
            raise ReplyError(R.NEED_EHLO)

    # ------------------------------------------------------------ verbs

    def _hello(self, argument: str, esmtp: bool) -> Reply:
        if not argument:
            raise ReplyError(R.SYNTAX.with_text(("EHLO" if esmtp else "HELO") + " requires a domain or address"))
        self.state = "READY"   # RFC 5321 §4.1.4: a second EHLO resets the transaction
        self.envelope = Envelope(self.peer_ip, helo=argument.split()[0], esmtp=esmtp, tls=self.tls_active)
        host = self.policy.hostname
        if not esmtp:
            return Reply(250, "", host)
        lines = [f"{host} greets {argument.split()[0]}", *self._extensions(), "HELP"]
        return Reply(250, "", "\n".join(lines))

    def _extensions(self) -> list:
        """The EHLO keywords offered now (RFC 5321 §4.1.1.1), in order."""
        lines = [f"SIZE {self.config.max_message_bytes}", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
        if self.tls_available:
            lines.append("STARTTLS")
        return lines

    def _mail_parameter(self, key: str, value) -> bool:
        """A MAIL parameter of an extension only a subclass offers: True once taken."""
        return False

    def smtp_EHLO(self, argument):
        return self._hello(argument, esmtp=True)

    def smtp_HELO(self, argument):
        return self._hello(argument, esmtp=False)

    def smtp_MAIL(self, argument):
        self._require_greeted()
        if self.state != "READY":
            raise ReplyError(R.NESTED_MAIL)
        address, params = parse_path(argument, "FROM")
        env = self.envelope
        for key, value in params.items():
            if not env.esmtp:
                raise ReplyError(R.UNKNOWN_PARAMETER)
            if key == "SIZE":  # RFC 1870 §3: size-value ::= 1*20DIGIT
                env.declared_size = decimal(value, 20)
                if env.declared_size is None:
                    raise ReplyError(R.BAD_SIZE)
                if env.declared_size > self.config.max_message_bytes:
                    raise ReplyError(R.MESSAGE_TOO_BIG)
            elif key == "BODY":  # RFC 6152
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    raise ReplyError(R.UNKNOWN_PARAMETER.with_text("BODY must be 7BIT or 8BITMIME"))
            elif key == "SMTPUTF8" and value is None:  # RFC 6531 §3.4
                env.smtputf8 = True
            elif not self._mail_parameter(key, value):
                raise ReplyError(R.UNKNOWN_PARAMETER.with_text(f"Parameter {key} not supported"))
        if not address.isascii() and not env.smtputf8:
            raise ReplyError(R.SMTPUTF8_REQUIRED)
        reply = self.policy.mail_from(env, address)
        if reply is not None:
            return reply
        env.mail_from = address
        self.state = "MAIL"
        return R.SENDER_OK

    def smtp_RCPT(self, argument):
        self._require_greeted()
        if self.state not in ("MAIL", "RCPT"):
            raise ReplyError(R.NEED_MAIL)
        address, params = parse_path(argument, "TO")
        if params:
            raise ReplyError(R.UNKNOWN_PARAMETER.with_text(f"Parameter {next(iter(params))} not supported"))
        if not address:
            raise ReplyError(R.SYNTAX_ADDRESS)
        if not address.isascii() and not self.envelope.smtputf8:
            raise ReplyError(R.SMTPUTF8_REQUIRED)
        if len(self.envelope.recipients) >= self.config.max_recipients:
            return R.TOO_MANY_RECIPIENTS
        users = self.policy.rcpt_to(self.envelope, address)   # raises ReplyError to refuse
        self.envelope.recipients.append((address, users))
        self.state = "RCPT"
        return R.RECIPIENT_OK

    def smtp_DATA(self, argument):
        self._require_greeted()
        if argument:
            raise ReplyError(R.SYNTAX.with_text("DATA takes no arguments"))
        if self.state == "READY":
            raise ReplyError(R.NEED_MAIL)
        if self.state != "RCPT":
            raise ReplyError(R.NEED_RCPT)
        self.in_data = True
        return R.START_DATA

    def smtp_RSET(self, argument):
        if argument:
            raise ReplyError(R.SYNTAX.with_text("RSET takes no arguments"))
        self._reset_transaction()
        return R.RESET_OK

    def smtp_NOOP(self, argument):
        return R.OK

    def smtp_QUIT(self, argument):
        self.closing = True
        return R.CLOSING

    def smtp_VRFY(self, argument):
        if not argument:
            raise ReplyError(R.VRFY_NEEDS_ARGUMENT)
        return R.CANNOT_VRFY   # RFC 5321 §3.5.3: reveal nothing about who exists

    def smtp_EXPN(self, argument):
        return R.NOT_IMPLEMENTED

    def smtp_HELP(self, argument):
        return R.HELP

    def smtp_STARTTLS(self, argument):
        if argument:
            raise ReplyError(R.SYNTAX.with_text("STARTTLS takes no arguments"))
        if self.tls_active:
            raise ReplyError(R.ALREADY_TLS)
        if not self.tls_available:
            return R.NOT_IMPLEMENTED.with_text("STARTTLS not available")
        self._require_greeted()
        self.start_tls = True
        return R.STARTTLS_READY
