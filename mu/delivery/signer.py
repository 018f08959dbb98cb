"""DKIM signing of outbound mail, on whenever MU_HOME/keys/dkim.key exists."""

import os

from .. import dkimkeys
from ..auth import dkim as dkim_auth
from ..log import log


class Signer:
    def __init__(self, config):
        self.config = config
        self.key_path = config.dkim_key_path
        self.domain = config.domain
        self.selector = config.dkim_selector
        self._key = None
        self._stamp = None
        self._why_off = ""

    def _load(self):
        try:
            st = os.stat(self.key_path)
        except OSError:
            self._key, self._stamp = None, None
            self._why_off = dkimkeys.read_private_key(self.key_path)[1]   # missing, or a folder we cannot enter
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)   # ctime: chmod and chown too
        if stamp != self._stamp:
            self._key, self._why_off = dkimkeys.read_private_key(self.key_path)
            self._stamp = stamp
        return self._key

    @property
    def enabled(self) -> bool:
        return self._load() is not None

    def status_text(self) -> str:
        if self.enabled:
            return f"DKIM signing enabled for domain {self.domain} with selector {self.selector}"
        return f"DKIM signing disabled: {self._why_off}"

    def log_status(self) -> None:
        if self.enabled:
            log("dkim", self.status_text())
        else:
            log("mail", self.status_text())

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature on top, or unchanged when signing is off.

        Raises SigningError when signing is on and fails: the queue defers the message
        rather than send it unsigned, which DMARC would hold against the domain."""
        key = self._load()
        if key is None:
            return message
        try:
            return dkim_auth.sign(message, self.selector, self.domain, key) + message
        except Exception as exc:
            raise SigningError(f"DKIM signing failed: {exc.__class__.__name__}: {exc}") from None


class SigningError(Exception):
    """The DKIM key is there but signing with it failed."""
