"""The server's TLS certificate: loaded at start-up with errors that name the setting, the
file and the cause, and reloaded for new connections on SIGHUP or when either file changes.

Listeners hold one `ReloadingContext` and call its `wrap_socket` for every handshake; a
connection keeps the certificate it started with. A reload that fails (a half-copied
renewal, a key that does not match) keeps the certificate in use and says why, once.
"""

import os
import ssl
import threading
import time

from .log import log

CERT_VAR, KEY_VAR = "MAIL_TLS_CERT", "MAIL_TLS_KEY"
# How often a handshake may look at the files' inodes and mtimes: a renewal is noticed
# within a second, and a flood of handshakes costs one stat pair per second.
CHANGE_CHECK_SECONDS = 1.0


class TLSSetupError(Exception):
    """A certificate or key that cannot be used; str() is one line naming the setting."""


def _read(var: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4 * 1024 * 1024)
    except FileNotFoundError:
        raise TLSSetupError(f"{var}: {path}: no such file") from None
    except IsADirectoryError:
        raise TLSSetupError(f"{var}: {path} is a folder, not a PEM file") from None
    except OSError as exc:
        raise TLSSetupError(f"{var}: cannot read {path}: {exc.strerror or exc} "
                            f"(the key must be readable by the user mu runs as)") from None


def _refuse_passphrase():
    raise TLSSetupError(f"{KEY_VAR}: the key is encrypted with a passphrase; mu needs it unencrypted "
                        f"(openssl pkey -in KEY -out KEY.plain)")


def load_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """A server-side context for the pair, or TLSSetupError saying what is wrong with it."""
    cert, key = _read(CERT_VAR, cert_path), _read(KEY_VAR, key_path)
    has_cert = lambda data: b"-----BEGIN CERTIFICATE-----" in data   # noqa: E731
    has_key = lambda data: b"PRIVATE KEY-----" in data   # noqa: E731
    if not has_cert(cert) and has_key(cert) and has_cert(key):
        raise TLSSetupError(f"{CERT_VAR}: {cert_path} holds a private key and {KEY_VAR} a certificate: "
                            f"the two settings are swapped")
    if not has_cert(cert):
        what = "a private key" if has_key(cert) else "no PEM certificate"
        raise TLSSetupError(f"{CERT_VAR}: {cert_path} holds {what}; expected the certificate chain "
                            f"(certbot's fullchain.pem)")
    if not has_key(key):
        what = "a certificate" if has_cert(key) else "no PEM private key"
        raise TLSSetupError(f"{KEY_VAR}: {key_path} holds {what}; expected the private key (certbot's privkey.pem)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert_path, key_path, password=_refuse_passphrase)
    except ssl.SSLError as exc:
        text = f"{exc.reason or ''} {exc}"
        if "KEY_VALUES_MISMATCH" in text:
            raise TLSSetupError(f"{KEY_VAR}: {key_path} is not the key of the certificate in {cert_path}") from None
        raise TLSSetupError(f"{CERT_VAR}: cannot use {cert_path} with {key_path}: {exc.reason or exc}") from None
    except OSError as exc:   # replaced between our read and OpenSSL's
        raise TLSSetupError(f"{CERT_VAR}: cannot read {cert_path} or {key_path}: {exc.strerror or exc}") from None
    return ctx


def describe(cert_path: str) -> str:
    """`serial 1A2B, expires Mar  1 12:00:00 2027 GMT` for log lines (best effort)."""
    try:
        info = ssl._ssl._test_decode_cert(cert_path)
        return f"serial {info.get('serialNumber', '?')}, expires {info.get('notAfter', '?')}"
    except Exception:   # a private helper of the ssl module: never let it cost a reload
        return "certificate loaded"


class ReloadingContext:
    """An ssl.SSLContext that follows its files: SIGHUP (`reload`) or a change on disk
    makes the next handshake use the new pair."""

    def __init__(self, cert_path: str, key_path: str):
        self.cert_path, self.key_path = cert_path, key_path
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._context = load_context(cert_path, key_path)
        self._failed_stamp = None
        self._checked_at = time.monotonic()

    @classmethod
    def for_config(cls, config):
        """The context MAIL_TLS_CERT/MAIL_TLS_KEY ask for, or None when TLS is off."""
        return cls(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None

    def _files_stamp(self):
        stamp = []
        for path in (self.cert_path, self.key_path):
            try:
                st = os.stat(path)
                stamp.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    @property
    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked_at >= CHANGE_CHECK_SECONDS:
            self._checked_at = now
            stamp = self._files_stamp()
            if stamp != self._stamp and stamp != self._failed_stamp:
                self.reload("files changed")
        return self._context

    def wrap_socket(self, sock, server_side: bool = True, **kwargs):
        return self.context.wrap_socket(sock, server_side=server_side, **kwargs)

    def reload(self, why: str = "SIGHUP") -> bool:
        """Load the files again; on failure keep the pair in use. True if reloaded."""
        with self._lock:
            stamp = self._files_stamp()
            try:
                context = load_context(self.cert_path, self.key_path)
            except TLSSetupError as exc:
                if why == "SIGHUP" or stamp != self._failed_stamp:
                    log("tls", f"certificate not reloaded ({why}), still using the old one: {exc}")
                self._failed_stamp = stamp
                return False
            self._context, self._stamp, self._failed_stamp = context, stamp, None
        log("tls", f"reloaded {self.cert_path} ({why}): {describe(self.cert_path)}")
        return True
