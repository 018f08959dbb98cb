"""Delivery Status Notifications (RFC 3464): the bounce a sender gets when mail fails.

Assembled by hand because the stdlib generator cannot flatten a message/delivery-status
part built from text; the parts are ASCII (the human-readable part is quoted-printable).
"""

import email.utils
import quopri
import secrets
import time

from .. import compose


def _enhanced_status(detail: str) -> str:
    words = detail.split(" ", 2)
    if len(words) > 1 and words[1][:1] in "45" and words[1].count(".") == 2:
        return words[1]
    return "5.0.0"


def build_bounce(*, domain: str, reporting_host: str, sender: str, original_subject: str,
                 failures: dict, original_headers: bytes) -> bytes:
    """A multipart/report; `failures` maps each failed recipient to the remote reply or error."""
    boundary = "mu-report-" + secrets.token_hex(12)
    now = email.utils.formatdate(time.time())
    text = [f"Your message \"{compose.clean_header_text(original_subject)}\" could not be delivered "
            "to the following recipients:", ""]
    text += [f"  {rcpt}: {compose.clean_header_text(detail)}" for rcpt, detail in failures.items()]
    text += ["", "This is a permanent error; the message will not be retried."]
    human = quopri.encodestring("\n".join(text).encode("utf-8")).replace(b"\n", b"\r\n")
    status = [f"Reporting-MTA: dns; {reporting_host}", f"Arrival-Date: {now}", ""]
    for rcpt, detail in failures.items():
        status += [f"Final-Recipient: rfc822; {rcpt}", "Action: failed", f"Status: {_enhanced_status(detail)}"]
        if detail[:3].isdigit():
            status.append(f"Diagnostic-Code: smtp; {compose.clean_header_text(detail)}")
        status.append("")
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{domain}>",
        f"To: {sender}",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {now}",
        f"Message-ID: {compose.new_message_id(domain)}",
        "Auto-Submitted: auto-replied",   # RFC 3834: never answer a bounce
        "MIME-Version: 1.0",
        f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"",
    ]
    parts = [
        b"\r\n".join(h.encode("utf-8", "replace") for h in headers), b"",
        b"This is a delivery status notification in MIME format.", b"",
        f"--{boundary}".encode(), b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: quoted-printable", b"", human,
        f"--{boundary}".encode(), b"Content-Type: message/delivery-status", b"",
        "\r\n".join(status).encode("ascii", "replace"),
        f"--{boundary}".encode(), b"Content-Type: text/rfc822-headers", b"",
        original_headers.rstrip(b"\r\n"), b"",
        f"--{boundary}--".encode(), b"",
    ]
    return b"\r\n".join(parts)
