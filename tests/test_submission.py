"""Message submission in process: the real Connection, SubmissionSession and policy on a
temporary store, over a socketpair (tests/inproc.py), from any client address. AUTH,
envelope rules, credits, the stored message and the throttles shared with the web login.
Real clients (swaks, msmtp, smtplib) against a live server: test_submission_clients.py;
scripted dialogs: tests/dialogs/submission_*.dialog."""

import base64

import pytest

from conftest import self_signed_certificate
from inproc import InProcess
from mu.smtp import replies as R

LOOPBACK = "127.0.0.1"
REMOTE = "198.51.100.20"


def plain(name: str, password: str, authzid: str = "") -> bytes:
    return base64.b64encode(f"{authzid}\0{name}\0{password}".encode())


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


@pytest.fixture
def make_site(tmp_path):
    """make_site(tls=True, CREDIT_COST_EMAIL="4") -> an InProcess site with alice (10
    credits, password `password1`) and bob."""
    made = []

    def make(tls: bool = False, **env):
        folder = tmp_path / f"site{len(made)}"
        folder.mkdir()
        if tls:
            cert, key = self_signed_certificate(str(folder), "mu.test")
            env.update(MAIL_TLS_CERT=cert, MAIL_TLS_KEY=key)
        site = InProcess(folder, **env)
        site.add_user("alice", credits=10)
        site.add_user("bob")
        made.append(site)
        return site

    return make


def greeted(site, peer_ip=LOOPBACK, **kw):
    client = site.submission(peer_ip=peer_ip, **kw)
    assert client.reply()[0] == 220
    assert client.command(b"EHLO client.example")[0] == 250
    return client


def logged_in(site, name="alice", password="password1", peer_ip=LOOPBACK):
    client = greeted(site, peer_ip)
    assert client.command(b"AUTH PLAIN " + plain(name, password)) == (235, "235 2.7.0 " + R.AUTH_OK.text)
    return client


def transaction(client, sender: str, recipients, message: bytes) -> list:
    """The codes of MAIL, each RCPT, DATA and the end of data (stopping at a refusal)."""
    got = [client.command(f"MAIL FROM:<{sender}>".encode())[0]]
    for rcpt in recipients:
        got.append(client.command(f"RCPT TO:<{rcpt}>".encode())[0])
    if got[0] != 250 or 250 not in got[1:]:
        return got
    got.append(client.command(b"DATA")[0])
    client.send(message + b".\r\n")
    code, text = client.reply()
    got.append(code)
    client.last_text = text
    return got


MESSAGE = (b"From: Alice <alice@mu.test>\r\nTo: bob@mu.test\r\nSubject: hello\r\n"
           b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@client.example>\r\n\r\nHi Bob.\r\n")


def box(site, user, name):
    return site.app.mailstore.mailbox(user, name)


def raw_in(site, user, name):
    view = site.app.mailstore.view(user, name)
    return [site.app.mailstore.raw(user, name, uid) for uid in view.uids]


# ---------------------------------------------------------------- EHLO and when AUTH is offered

def test_ehlo_offers_auth_plain_login_and_the_extensions_to_a_loopback_client(make_site):
    client = greeted(make_site(), LOOPBACK)
    code, text = client.command(b"EHLO client.example")
    lines = [line[4:] for line in text.split("\n")]
    for keyword in ("AUTH PLAIN LOGIN", "SIZE 10485760", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
        assert keyword in lines, keyword
    assert "STARTTLS" not in lines   # no certificate
    client.close()


def test_auth_offered_only_after_starttls_to_a_remote_client(make_site):
    site = make_site(tls=True)
    client = greeted(site, REMOTE)
    code, text = client.command(b"EHLO client.example")
    assert "STARTTLS" in text and "AUTH" not in text
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1"))[0] == 538   # RFC 4954 §4
    assert client.command(b"STARTTLS")[0] == 220
    client.start_tls()
    code, text = client.command(b"EHLO client.example")
    assert "AUTH PLAIN LOGIN" in text and "STARTTLS" not in text
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1"))[0] == 235
    assert transaction(client, "alice@mu.test", ["bob@mu.test"], MESSAGE) == [250, 250, 354, 250]
    client.close()
    assert b" with ESMTPSA; " in raw_in(site, "bob", "INBOX")[0].split(b"\r\n\r\n")[0]


def test_auth_refused_538_on_a_plain_connection_from_a_remote_client(make_site):
    """Without a certificate no remote client can log in: a password must never cross the
    network in clear text (the contract, RFC 8314 §3)."""
    client = greeted(make_site(), REMOTE)
    assert "AUTH" not in client.command(b"EHLO client.example")[1]
    code, text = client.command(b"AUTH LOGIN")
    assert (code, text) == (538, "538 5.7.11 " + R.AUTH_NEEDS_TLS.text)
    assert client.command(b"MAIL FROM:<alice@mu.test>")[0] == 530
    client.close()


def test_implicit_tls_connection_offers_auth_and_records_esmtpsa(make_site):
    site = make_site(tls=True)
    client = site.submission(peer_ip=REMOTE, implicit_tls=True)
    assert client.reply()[0] == 220
    code, text = client.command(b"EHLO client.example")
    assert "AUTH PLAIN LOGIN" in text and "STARTTLS" not in text
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1"))[0] == 235
    assert transaction(client, "alice@mu.test", ["bob@mu.test"], MESSAGE) == [250, 250, 354, 250]
    client.close()
    (stored,) = raw_in(site, "bob", "INBOX")
    assert stored.startswith(b"Received: from client.example ([198.51.100.20])\r\n\tby mu.test (mu) with ESMTPSA; ")


# ---------------------------------------------------------------- AUTH

def test_mail_before_auth_530(make_site):
    client = greeted(make_site())
    assert client.command(b"MAIL FROM:<alice@mu.test>") == (530, "530 5.7.0 " + R.AUTH_REQUIRED.text)
    assert client.command(b"RCPT TO:<bob@mu.test>")[0] == 503
    client.close()


def test_bad_credentials_535(make_site):
    client = greeted(make_site())
    for line in (b"AUTH PLAIN " + plain("alice", "wrong"), b"AUTH PLAIN " + plain("nobody", "password1"),
                 b"AUTH PLAIN " + plain("alice@elsewhere.example", "password1")):
        assert client.command(line) == (535, "535 5.7.8 " + R.AUTH_FAILED.text), line
    assert client.command(b"MAIL FROM:<alice@mu.test>")[0] == 530
    client.close()


def test_auth_plain_without_initial_response_and_login_in_two_steps(make_site):
    site = make_site()
    client = greeted(site)
    assert client.command(b"AUTH PLAIN") == (334, "334 ")
    assert client.command(plain("alice", "password1"))[0] == 235
    client.close()
    client = greeted(site)
    assert client.command(b"AUTH LOGIN") == (334, "334 VXNlcm5hbWU6")
    assert client.command(b64("alice@mu.test")) == (334, "334 UGFzc3dvcmQ6")
    assert client.command(b64("password1"))[0] == 235
    client.close()
    client = greeted(site)
    assert client.command(b"AUTH LOGIN " + b64("alice")) == (334, "334 UGFzc3dvcmQ6")   # initial response
    assert client.command(b64("password1"))[0] == 235
    client.close()


def test_username_is_the_name_or_the_address_in_any_case(make_site):
    site = make_site()
    for name in ("alice", "ALICE", "alice@mu.test", "Alice@MU.TEST"):
        logged_in(site, name).close()


def test_auth_exchange_mistakes_answered_501_503_504(make_site):
    client = greeted(make_site())
    assert client.command(b"AUTH CRAM-MD5")[0] == 504
    assert client.command(b"AUTH")[0] == 501
    assert client.command(b"AUTH PLAIN not*base64")[0] == 501
    assert client.command(b"AUTH PLAIN " + b64("only\0two"))[0] == 501
    assert client.command(b"AUTH LOGIN") == (334, "334 VXNlcm5hbWU6")
    assert client.command(b"*") == (501, "501 5.7.0 " + R.AUTH_CANCELLED.text)   # RFC 4954 §4
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1"))[0] == 235
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1"))[0] == 503   # once per session
    client.close()


def test_auth_needs_ehlo_and_is_not_allowed_in_a_transaction(make_site):
    site = make_site()
    client = site.submission(peer_ip=LOOPBACK)
    client.reply()
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1"))[0] == 503
    assert client.command(b"HELO client.example")[0] == 250
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1"))[0] == 503
    client.close()


def test_authorization_identity_of_another_user_535(make_site):
    """RFC 4616 §2: PLAIN may ask to act as someone else; mu lets no one."""
    site = make_site()
    client = greeted(site)
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1", authzid="bob"))[0] == 535
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1", authzid="alice@mu.test"))[0] == 235
    client.close()


def test_long_password_fits_an_auth_line_other_commands_stay_at_512(make_site):
    site = make_site()
    site.app.accounts.set_password("bob", "p" * 1000, min_password_chars=1)
    client = greeted(site)
    assert client.command(b"NOOP " + b"x" * 600)[0] == 500
    assert client.command(b"AUTH PLAIN " + plain("bob", "p" * 1000))[0] == 235
    client.close()
    client = greeted(site)
    assert client.command(b"AUTH PLAIN")[0] == 334
    assert client.command(b"A" * 13000) == (500, "500 5.5.6 " + R.AUTH_LINE_TOO_LONG.text)
    assert client.command(b"MAIL FROM:<bob@mu.test>")[0] == 530
    client.close()


def test_failed_logins_spend_the_error_budget(make_site):
    client = greeted(make_site(MAIL_MAX_ERRORS="3"))
    for _ in range(3):
        assert client.command(b"AUTH PLAIN " + plain("alice", "wrong"))[0] == 535
    code, text = client.command(b"AUTH PLAIN " + plain("alice", "wrong"))
    assert code == 421 and "4.5.0" in text and client.closed()
    client.close()


def test_sasl_responses_never_reach_the_transcript(make_site, capfd):
    site = make_site(MU_DEBUG="submission")
    client = greeted(site)
    client.command(b"AUTH LOGIN")
    client.command(b64("alice"))
    client.command(b64("password1"))
    client.command(b"QUIT")
    client.close()
    err = capfd.readouterr().err
    assert "submission: #" in err and "334 UGFzc3dvcmQ6" in err
    assert b64("password1").decode() not in err and b64("alice").decode() not in err
    assert err.count("< ***") == 2


# ---------------------------------------------------------------- throttles shared with the web

def test_failed_logins_throttled_per_account_and_shared_with_the_web_login(make_site):
    from test_accounts_web import login
    site = make_site()
    client = greeted(site)
    for _ in range(10):
        assert client.command(b"AUTH PLAIN " + plain("alice", "wrong"))[0] == 535
        client.close()
        client = greeted(site)
    # the right password, from the same or another client: the account is locked for a while
    assert client.command(b"AUTH PLAIN " + plain("alice", "password1")) == (454, "454 4.7.0 " + R.LOGIN_THROTTLED.text)
    client.close()
    assert login(site, "alice", "password1", remote_addr="203.0.113.50").status == 429
    # an app password still works: it cannot be guessed, so the lock is not for it
    _label, app_password = site.app.accounts.create_app_password("alice", "phone")
    logged_in(site, "alice", app_password).close()


def test_failed_logins_throttled_per_client_address(make_site):
    site = make_site(MU_LOGIN_FAILURES_PER_ADDRESS="4")
    client = greeted(site)
    for i in range(4):
        assert client.command(b"AUTH PLAIN " + plain(f"name{i}", "guess"))[0] == 535
    assert client.command(b"AUTH PLAIN " + plain("bob", "password1"))[0] == 454
    client.close()
    logged_in(site, "bob", peer_ip="127.0.0.2").close()


# ---------------------------------------------------------------- app passwords

def test_app_password_logs_in_mail_clients_and_never_the_web(make_site):
    from test_accounts_web import login
    site = make_site()
    label, password = site.app.accounts.create_app_password("alice", "laptop")
    assert label == "laptop" and len(password) == 23
    logged_in(site, "alice", password).close()
    logged_in(site, "alice@mu.test", password.upper().replace("-", " ")).close()   # as typed on a phone
    assert login(site, "alice", password).status == 401
    assert login(site, "alice", "password1").status == 303


def test_revoked_app_password_refused_at_once_even_in_an_open_session(make_site):
    site = make_site()
    _label, password = site.app.accounts.create_app_password("alice", "phone")
    open_session = logged_in(site, "alice", password)
    assert transaction(open_session, "alice@mu.test", ["bob@mu.test"], MESSAGE)[-1] == 250
    site.app.accounts.revoke_app_password("alice", "PHONE")
    client = greeted(site)
    assert client.command(b"AUTH PLAIN " + plain("alice", password))[0] == 535
    client.close()
    assert open_session.command(b"MAIL FROM:<alice@mu.test>") == (530, "530 5.7.0 " + R.AUTH_NO_LONGER_VALID.text)
    assert open_session.command(b"MAIL FROM:<alice@mu.test>") == (530, "530 5.7.0 " + R.AUTH_REQUIRED.text)
    open_session.close()
    assert box(site, "bob", "INBOX").total == 1


def test_password_change_and_disabled_account_end_open_logins_at_the_next_mail(make_site):
    site = make_site()
    by_password = logged_in(site, "alice")
    _label, app_password = site.app.accounts.create_app_password("bob", "phone")
    by_app_password = logged_in(site, "bob", app_password)
    site.app.accounts.set_password("alice", "changed1")
    site.app.accounts.update("bob", disabled=True)
    assert by_password.command(b"MAIL FROM:<alice@mu.test>")[0] == 530
    assert by_app_password.command(b"MAIL FROM:<bob@mu.test>")[0] == 530
    by_password.close()
    by_app_password.close()
    logged_in(site, "alice", "changed1").close()


# ---------------------------------------------------------------- the envelope

@pytest.mark.parametrize("sender", ["bob@mu.test", "alice@elsewhere.example", "", "alice.x@mu.test",
                                    "postmaster@mu.test"])
def test_mail_from_not_the_users_own_address_553(make_site, sender):
    client = logged_in(make_site())
    code, text = client.command(f"MAIL FROM:<{sender}>".encode())
    assert code == 553 and "5.7.1" in text and "alice@mu.test" in text
    client.close()


@pytest.mark.parametrize("sender", ["alice@mu.test", "alice+lists@mu.test", "ALICE@MU.TEST", '"alice"@mu.test'])
def test_mail_from_the_users_own_address_in_any_spelling(make_site, sender):
    client = logged_in(make_site())
    assert client.command(f"MAIL FROM:<{sender}> BODY=8BITMIME AUTH=<>".encode())[0] == 250
    client.close()


def test_recipient_not_a_local_user_550(make_site):
    client = logged_in(make_site())
    assert client.command(b"MAIL FROM:<alice@mu.test>")[0] == 250
    assert client.command(b"RCPT TO:<nobody@mu.test>") == (550, "550 5.1.1 " + R.USER_NOT_FOUND.text)
    assert client.command(b"RCPT TO:<bob+x@MU.TEST>")[0] == 250
    client.close()


# ---------------------------------------------------------------- credits

def test_not_enough_credits_554_at_the_first_external_recipient(make_site):
    site = make_site(CREDIT_COST_EMAIL="4")
    site.app.accounts.update("alice", credits=3)
    client = logged_in(site)
    assert client.command(b"MAIL FROM:<alice@mu.test>")[0] == 250
    assert client.command(b"RCPT TO:<bob@mu.test>")[0] == 250          # local mail is free
    code, text = client.command(b"RCPT TO:<carol@example.org>")
    assert (code, text) == (554, "554 5.7.0 Not enough credits: external mail costs 4, your balance is 3")
    assert client.command(b"DATA")[0] == 354
    assert client.command(MESSAGE + b".")[0] == 250
    client.close()
    assert site.app.accounts.get("alice")["credits"] == 3 and not site.app.store.state.queue


def test_not_enough_credits_at_the_end_of_data_stores_nothing(make_site):
    """The balance is checked again in the commit: another send may have spent it meanwhile."""
    site = make_site(CREDIT_COST_EMAIL="4")
    client = logged_in(site)
    assert client.command(b"MAIL FROM:<alice@mu.test>")[0] == 250
    assert client.command(b"RCPT TO:<carol@example.org>")[0] == 250
    assert client.command(b"DATA")[0] == 354
    site.app.accounts.update("alice", credits=1)
    code, text = client.command(MESSAGE + b".")
    assert (code, text) == (554, "554 5.7.0 Not enough credits: external mail costs 4, your balance is 1")
    client.close()
    assert box(site, "alice", "Sent").total == 0 and not site.app.store.state.queue


def test_credits_charged_once_for_many_external_recipients_and_queued_per_domain(make_site):
    site = make_site(CREDIT_COST_EMAIL="4")
    client = logged_in(site)
    rcpts = ["carol@example.org", "dave@example.org", "erin@example.net", "bob@mu.test"]
    assert transaction(client, "alice@mu.test", rcpts, MESSAGE) == [250] * 5 + [354, 250]
    client.close()
    assert site.app.accounts.get("alice")["credits"] == 6
    queue = list(site.app.store.state.queue.values())
    assert sorted((e["domain"], sorted(e["rcpts"])) for e in queue) == [
        ("example.net", ["erin@example.net"]), ("example.org", ["carol@example.org", "dave@example.org"])]
    assert {e["from_addr"] for e in queue} == {"alice@mu.test"}
    assert box(site, "alice", "Sent").total == 1 and box(site, "bob", "INBOX").total == 1


# ---------------------------------------------------------------- the stored message

def test_message_stored_as_submitted_below_a_received_field(make_site):
    site = make_site()
    client = logged_in(site)
    assert transaction(client, "alice@mu.test", ["bob@mu.test"], MESSAGE)[-1] == 250
    client.close()
    (inbox,) = raw_in(site, "bob", "INBOX")
    (sent,) = raw_in(site, "alice", "Sent")
    assert inbox == sent
    received, rest = inbox.split(b"\r\n", 2)[:2], inbox.split(b"\r\n", 2)[2]
    assert received[0] == b"Received: from client.example ([127.0.0.1])"
    assert received[1].startswith(b"\tby mu.test (mu) with ESMTPA; ")
    assert rest == MESSAGE   # nothing added, nothing changed
    sent_view = site.app.mailstore.view("alice", "Sent")
    assert site.app.mailstore.messages("alice", "Sent", sent_view.uids)[0].flags == frozenset({"\\Seen"})


def test_date_message_id_and_from_added_only_when_missing(make_site):
    site = make_site()
    client = logged_in(site)
    bare = b"To: bob@mu.test\r\nSubject: no date\r\n\r\nbody\r\n"
    assert transaction(client, "alice+x@mu.test", ["bob@mu.test"], bare)[-1] == 250
    headless = b"just a line of text\r\n"
    assert transaction(client, "alice@mu.test", ["bob@mu.test"], headless)[-1] == 250
    client.close()
    first, second = raw_in(site, "bob", "INBOX")
    head = first.split(b"\r\n\r\n")[0]
    assert b"\r\nFrom: <alice@mu.test>\r\nDate: " in head and b"\r\nMessage-ID: <" in head
    assert first.endswith(bare)
    assert second.endswith(b"@mu.test>\r\n\r\njust a line of text\r\n")   # the text stays in the body
    assert site.app.mailstore.messages("bob", "INBOX", [1])[0].message_id.endswith("@mu.test>")


def test_from_header_of_someone_else_refused_554(make_site):
    site = make_site()
    client = logged_in(site)
    for from_field in (b"From: bob@mu.test", b"From: alice@mu.test, bob@mu.test", b"From: ceo@bank.example",
                       b"From: undisclosed:;", b"From : bob@mu.test"):
        message = from_field + b"\r\nTo: bob@mu.test\r\nSubject: x\r\n\r\nbody\r\n"
        codes = transaction(client, "alice@mu.test", ["bob@mu.test"], message)
        assert codes[-1] == 554 and "5.7.1" in client.last_text, from_field
    ok = b'From: "Alice A." <Alice+work@MU.test>\r\nTo: bob@mu.test\r\n\r\nbody\r\n'
    assert transaction(client, "alice@mu.test", ["bob@mu.test"], ok)[-1] == 250
    client.close()
    assert box(site, "bob", "INBOX").total == 1 and box(site, "alice", "Sent").total == 1


def test_bcc_recipients_stay_out_of_the_trace_and_the_record(make_site):
    site = make_site()
    site.add_user("carol")
    client = logged_in(site)
    assert transaction(client, "alice@mu.test", ["bob@mu.test", "carol@mu.test"], MESSAGE)[-1] == 250
    client.close()
    (stored,) = raw_in(site, "carol", "INBOX")
    assert b"carol" not in stored
    token = site.token("carol")
    listed = site.web.request("GET", "/api/mail?folder=inbox", token=token).json()["messages"]
    assert listed[0]["to"] == ["bob@mu.test"] and listed[0]["from"] == "alice"


def test_sent_copy_is_kept_once_when_the_client_appends_its_own(make_site):
    site = make_site()
    client = logged_in(site)
    assert transaction(client, "alice@mu.test", ["bob@mu.test"], MESSAGE)[-1] == 250
    client.close()
    before = box(site, "alice", "Sent")
    assert site.app.mailstore.append("alice", "Sent", MESSAGE, ["\\Seen"]) == (before.uidvalidity, 1)
    assert box(site, "alice", "Sent").total == 1


def test_submitted_message_keeps_its_thread(make_site):
    site = make_site()
    client = logged_in(site)
    assert transaction(client, "alice@mu.test", ["bob@mu.test"], MESSAGE)[-1] == 250
    reply = (b"From: alice@mu.test\r\nTo: bob@mu.test\r\nSubject: Re: hello\r\nIn-Reply-To: <m1@client.example>\r\n"
             b"References: <m1@client.example>\r\n\r\nagain\r\n")
    assert transaction(client, "alice@mu.test", ["bob@mu.test"], reply)[-1] == 250
    client.close()
    token = site.token("bob")
    first, second = site.web.request("GET", "/api/mail?folder=inbox", token=token).json()["messages"]
    assert first["thread_id"] == second["thread_id"]


def test_blocked_client_address_greeted_554(make_site):
    site = make_site()
    site.app.blocklist.add("192.0.2.99")
    client = site.submission(peer_ip="192.0.2.99")
    code, text = client.reply()
    assert code == 554 and "sender blocked" in text
    assert client.command(b"EHLO x")[0] == 503
    client.close()


def test_store_failure_answers_451_keeps_nothing_and_the_retry_is_stored_once(make_site, monkeypatch):
    """A full disk at the end of DATA: a transient reply (the client keeps the message and
    tries again), no credit taken, nothing queued or half stored."""
    import errno
    from mu import safeio
    site = make_site(CREDIT_COST_EMAIL="4")
    client = logged_in(site)
    real = safeio.sync_appended

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safeio, "sync_appended", disk_full)
    rcpts = ["carol@example.org", "bob@mu.test"]
    assert transaction(client, "alice@mu.test", rcpts, MESSAGE)[-1] == 451 and "4.3.0" in client.last_text
    monkeypatch.setattr(safeio, "sync_appended", real)
    assert site.app.accounts.get("alice")["credits"] == 10 and not site.app.store.state.queue
    assert box(site, "alice", "Sent").total == 0 and box(site, "bob", "INBOX").total == 0
    assert transaction(client, "alice@mu.test", rcpts, MESSAGE)[-1] == 250
    client.close()
    assert site.app.accounts.get("alice")["credits"] == 6 and len(site.app.store.state.queue) == 1
    assert box(site, "alice", "Sent").total == 1 and box(site, "bob", "INBOX").total == 1
