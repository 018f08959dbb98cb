"""Delivery Status Notifications (RFC 3464): the bounce a sender gets when mail fails.

Assembled by hand because the stdlib generator cannot flatten a message/delivery-status
part built from text; the parts are ASCII (the human-readable part is quoted-printable, a
UTF-8 address is written as RFC 6533 `utf-8` xtext), except the original headers when
they hold UTF-8, sent as message/global-headers (RFC 6533 §6.3).
"""

import quopri
import secrets
import time

from .. import compose


def _address_field(address: str) -> str:
    """An address-type and address (RFC 3464 §2.3.2): `rfc822` for ASCII, else RFC 6533's
    `utf-8` with `\\`, `+`, `=`, controls and non-ASCII as `\\x{HEX}` so the field stays ASCII."""
    if address.isascii() and all(33 <= ord(c) <= 126 for c in address):
        return f"rfc822; {address}"
    text = "".join(c if 33 <= ord(c) <= 126 and c not in "\\+=" else f"\\x{{{ord(c):X}}}" for c in address)
    return f"utf-8; {text}"


def build_bounce(*, domain: str, reporting_host: str, sender: str, original_subject: str,
                 failures: dict, original_headers: bytes, arrival_date: float,
                 attempt_date: float = None) -> bytes:
    """A multipart/report; `failures` maps each failed recipient to its `outbox.Outcome`.

    `arrival_date` is when the original message was queued (RFC 3464 §2.2.5), not now;
    `attempt_date` is when the last attempt ended (§2.3.7), by default now."""
    boundary = "mu-report-" + secrets.token_hex(12)
    now = time.time()
    last_attempt = compose.format_date(attempt_date or now)
    text = [f"Your message \"{compose.clean_header_text(original_subject)}\" could not be delivered "
            "to the following recipients:", ""]
    text += [f"  {rcpt}: {compose.clean_header_text(outcome.detail)}" for rcpt, outcome in failures.items()]
    text += ["", "This is a permanent error; the message will not be retried."]
    human = quopri.encodestring("\n".join(text).encode("utf-8")).replace(b"\n", b"\r\n")
    status = [f"Reporting-MTA: dns; {reporting_host}", f"Arrival-Date: {compose.format_date(arrival_date)}", ""]
    for rcpt, outcome in failures.items():
        status += [f"Final-Recipient: {_address_field(rcpt)}", "Action: failed",
                   f"Status: {outcome.enhanced_status()}"]
        if outcome.remote:
            status.append(f"Remote-MTA: dns; {outcome.remote}")
        detail = compose.clean_header_text(outcome.detail)
        if outcome.remote and detail[:3].isdigit():   # the remote's own reply (§2.3.6)
            status.append(f"Diagnostic-Code: smtp; {detail}")
        status += [f"Last-Attempt-Date: {last_attempt}", ""]
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{domain}>",
        f"To: {sender}",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {compose.format_date(now)}",
        f"Message-ID: {compose.new_message_id(domain)}",
        "Auto-Submitted: auto-replied",   # RFC 3834: never answer a bounce
        "MIME-Version: 1.0",
        f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"",
    ]
    # Headers with UTF-8 in them are message/global-headers (RFC 6533 §6.3).
    headers_type = b"text/rfc822-headers" if original_headers.isascii() else b"message/global-headers"
    parts = [
        b"\r\n".join(h.encode("utf-8", "replace") for h in headers), b"",
        b"This is a delivery status notification in MIME format.", b"",
        f"--{boundary}".encode(), b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: quoted-printable", b"", human,
        f"--{boundary}".encode(), b"Content-Type: message/delivery-status", b"",
        "\r\n".join(status).encode("ascii", "replace"),
        f"--{boundary}".encode(), b"Content-Type: " + headers_type, b"",
        original_headers.rstrip(b"\r\n"), b"",
        f"--{boundary}--".encode(), b"",
    ]
    return b"\r\n".join(parts)
