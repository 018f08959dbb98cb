"""The blocklist: email addresses, `*@domain` wildcards and IP addresses, in blocklist.json.

Every change is an atomic rewrite under flock, so the CLI and the server never lose each
other's writes; the server re-reads the file whenever its inode or mtime changes. The file
is created by the first change (no file is an empty list).

A file that cannot be read or is not a blocklist (hand-edited, truncated) never stops the
server: it logs one line naming the file, keeps the last good list (an empty one if it
started that way) and goes on answering SMTP. A change, or the CLI (`strict`), refuses
with BlocklistFileError instead, so a broken file is never overwritten.
"""

import functools
import ipaddress
import json
import os
import threading
import time

from . import addr, safeio
from .log import log


class BlocklistError(ValueError):
    pass


class BlocklistFileError(BlocklistError):
    """blocklist.json cannot be read, or is not a blocklist; str() names the file."""


def classify(value: str) -> tuple:
    """(kind, canonical value) with kind 'ip' or 'email'; BlocklistError if neither."""
    value = (value or "").strip()
    try:
        return "ip", str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if value.startswith("*@"):
        try:
            return "email", "*@" + addr.idna_domain(value[2:])
        except addr.AddressError:
            raise BlocklistError(f"invalid domain wildcard: {value!r}") from None
    try:
        local, domain = addr.parse(value)
    except addr.AddressError:
        raise BlocklistError(f"not an email address, *@domain or IP address: {value!r}") from None
    return "email", addr.mailbox_key(f"{local}@{domain}")


@functools.lru_cache(maxsize=4096)
def _canonical_ip(text: str):
    """An IP address as the blocklist stores it, or None. Cached: every connection and
    every MAIL asks, mostly for the same few addresses."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class Blocklist:
    def __init__(self, home: str, strict: bool = False):
        self.path = os.path.join(home, "blocklist.json")
        self.lock_path = os.path.join(home, ".blocklist.lock")
        self.strict = strict
        self._mu = threading.Lock()
        self._stamp = None
        self._entries = {}
        self._loaded = False   # whether a good list has been read
        if not strict:
            self._fresh()   # at start-up, so a broken file is reported at once

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
            return (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return None

    def _read_file(self) -> dict:
        """{value: entry}; BlocklistFileError when the file is unreadable or malformed."""
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise BlocklistFileError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise BlocklistFileError(f"{self.path} is not UTF-8 text") from None
        except ValueError as exc:
            raise BlocklistFileError(f"{self.path} is not valid JSON: {exc}") from None
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("value"), str) and e.get("kind") in ("email", "ip")
                for e in entries):
            raise BlocklistFileError(f'{self.path} is not a blocklist: expected '
                                     '{"entries": [{"value": ..., "kind": "email" or "ip"}, ...]}')
        return {e["value"]: e for e in entries}

    def _fresh(self) -> dict:
        stamp = self._file_stamp()
        with self._mu:
            if stamp != self._stamp:
                try:
                    self._entries, self._loaded = self._read_file(), True
                except BlocklistFileError as exc:
                    if self.strict:
                        raise
                    count = len(self._entries)
                    kept = (f"keeping the last good list ({count} {'entry' if count == 1 else 'entries'})"
                            if self._loaded else "using an empty blocklist until it is fixed")
                    log("mail", f"blocklist ignored: {exc}; {kept}")
                self._stamp = stamp   # a broken file is reported once, and read again when it changes
            return self._entries

    def entries(self) -> list:
        return sorted(self._fresh().values(), key=lambda e: (e["kind"], e["value"]))

    def _change(self, value: str, add: bool) -> tuple:
        kind, canonical = classify(value)
        with safeio.flocked(self.lock_path):
            entries = self._read_file()
            if add:
                entries.setdefault(canonical, {"value": canonical, "kind": kind, "added_at": time.time()})
            elif canonical not in entries:
                raise BlocklistError(f"not blocked: {canonical}")
            else:
                del entries[canonical]
            safeio.write_json_atomic(self.path, {"entries": sorted(entries.values(), key=lambda e: e["value"])})
        label = "IP" if kind == "ip" else "email"
        log("mail", f"{'Blocked' if add else 'Unblocked'} {label}: {canonical}")
        return kind, canonical

    def add(self, value: str) -> tuple:
        return self._change(value, True)

    def remove(self, value: str) -> tuple:
        return self._change(value, False)

    def _match_keys(self) -> frozenset:
        """The entries as blocked() compares them: each email entry by its mailbox key
        (entries written before keys existed included), IPs and `*@domain` as stored."""
        entries = self._fresh()
        cached = getattr(self, "_keys_cache", None)
        if cached is None or cached[0] is not entries:
            keys = set()
            for value, entry in entries.items():
                keys.add(value)
                if entry.get("kind") == "email" and not value.startswith("*@"):
                    try:
                        keys.add(addr.mailbox_key(value))
                    except addr.AddressError:
                        pass
            cached = (entries, frozenset(keys))
            self._keys_cache = cached
        return cached[1]

    def blocked(self, ip: str, sender: str = "") -> bool:
        """Whether the client IP, or the envelope sender's mailbox or its whole domain, is
        blocked. The mailbox, not its spelling: `"spammer"@bad.test`, `spammer+x@bad.test`
        and `SPAMMER@BAD.TEST` are all spammer@bad.test (addr.mailbox_key)."""
        keys = self._match_keys()
        if _canonical_ip(ip) in keys:
            return True
        if not sender:
            return False
        try:
            key = addr.mailbox_key(sender)
        except addr.AddressError:
            # Not a valid address (callers check first): compare what can be compared.
            local, _, domain = sender.rpartition("@")
            key = f"{local.casefold()}@{domain.casefold()}"
        domain = key.rpartition("@")[2]
        return key in keys or f"*@{domain}" in keys
