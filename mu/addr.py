"""Email address syntax: splitting, validation, IDNA and mailbox identity, per RFC 5321
§4.1.2 and its UTF-8 extension, RFC 6531 §3.3.

    Mailbox    = Local-part "@" ( Domain / address-literal )
    Local-part = Dot-string / Quoted-string          ; atext and qtextSMTP =/ UTF8-non-ascii
    Domain     = sub-domain *("." sub-domain)        ; sub-domain =/ U-label

`parse()` is the one validator; every address mu accepts from a peer, a user or the CLI
goes through it. Non-ASCII is accepted where RFC 6531 allows it, except characters that
are never text: controls (C0, DEL, C1), line and paragraph separators, unpaired
surrogates, bidirectional overrides and noncharacters (see NEVER_TEXT).
"""

import ipaddress
import functools
import re
import unicodedata

# RFC 5321 §4.5.3.1.1 / §4.5.3.1.2: local part 64 octets, domain 255 octets;
# §4.5.3.1.3: a path is 256 octets with its angle brackets, so an address is 254.
MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 255
MAX_ADDRESS_OCTETS = 254
MAX_LABEL_OCTETS = 63   # RFC 1035 §2.3.4, counted in the A-label form

# `-` is last in the class, where it is a literal and not a range.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
# qtextSMTP = %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP = "\" %d32-126
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_QUOTED_PAIR = re.compile(r"\\([\x20-\x7e])")
# sub-domain = Let-dig [Ldh-str]
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")

# Characters no address may hold, quoted or not, whatever RFC 6531's UTF8-non-ascii allows:
# they are invisible or change how the text around them is read or shown.
NEVER_TEXT = frozenset(
    "\u2028\u2029"                          # line and paragraph separators (category Zl, Zp)
    "\u061c\u200e\u200f"                    # bidirectional marks
    "\u202a\u202b\u202c\u202d\u202e"        # bidirectional embeddings and overrides
    "\u2066\u2067\u2068\u2069"              # bidirectional isolates
    "\ufeff\ufffe\uffff")                   # byte order mark, noncharacters
_PLACEHOLDER = "a"   # what an acceptable non-ASCII character counts as in the ASCII grammar
_BAD = "\0"          # and an unacceptable one (matches nothing)


class AddressError(ValueError):
    pass


def text_allowed(char: str) -> bool:
    """Whether a non-ASCII character may appear in an address at all."""
    return char not in NEVER_TEXT and unicodedata.category(char) not in ("Cc", "Cs", "Cn", "Co", "Zl", "Zp")


def _ascii_shape(text: str, quoted: bool) -> str:
    """`text` with each acceptable non-ASCII character replaced by an ASCII letter and each
    unacceptable one by NUL, so the RFC 5321 grammar decides the rest (RFC 6531 §3.3 adds
    UTF8-non-ascii to exactly atext and qtextSMTP). Outside quotes, white space is not atext."""
    if text.isascii():
        return text
    out = []
    for c in text:
        if c.isascii():
            out.append(c)
        elif text_allowed(c) and (quoted or not c.isspace()):
            out.append(_PLACEHOLDER)
        else:
            out.append(_BAD)
    return "".join(out)


def split(address: str):
    """`local@domain` -> (local, domain); the last @ splits (a quoted local part may hold one)."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise AddressError(f"not an email address: {address!r}")
    return local, domain


def valid_local(local: str) -> bool:
    """RFC 5321 Local-part with RFC 6531's UTF-8, at most 64 octets."""
    if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_OCTETS:
        return False
    if local.startswith('"'):
        return _QUOTED_STRING.match(_ascii_shape(local, quoted=True)) is not None
    return _DOT_STRING.match(_ascii_shape(local, quoted=False)) is not None


def _u_label_to_a_label(label: str) -> str:
    """A U-label's A-label (RFC 5890 §2.3.2.1): NFC, lower case, Punycode (RFC 3492).

    Labels are letters, marks, digits and hyphens, as IDNA2008's PVALID code points
    nearly are; no mapping beyond lower case, so `ß` stays itself as IDNA2008 says
    (IDNA2003 would have made it `ss`, another domain)."""
    label = unicodedata.normalize("NFC", label.lower())
    for c in label:
        if c.isascii():
            if not (c.isalnum() or c == "-"):
                raise AddressError("invalid character in domain label")
        elif not (unicodedata.category(c)[0] in "LMN" or c in "\u200c\u200d") or not text_allowed(c):
            raise AddressError(f"invalid character U+{ord(c):04X} in domain label")
    if label.startswith("-") or label.endswith("-") or label[2:4] == "--":   # RFC 5891 §4.2.3.1
        raise AddressError("invalid hyphen in domain label")
    try:
        return "xn--" + label.encode("punycode").decode("ascii")
    except UnicodeError:
        raise AddressError("domain label cannot be encoded") from None


def _address_literal(domain: str) -> str:
    """RFC 5321 §4.1.3 address literal, canonical: `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
    A General-address-literal needs a tag registered with IANA, and none is but IPv6."""
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        except ValueError:
            raise AddressError(f"invalid IPv6 address literal: {domain!r}") from None
    try:
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise AddressError(f"invalid address literal: {domain!r}") from None


def idna_domain(domain: str) -> str:
    """A domain in its ASCII (A-label) form, lower-cased; raise AddressError if malformed.
    One trailing dot (the root) is allowed here: an operator may type one."""
    if domain.startswith("[") and domain.endswith("]"):
        return _address_literal(domain)
    domain = domain[:-1] if domain.endswith(".") else domain
    labels = []
    for label in domain.split("."):
        if label.isascii():
            label = label.lower()
            if label.startswith("xn--"):
                try:
                    label[4:].encode("ascii").decode("punycode")
                except UnicodeError:
                    raise AddressError(f"invalid A-label in domain: {domain!r}") from None
        else:
            label = _u_label_to_a_label(label)
        if not _LDH_LABEL.match(label):
            raise AddressError(f"invalid domain: {domain!r}")
        labels.append(label)
    ascii_domain = ".".join(labels)
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise AddressError("domain longer than 255 octets")
    return ascii_domain


def parse(address: str) -> tuple:
    """Validate an address (RFC 5321 Mailbox, RFC 6531 UTF-8) and return (local, ascii_domain).
    The local part comes back exactly as given; the domain in A-label form, lower case."""
    if not isinstance(address, str):
        raise AddressError("not an email address")
    return _parse(address)


@functools.lru_cache(maxsize=4096)
def _parse(address: str) -> tuple:
    """(A received message's addresses are checked by the session, the policy, the blocklist
    and the mailbox in turn: a pure function of the text, so each is worked out once.)"""
    local, domain = split(address)   # nothing trimmed: what is checked is what travels on
    if not valid_local(local):
        raise AddressError(f"invalid local part: {local!r}")
    if domain.endswith("."):
        raise AddressError(f"invalid domain: {domain!r}")
    ascii_domain = idna_domain(domain)
    if len(local.encode("utf-8")) + 1 + len(ascii_domain) > MAX_ADDRESS_OCTETS:
        raise AddressError("address longer than 254 octets")
    return local, ascii_domain


def normalize(address: str) -> str:
    local, domain = parse(address)
    return f"{local}@{domain}"


def is_address(text: str) -> bool:
    try:
        parse(text)
        return True
    except AddressError:
        return False


def unquote_local(local: str) -> str:
    """The local part's content: quotes and quoted-pairs removed (RFC 5322 §3.2.4: the
    quotes are not part of the value), and quoted again only if it needs them."""
    if not local.startswith('"'):
        return local
    content = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    if content and _DOT_STRING.match(_ascii_shape(content, quoted=False)):
        return content
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def base_local(local: str) -> str:
    """`alice+tag` -> `alice`: subaddressing delivers to the base mailbox, case-insensitively;
    `"alice"` is `alice`."""
    return unquote_local(local).split("+", 1)[0].lower()


def mailbox_key(address: str) -> str:
    """One spelling per mailbox, for matching (the blocklist): the local part unquoted when
    it needs no quotes, `+tag` removed, NFC and case folded; the domain in A-label form.
    `"Spammer"@Bad.test`, `spammer+x@bad.test` and `SPAMMER@bad.test` give one key."""
    local, domain = parse(address)
    local = unquote_local(local)
    if not local.startswith('"'):
        local = local.split("+", 1)[0] or local
    return f"{unicodedata.normalize('NFC', local).casefold()}@{domain}"
