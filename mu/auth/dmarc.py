"""DMARC (RFC 7489): the From domain's policy, alignment of SPF and DKIM with it, and the
disposition mu applies (reject, quarantine or none, after `pct` sampling)."""

import email.utils
import random
import re
import threading
import time
from dataclasses import dataclass

from .. import addr
from ..dnsresolver import DNSTempError
from . import parse_tags

# A From header naming more domains than this is not evaluated domain by domain (each
# costs DNS look-ups); its result is permerror.
MAX_FROM_DOMAINS = 10
POLICIES = ("none", "quarantine", "reject")

_psl = None
_psl_lock = threading.Lock()


def public_suffix_list():
    """The Public Suffix List, parsed once (~40 ms, ~1.4 MB) on first use."""
    global _psl
    with _psl_lock:
        if _psl is None:
            import pkgutil

            from publicsuffixlist import PublicSuffixList
            # Read through the package loader, which also works inside the zipapp (dist/mu),
            # where the package's own open() of its file would not. ICANN and private
            # sections both: a private suffix (duckdns.org) is a registry too.
            source = pkgutil.get_data("publicsuffixlist", "public_suffix_list.dat")
            _psl = PublicSuffixList(source.decode("utf-8"))
        return _psl


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix (from the Public Suffix List) plus one label;
    a domain that is itself a public suffix is its own organizational domain."""
    domain = domain.lower().rstrip(".")
    return public_suffix_list().privatesuffix(domain) or domain


def _aligned(identifier: str, from_domain: str, strict: bool) -> bool:
    """RFC 7489 §3.1.1/§3.1.2: strict is the same domain, relaxed the same organization."""
    if not identifier or not from_domain:
        return False
    identifier, from_domain = identifier.lower().rstrip("."), from_domain.lower()
    if identifier == from_domain:
        return True
    return not strict and organizational_domain(identifier) == organizational_domain(from_domain)


@dataclass(frozen=True)
class Record:
    tags: dict
    at_organizational_domain: bool   # found by the §6.6.3 fallback query


def _is_dmarc(record: str) -> bool:
    """RFC 7489 §6.4: the record starts with v=DMARC1 (case-sensitive)."""
    key, sep, value = record.split(";", 1)[0].partition("=")
    return bool(sep) and key.strip() == "v" and value.strip() == "DMARC1"


def _record_at(name: str, resolver):
    """The one DMARC record at _dmarc.NAME, or None (RFC 7489 §6.6.3 steps 1-3: TXT
    records not starting with v=DMARC1 are discarded; none or several mean no policy)."""
    records = [r for r in resolver.txt("_dmarc." + name) if _is_dmarc(r)]
    return parse_tags(records[0]) if len(records) == 1 else None


def lookup_policy(from_domain: str, resolver):
    """The Record for the domain, falling back to its organizational domain, or None.
    Raises DNSTempError."""
    tags = _record_at(from_domain, resolver)
    if tags is not None:
        return Record(tags, False)
    org = organizational_domain(from_domain)
    if org != from_domain:
        tags = _record_at(org, resolver)
        if tags is not None:
            return Record(tags, True)
    return None


def requested_policy(record: Record, from_domain: str) -> str:
    """p=, or sp= for a subdomain whose record was found at its organizational domain
    (RFC 7489 §6.3). A record without a valid p= counts as p=none (§6.6.3 step 6)."""
    tags = record.tags
    policy = tags.get("p", "").lower()
    if record.at_organizational_domain and tags.get("sp", "").lower() in POLICIES:
        policy = tags["sp"].lower()
    return policy if policy in POLICIES else "none"


def percentage(record: Record) -> int:
    """pct= (RFC 7489 §6.3): 0-100, default 100; a malformed value counts as the default."""
    value = record.tags.get("pct", "100")
    return int(value) if value.isascii() and value.isdigit() and int(value) <= 100 else 100


@dataclass(frozen=True)
class Outcome:
    result: str        # pass, fail, none, temperror, permerror (RFC 8601 §2.7.4 / RFC 7489 §11.2)
    policy: str        # what the domain asks: none, quarantine, reject
    disposition: str   # what mu does: none, quarantine, reject
    domain: str        # the From domain evaluated (the one deciding, when there are several)


def _evaluate_one(from_domain, spf_result, spf_domain, dkim_results, resolver, sample) -> Outcome:
    try:
        record = lookup_policy(from_domain, resolver)
    except DNSTempError:
        return Outcome("temperror", "none", "none", from_domain)
    if record is None:
        return Outcome("none", "none", "none", from_domain)
    spf_ok = spf_result == "pass" and _aligned(spf_domain, from_domain, record.tags.get("aspf", "").lower() == "s")
    strict_dkim = record.tags.get("adkim", "").lower() == "s"
    dkim_ok = any(r == "pass" and _aligned(d, from_domain, strict_dkim) for r, d in dkim_results)
    policy = requested_policy(record, from_domain)
    if spf_ok or dkim_ok:
        return Outcome("pass", policy, "none", from_domain)
    # RFC 7489 §6.6.4: pct= samples which failing messages get the policy; the rest get the
    # next weaker one (reject -> quarantine, quarantine -> none).
    disposition = policy
    if policy != "none" and not sample(percentage(record)):
        disposition = "quarantine" if policy == "reject" else "none"
    return Outcome("fail", policy, disposition, from_domain)


def _sampled(pct: int) -> bool:
    return random.randrange(100) < pct


def evaluate(from_domains, spf_result: str, spf_domain: str, dkim_results: list, resolver,
             sample=_sampled, deadline: float = None) -> Outcome:
    """The DMARC outcome for a message whose header From names `from_domains` (A-label
    form; None in the list for an address that does not parse). Never raises.

    RFC 7489 §6.6.1: with several From domains each is checked and the strictest
    disposition among the failures applies. A domain not begun by `deadline`
    (time.monotonic()) is temperror."""
    if not from_domains:
        return Outcome("none", "none", "none", "")
    domains = list(dict.fromkeys(from_domains))
    if None in domains or len(domains) > MAX_FROM_DOMAINS:
        return Outcome("permerror", "none", "none", next((d for d in domains if d), ""))
    outcomes = []
    for domain in domains:
        if deadline is not None and time.monotonic() >= deadline:
            outcomes.append(Outcome("temperror", "none", "none", domain))
            continue
        try:
            outcomes.append(_evaluate_one(domain, spf_result, spf_domain, dkim_results, resolver, sample))
        except Exception:   # a DNS name or record nobody foresaw: never a reason to lose mail
            outcomes.append(Outcome("permerror", "none", "none", domain))
    rank = {"fail": 4, "temperror": 3, "permerror": 2, "pass": 1, "none": 0}
    return max(outcomes, key=lambda o: (POLICIES.index(o.disposition), rank[o.result]))


# The shapes nearly every From takes: `a@b.example`, `Name <a@b.example>`, `"Name" <a@b.example>`.
# For these the address is read directly (email.utils.getaddresses gives the same, a property
# test checks); anything else goes to getaddresses, which costs ~30 µs a message.
_DOT_ATOM_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_FROM = re.compile(
    rf'[ \t]*(?:({_DOT_ATOM_ADDR})|(?:"[^"\\\r\n]*"|[A-Za-z0-9!#$%&\'*+/=?^_`{{|}}~ \t-]*)[ \t]*<({_DOT_ATOM_ADDR})>)[ \t]*\Z')


def _addresses(values: list) -> list:
    if len(values) == 1:
        match = _SIMPLE_FROM.match(values[0])
        if match:
            return [match.group(1) or match.group(2)]
    return [address for _name, address in email.utils.getaddresses(values)]


def header_from_domains(values: list) -> list:
    """The domains of the mailboxes in the From header fields `values` (raw, unfolded), in
    A-label form; None for a mailbox whose address does not parse (or a field too long to
    read). [] when there is no From field."""
    if None in values:
        return [None]
    domains = []
    try:
        addresses = _addresses(values)
    except Exception:
        return [None]
    for address in addresses:
        if not address:
            continue
        try:
            domains.append(addr.parse(address)[1])
        except addr.AddressError:
            domains.append(None)
    if not domains and any(v.strip() for v in values):
        return [None]   # a From header with no address in it
    return domains


# A From field longer than this is not read for its domains (RFC 5322 sets no limit, real
# ones are a few hundred octets); its DMARC result is permerror.
MAX_FROM_FIELD_OCTETS = 8192
_LINE_END = re.compile(rb"\r\n|\r|\n")


def author_from_fields(data: bytes) -> list:
    """The unfolded values of the message's header From fields (RFC 7489 §3.1: the Author
    Domain comes from them). Lines end as the email package reads them (CRLF, LF or CR), so
    this sees the same From a reader is shown."""
    end = data.find(b"\r\n\r\n")
    header = data[:end] if end >= 0 else None
    if header is not None and header.count(b"\n") == header.count(b"\r") == header.count(b"\r\n"):
        lines = header.split(b"\r\n")   # the usual case: CRLF only
    else:
        lines = _LINE_END.split(data[:_header_end(data)])
    values, current = [], None
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(b"".join(current))
            current = None
        if line[:4].lower() == b"from":
            name, sep, value = line.partition(b":")
            if sep and name.rstrip(b" \t").lower() == b"from":
                current = [value]
    if current is not None:
        values.append(b"".join(current))
    return [v.decode("utf-8", "replace") if len(v) <= MAX_FROM_FIELD_OCTETS else None for v in values]


def _header_end(data: bytes) -> int:
    """Where the header ends: at its first empty line (or the end of the data)."""
    at = 0
    for match in _LINE_END.finditer(data):
        if match.start() == at:
            return at
        at = match.end()
    return len(data)
