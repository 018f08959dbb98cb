"""SPF checks with pyspf (full RFC 7208), its DNS routed through the caller's resolver.

pyspf looks names up through one module-level function, `spf.DNSLookup`. mu replaces it
once, at import, with a dispatcher that asks the resolver of the `Checker` running on the
current thread (a thread-local set for the length of each check), so two checkers with
different resolvers never see each other's answers, and nothing is swapped while a check
runs. A thread with no check running gets pyspf's own look-up, as before mu was imported.
"""

import threading
import time

import spf

from ..dnsresolver import DNSTempError, NXDomain

RESULT_CACHE_MAX_ENTRIES = 10000

_pyspf_lookup = spf.DNSLookup
_current = threading.local()


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNSLookup contract: [((name, qtype), value)], TempError on failure."""
    resolver = getattr(_current, "resolver", None)
    if resolver is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    try:
        records = resolver.query(name, qtype)
    except NXDomain:
        return []
    except DNSTempError as exc:
        raise spf.TempError(str(exc))
    except Exception as exc:   # a name DNS cannot carry (bad escape, bad IDN): RFC 7208 §4.8
        raise spf.PermError(f"invalid domain name in look-up: {exc.__class__.__name__}")
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


spf.DNSLookup = _lookup


class Checker:
    """SPF evaluation against one resolver, with its own result cache.

    (ip, sender, helo) -> (expires, (result, explanation)). A result is reused only until
    the first DNS answer it was computed from leaves the resolver's cache, so it is always
    what a fresh evaluation would give; a burst of mail from one sender costs one evaluation.
    """

    def __init__(self, resolver):
        self.resolver = resolver
        self._results = {}
        self._results_lock = threading.Lock()

    def check(self, ip: str, mail_from: str, helo: str, timeout: float = 20) -> tuple:
        """(result, explanation): pass, fail, softfail, neutral, none, temperror or permerror.
        Never raises: what pyspf cannot evaluate is a permerror (RFC 8601 §2.7.2)."""
        key = (ip, mail_from, helo)
        now = time.monotonic()
        with self._results_lock:
            hit = self._results.get(key)
        if hit and hit[0] > now:
            return hit[1]
        outer = getattr(_current, "resolver", None)
        _current.resolver = self.resolver
        try:
            with self.resolver.watch_expiry() as watch:
                outcome = spf.check2(i=ip, s=mail_from or f"postmaster@{helo}", h=helo or "unknown",
                                     timeout=timeout, querytime=timeout)
        except Exception as exc:  # pyspf raises on some malformed input
            return "permerror", str(exc)
        finally:
            _current.resolver = outer
        # Only results read wholly from cached answers are kept (an evaluation that used no
        # DNS at all, or ran out of time, is not).
        if watch.expires != float("inf") and outcome[0] != "temperror":
            with self._results_lock:
                if len(self._results) >= RESULT_CACHE_MAX_ENTRIES:
                    self._results.clear()
                self._results[key] = (watch.expires, outcome)
        return outcome
