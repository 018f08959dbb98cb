"""SPF checks with pyspf (full RFC 7208), its DNS routed through mu's resolver."""

import threading
import time

import spf

from ..dnsresolver import DNSTempError, NXDomain

_resolver = None
# (ip, sender, helo) -> (expires, (result, explanation)). A result is reused only until the
# first DNS answer it was computed from leaves the resolver's cache, so it is always what a
# fresh evaluation would give; a burst of mail from one sender costs one evaluation.
_results = {}
_results_lock = threading.Lock()
RESULT_CACHE_MAX_ENTRIES = 10000


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
    with _results_lock:
        _results.clear()


def check(ip: str, mail_from: str, helo: str, timeout: float = 20) -> tuple:
    """(result, explanation): result is pass, fail, softfail, neutral, none, temperror or permerror."""
    key = (ip, mail_from, helo)
    now = time.monotonic()
    with _results_lock:
        hit = _results.get(key)
    if hit and hit[0] > now:
        return hit[1]
    try:
        with _resolver.watch_expiry() as watch:
            outcome = spf.check2(i=ip, s=mail_from or f"postmaster@{helo}", h=helo or "unknown",
                                 timeout=timeout, querytime=timeout)
    except Exception as exc:  # pyspf raises on some malformed input; treat as permerror
        return "permerror", str(exc)
    # Only results read wholly from cached answers are kept (an evaluation that used no
    # DNS at all, or ran out of time, is not).
    if watch.expires != float("inf") and outcome[0] != "temperror":
        with _results_lock:
            if len(_results) >= RESULT_CACHE_MAX_ENTRIES:
                _results.clear()
            _results[key] = (watch.expires, outcome)
    return outcome
