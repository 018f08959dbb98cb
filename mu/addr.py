"""Email address syntax: splitting, validation and IDNA, per RFC 5321 §4.1.2 and RFC 6531."""

import re

# RFC 5321 §4.5.3.1.1 / §4.5.3.1.2: local part 64 octets, domain 255 octets.
MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 255

_ATOM_CHARS = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_ATOM = re.compile(rf"^[{_ATOM_CHARS}\u0080-\U0010ffff]+(\.[{_ATOM_CHARS}\u0080-\U0010ffff]+)*$")
_QUOTED = re.compile(r'^"([\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"$')
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ADDRESS_LITERAL = re.compile(r"^\[[^\[\]\\]+\]$")


class AddressError(ValueError):
    pass


def split(address: str):
    """`local@domain` -> (local, domain); the last @ splits (a quoted local part may hold one)."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise AddressError(f"not an email address: {address!r}")
    return local, domain


def idna_domain(domain: str) -> str:
    """A domain in its ASCII (A-label) form, lower-cased; raise AddressError if malformed."""
    domain = domain.strip().rstrip(".")
    if _ADDRESS_LITERAL.match(domain):
        return domain
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise AddressError(f"invalid domain: {domain!r}") from None
    ascii_domain = ascii_domain.lower()
    labels = ascii_domain.split(".")
    if (len(ascii_domain) > MAX_DOMAIN_OCTETS or len(labels) < 1
            or not all(_LABEL.match(label) for label in labels)):
        raise AddressError(f"invalid domain: {domain!r}")
    return ascii_domain


def parse(address: str) -> tuple:
    """Validate an address and return (local, ascii_domain)."""
    address = address.strip()
    # Line breaks of any kind (str.splitlines() splits at \x85, \u2028, \u2029 too) would
    # break the header the address is written into.
    if any(c in address for c in "\r\n\0\x85\u2028\u2029") or " " in address and not address.startswith('"'):
        raise AddressError(f"invalid address: {address!r}")
    local, domain = split(address)
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise AddressError("local part longer than 64 octets")
    if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
        raise AddressError(f"invalid local part: {local!r}")
    return local, idna_domain(domain)


def normalize(address: str) -> str:
    local, domain = parse(address)
    return f"{local}@{domain}"


def is_address(text: str) -> bool:
    try:
        parse(text)
        return True
    except AddressError:
        return False


def base_local(local: str) -> str:
    """`alice+tag` -> `alice`: subaddressing delivers to the base mailbox, case-insensitively."""
    return local.split("+", 1)[0].lower()
