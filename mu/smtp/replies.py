"""Every SMTP reply mu sends: basic code (RFC 5321 §4.2), enhanced code (RFC 3463), text.

Tests import these same constants, so a reply's wording lives in exactly one place.
"""


class Reply:
    __slots__ = ("code", "enhanced", "text", "_wire")

    def __init__(self, code: int, enhanced: str, text: str):
        self.code, self.enhanced, self.text = code, enhanced, text
        self._wire = None

    def with_text(self, text: str) -> "Reply":
        return Reply(self.code, self.enhanced, text)

    def encode(self) -> bytes:
        if self._wire is None:   # replies are constants: encode each once
            self._wire = self._encode()
        return self._wire

    def _encode(self) -> bytes:
        lines = self.text.split("\n")
        out = []
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            prefix = f"{self.code}{sep}{self.enhanced} " if self.enhanced else f"{self.code}{sep}"
            out.append(prefix + line + "\r\n")
        return "".join(out).encode("utf-8")

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __repr__(self):
        return f"Reply({self.code}, {self.enhanced!r}, {self.text!r})"


class ReplyError(Exception):
    """Raised by helpers deep in a command; the command loop answers with `.reply` once."""

    def __init__(self, reply: Reply):
        super().__init__(reply.text)
        self.reply = reply


# 2xx — success. Greeting and EHLO carry no enhanced code (RFC 2034 §3).
READY = Reply(220, "", "{host} ESMTP mu ready")
STARTTLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
CLOSING = Reply(221, "2.0.0", "Bye")
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "OK: message {id} stored")
RESET_OK = Reply(250, "2.0.0", "Reset OK")
HELP = Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS")
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")

# 4xx — transient.
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_CLIENT_CONNECTIONS = Reply(421, "4.7.0", "Too many open connections from your address, try again later")
RATE_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your IP address, try again later")
TIMEOUT = Reply(421, "4.4.2", "Timeout waiting for client input, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.5.0", "Too many errors, closing connection")  # RFC 3463: X.5.X is protocol
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing connection")
LOCAL_ERROR = Reply(421, "4.3.0", "Local error, closing connection")  # RFC 5321 §3.8
RATE_MESSAGES = Reply(451, "4.7.1", "Too many messages from this sender today, try again later")
STORAGE_FAILED = Reply(451, "4.3.0", "Local error while storing the message, try again later")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")

# 5xx — permanent.
UNRECOGNIZED = Reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")  # RFC 5321 §4.5.3.1.4: 512 octets
SYNTAX = Reply(501, "5.5.2", "Syntax error")
SYNTAX_ADDRESS = Reply(501, "5.1.7", "Bad address syntax")
VRFY_NEEDS_ARGUMENT = Reply(501, "5.5.4", "VRFY requires an argument")
BAD_SIZE = Reply(501, "5.5.4", "SIZE requires a number of octets")  # RFC 1870 §3: 1*20DIGIT
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
ONLY_QUIT = Reply(503, "5.5.1", "Bad sequence of commands: service refused, only QUIT is accepted")  # RFC 5321 §3.1
NEED_EHLO = Reply(503, "5.5.1", "Send EHLO/HELO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
USER_NOT_FOUND = Reply(550, "5.1.1", "User not found")
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
DATA_LINE_TOO_LONG = Reply(550, "5.6.0", "Message rejected: line longer than 1000 octets (RFC 5321 4.5.3.1.6)")
BLOCKED = Reply(554, "5.7.1", "Transaction failed: sender blocked")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Parameter not recognized or not implemented")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
EMPTY_MESSAGE = Reply(554, "5.6.0", "Message rejected: no headers or body")

# Authentication of received mail: refusals a domain's own published policy asks for.
# RFC 7489 §6.6.4 (p=reject, applied only to a real DMARC fail, never a temperror).
DMARC_REJECTED = Reply(550, "5.7.1", "Message rejected: the DMARC policy of {domain} says reject")

# RFC 3463 §3.7: X.6.0, a media (content) error. Permanent: the same message would take
# the same time, or break the same limit, on every retry.
MIME_LIMIT = Reply(554, "5.6.0", "Message rejected: {reason}")


# Message submission (RFC 6409) and AUTH (RFC 4954 §4, §6; RFC 3463 X.7.X security codes).
SUBMISSION_HELP = Reply(214, "2.0.0", "Commands: EHLO HELO AUTH MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_CHALLENGE = Reply(334, "", "{challenge}")   # base64; RFC 4954 §4: no enhanced code here
LOGIN_THROTTLED = Reply(454, "4.7.0", "Too many failed logins, try again in 15 minutes")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Invalid base64 data")
AUTH_BAD_RESPONSE = Reply(501, "5.5.2", "Malformed authentication response")
AUTH_NEEDS_MECHANISM = Reply(501, "5.5.4", "AUTH requires a mechanism: PLAIN or LOGIN")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
AUTH_NEEDS_EHLO = Reply(503, "5.5.1", "Send EHLO first: AUTH is an ESMTP extension")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
AUTH_MECHANISM_UNKNOWN = Reply(504, "5.5.4", "Unrecognized authentication type: PLAIN and LOGIN are offered")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")   # RFC 6409 §4.3
AUTH_NO_LONGER_VALID = Reply(530, "5.7.0", "Authentication required: your login is no longer valid"
                                           " (password changed, app password revoked or account disabled)")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism: use STARTTLS")
NOT_YOUR_ADDRESS = Reply(553, "5.7.1", "Sender address rejected: not owned by user {user} (use {user}@{domain})")
# RFC 6409 §4.1: 554 rejects what is improper when no code is more precise. Permanent, so
# the mail app tells its user now instead of retrying quietly; credits change only when
# an admin gives some.
NOT_ENOUGH_CREDITS = Reply(554, "5.7.0", "Not enough credits: external mail costs {cost}, your balance is {balance}")
FROM_NOT_YOURS = Reply(554, "5.7.1", "Message rejected: the From header must be your own address ({address}), not {found}")
