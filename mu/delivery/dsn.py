"""Delivery Status Notifications (RFC 3464): the bounce a sender gets when mail fails."""

import email.utils
import time
from email.message import EmailMessage

from .. import compose


def build_bounce(*, domain: str, reporting_host: str, sender: str, original_subject: str,
                 failures: dict, original_headers: bytes) -> bytes:
    """A multipart/report; `failures` maps each failed recipient to the remote reply or error."""
    msg = EmailMessage(policy=compose.POLICY)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{domain}>"
    msg["To"] = sender
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Date"] = email.utils.formatdate(time.time())
    msg["Message-ID"] = compose.new_message_id(domain)
    msg["Auto-Submitted"] = "auto-replied"   # RFC 3834: never answer a bounce
    lines = [f"Your message \"{compose.clean_header_text(original_subject)}\" could not be delivered "
             "to the following recipients:", ""]
    for rcpt, detail in failures.items():
        lines.append(f"  {rcpt}: {detail}")
    lines += ["", "This is a permanent error; the message will not be retried."]
    msg.set_content("\n".join(lines), charset="utf-8")
    status = [f"Reporting-MTA: dns; {reporting_host}",
              f"Arrival-Date: {email.utils.formatdate(time.time())}", ""]
    for rcpt, detail in failures.items():
        code = detail.split(" ", 2)
        enhanced = code[1] if len(code) > 1 and code[1][:1] in "45" and code[1].count(".") == 2 else "5.0.0"
        status += [f"Final-Recipient: rfc822; {rcpt}", "Action: failed", f"Status: {enhanced}"]
        if detail[:3].isdigit():
            status.append(f"Diagnostic-Code: smtp; {compose.clean_header_text(detail)}")
        status.append("")
    report = EmailMessage(policy=compose.POLICY)
    report.set_content("\r\n".join(status).encode("ascii", "replace"), maintype="message",
                       subtype="delivery-status", cte="7bit")
    msg.make_mixed()
    msg.attach(report)
    headers = EmailMessage(policy=compose.POLICY)
    headers.set_content(original_headers, maintype="text", subtype="rfc822-headers", cte="8bit")
    msg.attach(headers)
    msg.replace_header("Content-Type", msg.get("Content-Type").replace("multipart/mixed", "multipart/report"))
    msg.set_param("report-type", "delivery-status")
    return msg.as_bytes(policy=compose.POLICY)
