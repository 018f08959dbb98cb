"""The IMAP listener inside `mu.py --serve`: start-up lines, and mail received over SMTP read
over IMAP. Runs once the App has its mailbox store (`app.mailstore`, mu/mailstore.py); the
IMAP protocol itself is tested against the same listener in test_imap.py meanwhile."""

import imaplib
import smtplib
import typing

import pytest

from conftest import free_port
from mu import mailstore

REAL_STORE = not getattr(mailstore.MailStore, "_is_protocol", False) and typing.Protocol not in getattr(
    mailstore.MailStore, "__bases__", ())
needs_store = pytest.mark.skipif(not REAL_STORE, reason="needs the mailbox store (app.mailstore)")


@needs_store
def test_serve_starts_imap_and_serves_mail_received_over_smtp(make_mu):
    port = free_port()
    mu = make_mu(IMAP_PORT=str(port), IMAPS_PORT="off")
    assert f"imap: Starting IMAP server on :{port}" in mu.log()
    name = mu.add_user(password="password1")
    with smtplib.SMTP("127.0.0.1", mu.smtp_port, timeout=15) as smtp:
        smtp.sendmail("someone@example.org", [f"{name}@{mu.domain}"],
                      b"From: someone@example.org\r\nSubject: over smtp\r\n\r\nhello imap\r\n")
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=15)
    imap.login(name, "password1")
    imap.select("INBOX")
    typ, data = imap.fetch("1", "(BODY[])")
    assert typ == "OK" and b"Subject: over smtp" in data[0][1]
    typ, data = imap.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]
    imap.logout()
    listed = mu.inbox(mu.token(name))["messages"]
    assert listed and listed[0]["read"] is True


@needs_store
def test_imap_port_off_is_not_opened(make_mu):
    mu = make_mu(IMAP_PORT="off", IMAPS_PORT="off")
    assert "imap: Starting" not in mu.log()
