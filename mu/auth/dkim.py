"""DKIM: verifying received signatures and signing outbound mail, with dkimpy."""

import logging

import dkim

from ..dnsresolver import DNSTempError

# Headers signed on outbound mail; From is listed twice to oversign it (RFC 6376 §8.15),
# so nobody can add a second From below the signature.
SIGNED_HEADERS = [b"From", b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID",
                  b"In-Reply-To", b"References", b"MIME-Version", b"Content-Type",
                  b"Content-Transfer-Encoding"]

logging.getLogger("dkim").setLevel(logging.CRITICAL)


def _dnsfunc(resolver):
    def get_txt(name, timeout=5):
        qname = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            records = resolver.txt(qname.rstrip("."))
        except DNSTempError:
            return None
        return records[0].encode("utf-8") if records else None
    return get_txt


def verify(message: bytes, resolver) -> list:
    """[(result, domain)] for each DKIM-Signature, result pass/fail/temperror; [] if unsigned."""
    results = []
    try:
        d = dkim.DKIM(message, logger=logging.getLogger("dkim"), minkey=1024)
        sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    except Exception:
        return [("permerror", "")]
    for index in range(min(len(sigs), 5)):
        domain = ""
        try:
            tags = dkim.util.parse_tag_value(sigs[index])
            domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
            ok = d.verify(idx=index, dnsfunc=_dnsfunc(resolver))
            results.append(("pass" if ok else "fail", domain))
        except Exception:
            results.append(("fail", domain))
    return results


def sign(message: bytes, selector: str, domain: str, private_key: bytes) -> bytes:
    """The DKIM-Signature header line (with CRLF) for `message`: rsa-sha256, relaxed/relaxed."""
    present = {line.split(b":", 1)[0].strip().lower()
               for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if b":" in line and not line[:1].isspace()}
    headers = [h for h in SIGNED_HEADERS if h.lower() in present or h == b"From"]
    return dkim.sign(message, selector.encode("ascii"), domain.encode("ascii"), private_key,
                     canonicalize=(b"relaxed", b"relaxed"), include_headers=headers,
                     signature_algorithm=b"rsa-sha256")
