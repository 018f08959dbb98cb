"""The blocklist matches the mailbox, not its spelling; blocked senders are logged with a
line the peer cannot forge."""

import json
import os
import smtplib

import pytest

from conftest import unique, wait_for
from receiving import Receiver

from mu.smtp import replies as R
from mu.smtp.policy import _for_log


@pytest.fixture
def site(tmp_path, dns):
    receiver = Receiver(tmp_path, dns)
    receiver.add_user("alice")
    return receiver


def mail_reply(site, sender, smtputf8=False, log=None):
    return site.dialog(["EHLO client.test", f"MAIL FROM:<{sender}>" + (" SMTPUTF8" if smtputf8 else "")], log=log)[-1]


def test_quoted_local_part_is_the_same_mailbox(site):
    site.app.blocklist.add("spammer@bad.test")
    assert mail_reply(site, '"spammer"@bad.test') is R.BLOCKED
    assert mail_reply(site, '"sp\\ammer"@bad.test') is R.BLOCKED


def test_subaddress_is_the_same_mailbox(site):
    site.app.blocklist.add("spammer@bad.test")
    assert mail_reply(site, "spammer+x@bad.test") is R.BLOCKED
    assert mail_reply(site, '"spammer+x"@bad.test') is R.BLOCKED
    assert mail_reply(site, "spammerx@bad.test") is R.SENDER_OK


def test_case_is_folded_in_local_part_and_domain(site):
    site.app.blocklist.add("Spammer@Bad.Test")
    assert mail_reply(site, "SPAMMER@BAD.TEST") is R.BLOCKED
    assert mail_reply(site, "spammer@bad.test") is R.BLOCKED


def test_idn_domains_match_in_a_label_form(site):
    site.app.blocklist.add("*@bücher.test")
    assert mail_reply(site, "anyone@xn--bcher-kva.test") is R.BLOCKED
    assert mail_reply(site, "anyone@BÜCHER.test", smtputf8=True) is R.BLOCKED
    site.app.blocklist.add("jörg@faß.test")
    assert mail_reply(site, "Jörg@xn--fa-hia.test", smtputf8=True) is R.BLOCKED
    assert mail_reply(site, "jörg@fass.test", smtputf8=True) is R.SENDER_OK   # IDNA2008: ß is not ss


def test_entries_are_stored_as_the_mailbox_they_block(site):
    kind, canonical = site.app.blocklist.add('"Spammer+promo"@Bad.Test')
    assert (kind, canonical) == ("email", "spammer@bad.test")
    site.app.blocklist.remove("spammer@bad.test")
    assert site.app.blocklist.entries() == []


def test_entries_written_in_an_older_spelling_still_match(site):
    with open(os.path.join(site.config.home, "blocklist.json"), "w") as f:
        json.dump({"entries": [{"value": '"spammer"@bad.test', "kind": "email", "added_at": 0},
                               {"value": "other+tag@bad.test", "kind": "email", "added_at": 0}]}, f)
    assert mail_reply(site, "spammer@bad.test") is R.BLOCKED
    assert mail_reply(site, "other@bad.test") is R.BLOCKED


def test_blocked_sender_log_line_is_the_contract_line(site):
    site.app.blocklist.add("spammer@bad.test")
    log = []
    assert mail_reply(site, '"spammer"@bad.test', log=log) is R.BLOCKED
    # (after the timestamp the log puts first when stderr is not the journal)
    assert [line.split(" ", 1)[-1] if line[:1].isdigit() else line for line in log] == \
        ['smtp: Rejected blocked sender: "spammer"@bad.test (IP: 127.0.0.1)\n']


def test_log_text_from_the_peer_cannot_end_the_line():
    for text in ["a\r\nsmtp: forged", "a\nb", "a\x85b", "a\u2028b", "a\x1b[31mred", "a\x00b", "\ud800"]:
        safe = _for_log(text)
        assert len(safe.splitlines()) == 1 and safe.isprintable(), (text, safe)
    assert _for_log("a\r\nb") == "a\\x0d\\x0ab"


def test_quoted_sender_of_a_blocked_mailbox_refused_by_the_live_server(mu):
    sender = unique("spam")
    mu.cli("blocklist", "add", f"{sender}@bad.test")
    for spelling in [f'"{sender}"@bad.test', f"{sender}+x@bad.test", f"{sender.upper()}@BAD.TEST"]:
        with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
            s.ehlo("client.test")
            code, text = s.mail(spelling)
        assert code == 554 and b"Transaction failed: sender blocked" in text, spelling
    line = f"smtp: Rejected blocked sender: \"{sender}\"@bad.test (IP: 127.0.0.1)"
    wait_for(lambda: line in mu.log(), message="the log line")   # stderr is read by another thread
