"""DKIM: verifying received signatures and signing outbound mail, with dkimpy."""

import logging
import re
import time

import dkim

from ..dnsresolver import DNSTempError

# Headers signed on outbound mail; From is listed twice to oversign it (RFC 6376 §8.15),
# so nobody can add a second From below the signature.
SIGNED_HEADERS = [b"From", b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID",
                  b"In-Reply-To", b"References", b"MIME-Version", b"Content-Type",
                  b"Content-Transfer-Encoding"]

logging.getLogger("dkim").setLevel(logging.CRITICAL)


# Signatures verified per message; more cost DNS look-ups and CPU for nothing a reader
# needs (RFC 6376 §6.1 lets a verifier limit how many it checks).
MAX_SIGNATURES = 5


# SELECTOR._domainkey.DOMAIN: labels of letters, digits, hyphens (and the underscore of
# _domainkey), at most 63 octets each, 253 in all.
_KEY_NAME = re.compile(r"(?=.{1,253}\Z)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{1,63}\Z")


class _KeyLookup:
    """dkimpy's dnsfunc, through mu's resolver, remembering what went wrong: dkimpy itself
    answers False both for a key that does not exist and for one DNS could not fetch."""

    def __init__(self, resolver):
        self.resolver = resolver
        self.asked = False
        self.temp_failed = False
        self.unusable = False   # no key record, or one that is malformed

    def __call__(self, name, timeout=5):
        self.asked = True
        qname = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        if not _KEY_NAME.match(qname.rstrip(".")):   # RFC 6376 §3.1, §3.5: s= and d= are domain names
            self.unusable = True
            return None
        try:
            records = self.resolver.txt(qname.rstrip("."))
        except DNSTempError:
            self.temp_failed = True
            return None
        except Exception:   # a name DNS cannot carry: no key can exist there
            self.unusable = True
            return None
        record = records[0].encode("utf-8") if len(records) == 1 else None
        try:
            dkim.evaluate_pk(name, record)
        except Exception:   # absent, several, or not a usable key (RFC 6376 §3.6.1)
            self.unusable = True
            return None
        return record


def _verify_one(d, index: int, resolver) -> str:
    """RFC 8601 §2.7.1 result for one signature. RFC 6376 §6.1.2: DNS trouble is TEMPFAIL
    (temperror); no key, a malformed key or signature is PERMFAIL (permerror); a signature
    that does not verify is fail."""
    lookup = _KeyLookup(resolver)
    try:
        ok = d.verify(idx=index, dnsfunc=lookup)
    except dkim.ValidationError as exc:
        if lookup.temp_failed:
            return "temperror"
        # Tags are checked before the key is fetched, the body hash after.
        return "fail" if lookup.asked and "body hash mismatch" in str(exc) else "permerror"
    except Exception:   # dkimpy's MessageFormatError, KeyFormatError ..., or worse
        return "temperror" if lookup.temp_failed else "permerror"
    if lookup.temp_failed:
        return "temperror"
    if ok:
        return "pass"
    return "permerror" if lookup.unusable or not lookup.asked else "fail"


def verify(message: bytes, resolver, deadline: float = None) -> list:
    """[(result, domain)] for each DKIM-Signature (the first MAX_SIGNATURES), result
    pass/fail/temperror/permerror; [] if unsigned. Never raises. A signature not begun by
    `deadline` (time.monotonic()) is temperror: DNS was too slow to get to it."""
    try:
        d = dkim.DKIM(message, logger=logging.getLogger("dkim"), minkey=1024)
        sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    except Exception:
        return [("permerror", "")]
    results = []
    for index in range(min(len(sigs), MAX_SIGNATURES)):
        try:
            tags = dkim.util.parse_tag_value(sigs[index])
            domain = tags.get(b"d", b"").decode("utf-8", "replace").strip().lower()
        except Exception:
            results.append(("permerror", ""))
            continue
        if deadline is not None and time.monotonic() >= deadline:
            results.append(("temperror", domain))
            continue
        results.append((_verify_one(d, index, resolver), domain))
    return results


def sign(message: bytes, selector: str, domain: str, private_key: bytes) -> bytes:
    """The DKIM-Signature header line (with CRLF) for `message`: rsa-sha256, relaxed/relaxed."""
    present = {line.split(b":", 1)[0].strip().lower()
               for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if b":" in line and not line[:1].isspace()}
    headers = [h for h in SIGNED_HEADERS if h.lower() in present or h == b"From"]
    return dkim.sign(message, selector.encode("ascii"), domain.encode("ascii"), private_key,
                     canonicalize=(b"relaxed", b"relaxed"), include_headers=headers,
                     signature_algorithm=b"rsa-sha256")
