"""Settings: one table of every environment variable mu reads, and `load()`.

Every limit and timeout has its unit in its name or help text. The table is the
single source of truth: README/docs list the same names, and a test keeps them in step.
"""

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


def _port_or_off(text: str) -> int:
    """A port as for MAIL_PORT, or `off` (0: not opened)."""
    if text.strip().lower() == "off":
        return 0
    return _port(text)


def _listen_host(text: str) -> str:
    host = text.strip().rsplit(":", 1)[0] if ":" in text else ""
    return host.strip("[]")


def _host_port(text: str) -> tuple:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), _int(1, 65535)(port)


def _domain(text: str) -> str:
    value = text.strip().lower().rstrip(".")
    if not value or any(c.isspace() for c in value) or "@" in value:
        raise ValueError(f"expected a domain name, got {text!r}")
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


def _path(text: str) -> str:
    return os.path.abspath(os.path.expanduser(text))


def _optional_path(text: str) -> Optional[str]:
    return _path(text) if text.strip() else None


# (environment variable, attribute, default text, parser, help)
SETTINGS = [
    ("MU_HOME", "home", "~/.mu", _path, "data folder (created 0700); everything mu writes lives here"),
    ("MAIL_PORT", "smtp_port", "2525", _port, "SMTP receive port (25 in production); `2525` or `:2525`"),
    ("MAIL_DOMAIN", "domain", "localhost", _domain, "the domain of local addresses (alice@MAIL_DOMAIN)"),
    ("MAIL_SELECTOR", "dkim_selector", "default", _word, "DKIM selector (the DNS name SELECTOR._domainkey)"),
    ("CREDIT_COST_EMAIL", "credit_cost_email", "4", _int(0), "credits charged per external message"),
    ("MAIL_MAX_SIZE", "max_message_bytes", "10485760", _int(1024), "message size limit, bytes (SMTP and API)"),
    ("MAIL_MAX_RECIPIENTS", "max_recipients", "50", _int(1, 100000), "recipients per message"),
    ("MAIL_TIMEOUT", "smtp_timeout_seconds", "10", _seconds, "SMTP read/write timeout, seconds"),
    ("MAIL_RATE_CONNECTIONS", "rate_connections_per_hour", "10", _int(1), "SMTP connections per hour per client IP"),
    ("MAIL_RATE_MESSAGES", "rate_messages_per_day", "100", _int(1), "messages per day per envelope sender"),
    ("MAIL_MAX_CONNECTIONS", "max_smtp_connections", "100", _int(1, 100000), "concurrent SMTP connections in total (421 beyond)"),
    ("MAIL_TLS_CERT", "tls_cert", "", _optional_path, "PEM certificate; with MAIL_TLS_KEY the receiver offers STARTTLS"),
    ("MAIL_TLS_KEY", "tls_key", "", _optional_path, "PEM private key for MAIL_TLS_CERT"),
    ("MAIL_DNS_SERVER", "dns_server", "", lambda t: _host_port(t) if t.strip() else None,
     "HOST:PORT of the DNS server for MX, A, SPF, DKIM and DMARC look-ups (default: system resolver)"),
    ("MAIL_DNS_TIMEOUT", "dns_timeout_seconds", "5", _seconds, "total time for one DNS look-up, seconds"),
    ("MAIL_OUTBOUND_PORT", "outbound_port", "25", _int(1, 65535), "TCP port used when connecting to a recipient's MX host"),
    ("MAIL_OUTBOUND_TIMEOUT", "outbound_timeout_seconds", "60", _seconds, "outbound SMTP connect/read timeout, seconds"),
    ("MAIL_QUEUE_LIFETIME", "queue_lifetime_seconds", "432000", _seconds, "how long outbound mail is retried before it bounces, seconds (5 days)"),
    ("MAIL_QUEUE_WORKERS", "queue_workers", "4", _int(1, 64), "outbound delivery threads"),
    ("MAIL_RETRY_BASE_SECONDS", "retry_base_seconds", "60", _seconds,
     "first outbound retry delay, seconds; later ones grow 5x, 15x, 30x, 60x, 120x, 240x of it"),
    ("MU_CPUS", "cpus", "1", _cpus,
     "CPU cores the server's threads may run on, or `all`; one is fastest for CPython's threads (see docs)"),
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
    tls_cert: Optional[str]
    tls_key: Optional[str]
    dns_server: Optional[tuple]
    dns_timeout_seconds: float
    outbound_port: int
    outbound_timeout_seconds: float
    queue_lifetime_seconds: float
    queue_workers: int
    retry_base_seconds: float
    cpus: int
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
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("MAIL_TLS_CERT: MAIL_TLS_CERT and MAIL_TLS_KEY must be set together")
    return Config(**values)
