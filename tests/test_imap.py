"""IMAP with Python's imaplib (and raw sockets where imaplib hides the wire), against mu's
real listener on loopback (tests/imap_site.py)."""

import base64
import imaplib
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import wait_for
from imap_site import PASSWORD, IMAPSite, free_port, message
from mu.imap import responses as R

REQUIRED = ("IMAP4rev1 IMAP4rev2 IDLE UIDPLUS MOVE SPECIAL-USE NAMESPACE ID ENABLE UNSELECT CONDSTORE "
            "LITERAL+").split()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = IMAPSite(tmp_path_factory.mktemp("imap"))
    yield s
    s.close()


@pytest.fixture
def user(site):
    return site.add_user()


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def read_until(sock, pattern: bytes, timeout=10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not re.search(pattern, data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# ---------------------------------------------------------------- greeting and login

def test_greeting_offers_required_capabilities_and_sasl_ir_before_login(site):
    s = site.raw_connection()
    greeting = read_until(s, b"\r\n").decode()
    s.close()
    assert greeting.startswith("* OK [CAPABILITY ")
    caps = greeting.split("[CAPABILITY ")[1].split("]")[0].split()
    for cap in REQUIRED + ["SASL-IR", "AUTH=PLAIN"]:
        assert cap in caps, cap


def test_login_ok_carries_capabilities_without_auth_mechanisms(site, user):
    imap = site.connect()
    typ, data = imap.login(user, PASSWORD)
    assert typ == "OK"
    text = data[0].decode()
    assert text.startswith("[CAPABILITY ")
    caps = text.split("[CAPABILITY ")[1].split("]")[0].split()
    for cap in REQUIRED:
        assert cap in caps
    assert "AUTH=PLAIN" not in caps and "SASL-IR" not in caps
    imap.logout()


def test_login_with_full_address_and_any_case(site, user):
    imap = site.connect()
    ok(imap.login(f"{user.upper()}@MU.TEST", PASSWORD))
    imap.logout()


def test_login_wrong_password_is_authenticationfailed(site, user):
    imap = site.connect()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(user, "wrong")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(f"{user}@other.example", PASSWORD)
    imap.logout()


def test_failed_logins_throttled_per_account(tmp_path):
    site = IMAPSite(tmp_path)
    try:
        name = site.add_user("victim")
        imap = site.connect()
        for _ in range(site.app.accounts.throttle.by_account.limit):   # shared with the web and submission
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                imap.login(name, "guess")
        # even the right password is refused while locked
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            imap.login(name, PASSWORD)
        imap.logout()
    finally:
        site.close()


def test_failed_logins_throttled_per_client_address(tmp_path):
    site = IMAPSite(tmp_path)
    try:
        name = site.add_user("sprayed")
        imap = site.connect()
        for i in range(site.app.accounts.throttle.by_address.limit):
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                imap.login(f"nobody{i}", "guess")
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            imap.login(name, PASSWORD)
        imap.logout()
    finally:
        site.close()


def test_authenticate_plain_with_initial_response_and_with_continuation(site, user):
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode())
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(b"a1 AUTHENTICATE PLAIN " + token + b"\r\n")
    reply = read_until(s, b"a1 [A-Z]+ .*\r\n")
    assert b"a1 OK [CAPABILITY " in reply
    s.close()
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(b"a1 AUTHENTICATE PLAIN\r\n")
    assert read_until(s, b"\r\n").startswith(b"+")
    s.sendall(token + b"\r\n")
    assert b"a1 OK" in read_until(s, b"a1 [A-Z]+ .*\r\n")
    s.close()


def test_plaintext_login_refused_without_tls_from_a_remote_client(site, user):
    """The contract: plain-text auth without TLS only from loopback; LOGINDISABLED then."""
    from mu.imap.session import Session

    class Conn:
        def __init__(self):
            self.out = b""

        def write(self, data):
            self.out += data

        def flush(self):
            pass

        def authenticated(self):
            raise AssertionError("must not log in")

    conn = Conn()
    session = Session(site.context, conn, "192.0.2.10")
    assert b"LOGINDISABLED" in session.greeting() and b"AUTH=PLAIN" not in session.greeting()
    session.handle([f"a1 LOGIN {user} {PASSWORD}".encode()])
    assert b"a1 NO [PRIVACYREQUIRED]" in conn.out
    session.handle([b"a2 AUTHENTICATE PLAIN " + base64.b64encode(f"\0{user}\0{PASSWORD}".encode())])
    assert b"a2 NO [PRIVACYREQUIRED]" in conn.out
    assert session.user is None


# ---------------------------------------------------------------- mailboxes

def test_default_mailboxes_with_special_use(site, user):
    imap = site.login(user)
    listed = {}
    for line in ok(imap.list()):
        attrs, _delim, name = re.match(rb'\((.*?)\) "(.)" (.*)', line).groups()
        listed[name.strip(b'"').decode()] = attrs.decode().split()
    assert set(listed) >= {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    for name, flag in [("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
                       ("Junk", "\\Junk"), ("Archive", "\\Archive")]:
        assert flag in listed[name]
    imap.logout()


def test_create_rename_delete_with_hierarchy(site, user):
    imap = site.login(user)
    ok(imap.create("Projects/2026/Q1"))
    names = {re.search(rb'"/" "?([^"]*)"?$', line).group(1).decode(): line for line in ok(imap.list())}
    assert {"Projects", "Projects/2026", "Projects/2026/Q1"} <= set(names)
    assert b"\\HasChildren" in names["Projects"] and b"\\HasNoChildren" in names["Projects/2026/Q1"]
    ok(imap.rename("Projects", "Work"))
    listed = b" ".join(ok(imap.list('""', "Work/*")))
    assert b"Work/2026/Q1" in listed and b"Projects" not in b" ".join(ok(imap.list()))
    ok(imap.delete("Work/2026/Q1"))
    typ, data = imap.delete("INBOX")
    assert typ == "NO"
    typ, data = imap.create("Sent")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    imap.logout()


def test_status_counts(site, user):
    site.deliver(user, message("one"))
    site.deliver(user, message("two"), flags=["\\Seen"])
    imap = site.login(user)
    data = ok(imap.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY SIZE HIGHESTMODSEQ DELETED)"))[0]
    assert re.search(rb"MESSAGES 2 .*UNSEEN 1 .*UIDNEXT 3 ", data)
    assert b"SIZE " in data and b"DELETED 0" in data
    imap.logout()


def test_utf8_mailbox_names_in_modified_utf7_and_after_enable(site, user):
    imap = site.login(user)
    ok(imap.create('"&AMQ-rger"'))   # "Ärger" in modified UTF-7
    assert any(b"&AMQ-rger" in line for line in ok(imap.list()))
    assert "Ärger" in [m.name for m in site.store.mailboxes(user)]
    imap.logout()
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb ENABLE UTF8=ACCEPT\r\nc LIST \"\" \"*rger\"\r\n".encode())
    data = read_until(s, b"c OK.*\r\n")
    s.close()
    assert b"* ENABLED UTF8=ACCEPT" in data
    assert '"Ärger"'.encode() in data


# ---------------------------------------------------------------- messages

def test_append_then_fetch_envelope_bodystructure_and_sections(site, user):
    raw = (b"From: Alice Example <alice@example.org>\r\nTo: bob@mu.test\r\nSubject: Parts\r\n"
           b"Date: Tue, 7 May 2024 09:30:00 +0200\r\nMessage-ID: <parts@example.org>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=xyz\r\n\r\n--xyz\r\nContent-Type: text/plain\r\n\r\n"
           b"Hello\r\n--xyz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
           b"\r\nAAEC\r\n--xyz--\r\n")
    imap = site.login(user)
    typ, data = imap.append("INBOX", "(\\Flagged)", '"07-May-2024 09:30:00 +0200"', raw)
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", data[0])
    ok(imap.select("INBOX"))
    data = ok(imap.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)"))[0]
    assert b"INTERNALDATE \"07-May-2024 09:30:00 +0200\"" in data
    assert b"RFC822.SIZE %d" % len(raw) in data
    assert b'ENVELOPE ("Tue, 7 May 2024 09:30:00 +0200" "Parts" (("Alice Example" NIL "alice" "example.org"))' in data
    assert b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 5 1' in data and b'"MIXED"' in data
    assert b"\\Flagged" in data
    parts = ok(imap.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2.MIME] BINARY.PEEK[2] BINARY.SIZE[2] BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    flat = b"".join(p if isinstance(p, bytes) else p[0] + p[1] for p in parts)
    assert b"Hello" in flat and b"Content-Transfer-Encoding: base64" in flat
    assert b"\x00\x01\x02" in flat and b"BINARY.SIZE[2] 3" in flat
    assert b"Subject: Parts\r\n\r\n" in flat
    assert ok(imap.fetch("1", "(BODY.PEEK[]<0.4>)"))[0][1] == b"From"
    imap.logout()


def test_fetch_body_sets_seen_and_peek_does_not(site, user):
    site.deliver(user, message("peek"))
    imap = site.login(user)
    ok(imap.select("INBOX"))
    ok(imap.fetch("1", "(BODY.PEEK[])"))
    assert b"\\Seen" not in ok(imap.fetch("1", "(FLAGS)"))[0]
    data = ok(imap.fetch("1", "(BODY[TEXT])"))
    assert b"\\Seen" in b"".join(p[0] if isinstance(p, tuple) else p for p in data)
    imap.logout()


def test_flags_and_keywords_persist_and_are_shared_between_sessions(site, user):
    site.deliver(user, message("flags"))
    one, two = site.login(user), site.login(user)
    ok(one.select("INBOX"))
    ok(two.select("INBOX"))
    data = ok(one.store("1", "+FLAGS", "(\\Answered $Important)"))[0]
    assert b"\\Answered" in data and b"$Important" in data
    data = b" ".join(d for d in ok(two.noop()) if d)
    got = b" ".join(two.untagged_responses.get("FETCH", []))
    assert b"$Important" in got or b"$Important" in data
    assert b"$Important" in ok(two.fetch("1", "(FLAGS)"))[0]
    one.logout()
    two.logout()
    three = site.login(user)
    ok(three.select("INBOX"))
    assert b"$Important" in ok(three.fetch("1", "(FLAGS)"))[0]
    three.logout()


def test_search_common_keys(site, user):
    site.deliver(user, message("Quarterly report", "numbers inside", sender="boss@corp.example"))
    site.deliver(user, message("lunch?", "pizza at noon", sender="friend@example.org"), flags=["\\Seen"])
    site.deliver(user, message("big one", "x" * 5000, sender="friend@example.org"), flags=["\\Flagged"])
    imap = site.login(user)
    ok(imap.select("INBOX"))

    def search(*criteria):
        return ok(imap.search(None, *criteria))[0].split()

    assert search("ALL") == [b"1", b"2", b"3"]
    assert search("UNSEEN") == [b"1", b"3"]
    assert search("FLAGGED") == [b"3"]
    assert search("FROM", "friend") == [b"2", b"3"]
    assert search("SUBJECT", "quarterly") == [b"1"]
    assert search("BODY", "pizza") == [b"2"]
    assert search("TEXT", "boss@corp") == [b"1"]
    assert search("LARGER", "3000") == [b"3"]
    assert search("OR", "SEEN", "FLAGGED") == [b"2", b"3"]
    assert search("NOT", "FROM", "friend") == [b"1"]
    assert search("(FROM friend UNSEEN)") == [b"3"]
    assert search("SENTON", "6-May-2024") == [b"1", b"2", b"3"]
    assert search("SINCE", "1-Jan-2000", "2:3") == [b"2", b"3"]
    assert search("HEADER", "Message-ID", "example.org") == [b"1", b"2", b"3"]
    assert ok(imap.uid("SEARCH", "UID", "2:*"))[0].split() == [b"2", b"3"]
    imap.logout()


def test_copy_move_and_uid_expunge_report_uids(site, user):
    for i in range(3):
        site.deliver(user, message(f"m{i}"))
    imap = site.login(user)
    ok(imap.select("INBOX"))
    typ, data = imap.copy("1:2", "Archive")
    assert typ == "OK" and re.search(rb"\[COPYUID \d+ 1:2 1:2\]", data[0])
    typ, data = imap.uid("MOVE", "3", "Trash")
    assert typ == "OK"
    assert re.search(rb"COPYUID \d+ 3 1", b" ".join(imap.untagged_responses.pop("OK", [])))
    assert imap.untagged_responses.pop("EXPUNGE", None) == [b"3"]
    ok(imap.uid("STORE", "1:2", "+FLAGS.SILENT", "(\\Deleted)"))
    ok(imap.uid("EXPUNGE", "2"))
    assert imap.untagged_responses.pop("EXPUNGE", None) == [b"2"]
    assert ok(imap.uid("SEARCH", "ALL"))[0].split() == [b"1"]
    assert [m.total for m in site.store.mailboxes(user) if m.name in ("Archive", "Trash")] == [2, 1]
    imap.logout()


def test_condstore_unchangedsince_refuses_a_stale_store(site, user):
    site.deliver(user, message("cond"))
    imap = site.login(user)
    ok(imap.enable("CONDSTORE"))
    ok(imap.select("INBOX"))
    modseq = int(re.search(rb"MODSEQ \((\d+)\)", ok(imap.fetch("1", "(MODSEQ)"))[0]).group(1))
    ok(imap.store("1", "+FLAGS", "(\\Seen)"))
    typ, data = imap._simple_command("STORE", "1", f"(UNCHANGEDSINCE {modseq})", "+FLAGS", "(\\Flagged)")
    assert typ == "OK" and data[0].startswith(b"[MODIFIED 1]")
    assert b"\\Flagged" not in ok(imap.fetch("1", "(FLAGS)"))[0]
    imap.logout()


def test_a_text_search_behind_the_index_says_how_far_it_is_and_finds_everything(site, user, monkeypatch):
    from mu import search
    for i in range(6):
        site.deliver(user, message(f"progress {i}", f"needle{i} in the text"))
    # A backlog the search must work through: one message a batch, a report after each.
    monkeypatch.setattr(search, "INDEX_BATCH", 1)
    monkeypatch.setattr(search, "PROGRESS_SECONDS", 0)
    imap = site.login(user)
    ok(imap.select("INBOX"))
    imap.untagged_responses.pop("INPROGRESS", None)
    assert ok(imap.search(None, "BODY", "needle4"))[0].split() == [b"5"]
    reports = [r.decode() for r in imap.untagged_responses.pop("INPROGRESS", [])]
    assert reports, "no INPROGRESS report"
    counts = [tuple(map(int, re.search(r'\((?:"[^"]*"|NIL) (\d+) (\d+)\)', r).groups())) for r in reports]
    assert all(0 < done < goal for done, goal in counts) and counts == sorted(counts)
    assert ok(imap.search(None, "TEXT", "needle2"))[0].split() == [b"3"]


def test_enable_imap4rev2_makes_search_answer_esearch_and_drops_recent(site, user):
    site.deliver(user, message("rev2"))
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb ENABLE IMAP4rev2\r\nc SELECT INBOX\r\nd SEARCH ALL\r\n".encode())
    data = read_until(s, b"d OK.*\r\n")
    s.close()
    assert b"* ENABLED IMAP4rev2" in data
    assert b"RECENT" not in data.split(b"c OK")[0].split(b"b OK")[1]
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in data.split(b"c OK")[0]
    assert b'* ESEARCH (TAG "d") ALL 1' in data


def test_sequence_number_beyond_the_mailbox_is_bad(site, user):
    site.deliver(user, message("only one"))
    imap = site.login(user)
    ok(imap.select("INBOX"))
    with pytest.raises(imaplib.IMAP4.error, match="Invalid message sequence"):
        imap.fetch("2", "(FLAGS)")
    imap.logout()


def test_append_over_the_limit_is_toobig_before_the_literal_is_sent(tmp_path):
    site = IMAPSite(tmp_path, MAIL_MAX_SIZE="2048")
    try:
        name = site.add_user("small")
        s = site.raw_connection()
        greeting = read_until(s, b"\r\n")
        assert b"APPENDLIMIT=2048" in greeting
        s.sendall(f"a LOGIN {name} {PASSWORD}\r\nb APPEND INBOX {{4096}}\r\n".encode())
        data = read_until(s, b"b [A-Z]+ .*\r\n")
        assert b"b NO [TOOBIG]" in data and b"\r\n+ " not in data
        s.sendall(b"c NOOP\r\n")
        assert b"c OK" in read_until(s, b"c [A-Z]+ .*\r\n")
        s.close()
        assert site.store.mailbox(name, "INBOX").total == 0
    finally:
        site.close()


# ---------------------------------------------------------------- changes made elsewhere

def test_idle_sees_a_delivery_within_a_second(site, user):
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
    read_until(s, b"\\+ idling\r\n")
    started = time.monotonic()
    site.deliver(user, message("while idling"))
    data = read_until(s, b"\\* 1 EXISTS\r\n", timeout=5)
    assert b"* 1 EXISTS" in data
    assert time.monotonic() - started < 1.0
    s.sendall(b"DONE\r\n")
    assert b"c OK" in read_until(s, b"c [A-Z]+ .*\r\n")
    s.close()


def test_idle_sees_another_sessions_flag_change_and_expunge(site, user):
    site.deliver(user, message("a"))
    site.deliver(user, message("b"))
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
    read_until(s, b"\\+ idling\r\n")
    other = site.login(user)
    ok(other.select("INBOX"))
    ok(other.store("2", "+FLAGS", "(\\Flagged)"))
    assert b"* 2 FETCH (FLAGS (\\Flagged" in read_until(s, b"\\* 2 FETCH.*\r\n", timeout=5)
    ok(other.store("1", "+FLAGS", "(\\Deleted)"))
    ok(other.expunge())
    assert b"* 1 EXPUNGE" in read_until(s, b"\\* 1 EXPUNGE\r\n", timeout=5)
    s.sendall(b"DONE\r\n")
    read_until(s, b"c OK.*\r\n")
    s.close()
    other.logout()


def test_expunge_elsewhere_is_not_reported_during_fetch_but_at_noop(site, user):
    for i in range(3):
        site.deliver(user, message(f"e{i}"))
    imap = site.login(user)
    ok(imap.select("INBOX"))
    other = site.login(user)
    ok(other.select("INBOX"))
    ok(other.store("1", "+FLAGS", "(\\Deleted)"))
    ok(other.expunge())
    imap.untagged_responses.clear()
    ok(imap.fetch("2:3", "(UID)"))
    assert "EXPUNGE" not in imap.untagged_responses
    ok(imap.search(None, "ALL"))
    assert "EXPUNGE" not in imap.untagged_responses
    ok(imap.noop())
    assert imap.untagged_responses.get("EXPUNGE") == [b"1"]
    imap.logout()
    other.logout()


def test_deleting_the_selected_mailbox_elsewhere_ends_the_session_politely(site, user):
    admin = site.login(user)
    ok(admin.create("Doomed"))
    imap = site.login(user)
    ok(imap.select("Doomed"))
    ok(admin.delete("Doomed"))
    with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error)):
        imap.noop()
    admin.logout()


# ---------------------------------------------------------------- pipelining, limits, timeouts

def test_pipelined_commands_in_one_packet_are_all_answered(site, user):
    s = site.raw_connection()
    read_until(s, b"\r\n")
    packet = f"a LOGIN {user} {PASSWORD}\r\n" + "".join(f"n{i} NOOP\r\n" for i in range(50)) + "z SELECT INBOX\r\n"
    s.sendall(packet.encode())
    data = read_until(s, b"z OK.*\r\n")
    s.close()
    for i in range(50):
        assert f"n{i} OK".encode() in data


def test_idle_done_and_next_command_in_one_packet(site, user):
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
    read_until(s, b"\\+ idling\r\n")
    s.sendall(b"DONE\r\nd NOOP\r\ne STATUS INBOX (MESSAGES)\r\n")
    data = read_until(s, b"e OK.*\r\n")
    s.close()
    assert data.index(b"c OK") < data.index(b"d OK") < data.index(b"e OK")


def test_connections_per_client_address_capped(tmp_path):
    site = IMAPSite(tmp_path, IMAP_MAX_CONNECTIONS_PER_IP="3")
    try:
        held = [site.raw_connection() for _ in range(3)]
        for s in held:
            assert read_until(s, b"\r\n").startswith(b"* OK")
        extra = site.raw_connection()
        assert read_until(extra, b"\r\n").startswith(b"* BYE [UNAVAILABLE]")
        extra.close()
        held.pop().close()
        wait_for(lambda: site.server.active() < 3, message="a slot to free")
        again = site.raw_connection()
        assert read_until(again, b"\r\n").startswith(b"* OK")
        for s in held + [again]:
            s.close()
    finally:
        site.close()


def test_unauthenticated_connection_is_closed_after_the_login_timeout(tmp_path):
    site = IMAPSite(tmp_path, IMAP_LOGIN_TIMEOUT_SECONDS="0.5")
    try:
        s = site.raw_connection()
        read_until(s, b"\r\n")
        started = time.monotonic()
        data = read_until(s, b"BYE.*\r\n", timeout=10)
        assert b"* BYE" in data and time.monotonic() - started < 5
        assert s.recv(100) == b""
        s.close()
    finally:
        site.close()


def test_idle_longer_than_the_limit_ends_with_bye(tmp_path):
    site = IMAPSite(tmp_path, IMAP_IDLE_TIMEOUT_SECONDS="0.5")
    try:
        name = site.add_user("sleepy")
        s = site.raw_connection()
        read_until(s, b"\r\n")
        s.sendall(f"a LOGIN {name} {PASSWORD}\r\nb IDLE\r\n".encode())
        read_until(s, b"\\+ idling\r\n")
        data = read_until(s, b"BYE.*\r\n", timeout=10)
        assert R.BYE_IDLE_TIMEOUT.encode() in data
        s.close()
    finally:
        site.close()


def test_config_off_opens_no_imap_port(tmp_path):
    site = IMAPSite(tmp_path, IMAP_PORT="off")
    assert site.servers == []


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=mu.test", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def test_starttls_then_login_and_imaps_with_implicit_tls(tmp_path, certificate):
    cert, key = certificate
    port = free_port()
    site = IMAPSite(tmp_path, MAIL_TLS_CERT=cert, MAIL_TLS_KEY=key, IMAPS_PORT=f"127.0.0.1:{port}")
    try:
        name = site.add_user("secure")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        imap = site.connect()
        assert "STARTTLS" in imap.capabilities
        ok(imap.starttls(context))
        assert "STARTTLS" not in imap.capabilities
        ok(imap.login(name, PASSWORD))
        imap.logout()
        imaps = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=15)
        assert "STARTTLS" not in imaps.capabilities
        ok(imaps.login(name, PASSWORD))
        ok(imaps.select("INBOX"))
        imaps.logout()
    finally:
        site.close()


# ---------------------------------------------------------------- many messages

def test_fetch_of_many_messages_streams_in_order(site, user):
    for i in range(300):
        site.deliver(user, message(f"bulk {i}", "y" * 2000))
    imap = site.login(user)
    ok(imap.select("INBOX"))
    data = ok(imap.fetch("1:*", "(UID BODY.PEEK[])"))
    bodies = [d for d in data if isinstance(d, tuple)]
    assert len(bodies) == 300
    assert [int(re.search(rb"UID (\d+)", b[0]).group(1)) for b in bodies] == list(range(1, 301))
    imap.logout()


def test_connection_threads_are_reused_not_grown(site, user):
    """Each connection thread accepts again when its client leaves: threads stay at the
    largest number of clients at once (plus a spare), however many come and go."""
    def conn_threads():
        return sum(1 for t in threading.enumerate() if t.name == "imap-conn")

    for _ in range(3):
        clients = [site.login(user) for _ in range(4)]
        for c in clients:
            c.logout()
    wait_for(lambda: site.server.active() == 0, message="sessions to end")
    settled = conn_threads()
    for _ in range(3):
        clients = [site.login(user) for _ in range(4)]
        for c in clients:
            c.logout()
    wait_for(lambda: site.server.active() == 0, message="sessions to end")
    assert conn_threads() <= max(settled, 4 + 2)
    with socket.create_connection(("127.0.0.1", site.port)) as s:
        assert read_until(s, b"\r\n").startswith(b"* OK")


# ---------------------------------------------------------------- NOTIFY (RFC 5465)

def test_notify_pushes_status_list_and_new_messages_between_commands(site, user):
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb SELECT INBOX\r\n".encode())
    read_until(s, b"b OK.*\r\n")
    s.sendall(b"c NOTIFY SET STATUS (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))"
              b" (PERSONAL (MessageNew MessageExpunge MailboxName SubscriptionChange))\r\n")
    data = read_until(s, b"c OK.*\r\n")
    assert re.search(rb'\* STATUS "Archive" \(MESSAGES 0 UIDNEXT 1 UIDVALIDITY \d+ UNSEEN 0\)', data)
    assert b'STATUS "INBOX"' not in data   # the selected mailbox is reported by EXISTS instead
    site.deliver(user, message("pushed"), mailbox="Archive")
    assert re.search(rb'\* STATUS "Archive" \(MESSAGES 1 UIDNEXT 2 UNSEEN 1\)',
                     read_until(s, b"STATUS.*\r\n", timeout=5))
    site.deliver(user, message("arrives in INBOX"))
    data = read_until(s, b"(?s)Subject: arrives in INBOX.*\\)\r\n", timeout=5)
    assert b"* 1 EXISTS" in data and b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)]" in data
    site.store.create_mailbox(user, "Fresh")
    assert b'* LIST () "/" "Fresh"' in read_until(s, b"Fresh.*\r\n", timeout=5)
    site.store.rename_mailbox(user, "Fresh", "Renamed")
    assert b'* LIST () "/" "Renamed" ("OLDNAME" ("Fresh"))' in read_until(s, b"Renamed.*\r\n", timeout=5)
    site.store.subscribe(user, "Renamed")
    assert b'* LIST (\\Subscribed) "/" "Renamed"' in read_until(s, b"Subscribed.*\r\n", timeout=5)
    s.sendall(b"d NOTIFY NONE\r\ne NOOP\r\n")
    read_until(s, b"e OK.*\r\n")
    site.deliver(user, message("quiet now"), mailbox="Archive")
    s.sendall(b"f CHECK\r\n")
    assert b"STATUS" not in read_until(s, b"f OK.*\r\n")
    s.close()


def test_notify_refuses_events_it_does_not_support(site, user):
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb NOTIFY SET (PERSONAL (AnnotationChange))\r\n"
              "c NOTIFY SET (SELECTED (MessageNew))\r\n".encode())
    data = read_until(s, b"c [A-Z]+ .*\r\n")
    s.close()
    assert b"b NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)]" in data
    assert b"c BAD" in data


def test_startup_logs_one_line_per_listener(tmp_path, certificate, capsys):
    cert, key = certificate
    plain, tls = free_port(), free_port()
    site = IMAPSite(tmp_path, IMAP_PORT=str(plain), IMAPS_PORT=f":{tls}", MAIL_TLS_CERT=cert, MAIL_TLS_KEY=key)
    try:
        err = capsys.readouterr().err
        assert f"imap: Starting IMAP server on :{plain}\n" in err
        assert f"imap: Starting IMAP server on :{tls}\n" in err
    finally:
        site.close()
    site = IMAPSite(tmp_path / "nocert", IMAP_PORT=str(free_port()), IMAPS_PORT=f":{tls}")
    try:
        assert len(site.servers) == 1   # IMAPS only with a certificate
    finally:
        site.close()


def test_qresync_reports_vanished_and_changed_since_a_modseq(site, user):
    for i in range(3):
        site.deliver(user, message(f"q{i}"))
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb ENABLE QRESYNC\r\nc SELECT INBOX\r\n".encode())
    data = read_until(s, b"c OK.*\r\n")
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", data).group(1))
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", data).group(1))
    s.sendall(b"d LOGOUT\r\n")
    s.close()
    other = site.login(user)
    ok(other.select("INBOX"))
    ok(other.store("2", "+FLAGS", "(\\Flagged)"))
    ok(other.store("1", "+FLAGS", "(\\Deleted)"))
    ok(other.expunge())
    s = site.raw_connection()
    read_until(s, b"\r\n")
    s.sendall(f"a LOGIN {user} {PASSWORD}\r\nb ENABLE QRESYNC\r\n"
              f"c SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3))\r\n".encode())
    data = read_until(s, b"c OK.*\r\n")
    assert b"* VANISHED (EARLIER) 1\r\n" in data
    assert re.search(rb"\* 1 FETCH \(UID 2 FLAGS \(\\Flagged[^)]*\) MODSEQ \(\d+\)\)", data)
    ok(other.store("2", "+FLAGS", "(\\Deleted)"))   # seq 2 there is UID 3
    ok(other.expunge())
    s.sendall(b"d NOOP\r\n")
    data = read_until(s, b"d OK.*\r\n")
    assert b"* VANISHED 3\r\n" in data and b"EXPUNGE" not in data
    s.sendall(f"e UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)\r\n".encode())
    data = read_until(s, b"e OK.*\r\n")
    assert b"* VANISHED (EARLIER) 1,3\r\n" in data
    assert re.search(rb"\* 1 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", data)
    s.close()
    other.logout()


def test_nothing_sent_before_starttls_is_acted_on(tmp_path, certificate):
    cert, key = certificate
    site = IMAPSite(tmp_path, MAIL_TLS_CERT=cert, MAIL_TLS_KEY=key)
    try:
        name = site.add_user("carol")
        raw = site.raw_connection()
        read_until(raw, b"\r\n")
        raw.sendall(f"a STARTTLS\r\nb LOGIN {name} {PASSWORD}\r\n".encode())
        assert read_until(raw, b"a OK.*\r\n").endswith(b"a OK Begin TLS negotiation now\r\n")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        tls = context.wrap_socket(raw, server_hostname="mu.test")
        tls.sendall(b"c CAPABILITY\r\n")
        data = read_until(tls, b"c OK.*\r\n")
        assert b"b OK" not in data and b"b NO" not in data and b"STARTTLS" not in data
        tls.close()
    finally:
        site.close()


def test_app_password_logs_in_and_stops_working_once_revoked(tmp_path):
    """Credentials for IMAP are the account password or an app password (contract); a
    revoked one is refused at the next login."""
    site = IMAPSite(tmp_path)
    try:
        name = site.add_user("phone")
        _label, secret = site.app.accounts.create_app_password(name, "phone")
        imap = site.connect()
        assert imap.login(f"{name}@{site.config.domain}", secret)[0] == "OK"
        imap.logout()
        site.app.accounts.revoke_app_password(name, "phone")
        imap = site.connect()
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(name, secret)
        imap.logout()
    finally:
        site.close()


def test_revoked_app_password_ends_an_open_session(tmp_path, monkeypatch):
    """A session logged in with an app password that is then revoked is logged out at its
    next command (the check runs at most every CREDENTIAL_RECHECK_SECONDS; 0 here)."""
    from mu.imap import session as imap_session
    monkeypatch.setattr(imap_session, "CREDENTIAL_RECHECK_SECONDS", 0)
    site = IMAPSite(tmp_path)
    try:
        name = site.add_user("tablet")
        _label, secret = site.app.accounts.create_app_password(name, "tablet")
        imap = site.connect()
        imap.login(name, secret)
        assert imap.select("INBOX")[0] == "OK"
        site.app.accounts.revoke_app_password(name, "tablet")
        with pytest.raises(imaplib.IMAP4.abort, match="no longer works"):
            imap.noop()
    finally:
        site.close()
