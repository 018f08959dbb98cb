"""SMTP command syntax (RFC 5321 §4.1): verbs, MAIL/RCPT paths and ESMTP parameters."""

import re

from . import replies as R
from .replies import ReplyError

# RFC 5321 §4.1.2: Reverse-path / Forward-path = "<" [ A-d-l ":" ] Mailbox ">"
_PATH = re.compile(r"^(FROM|TO):[ ]?<([^<>]*)>(.*)$", re.I | re.S)
_SOURCE_ROUTE = re.compile(r"^@[^:]+:")
_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_ASCII_DIGITS = re.compile(r"[0-9]+")


def split_command(line: str) -> tuple:
    """'MAIL FROM:<a>' -> ('MAIL', 'FROM:<a>')."""
    verb, _, rest = line.partition(" ")
    return verb.upper(), rest.strip()


def parse_path(argument: str, keyword: str) -> tuple:
    """'FROM:<a@b> SIZE=10' -> ('a@b', {'SIZE': '10'}); ReplyError(501) if malformed."""
    m = _PATH.match(argument)
    if not m or m.group(1).upper() != keyword:
        raise ReplyError(R.SYNTAX.with_text(f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>"))
    address = _SOURCE_ROUTE.sub("", m.group(2).strip())  # RFC 5321 §4.1.2: ignore source routes
    params = {}
    for word in m.group(3).split():
        key, sep, value = word.partition("=")
        if not _KEYWORD.match(key) or (sep and not value):
            raise ReplyError(R.SYNTAX.with_text(f"Bad parameter syntax: {word}"))
        params[key.upper()] = value if sep else None
    return address, params


def decimal(value, max_digits: int):
    """'1024' -> 1024; None unless `value` is 1 to `max_digits` ASCII digits (RFC 5234 DIGIT:
    str.isdigit() and int() also take '²' and '٣', which no ESMTP grammar does)."""
    if value is None or len(value) > max_digits or not _ASCII_DIGITS.fullmatch(value):
        return None
    return int(value)
