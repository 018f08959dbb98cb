"""One SMTP conversation with a remote MX: EHLO, opportunistic STARTTLS, then one
transaction per queued message, reporting each recipient's outcome.

An outcome is (delivered, permanent, reply text): chasquid's "(error, permanent)" bit
that lets the queue choose between retry and bounce.
"""

import smtplib
import socket
import ssl


class Outcome:
    __slots__ = ("ok", "permanent", "detail")

    def __init__(self, ok: bool, permanent: bool, detail: str):
        self.ok, self.permanent, self.detail = ok, permanent, detail

    def __repr__(self):
        return f"Outcome(ok={self.ok}, permanent={self.permanent}, detail={self.detail!r})"


def _reply_text(code: int, message) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"[:500]


def _unverified_tls() -> ssl.SSLContext:
    # Opportunistic TLS (RFC 7435), like Postfix's `smtp_tls_security_level = may`:
    # encrypt whenever offered, but an unverifiable certificate is still better than plaintext.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RemoteSession:
    """A connected, greeted session with one remote host."""

    def __init__(self, host: str, address: str, port: int, helo_name: str, timeout: float):
        self.host = host
        self.smtp = smtplib.SMTP(timeout=timeout, local_hostname=helo_name)
        # starttls() takes the TLS server name (SNI) from the host given to the constructor;
        # connect() to the resolved address leaves it empty, and ssl refuses an empty name.
        self.smtp._host = host
        code, msg = self.smtp.connect(address, port)
        if code != 220:
            self.close()
            raise smtplib.SMTPConnectError(code, msg)
        code, msg = self.smtp.ehlo()
        if not 200 <= code < 300:
            code, msg = self.smtp.helo()
            if not 200 <= code < 300:
                self.close()
                raise smtplib.SMTPHeloError(code, msg)
        if self.smtp.has_extn("starttls"):
            self.smtp.starttls(context=_unverified_tls())
            self.smtp.ehlo()

    def send(self, sender: str, recipients: list, message: bytes) -> dict:
        """{recipient: Outcome} for one message; the session stays usable afterwards."""
        results = {}
        options = ["BODY=8BITMIME"] if self.smtp.has_extn("8bitmime") else []
        if self.smtp.has_extn("size"):
            options.append(f"SIZE={len(message)}")
        if not (sender.isascii() and all(r.isascii() for r in recipients)):
            # RFC 6531 §3.4: a UTF-8 address travels only in an SMTPUTF8 transaction; with the
            # parameter smtplib sends the commands as UTF-8 (and refuses if it is not offered).
            options.append("SMTPUTF8")
        code, msg = self.smtp.mail(sender, options)
        if code != 250:
            self._rset()
            outcome = Outcome(False, code >= 500, _reply_text(code, msg))
            return {r: outcome for r in recipients}
        accepted = []
        for rcpt in recipients:
            code, msg = self.smtp.rcpt(rcpt)
            if code in (250, 251):
                accepted.append(rcpt)
            else:
                results[rcpt] = Outcome(False, code >= 500, _reply_text(code, msg))
        if not accepted:
            self._rset()
            return results
        try:
            code, msg = self.smtp.data(message)
        except smtplib.SMTPDataError as exc:
            code, msg = exc.smtp_code, exc.smtp_error
        outcome = Outcome(code == 250, code >= 500, _reply_text(code, msg))
        for rcpt in accepted:
            results[rcpt] = outcome
        return results

    def _rset(self):
        try:
            self.smtp.rset()
        except smtplib.SMTPException:
            pass

    def close(self):
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            try:
                self.smtp.close()
            except OSError:
                pass


TEMPORARY_ERRORS = (OSError, socket.timeout, smtplib.SMTPException, ssl.SSLError)
