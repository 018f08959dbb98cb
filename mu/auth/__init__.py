"""Message authentication for received mail: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489)."""


def parse_tags(record: str) -> dict:
    """A tag=value list (RFC 6376 §3.2, used by DKIM and DMARC records): lower-case tag names,
    values with surrounding white space removed."""
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags
