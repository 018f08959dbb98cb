"""One SMTP conversation with a remote MX: EHLO, opportunistic STARTTLS, then one
transaction per queued message, reporting each recipient's outcome.

TLS is opportunistic (RFC 7435), like Postfix's `smtp_tls_security_level = may`: used
whenever the server offers STARTTLS (RFC 3207), its certificate not verified (an
unverifiable certificate still beats cleartext), the MX host name sent as SNI. A failed
handshake raises `TLSHandshakeFailed`; the queue then tries the same address again in
cleartext (`RemoteSession(..., skip_tls=why)`), as Postfix does at `may`.

smtplib carries the bytes (reply parsing, dot-stuffing); MAIL, RCPT and STARTTLS are
issued here so that every path, option and TLS step is mu's own decision.
"""

import smtplib
import ssl

from .. import addr
from ..outbox import Outcome

__all__ = ["RemoteSession", "Outcome", "ConnectionFailed", "TLSHandshakeFailed", "TransactionBroken"]

# RFC 6531 §3.2: a message that needs SMTPUTF8 is not sent to a server that lacks it.
SMTPUTF8_MISSING = "5.6.7"
BAD_ADDRESS = "5.1.3"   # RFC 3463: bad destination mailbox address syntax
MAX_REPLY_CHARS = 500


class ConnectionFailed(Exception):
    """No usable session with this address (refused, timed out, bad greeting or EHLO)."""


class TLSHandshakeFailed(ConnectionFailed):
    """The server offered STARTTLS, said 220, and the handshake (or the EHLO after it) failed."""


class TransactionBroken(Exception):
    """The session broke during a transaction (disconnect, timeout): its outcome is unknown."""


def reply_text(code: int, message) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"[:MAX_REPLY_CHARS]


def describe(exc) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return reply_text(exc.smtp_code, exc.smtp_error)
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _opportunistic_tls() -> ssl.SSLContext:
    # RFC 7435: encrypt whenever offered; an unverifiable certificate is still better than
    # cleartext (RFC 7672 §1.3: MX certificates are rarely verifiable without DANE).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_TLS_CONTEXT = _opportunistic_tls()
_BROKEN = (OSError, smtplib.SMTPException, EOFError)


def path_problem(address: str) -> str:
    """Why `address` cannot go into `RCPT TO:<...>`, or "" when it can.

    Addresses are validated when mail is sent (`mu.addr`); this is the last line before the
    wire, so that whatever reached the queue can never break the command syntax (RFC 5321
    §4.1.2, RFC 6531 §3.3) and be retried forever: controls (C0, DEL, C1, line separators),
    angle brackets, unquoted spaces, sizes beyond §4.5.3.1."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return f"not an address: {address!r}"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "<>\u2028\u2029" for c in address):
        return f"control character or angle bracket in address {address!r}"
    if (" " in local and not (local.startswith('"') and local.endswith('"'))) or " " in domain:
        return f"space in address {address!r}"
    if len(local.encode("utf-8")) > addr.MAX_LOCAL_OCTETS or len(domain) > addr.MAX_DOMAIN_OCTETS:
        return f"address too long: {address!r}"
    return ""


class RemoteSession:
    """A connected, greeted session with one remote host, encrypted when the server
    offers STARTTLS, unless `skip_tls` says why not (a handshake that failed before)."""

    def __init__(self, host: str, address: str, port: int, helo_name: str, timeout: float,
                 skip_tls: str = ""):
        self.host = host.rstrip(".")
        self.where = f"{self.host}[{address}]:{port}"
        self.tls = ""          # "TLSv1.3 TLS_AES_256_GCM_SHA384" once encrypted
        self.tls_note = ""     # why not, when not
        self.smtp = smtplib.SMTP(timeout=timeout, local_hostname=helo_name)
        try:
            code, msg = self.smtp.connect(address, port)
            if code != 220:
                raise ConnectionFailed(f"{self.where} greeted with {reply_text(code, msg)}")
            self._hello()
            if not self.smtp.has_extn("starttls"):
                self.tls_note = "not offered"
            elif skip_tls:
                self.tls_note = skip_tls
            else:
                self._starttls()
        except ConnectionFailed:
            self.close()
            raise
        except (*_BROKEN, ValueError) as exc:
            self.close()
            raise ConnectionFailed(f"connect to {self.where}: {describe(exc)}") from None

    def _hello(self) -> None:
        code, msg = self.smtp.ehlo()
        if not 200 <= code < 300:
            code, msg = self.smtp.helo()
            if not 200 <= code < 300:
                raise ConnectionFailed(f"{self.where} refused HELO: {reply_text(code, msg)}")

    def _starttls(self) -> None:
        code, msg = self.smtp.docmd("STARTTLS")
        if code != 220:
            # RFC 3207 §4: a refusal leaves the session usable in cleartext.
            self.tls_note = f"STARTTLS refused: {reply_text(code, msg)}"
            return
        try:
            # SNI is the MX host name (RFC 6066 §3), which smtplib's starttls() would take
            # from the constructor's host, empty when the session was opened with connect().
            self.smtp.sock = _TLS_CONTEXT.wrap_socket(self.smtp.sock, server_hostname=self.host or None)
            self.smtp.file = None
            # RFC 3207 §4.2: forget what the server said before the handshake.
            self.smtp.helo_resp = self.smtp.ehlo_resp = None
            self.smtp.esmtp_features, self.smtp.does_esmtp = {}, False
            self._hello()
        except (*_BROKEN, ValueError, ConnectionFailed) as exc:
            self.close(quit=False)   # the server expects a handshake now, not a QUIT
            why = str(exc) if isinstance(exc, ConnectionFailed) else describe(exc)
            raise TLSHandshakeFailed(f"TLS with {self.where} failed: {why}") from None
        cipher = self.smtp.sock.cipher()
        self.tls = f"{self.smtp.sock.version()} {cipher[0] if cipher else ''}".strip()

    def describe_tls(self) -> str:
        return self.tls or f"no TLS ({self.tls_note})"

    def send(self, sender: str, recipients: list, message: bytes, smtputf8: bool) -> dict:
        """{recipient: Outcome} for one message; the session stays usable afterwards.

        `smtputf8`: the envelope or headers hold UTF-8, so the transaction needs the
        SMTPUTF8 parameter (RFC 6531 §3.4). Raises TransactionBroken when the session
        breaks, after which nothing is known about this message."""
        results = {}
        for rcpt in recipients:
            problem = path_problem(rcpt)
            if problem:
                results[rcpt] = self._outcome(False, True, f"{BAD_ADDRESS} {problem}", BAD_ADDRESS, remote=False)
        candidates = [r for r in recipients if r not in results]
        if not candidates:
            return results
        if smtputf8 and not self.smtp.has_extn("smtputf8"):
            detail = (f"{SMTPUTF8_MISSING} {self.host} does not offer SMTPUTF8, "
                      "which this message's addresses need (RFC 6531 §3.2)")
            outcome = self._outcome(False, True, detail, SMTPUTF8_MISSING, remote=False)
            return dict(results, **{r: outcome for r in candidates})
        options = ["BODY=8BITMIME"] if self.smtp.has_extn("8bitmime") else []
        if self.smtp.has_extn("size"):
            options.append(f"SIZE={len(message)}")
        if smtputf8:
            options.append("SMTPUTF8")
        self.smtp.command_encoding = "utf-8" if smtputf8 else "ascii"
        try:
            code, msg = self.smtp.docmd("MAIL", f"FROM:<{sender}>" + "".join(" " + o for o in options))
            if code != 250:
                self._rset()
                outcome = self._outcome(False, code >= 500, reply_text(code, msg))
                return dict(results, **{r: outcome for r in candidates})
            accepted = []
            for rcpt in candidates:
                code, msg = self.smtp.docmd("RCPT", f"TO:<{rcpt}>")
                if code in (250, 251):
                    accepted.append(rcpt)
                else:
                    results[rcpt] = self._outcome(False, code >= 500, reply_text(code, msg))
            if not accepted:
                self._rset()
                return results
            try:
                code, msg = self.smtp.data(message)
            except smtplib.SMTPDataError as exc:
                code, msg = exc.smtp_code, exc.smtp_error
        except _BROKEN as exc:
            self.close()
            raise TransactionBroken(f"{self.where}: {describe(exc)}") from None
        finally:
            self.smtp.command_encoding = "ascii"
        outcome = self._outcome(code == 250, code >= 500, reply_text(code, msg))
        for rcpt in accepted:
            results[rcpt] = outcome
        return results

    def _outcome(self, ok, permanent, detail, status="", remote=True) -> Outcome:
        return Outcome(ok, permanent, detail, status, self.host if remote else "", self.describe_tls())

    def _rset(self):
        try:
            self.smtp.rset()
        except _BROKEN:
            pass

    def close(self, quit: bool = True):
        try:
            if quit and self.smtp.sock:
                self.smtp.quit()
        except _BROKEN:
            pass
        try:
            self.smtp.close()
        except OSError:
            pass
