"""The blocklist: email addresses, `*@domain` wildcards and IP addresses, in blocklist.json.

Every change is an atomic rewrite under flock, so the CLI and the server never lose each
other's writes; the server re-reads the file whenever its inode or mtime changes.
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
    def __init__(self, home: str):
        self.path = os.path.join(home, "blocklist.json")
        self.lock_path = os.path.join(home, ".blocklist.lock")
        self._mu = threading.Lock()
        self._stamp = None
        self._entries = {}
        if not os.path.exists(self.path):
            with safeio.flocked(self.lock_path):
                if not os.path.exists(self.path):
                    safeio.write_json_atomic(self.path, {"entries": []})

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
            return (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return None

    def _read_file(self) -> dict:
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        return {e["value"]: e for e in data.get("entries", [])}

    def _fresh(self) -> dict:
        stamp = self._file_stamp()
        with self._mu:
            if stamp != self._stamp:
                self._entries, self._stamp = self._read_file(), stamp
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
