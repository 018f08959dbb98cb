"""An IMAP server on loopback for the tests: mu's real listener, sessions and accounts.

The mailbox store under it is the App's own (`app.mailstore`) on a temporary MU_HOME.
Messages "arrive" through `deliver`, which is what SMTP delivery does to a store.

    site = IMAPSite(tmp_path)
    alice = site.add_user("alice")
    imap = site.login(alice)            # an imaplib.IMAP4, logged in
"""

import imaplib
import os
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

from inproc import InProcess  # noqa: E402

PASSWORD = "password1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IMAPSite:
    def __init__(self, tmp_path, **env):
        from mu.imap import server as imap_server
        settings = {"IMAP_PORT": f"127.0.0.1:{free_port()}", "IMAPS_PORT": "off"}
        settings.update(env)
        self.inproc = InProcess(tmp_path, **settings)
        self.config = self.inproc.config
        self.app = self.inproc.app
        self.store = self.app.mailstore
        self.servers = imap_server.start(self.config, self.app.accounts, self.store)
        self.server = self.servers[0] if self.config.imap_port else None
        self.context = self.servers[0].context if self.servers else None
        self._names = 0

    @property
    def port(self) -> int:
        return self.server.port

    def add_user(self, name: str = None, password: str = PASSWORD) -> str:
        if name is None:
            self._names += 1
            name = f"user{self._names}x{os.getpid() % 1000}"
        self.inproc.add_user(name, password)
        return name

    def deliver(self, user: str, raw: bytes, mailbox: str = "INBOX", flags=()) -> int:
        """Put a message in a mailbox as SMTP delivery (or the web) would; its UID."""
        return self.store.append(user, mailbox, raw, flags)[1]

    def connect(self) -> imaplib.IMAP4:
        return imaplib.IMAP4("127.0.0.1", self.port, timeout=15)

    def login(self, user: str, password: str = PASSWORD) -> imaplib.IMAP4:
        imap = self.connect()
        imap.login(user, password)
        return imap

    def raw_connection(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()


def message(subject: str = "hello", body: str = "hi there", sender: str = "someone@example.org",
            to: str = "user@mu.test", extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 6 May 2024 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject + body))}@example.org>\r\n"
            f"{extra}\r\n{body}\r\n").encode()
