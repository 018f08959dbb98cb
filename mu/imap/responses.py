"""Every fixed IMAP response text mu sends, and the capability lists (RFC 9051 §7).

Tests import these constants, so a response's wording lives in exactly one place. Texts
with a response code keep it here too: `[TRYCREATE]`, `[READ-ONLY]` ... (RFC 9051 §7.1).
"""

# What CAPABILITY says, in every state (RFC 9051 §6.1.1). Each is implemented in full:
# imaptest's compliance scripts run every test whose capability is listed here.
CAPABILITIES = (
    "IMAP4rev1", "IMAP4rev2", "LITERAL+", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT",
    "UIDPLUS", "MOVE", "SPECIAL-USE", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS",
    "CONDSTORE", "QRESYNC", "ESEARCH", "SEARCHRES", "CONTEXT=SEARCH", "WITHIN", "SORT", "SORT=DISPLAY",
    "ESORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT", "MULTIAPPEND", "CATENATE", "NOTIFY",
    "BINARY", "UTF8=ACCEPT", "STATUS=SIZE",
)
# Before login only (RFC 4959 SASL-IR, RFC 4616 PLAIN); STARTTLS where a certificate is set.
PRE_LOGIN_CAPABILITIES = ("SASL-IR", "AUTH=PLAIN")
STARTTLS = "STARTTLS"
LOGINDISABLED = "LOGINDISABLED"   # RFC 9051 §6.2.3: plain-text login refused here
ENABLEABLE = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2")

HIERARCHY_DELIMITER = "/"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")

# ---------------------------------------------------------------- greeting and goodbyes
GREETING = "mu IMAP ready"
BYE_LOGOUT = "Logging out"
BYE_CREDENTIALS_REVOKED = "Logged out: the password or app password of this session no longer works"
BYE_TIMEOUT = "Autologout: idle for too long"
BYE_IDLE_TIMEOUT = "IDLE has lasted too long; please reconnect"
BYE_TOO_MANY_ERRORS = "Too many protocol errors, closing connection"
BYE_TOO_MANY_CONNECTIONS = "[UNAVAILABLE] Too many connections, try again later"
BYE_TOO_MANY_FROM_CLIENT = "[UNAVAILABLE] Too many connections from your address, try again later"
BYE_SHUTDOWN = "[UNAVAILABLE] Server shutting down"
BYE_MAILBOX_GONE = "Selected mailbox was deleted, closing connection"
BYE_LINE_TOO_LONG = "[TOOBIG] Command line too long"
BYE_LITERAL_TOO_BIG = "[TOOBIG] Literal too big"
BYE_SERVER_BUG = "[SERVERBUG] Internal error, closing connection"

# ---------------------------------------------------------------- completions
OK_CAPABILITY = "CAPABILITY completed"
OK_NOOP = "NOOP completed"
OK_LOGIN = "Logged in"
OK_STARTTLS = "Begin TLS negotiation now"
OK_SELECT = "SELECT completed"
OK_EXAMINE = "EXAMINE completed"
OK_DONE = "{command} completed"
OK_IDLE = "IDLE terminated"
OK_ID = "ID completed"
OK_ENABLE = "ENABLE completed"
OK_CLOSE = "CLOSE completed"
OK_APPEND = "APPEND completed"
OK_COPY = "COPY completed"
OK_MOVE = "MOVE completed"
OK_EXPUNGE = "EXPUNGE completed"
OK_STORE_MODIFIED = "Conditional STORE failed for some messages"
OK_CREATE_EXISTING_PARENT = "CREATE completed"
CONTINUE_LITERAL = "Ready for literal data"
CONTINUE_IDLE = "idling"
CONTINUE_AUTH = ""

# ---------------------------------------------------------------- refusals (NO)
NO_LOGIN = "[AUTHENTICATIONFAILED] Authentication failed"
NO_THROTTLED = "[UNAVAILABLE] Too many failed logins; try again later"
NO_PLAINTEXT = "[PRIVACYREQUIRED] Log in over TLS (STARTTLS or the IMAPS port)"
NO_AUTH_CANCELLED = "Authentication cancelled"
NO_TRYCREATE = "[TRYCREATE] Mailbox does not exist"
NO_NONEXISTENT = "[NONEXISTENT] Mailbox does not exist"
NO_READ_ONLY = "[READ-ONLY] Mailbox is read-only"
NO_EXPUNGEISSUED = "[EXPUNGEISSUED] Some of the requested messages no longer exist"
NO_UNKNOWN_CTE = "[UNKNOWN-CTE] Cannot decode this part's Content-Transfer-Encoding"
NO_TOOBIG = "[TOOBIG] Message is over the size limit of {limit} octets"
NO_BADURL = "[BADURL {url}] Cannot use that URL"
NO_SELECT_FIRST = "No mailbox selected"
NO_BAD_CHARSET = "[BADCHARSET (US-ASCII UTF-8)] Unsupported charset"
NO_SERVERBUG = "[SERVERBUG] Internal error; try again"
NO_TOO_MANY_UPDATES = "[NOUPDATE \"{tag}\"] Too many searches with UPDATE"
NO_CANNOT_RENAME_TO_CHILD = "[CANNOT] Cannot rename a mailbox into itself"
NO_INBOX_CHILD_OF_ITSELF = "[CANNOT] Bad mailbox name"

# ---------------------------------------------------------------- errors (BAD)
BAD_UNKNOWN = "Unknown command"
BAD_STATE_NOT_AUTHENTICATED = "Log in first"
BAD_STATE_AUTHENTICATED = "Already logged in"
BAD_STATE_NOT_SELECTED = "No mailbox selected"
BAD_TLS_ACTIVE = "TLS is already active"
BAD_TLS_UNAVAILABLE = "STARTTLS is not offered here"
BAD_NO_TAG = "Missing or malformed tag"
BAD_LINE_TOO_LONG = "Command line too long"
BAD_BASE64 = "Invalid base64"
BAD_SEQUENCE = "Invalid message sequence number"
BAD_NO_SAVED = "No saved search result"
