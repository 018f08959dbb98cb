"""Settings: one table of every environment variable mu reads, and `load()`.

Every limit and timeout has its unit in its name or help text. The table is the
single source of truth: README/docs list the same names, and a test keeps them in step.
"""

import ipaddress
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional


class ConfigError(ValueError):
    """A malformed environment value; str() names the variable."""


def _int(minimum: int = 0, maximum: Optional[int] = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" to {maximum}" if maximum is not None else " or more"
            raise ValueError(f"expected {minimum}{upper}, got {value}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"expected a positive number of seconds, got {text!r}")
    return value


def _port(text: str) -> int:
    """`2525`, `:2525` (and `HOST:2525`, host ignored here; see _listen)."""
    return _int(1, 65535)(text.strip().rsplit(":", 1)[-1])


def _port_or_off(text: str):
    """A port as `_port` reads it, or None for `off` (the listener is not opened)."""
    return None if text.strip().lower() == "off" else _port(text)


def _listen_host(text: str) -> str:
    host = text.strip().rsplit(":", 1)[0] if ":" in text else ""
    return host.strip("[]")


def _host_port(text: str) -> tuple:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), _int(1, 65535)(port)


def _domain(text: str) -> str:
    """A host name: dot-separated labels of 1-63 octets, 253 in all (RFC 1035 §2.3.4);
    an ASCII label is letters, digits and inner hyphens (RFC 1123 §2.1), a non-ASCII one
    must have an IDNA form."""
    value = text.strip().lower().rstrip(".")
    if not value or any(c.isspace() for c in value) or "@" in value:
        raise ValueError(f"expected a domain name, got {text!r}")
    for label in value.split("."):
        try:
            ascii_label = label.encode("idna").decode("ascii") if not label.isascii() else label
        except UnicodeError:
            raise ValueError(f"expected a domain name, got {text!r} (label {label!r} has no IDNA form)") from None
        if not 1 <= len(ascii_label) <= 63:
            raise ValueError(f"expected a domain name, got {text!r} (empty or over-long label)")
        if ascii_label.startswith("-") or ascii_label.endswith("-") or \
                not all(c.isalnum() or c == "-" for c in ascii_label) or not ascii_label.isascii():
            raise ValueError(f"expected a domain name, got {text!r} (bad label {label!r})")
    if len(value.encode("idna") if not value.isascii() else value) > 253:
        raise ValueError(f"expected a domain name of at most 253 characters, got {len(value)}")
    return value


def _word(text: str) -> str:
    value = text.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"expected a single word, got {text!r}")
    return value


def _cpus(text: str) -> int:
    """`all` (0: wherever the system schedules) or a number of CPU cores."""
    if text.strip().lower() == "all":
        return 0
    try:
        return _int(1)(text)
    except ValueError:
        raise ValueError(f"expected a number of CPU cores or 'all', got {text!r}") from None


DEBUG_SUBSYSTEMS = ("smtp", "submission")


def _debug(text: str) -> frozenset:
    """`smtp` or a comma-separated list of DEBUG_SUBSYSTEMS; empty for none."""
    words = frozenset(w.strip().lower() for w in text.split(",") if w.strip())
    unknown = sorted(words - set(DEBUG_SUBSYSTEMS))
    if unknown:
        raise ValueError(f"expected a comma-separated list of {', '.join(DEBUG_SUBSYSTEMS)}, got {unknown[0]!r}")
    return words


def _path(text: str) -> str:
    return os.path.abspath(os.path.expanduser(text))


def _home(text: str) -> str:
    # An empty MU_HOME would make the current folder the data folder (and chmod it 0700).
    if not text.strip():
        raise ValueError("must not be empty (unset it to use ~/.mu)")
    return _path(text.strip())


def _ip_list(text: str) -> tuple:
    """Comma-separated IP addresses, canonical form."""
    found = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            found.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise ValueError(f"expected comma-separated IP addresses, got {part!r}") from None
    return tuple(found)


def _networks(text: str) -> tuple:
    """Comma-separated IP addresses or networks (`10.0.0.0/8`)."""
    found = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            found.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"expected comma-separated IP addresses or networks, got {part!r}") from None
    return tuple(found)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value
    return parse


def _web_address(text: str) -> tuple:
    """`HOST:PORT` or `:PORT` (all interfaces) -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    return host.strip("[]"), _int(0, 65535)(port)


def _mx_probe(text: str) -> tuple:
    """`HOST` or `HOST:PORT` -> (host, port or None: MAIL_OUTBOUND_PORT)."""
    value = text.strip()
    if value.count(":") == 1 or value.startswith("["):
        host, port = _host_port(value)
        return host, port
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"expected a host name or address, got {text!r}")
    return value.strip("[]"), None


def _optional_path(text: str) -> Optional[str]:
    return _path(text) if text.strip() else None


# (environment variable, attribute, default text, parser, help)
SETTINGS = [
    ("MU_HOME", "home", "~/.mu", _home, "data folder (created 0700); everything mu writes lives here"),
    ("MAIL_PORT", "smtp_port", "2525", _port, "SMTP receive port (25 in production); `2525` or `:2525`"),
    ("MAIL_DOMAIN", "domain", "localhost", _domain, "the domain of local addresses (alice@MAIL_DOMAIN)"),
    ("MAIL_SELECTOR", "dkim_selector", "default", _word, "DKIM selector (the DNS name SELECTOR._domainkey)"),
    ("CREDIT_COST_EMAIL", "credit_cost_email", "4", _int(0), "credits charged per external message"),
    ("MAIL_MAX_SIZE", "max_message_bytes", "10485760", _int(1024), "message size limit, bytes (SMTP and API)"),
    ("MAIL_MAX_RECIPIENTS", "max_recipients", "50", _int(1, 100000), "recipients per message"),
    ("MAIL_TIMEOUT", "smtp_timeout_seconds", "10", _seconds,
     "SMTP timeout, seconds: a whole command line must arrive within it, and DATA may not pause longer"),
    ("MAIL_RATE_CONNECTIONS", "rate_connections_per_hour", "10", _int(1), "SMTP connections per hour per client IP"),
    ("MAIL_RATE_MESSAGES", "rate_messages_per_day", "100", _int(1), "messages per day per envelope sender"),
    ("MAIL_MAX_CONNECTIONS", "max_smtp_connections", "1000", _int(1, 100000),
     "concurrent SMTP connections in total (421 beyond); each is one thread"),
    ("MAIL_MAX_CONNECTIONS_PER_CLIENT", "max_smtp_connections_per_client", "20", _int(1, 100000),
     "concurrent SMTP connections from one client address, an IPv6 client counted by its /64 (421 beyond)"),
    ("MAIL_STRESS_PERCENT", "smtp_stress_percent", "50", _int(1, 100),
     "share of MAIL_MAX_CONNECTIONS open, in percent, from which the receiver is under stress"
     " and its timeouts drop to MAIL_STRESS_TIMEOUT_SECONDS"),
    ("MAIL_STRESS_TIMEOUT_SECONDS", "smtp_stress_timeout_seconds", "3", _seconds,
     "SMTP timeout under stress, seconds (MAIL_TIMEOUT otherwise)"),
    ("MAIL_MIN_DATA_BYTES_PER_SECOND", "smtp_min_data_bytes_per_second", "500", _int(1),
     "slowest DATA transfer kept open, bytes/second: each read adds its size over this rate to the DATA"
     " deadline, which stays at most MAIL_TIMEOUT ahead"),
    ("MAIL_MAX_ERRORS", "smtp_max_errors", "10", _int(1, 10000),
     "protocol errors (bad, unknown or out-of-sequence commands, over-long lines) in one SMTP session;"
     " the next one is answered 421 and the connection closed"),
    ("MAIL_MAX_JUNK_COMMANDS", "smtp_max_junk_commands", "100", _int(0, 100000),
     "NOOP, RSET, VRFY, HELP, EHLO and HELO in one SMTP session since its last accepted message;"
     " each one beyond counts as an error"),
    ("MAIL_TLS_CERT", "tls_cert", "", _optional_path, "PEM certificate; with MAIL_TLS_KEY the receiver offers STARTTLS"),
    ("MAIL_TLS_KEY", "tls_key", "", _optional_path, "PEM private key for MAIL_TLS_CERT"),
    ("MAIL_DNS_SERVER", "dns_server", "", lambda t: _host_port(t) if t.strip() else None,
     "HOST:PORT of the DNS server for MX, A, SPF, DKIM and DMARC look-ups (default: system resolver)"),
    ("MAIL_DNS_TIMEOUT", "dns_timeout_seconds", "5", _seconds, "total time for one DNS look-up, seconds"),
    ("MAIL_AUTH_TIMEOUT", "auth_timeout_seconds", "15", _seconds,
     "time for the DKIM and DMARC look-ups of one received message, seconds; past it the rest are temperror"),
    ("MAIL_OUTBOUND_PORT", "outbound_port", "25", _int(1, 65535), "TCP port used when connecting to a recipient's MX host"),
    ("MAIL_OUTBOUND_TIMEOUT", "outbound_timeout_seconds", "60", _seconds, "outbound SMTP connect/read timeout, seconds"),
    ("MAIL_QUEUE_LIFETIME", "queue_lifetime_seconds", "432000", _seconds, "how long outbound mail is retried before it bounces, seconds (5 days)"),
    ("MAIL_QUEUE_WORKERS", "queue_workers", "4", _int(1, 64), "outbound delivery threads"),
    ("MAIL_RETRY_BASE_SECONDS", "retry_base_seconds", "60", _seconds,
     "first outbound retry delay, seconds; later ones grow 5x, 15x, 30x, 60x, 120x, 240x of it"),
    ("MU_SHUTDOWN_SECONDS", "shutdown_seconds", "30", _seconds,
     "on SIGTERM, how long open SMTP sessions and deliveries may take to finish before mu exits anyway, seconds"),
    ("MU_DEBUG", "debug", "", _debug, "comma-separated subsystems to log in detail: `smtp` (and `submission`)"
     " logs every command and reply"),
    ("MU_CPUS", "cpus", "1", _cpus,
     "CPU cores the server's threads may run on, or `all`; one is fastest for CPython's threads (see docs)"),
    # Operating mu: the web front, accounts, certificates, self-checks.
    ("MU_WEB_ADDRESS", "web_address", ":8080", _web_address,
     "web listen address, `HOST:PORT` (`:8080` is all interfaces); `--address` overrides it"),
    ("MU_TRUSTED_PROXY", "trusted_proxies", "", _networks,
     "comma-separated addresses (or networks) of a TLS-terminating reverse proxy whose X-Forwarded-Proto/-For are honoured"),
    ("MU_SIGNUP", "signup", "open", _choice("open", "invite", "closed"),
     "who may sign up on the web: `open`, `invite` (with a link from /admin/users) or `closed` (only `users add`)"),
    ("MU_SIGNUPS_PER_HOUR", "signups_per_hour_per_address", "10", _int(1),
     "web sign-up attempts per hour per client address"),
    ("MU_LOGIN_FAILURES_PER_ADDRESS", "login_failures_per_address", "50", _int(1),
     "failed web logins from one client address (any accounts) before it is refused for 15 minutes"),
    ("MU_ACME_WEBROOT", "acme_webroot", "", _optional_path,
     "folder `certbot --webroot -w` writes to; mu serves its /.well-known/acme-challenge/ files"),
    ("MAIL_PUBLIC_IP", "public_ips", "", _ip_list,
     "comma-separated public addresses of this host (behind NAT), for `doctor`'s A and PTR checks"),
    ("MU_DOCTOR_MX", "doctor_mx", "gmail-smtp-in.l.google.com", _mx_probe,
     "the MX host (`HOST` or `HOST:PORT`) `doctor` connects to, to see whether outbound port 25 is open"),
    ("MAIL_MAX_MIME_PARTS", "max_mime_parts", "1000", _int(1, 1000000),
     "MIME body parts per received message (554 5.6.0 beyond)"),
    ("MAIL_MAX_MIME_DEPTH", "max_mime_depth", "20", _int(1, 1000),
     "multiparts nested in a received message, levels (554 5.6.0 beyond)"),
    ("MAIL_MIME_TIMEOUT", "mime_timeout_seconds", "10", _seconds,
     "time allowed to read one received message's MIME structure, seconds (554 5.6.0 beyond)"),
    # Mail clients sending mail (RFC 6409, RFC 8314).
    ("SUBMISSION_PORT", "submission_port", "1587", _port_or_off,
     "message submission port for mail clients (587 in production), STARTTLS when MAIL_TLS_CERT/KEY are set;"
     " `off` opens none"),
    ("SUBMISSIONS_PORT", "submissions_port", "1465", _port_or_off,
     "message submission over implicit TLS (465 in production), opened only with MAIL_TLS_CERT/KEY; `off` opens none"),
    ("MU_JSON_MAX_DEPTH", "json_max_depth", "20", _int(1, 1000), "nesting of arrays and objects in a JSON request body, levels"),
    ("MU_FIELD_MAX_BYTES", "field_max_bytes", "65536", _int(256),
     "one form field or JSON string, bytes, other than a message body or attachment (those: MAIL_MAX_SIZE)"),
    # IMAP (mu/imap/, docs/configuration.md "IMAP")
    ("IMAP_PORT", "imap_port", "1143", _port_or_off, "IMAP port (143 in production), STARTTLS when MAIL_TLS_CERT/KEY are set; `off` to not listen"),
    ("IMAPS_PORT", "imaps_port", "1993", _port_or_off, "IMAP over implicit TLS (993 in production); opened only when the certificate is set; `off` to not listen"),
    ("IMAP_MAX_LINE_BYTES", "imap_max_line_bytes", "65536", _int(1024), "longest IMAP command line, bytes, literals not counted"),
    ("IMAP_MAX_LITERAL_BYTES", "imap_max_literal_bytes", "65536", _int(1024), "largest IMAP literal other than an APPENDed message (those are limited by MAIL_MAX_SIZE), bytes"),
    ("IMAP_MAX_COMMANDS_IN_FLIGHT", "imap_max_commands_in_flight", "64", _int(1, 100000), "pipelined IMAP commands answered at most before their responses are sent"),
    ("IMAP_LOGIN_TIMEOUT_SECONDS", "imap_login_timeout_seconds", "60", _seconds, "how long an IMAP connection may wait before logging in, seconds"),
    ("IMAP_TIMEOUT_SECONDS", "imap_timeout_seconds", "1800", _seconds, "idle time between commands after login, seconds (RFC 9051 5.4: at least 30 minutes)"),
    ("IMAP_IDLE_TIMEOUT_SECONDS", "imap_idle_timeout_seconds", "1800", _seconds, "longest IDLE before the server says BYE, seconds"),
    ("IMAP_MAX_CONNECTIONS", "imap_max_connections", "500", _int(1, 100000), "concurrent IMAP connections in total (BYE beyond)"),
    ("IMAP_MAX_CONNECTIONS_PER_IP", "imap_max_connections_per_ip", "20", _int(1, 100000), "concurrent IMAP connections from one client address"),
]


@dataclass(frozen=True)
class Config:
    home: str
    smtp_port: int
    smtp_host: str
    domain: str
    dkim_selector: str
    credit_cost_email: int
    max_message_bytes: int
    max_recipients: int
    smtp_timeout_seconds: float
    rate_connections_per_hour: int
    rate_messages_per_day: int
    max_smtp_connections: int
    max_smtp_connections_per_client: int
    smtp_stress_percent: int
    smtp_stress_timeout_seconds: float
    smtp_min_data_bytes_per_second: int
    smtp_max_errors: int
    smtp_max_junk_commands: int
    tls_cert: Optional[str]
    tls_key: Optional[str]
    dns_server: Optional[tuple]
    dns_timeout_seconds: float
    auth_timeout_seconds: float
    outbound_port: int
    outbound_timeout_seconds: float
    queue_lifetime_seconds: float
    queue_workers: int
    retry_base_seconds: float
    shutdown_seconds: float
    debug: frozenset
    cpus: int
    web_address: tuple
    trusted_proxies: tuple
    signup: str
    signups_per_hour_per_address: int
    login_failures_per_address: int
    acme_webroot: Optional[str]
    public_ips: tuple
    doctor_mx: tuple
    max_mime_parts: int
    max_mime_depth: int
    mime_timeout_seconds: float
    json_max_depth: int
    field_max_bytes: int
    submission_port: Optional[int]
    submissions_port: Optional[int]
    imap_port: int = 1143
    imap_host: str = ""
    imaps_port: int = 1993
    imaps_host: str = ""
    imap_max_line_bytes: int = 65536
    imap_max_literal_bytes: int = 65536
    imap_max_commands_in_flight: int = 64
    imap_login_timeout_seconds: float = 60.0
    imap_timeout_seconds: float = 1800.0
    imap_idle_timeout_seconds: float = 1800.0
    imap_max_connections: int = 500
    imap_max_connections_per_ip: int = 20
    submission_host: str = ""
    submissions_host: str = ""

    @property
    def dkim_key_path(self) -> str:
        return os.path.join(self.home, "keys", "dkim.key")

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def load(environ: Mapping[str, str] = os.environ) -> Config:
    """Parse every setting; raise ConfigError naming the first malformed variable."""
    values = {}
    for name, attr, default, parse, _help in SETTINGS:
        raw = environ.get(name)
        if raw is None or (raw.strip() == "" and name != "MU_HOME"):
            raw = default
        try:
            values[attr] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    values["smtp_host"] = _listen_host(environ.get("MAIL_PORT", ""))
    values["imap_host"] = _listen_host(environ.get("IMAP_PORT", "")) if values["imap_port"] else ""
    values["imaps_host"] = _listen_host(environ.get("IMAPS_PORT", "")) if values["imaps_port"] else ""
    for name, attr in (("SUBMISSION_PORT", "submission_host"), ("SUBMISSIONS_PORT", "submissions_host")):
        if values[attr.replace("_host", "_port")] is not None:
            values[attr] = _listen_host(environ.get(name, ""))
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("MAIL_TLS_CERT: MAIL_TLS_CERT and MAIL_TLS_KEY must be set together")
    return Config(**values)
