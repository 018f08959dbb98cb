"""One DNS resolver for everything mu looks up (MX, A, AAAA, TXT), honouring MAIL_DNS_SERVER.

Answers and failures are cached briefly so that a flood of mail from one domain costs one
look-up, and every look-up is bounded by MAIL_DNS_TIMEOUT.
"""

import socket
import threading
import time

import dns.exception
import dns.name
import dns.resolver

POSITIVE_TTL_CAP_SECONDS = 300
NEGATIVE_TTL_SECONDS = 60
# A failing resolver is asked again only after this long, so an outage costs one timeout
# per name every half minute instead of one per message.
FAILURE_TTL_SECONDS = 30
CACHE_MAX_ENTRIES = 10000


class DNSTempError(Exception):
    """The look-up could not be completed (timeout, SERVFAIL): try again later."""


class NXDomain(Exception):
    """The name does not exist."""


class Resolver:
    def __init__(self, server=None, timeout_seconds: float = 5.0):
        if server:
            host, port = server
            ip = socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)[0][4][0]
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [ip]
            self._resolver.port = port
        else:
            try:
                self._resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                self._resolver = dns.resolver.Resolver(configure=False)
                self._resolver.nameservers = ["127.0.0.1"]
        self._resolver.lifetime = timeout_seconds
        self._resolver.timeout = min(timeout_seconds, 2.0)
        self._cache = {}
        self._lock = threading.Lock()
        self._watch = threading.local()

    def watch_expiry(self) -> "_ExpiryWatch":
        """`with resolver.watch_expiry() as w:` ... `w.expires`: the monotonic time at which
        the first cached answer used inside the block expires. A result computed only from
        those answers stays what a fresh computation would give until then."""
        return _ExpiryWatch(self._watch)

    def _used(self, expires: float) -> None:
        watch = getattr(self._watch, "current", None)
        if watch is not None and expires < watch.expires:
            watch.expires = expires

    def query(self, name: str, rdtype: str) -> list:
        """The answer's rdata list ([] when the name has no such records).

        Raises NXDomain when the name does not exist, DNSTempError when DNS failed.
        """
        key = (name.lower().rstrip("."), rdtype)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now:
            self._used(hit[0])
            if isinstance(hit[1], Exception):
                raise hit[1]
            return hit[1]
        try:
            answer = self._resolver.resolve(key[0] + ".", rdtype, raise_on_no_answer=False)
            result = list(answer) if answer.rrset is not None else []
            ttl = min(answer.rrset.ttl, POSITIVE_TTL_CAP_SECONDS) if answer.rrset is not None else NEGATIVE_TTL_SECONDS
        except dns.resolver.NXDOMAIN:
            result, ttl = NXDomain(key[0]), NEGATIVE_TTL_SECONDS
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration,
                dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong, OSError) as exc:
            result = DNSTempError(f"DNS look-up of {key[0]} {rdtype} failed: {exc.__class__.__name__}")
            ttl = FAILURE_TTL_SECONDS
        with self._lock:
            if len(self._cache) > CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = (now + ttl, result)
        self._used(now + ttl)
        if isinstance(result, Exception):
            raise result
        return result

    def txt(self, name: str) -> list:
        """TXT records as strings (each record's character-strings joined), [] if none."""
        try:
            return [b"".join(r.strings).decode("utf-8", "replace") for r in self.query(name, "TXT")]
        except NXDomain:
            return []

    def mx(self, domain: str) -> list:
        """[(preference, host)] sorted; raises NXDomain / DNSTempError."""
        return sorted((r.preference, "." if r.exchange == dns.name.root
                       else r.exchange.to_text(omit_final_dot=True).lower())
                      for r in self.query(domain, "MX"))

    def addresses(self, host: str) -> list:
        """IPv4 then IPv6 addresses of `host` ([] if none)."""
        found = []
        for rdtype in ("A", "AAAA"):
            try:
                found += [r.address for r in self.query(host, rdtype)]
            except NXDomain:
                return found
        return found


class _ExpiryWatch:
    def __init__(self, local):
        self._local = local
        self.expires = float("inf")

    def __enter__(self):
        self._outer = getattr(self._local, "current", None)
        self._local.current = self
        return self

    def __exit__(self, *exc):
        self._local.current = self._outer
        if self._outer is not None and self.expires < self._outer.expires:
            self._outer.expires = self.expires
