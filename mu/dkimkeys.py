"""DKIM key files: reading the private key (or saying why it cannot be used), making a key
pair, and the DNS TXT record that publishes the public half."""

import os
import subprocess
import tempfile

from . import safeio

# RFC 1035 §3.3.14: a TXT record is a sequence of character-strings of at most 255 octets
# each; a verifier joins them (RFC 6376 §3.6.2.2), so a long key is split, not truncated.
TXT_STRING_MAX_CHARS = 255
RSA_KEY_BITS = 2048   # RFC 8301 §3.2: at least 1024, 2048 recommended


class DKIMKeyError(Exception):
    """A key pair cannot be made; the text says why."""


def read_private_key(path: str) -> tuple:
    """(PEM bytes, "") for a usable RSA private key at `path`, else (None, why not)."""
    try:
        with open(path, "rb") as f:
            data = f.read(1024 * 1024)
    except FileNotFoundError:
        return None, f"DKIM private key not found at {path}"
    except OSError as exc:
        return None, f"cannot read DKIM private key at {path}: {exc.strerror or exc}"
    if b"PRIVATE KEY-----" not in data:
        return None, f"{path} is not a PEM private key"
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key
    try:
        parse_pem_private_key(data)
    except (UnparsableKeyError, ValueError, IndexError, TypeError) as exc:
        return None, f"{path} holds a corrupt or non-RSA private key ({exc or exc.__class__.__name__})"
    return data, ""


def public_key_text(pub_path: str):
    """The base64 body of a PEM public key (the p= value), or None if unreadable."""
    try:
        with open(pub_path) as f:
            return "".join(line.strip() for line in f if "-----" not in line) or None
    except (OSError, UnicodeDecodeError):
        return None


def txt_strings(value: str) -> str:
    """`value` as quoted character-strings of at most 255 characters each."""
    pieces = [value[i:i + TXT_STRING_MAX_CHARS] for i in range(0, len(value), TXT_STRING_MAX_CHARS)] or [""]
    return " ".join(f'"{p}"' for p in pieces)


def txt_record(selector: str, domain: str, public_key: str) -> str:
    """The zone-file line publishing `public_key` (RFC 6376 §3.6.1 tags)."""
    return f"{selector}._domainkey.{domain}. IN TXT {txt_strings(f'v=DKIM1; k=rsa; p={public_key}')}"


def generate(keys_dir: str) -> tuple:
    """Write keys_dir/dkim.key (0600) and dkim.pub; return their paths. Refuses to replace
    an existing key: the published record would stop matching."""
    key_path, pub_path = os.path.join(keys_dir, "dkim.key"), os.path.join(keys_dir, "dkim.pub")
    if os.path.exists(key_path):
        raise DKIMKeyError(f"{key_path} already exists; move it away first to make a new key")
    safeio.ensure_dir(keys_dir)
    with tempfile.TemporaryDirectory(dir=keys_dir, prefix=".keygen-") as work:
        tmp_key, tmp_pub = os.path.join(work, "key"), os.path.join(work, "pub")
        try:
            subprocess.run(["openssl", "genrsa", "-out", tmp_key, str(RSA_KEY_BITS)],
                           check=True, capture_output=True, timeout=120)
            subprocess.run(["openssl", "rsa", "-in", tmp_key, "-pubout", "-out", tmp_pub],
                           check=True, capture_output=True, timeout=60)
        except FileNotFoundError:
            raise DKIMKeyError("openssl is required to make a DKIM key (apt-get install openssl)") from None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = (getattr(exc, "stderr", b"") or b"").decode("utf-8", "replace").strip()
            raise DKIMKeyError(f"openssl failed: {detail or exc}") from None
        with open(tmp_key, "rb") as f:
            key = f.read()
        with open(tmp_pub, "rb") as f:
            pub = f.read()
    safeio.write_atomic(pub_path, pub)
    safeio.write_atomic(key_path, key)   # last: the key's presence means the pair is whole
    return key_path, pub_path
