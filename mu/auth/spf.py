"""SPF checks with pyspf (full RFC 7208), its DNS routed through mu's resolver."""

import spf

from ..dnsresolver import DNSTempError, NXDomain

_resolver = None


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNSLookup contract: [((name, qtype), value)], TempError on failure."""
    try:
        records = _resolver.query(name, qtype)
    except NXDomain:
        return []
    except DNSTempError as exc:
        raise spf.TempError(str(exc))
    out = []
    for r in records:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), r.address))
        elif qtype == "MX":
            out.append(((name, qtype), (r.preference, r.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), r.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), r.strings))
        elif qtype == "CNAME":
            out.append(((name, qtype), r.target.to_text(True)))
    return out


def use_resolver(resolver) -> None:
    global _resolver
    _resolver = resolver
    spf.DNSLookup = _lookup


def check(ip: str, mail_from: str, helo: str, timeout: float = 20) -> tuple:
    """(result, explanation): result is pass, fail, softfail, neutral, none, temperror or permerror."""
    try:
        result, explanation = spf.check2(i=ip, s=mail_from or f"postmaster@{helo}", h=helo or "unknown",
                                         timeout=timeout, querytime=timeout)
    except Exception as exc:  # pyspf raises on some malformed input; treat as permerror
        return "permerror", str(exc)
    return result, explanation
