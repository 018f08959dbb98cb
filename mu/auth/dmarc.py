"""DMARC (RFC 7489): the From domain's policy, and alignment of SPF and DKIM with it."""

from ..dnsresolver import DNSTempError
from . import parse_tags


def organizational_domain(domain: str) -> str:
    """An approximation of RFC 7489 §3.2 without the Public Suffix List: the last two labels
    (three when the second-level label is a common registry label like co.uk)."""
    labels = domain.lower().split(".")
    if len(labels) >= 3 and labels[-2] in ("co", "com", "org", "net", "ac", "gov", "edu") and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _aligned(a: str, b: str, strict: bool) -> bool:
    if not a or not b:
        return False
    a, b = a.lower(), b.lower()
    return a == b if strict else organizational_domain(a) == organizational_domain(b)


def lookup_policy(from_domain: str, resolver):
    """The DMARC record's tags for the domain (or its organizational domain), or None."""
    for name in dict.fromkeys([from_domain, organizational_domain(from_domain)]):
        records = [r for r in resolver.txt("_dmarc." + name) if r.lower().startswith("v=dmarc1")]
        if len(records) == 1:
            return parse_tags(records[0])
    return None


def evaluate(from_domain: str, spf_result: str, spf_domain: str, dkim_results: list, resolver) -> tuple:
    """(result, policy): result pass/fail/none/temperror; policy none/quarantine/reject."""
    if not from_domain:
        return "none", "none"
    try:
        policy = lookup_policy(from_domain, resolver)
    except DNSTempError:
        return "temperror", "none"
    if policy is None:
        return "none", "none"
    spf_ok = spf_result == "pass" and _aligned(spf_domain, from_domain, policy.get("aspf") == "s")
    dkim_ok = any(r == "pass" and _aligned(d, from_domain, policy.get("adkim") == "s") for r, d in dkim_results)
    requested = policy.get("p", "none").lower()
    if from_domain != organizational_domain(from_domain) and "sp" in policy:
        requested = policy["sp"].lower()
    return ("pass" if spf_ok or dkim_ok else "fail"), requested
