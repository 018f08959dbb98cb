"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3), for IMAP4rev1 clients.

Printable ASCII stands for itself except "&", written "&-"; anything else is UTF-16 in
modified base64 (",", not "/") between "&" and "-". Clients that ENABLE UTF8=ACCEPT or
IMAP4rev2 use UTF-8 names instead (RFC 6855 §3, RFC 9051 §5.1).
"""

import base64
import binascii


def encode(name: str) -> bytes:
    out = bytearray()
    pending = []

    def flush():
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.extend(b"&" + base64.b64encode(data).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            pending.append(ch)
    flush()
    return bytes(out)


def decode(data: bytes) -> str:
    """The Unicode name; ValueError for anything that is not valid modified UTF-7
    (a client that sends raw 8-bit names without ENABLE UTF8=ACCEPT gets it as UTF-8)."""
    if not data.isascii():
        return data.decode("utf-8")
    out = []
    i, n = 0, len(data)
    while i < n:
        c = data[i:i + 1]
        if c != b"&":
            if not 0x20 <= data[i] <= 0x7E:
                raise ValueError("control character in mailbox name")
            out.append(c.decode("ascii"))
            i += 1
            continue
        end = data.find(b"-", i + 1)
        if end < 0:
            raise ValueError("unterminated &... in mailbox name")
        chunk = data[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(b",", b"/")
            try:
                raw = base64.b64decode(b64 + b"=" * (-len(b64) % 4), validate=True)
                text = raw.decode("utf-16-be")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise ValueError("bad modified base64 in mailbox name") from None
            if encode(text) != b"&" + chunk + b"-":
                raise ValueError("non-canonical modified UTF-7 in mailbox name")
            out.append(text)
        i = end + 1
    return "".join(out)
