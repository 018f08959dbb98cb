"""Where a domain's mail goes: MX hosts in preference order (RFC 5321 §5.1)."""

import random

from ..dnsresolver import DNSTempError, NXDomain


class PermanentRouteError(Exception):
    """The domain cannot receive mail (no such domain, null MX, no address); `status` is
    the RFC 3463 code a bounce gives for it."""

    def __init__(self, message: str, status: str = "5.1.2"):   # bad destination system address
        super().__init__(message)
        self.status = status


def route(domain: str, resolver) -> list:
    """Hosts to try, best first; equal preferences in random order (RFC 5321 §5.1).

    Raises PermanentRouteError or DNSTempError.
    """
    try:
        records = resolver.mx(domain)
    except NXDomain:
        raise PermanentRouteError(f"domain {domain} does not exist") from None
    if not records:
        # No MX: the domain itself is the implicit MX (RFC 5321 §5.1).
        if not resolver.addresses(domain):
            raise PermanentRouteError(f"domain {domain} has no MX and no address record")
        return [domain]
    if any(host in (".", "") for _, host in records):
        # RFC 7505: "0 ." says the domain accepts no mail (X.1.10, registered by that RFC).
        raise PermanentRouteError(f"domain {domain} accepts no mail (null MX)", "5.1.10")
    by_pref = {}
    for pref, host in records:
        by_pref.setdefault(pref, []).append(host)
    hosts = []
    for pref in sorted(by_pref):
        group = by_pref[pref]
        random.shuffle(group)
        hosts += group
    return hosts


__all__ = ["route", "PermanentRouteError", "DNSTempError"]
