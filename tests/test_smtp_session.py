"""The SMTP receiver in process: the real Connection, Session and receive policy on a
temporary store, over a socketpair (tests/inproc.py), for the many small session cases.
Scripted dialogs against a live server are in tests/dialogs/ (test_dialogs.py)."""

import re
import ssl
import subprocess
import threading
import time

import pytest

from conftest import wait_for
from inproc import InProcess
from mu.smtp import replies as R


@pytest.fixture
def make_site(tmp_path, dns):
    """make_site(MAIL_TIMEOUT="1") -> an InProcess site whose DNS is the fake server."""
    made = []

    def make(**env):
        settings = {"MAIL_DNS_SERVER": f"127.0.0.1:{dns.port}", "MAIL_DNS_TIMEOUT": "2",
                    "MAIL_RATE_CONNECTIONS": "100000", "MAIL_RATE_MESSAGES": "100000"}
        settings.update(env)
        folder = tmp_path / f"site{len(made)}"
        folder.mkdir()
        site = InProcess(folder, **settings)
        made.append(site)
        return site

    yield make


def greeted(site, peer_ip="192.0.2.1", **kw):
    client = site.smtp(peer_ip=peer_ip, **kw)
    assert client.reply()[0] == 220
    return client


def message_lines(name):
    return [b"MAIL FROM:<a@example.org>", f"RCPT TO:<{name}@mu.test>".encode(), b"DATA"]


# ---------------------------------------------------------------- one error budget

def test_size_parameter_takes_only_ascii_digits(make_site):
    """str.isdigit() is true for '²', and int('²') raises: that closed the session with 451."""
    client = greeted(make_site())
    client.command(b"EHLO x")
    for value in ["\u00b2", "\u0661\u0662", "+1", "-1", "1e3", "0x10", "1" * 21]:
        reply = client.command(f"MAIL FROM:<a@example.org> SMTPUTF8 SIZE={value}".encode())
        assert reply == (501, "501 5.5.4 " + R.BAD_SIZE.text), value
    assert client.command(b"MAIL FROM:<a@example.org> SIZE=1000")[0] == 250
    client.close()


def test_every_kind_of_protocol_error_spends_one_budget(make_site):
    site = make_site(MAIL_MAX_ERRORS="4")
    client = greeted(site)
    for line, code in [(b"X" * 600, 500), (b"FOO", 500), (b"MAIL FROM x", 503), (b"HELO", 501),
                       (b"EHLO x", 250)]:
        assert client.command(line)[0] == code, line
    code, text = client.command(b"RCPT TO:<a@mu.test>")   # out of sequence: one error too many
    assert (code, text) == (421, "421 4.5.0 " + R.TOO_MANY_ERRORS.text)
    assert client.closed()
    client.close()


def test_over_long_lines_alone_end_the_session(make_site):
    """Over-long lines were answered 500 for ever: they bypassed the error budget."""
    client = greeted(make_site())
    replies = []
    client.send(*[b"NOOP " + b"x" * 600] * 60)
    while True:
        code, _text = client.reply()
        if code is None:
            break
        replies.append(code)
    assert replies == [500] * 10 + [421]
    client.close()


def test_junk_commands_spend_the_budget_past_their_limit_until_a_message_is_accepted(make_site):
    site = make_site(MAIL_MAX_JUNK_COMMANDS="3", MAIL_MAX_ERRORS="2")
    site.add_user("junk")
    client = greeted(site)
    client.command(b"EHLO x")
    assert [client.command(b"NOOP")[0] for _ in range(4)] == [250] * 4   # 3 free, then 2 errors
    client.send(*message_lines("junk"))
    assert [client.reply()[0] for _ in range(3)] == [250, 250, 354]
    assert client.command(b"Subject: x\r\n\r\nbody\r\n.")[0] == 250      # the junk count starts over
    assert [client.command(b"RSET")[0] for _ in range(3)] == [250] * 3
    code, text = client.command(b"VRFY someone")
    assert code == 421 and "4.5.0" in text and client.closed()
    client.close()


def test_554_greeting_answers_503_to_all_but_quit(make_site):
    site = make_site()
    site.app.blocklist.add("192.0.2.66")
    client = site.smtp(peer_ip="192.0.2.66")
    code, text = client.reply()
    assert code == 554 and "sender blocked" in text
    for line in (b"EHLO x", b"MAIL FROM:<a@example.org>", b"NOOP", b"STARTTLS"):
        assert client.command(line) == (503, "503 5.5.1 " + R.ONLY_QUIT.text), line
    assert client.command(b"QUIT")[0] == 221 and client.closed()
    client.close()


def test_554_greeting_session_ends_when_its_budget_is_spent(make_site):
    site = make_site()
    site.app.blocklist.add("192.0.2.67")
    client = site.smtp(peer_ip="192.0.2.67")
    assert client.reply()[0] == 554
    codes = [client.command(b"EHLO x")[0] for _ in range(11)]
    assert codes == [503] * 10 + [421] and client.closed()
    client.close()


class FailingPolicy:
    """The real policy, with RCPT failing as a bug would (fault injection)."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def rcpt_to(self, envelope, address):
        raise RuntimeError("injected fault")


def test_internal_error_answers_421_and_closes(make_site, capsys):
    """An internal error answered 451 and left the client waiting on an open session."""
    from mu.smtp.server import Receiver
    site = make_site()
    receiver = Receiver(site.config, FailingPolicy(site.receive_policy()))
    from inproc import SMTPClient
    client = SMTPClient(receiver, "192.0.2.1")
    assert client.reply()[0] == 220
    client.send(b"EHLO x", b"MAIL FROM:<a@example.org>", b"RCPT TO:<x@mu.test>", b"DATA")
    assert client.reply()[0] == 250
    assert client.reply()[0] == 250          # replies owed before the fault still go out
    assert client.reply() == (421, "421 4.3.0 " + R.LOCAL_ERROR.text)
    assert client.closed()
    client.close()
    assert "error in session with 192.0.2.1: RuntimeError('injected fault')" in capsys.readouterr().err


# ---------------------------------------------------------------- deadlines

def test_one_byte_at_a_time_cannot_hold_a_command_open(make_site):
    """The timeout bounded each read, so a byte every few seconds held the slot for ever."""
    client = greeted(make_site(MAIL_TIMEOUT="1"))
    started = time.monotonic()
    for byte in b"NOOP NOOP NOOP NOOP NOOP":   # a byte every 0.3 s: never a full line
        client.sock.send(bytes([byte]))
        if client.answered_within(0.3):
            break
    code, text = client.reply()
    assert code == 421 and "4.4.2" in text
    assert time.monotonic() - started < 2.0
    client.close()


def test_data_slower_than_the_minimum_rate_times_out(make_site):
    site = make_site(MAIL_TIMEOUT="1", MAIL_MIN_DATA_BYTES_PER_SECOND="500")
    site.add_user("slow")
    client = greeted(site)
    client.command(b"EHLO x")
    client.send(*message_lines("slow"))
    assert [client.reply()[0] for _ in range(3)] == [250, 250, 354]
    started = time.monotonic()
    for _ in range(30):
        client.sock.send(b"x" * 20)   # 80 bytes a second
        if client.answered_within(0.25):
            break
    code, text = client.reply()
    assert code == 421 and "4.4.2" in text
    assert time.monotonic() - started < 2.5
    client.close()


def test_data_at_a_good_rate_may_last_longer_than_the_timeout(make_site):
    site = make_site(MAIL_TIMEOUT="1", MAIL_MIN_DATA_BYTES_PER_SECOND="500")
    site.add_user("steady")
    client = greeted(site)
    client.command(b"EHLO x")
    client.send(*message_lines("steady"))
    assert [client.reply()[0] for _ in range(3)] == [250, 250, 354]
    client.sock.sendall(b"Subject: steady\r\n\r\n")
    started = time.monotonic()
    while time.monotonic() - started < 2.5:   # 2.5 times MAIL_TIMEOUT, at ~8 KB/s
        client.sock.sendall((b"y" * 78 + b"\r\n") * 20)
        time.sleep(0.2)
    assert client.command(b".")[0] == 250
    client.close()


def test_tls_handshake_has_a_deadline(make_site, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=mu.test"], check=True, capture_output=True)
    site = make_site(MAIL_TIMEOUT="1", MAIL_TLS_CERT=str(cert), MAIL_TLS_KEY=str(key))
    from mu.smtp.server import Receiver
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    receiver = Receiver(site.config, site.receive_policy(), tls_context=ctx)
    from inproc import SMTPClient
    client = SMTPClient(receiver, "192.0.2.1")
    assert client.reply()[0] == 220
    client.command(b"EHLO x")
    assert client.command(b"STARTTLS")[0] == 220
    started = time.monotonic()
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64
    for byte in hello:   # the start of a ClientHello, a byte every 0.2 s
        try:
            client.sock.send(bytes([byte]))
        except OSError:
            break
        if client.answered_within(0.2):
            break
    client.file.read()   # to the end: an alert, or nothing (a handshake has no 421)
    assert time.monotonic() - started < 2.5
    client.close()


# ---------------------------------------------------------------- connection slots

def test_per_client_connection_cap(make_site):
    site = make_site(MAIL_MAX_CONNECTIONS_PER_CLIENT="2")
    first, second = greeted(site, "192.0.2.1"), greeted(site, "192.0.2.1")
    third = site.smtp(peer_ip="192.0.2.1")
    assert third.reply() == (421, "421 4.7.0 " + R.TOO_MANY_CLIENT_CONNECTIONS.text) and third.closed()
    other = greeted(site, "192.0.2.2")
    first.command(b"QUIT")
    first.close()
    wait_for(lambda: site.receiver.slots.open == 2, timeout=5)
    again = greeted(site, "192.0.2.1")
    for client in (second, third, other, again):
        client.close()


def test_ipv6_clients_are_counted_by_their_64(make_site):
    site = make_site(MAIL_MAX_CONNECTIONS_PER_CLIENT="1")
    one = greeted(site, "2001:db8:1:2::1")
    same_64 = site.smtp(peer_ip="2001:db8:1:2:ffff::9")
    assert same_64.reply()[0] == 421
    next_64 = greeted(site, "2001:db8:1:3::1")
    for client in (one, same_64, next_64):
        client.close()


def test_total_connection_cap(make_site):
    site = make_site(MAIL_MAX_CONNECTIONS="2")
    held = [greeted(site, "192.0.2.1"), greeted(site, "192.0.2.2")]
    refused = site.smtp(peer_ip="192.0.2.3")
    assert refused.reply() == (421, "421 4.7.0 " + R.TOO_MANY_CONNECTIONS.text) and refused.closed()
    for client in held + [refused]:
        client.close()


def test_timeouts_drop_under_stress(make_site, capsys):
    site = make_site(MAIL_TIMEOUT="5", MAIL_MAX_CONNECTIONS="4", MAIL_STRESS_PERCENT="50",
                     MAIL_STRESS_TIMEOUT_SECONDS="0.5")
    alone = greeted(site, "192.0.2.1")
    assert not alone.answered_within(1.0)   # MAIL_TIMEOUT applies: no 421 within a second
    second = greeted(site, "192.0.2.2")   # 2 of 4 open: stress
    started = time.monotonic()
    code, text = second.reply()
    assert code == 421 and "4.4.2" in text and time.monotonic() - started < 1.5
    assert "smtp: under stress: 2 of 4 connections open; timeouts down to 0.5 s" in capsys.readouterr().err
    for client in (alone, second):
        client.close()


# ---------------------------------------------------------------- shutdown

def test_drain_closes_idle_sessions_at_once_and_lets_data_finish(make_site):
    site = make_site()
    site.add_user("drain")
    idle = greeted(site, "192.0.2.1")
    idle.command(b"EHLO x")
    busy = greeted(site, "192.0.2.2")
    busy.command(b"EHLO x")
    busy.send(*message_lines("drain"))
    assert [busy.reply()[0] for _ in range(3)] == [250, 250, 354]
    busy.sock.sendall(b"Subject: in flight\r\n\r\npart one\r\n")
    result = {}
    drainer = threading.Thread(target=lambda: result.update(left=site.receiver.drain(timeout=10)))
    started = time.monotonic()
    drainer.start()
    assert idle.reply() == (421, "421 4.3.2 " + R.SHUTTING_DOWN.text) and idle.closed()
    assert time.monotonic() - started < 1.0
    busy.sock.sendall(b"part two\r\n.\r\n")
    assert busy.reply()[0] == 250
    assert busy.reply()[0] == 421 and busy.closed()
    drainer.join(10)
    assert result["left"] == 0
    for client in (idle, busy):
        client.close()


def test_drain_cuts_off_a_client_that_never_finishes_data(make_site):
    site = make_site()
    site.add_user("never")
    client = greeted(site)
    client.command(b"EHLO x")
    client.send(*message_lines("never"))
    assert [client.reply()[0] for _ in range(3)] == [250, 250, 354]
    client.sock.sendall(b"Subject: never\r\n\r\nand then nothing")
    started = time.monotonic()
    assert site.receiver.drain(timeout=2) == 0
    assert 1.0 <= time.monotonic() - started < 2.5
    assert client.reply()[0] == 421 and client.closed()
    client.close()
    token = site.token("never")
    listed = site.web.request("GET", "/api/mail?folder=inbox", token=token).json()
    assert listed["messages"] == []


# ---------------------------------------------------------------- transcript

def test_debug_transcript_logs_every_command_and_reply(make_site, capsys):
    site = make_site(MU_DEBUG="smtp")
    site.add_user("trace")
    client = greeted(site, "192.0.2.9")
    client.command(b"EHLO client.example")
    client.command(b"NO\x00OP \xc3\xa9\rX")
    client.send(*message_lines("trace"))
    [client.reply() for _ in range(3)]
    client.command(b"Subject: t\r\n\r\nsecret body\r\n.")
    client.command(b"QUIT")
    client.close()
    err = capsys.readouterr().err
    ids = set(re.findall(r"smtp: #(\d+) ", err))
    assert len(ids) == 1
    n = ids.pop()
    for line in [f"#{n} connect from 192.0.2.9", f"#{n} > 220 ", f"#{n} < EHLO client.example",
                 f"#{n} > 250-", f"#{n} > 250 HELP", f"#{n} < NO\\x00OP \\xc3\\xa9\\x0dX", f"#{n} > 501 5.5.2",
                 f"#{n} < DATA", f"#{n} > 354 ", f"#{n} < (message data, ", f"#{n} > 250 2.0.0 OK: message",
                 f"#{n} < QUIT", f"#{n} > 221 2.0.0 Bye", f"#{n} closed"]:
        assert f"smtp: {line}" in err, line
    assert "secret body" not in err


def test_no_transcript_without_debug(make_site, capsys):
    client = greeted(make_site())
    client.command(b"EHLO x")
    client.command(b"QUIT")
    client.close()
    assert "EHLO" not in capsys.readouterr().err


# ---------------------------------------------------------------- small cases

def test_recipient_over_the_limit_gets_452(make_site):
    site = make_site(MAIL_MAX_RECIPIENTS="5")
    site.add_user("many")
    client = greeted(site)
    client.send(b"EHLO x", b"MAIL FROM:<a@example.org>", *[f"RCPT TO:<many+{i}@mu.test>".encode() for i in range(6)])
    codes = [client.reply()[0] for _ in range(8)]
    assert codes == [250, 250] + [250] * 5 + [452]
    client.close()


def test_text_line_over_1000_octets_is_refused_and_nothing_stored(make_site):
    site = make_site()
    site.add_user("longline")
    client = greeted(site)
    client.send(b"EHLO x", *message_lines("longline"))
    assert [client.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    assert client.command(b"Subject: long\r\n\r\n" + b"x" * 1200 + b"\r\n.")[0] == 550
    assert client.command(b"NOOP")[0] == 250
    client.close()
    listed = site.web.request("GET", "/api/mail?folder=inbox", token=site.token("longline")).json()
    assert listed["messages"] == []


def test_message_over_the_size_limit_552_and_nothing_stored(make_site):
    site = make_site(MAIL_MAX_SIZE="2048")
    site.add_user("big")
    client = greeted(site)
    client.send(b"EHLO x", *message_lines("big"))
    assert [client.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    assert client.command(b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100 + b".")[0] == 552
    assert client.command(b"NOOP")[0] == 250
    client.close()
    listed = site.web.request("GET", "/api/mail?folder=inbox", token=site.token("big")).json()
    assert listed["messages"] == []


def test_debug_transcript_shows_refusals_too(make_site, capsys):
    site = make_site(MU_DEBUG="smtp", MAIL_MAX_CONNECTIONS_PER_CLIENT="1")
    held = greeted(site, "192.0.2.5")
    refused = site.smtp(peer_ip="192.0.2.5")
    assert refused.reply()[0] == 421
    refused.close()
    held.close()
    err = capsys.readouterr().err
    label = re.search(r"smtp: (#\d+) connect from 192.0.2.5, refused", err).group(1)
    assert f"smtp: {label} > 421 4.7.0 {R.TOO_MANY_CLIENT_CONNECTIONS.text}" in err
