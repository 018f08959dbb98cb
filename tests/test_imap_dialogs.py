"""IMAP edge cases as scripted dialogs (tests/imap_dialogs/*.dialog, format in its README),
each run against a fresh live server on loopback."""

import os
import re
import socket

import pytest

from imap_site import IMAPSite, message

DIALOGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imap_dialogs")
NAMES = sorted(n[:-len(".dialog")] for n in os.listdir(DIALOGS) if n.endswith(".dialog"))


def _expand(text: str) -> bytes:
    text = re.sub(r"\{repeat:(\d+):(.*?)\}", lambda m: m.group(2) * int(m.group(1)), text)
    return text.replace("\\0", "\0").replace("\\r", "\r").replace("\\n", "\n").encode("utf-8")


def _pattern(text: str):
    return re.compile(".*".join(re.escape(part) for part in text.split("*")) + r"\Z", re.S)


class Lines:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def next(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")


@pytest.mark.parametrize("name", NAMES)
def test_dialog(name, tmp_path):
    site = IMAPSite(tmp_path)
    try:
        site.add_user("alice")
        site.deliver("alice", message("first"))
        site.deliver("alice", message("second"))
        sock = socket.create_connection(("127.0.0.1", site.port), timeout=10)
        lines = Lines(sock)
        queued = b""
        seen = []
        for number, raw in enumerate(open(os.path.join(DIALOGS, name + ".dialog"), encoding="utf-8"), 1):
            raw = raw.rstrip("\n")
            where = f"{name}.dialog:{number}"
            if not raw or raw.startswith("#"):
                continue
            if raw.startswith("C+"):
                queued += _expand(raw[3:]) + b"\r\n"
            elif raw.startswith("C:"):
                sock.sendall(queued + _expand(raw[3:]) + b"\r\n")
                queued = b""
            elif raw.startswith("S:") or raw.startswith("S?"):
                want = _pattern(raw[3:])
                while True:
                    line = lines.next()
                    assert line is not None, f"{where}: connection closed, wanted {raw[3:]!r}; got {seen[-5:]}"
                    seen.append(line)
                    if want.match(line):
                        break
                    assert raw.startswith("S?"), f"{where}: got {line[:300]!r}, wanted {raw[3:]!r}"
            elif raw == "CLOSED":
                rest = b""
                try:
                    while True:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        rest += chunk
                except ConnectionResetError:
                    pass
                assert not (lines.buf + rest).strip(), f"{where}: more after the end: {(lines.buf + rest)[:200]!r}"
            else:
                raise AssertionError(f"{where}: cannot read {raw!r}")
        sock.close()
    finally:
        site.close()
