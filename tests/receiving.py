"""In-process receiving: the real ReceivePolicy and Session on a temporary MU_HOME, the fake
DNS on loopback as the resolver's server, no sockets between client and server.

    site = Receiver(tmp_path, dns)
    site.add_user("alice")
    replies = site.dialog(["EHLO client.test", "MAIL FROM:<a@b.test>", "RCPT TO:<alice@mu.test>"],
                          data=b"Subject: x\\r\\n\\r\\nbody\\r\\n")
"""

import io
import sys

from inproc import InProcess

from mu.smtp.policy import ReceivePolicy
from mu.smtp.session import Session


class Receiver(InProcess):
    def __init__(self, tmp_path, dns, dmarc_sample=None, **env):
        env.setdefault("MAIL_DNS_SERVER", f"127.0.0.1:{dns.port}")
        env.setdefault("MAIL_DNS_TIMEOUT", "1")
        super().__init__(tmp_path, **env)
        self.events = []
        self.policy = ReceivePolicy(self.config, self.app.mailbox, self.app.blocklist,
                                    self.app.connection_limiter, self.app.message_limiter,
                                    self.app.resolver, events=lambda kind, fields: self.events.append((kind, fields)),
                                    dmarc_sample=dmarc_sample)

    def dialog(self, commands, data: bytes = None, peer_ip: str = "127.0.0.1", log=None) -> list:
        """Replies to each command (str or bytes), then to `data` if the session reached DATA.
        With `log` (a list), what the server logged to stderr meanwhile is appended to it."""
        session = Session(self.policy, self.config, peer_ip)
        stderr, captured = sys.stderr, io.StringIO()
        if log is not None:
            sys.stderr = captured
        try:
            replies = [session.greeting()]
            for line in commands:
                if session.closing:
                    break
                replies.append(session.command(line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line))
            if data is not None and session.in_data:
                replies.append(session.data_received(data, None))
        finally:
            sys.stderr = stderr
            if log is not None:
                log.extend(captured.getvalue().splitlines(keepends=True))
        return replies

    def send(self, sender: str, rcpt: str, data: bytes, helo: str = "client.test", smtputf8: bool = False,
             peer_ip: str = "127.0.0.1", log=None):
        """The final reply to one message sent as a client would."""
        mail = f"MAIL FROM:<{sender}>" + (" SMTPUTF8" if smtputf8 else "")
        replies = self.dialog([f"EHLO {helo}", mail, f"RCPT TO:<{rcpt}>", "DATA"], data, peer_ip=peer_ip, log=log)
        return replies[-1]

    def inbox(self, user: str, folder: str = "INBOX") -> list:
        """Stored messages in one of `user`'s mailboxes, newest first, each with its raw text."""
        with self.app.store.reading() as state:
            numbers = list(reversed(state.mailbox(user, folder).msgs))
        messages = []
        for n in numbers:
            msg = dict(self.app.store.meta_record(n))
            msg["raw"] = self.app.mailstore.raw_of(n).decode("utf-8", "replace")
            messages.append(msg)
        return messages
