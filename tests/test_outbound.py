"""Outbound delivery to a capture MX found through the fake DNS: DKIM, retries, bounces, credits."""

import base64
import concurrent.futures
import datetime
import os
import subprocess
import threading
import time

import dkim
import pytest

from conftest import ROOT, wait_for
from mu.outbox import retry_delay


@pytest.fixture(scope="module")
def signed_mu(tmp_path_factory, mu_env, dns):
    """A server with a DKIM key whose public half the fake DNS serves."""
    from conftest import Mu
    home = str(tmp_path_factory.mktemp("out") / "home")
    out = subprocess.run([os.path.join(ROOT, "scripts", "generate-dkim-keys.sh"), "mu.test", "s1"],
                         env=dict(os.environ, MU_HOME=home), capture_output=True, text=True, check=True)
    record = out.stdout.split('IN TXT "', 1)[1].rsplit('"', 1)[0]
    dns.add("s1._domainkey.mu.test", "TXT", record)
    server = Mu(home, dict(mu_env, MAIL_SELECTOR="s1")).start()
    yield server
    server.stop()


def sender(mu, credits=20):
    name = mu.add_user(credits=credits)
    return name, mu.token(name)


def wait_status(mu, token, msg_id, wanted, timeout=20):
    def check():
        msg = mu.http("GET", f"/api/mail/{msg_id}", token).json()
        return msg if msg.get("status") in wanted else None
    return wait_for(check, timeout=timeout, message=f"status in {wanted}")


def credits(mu, token):
    return mu.http("GET", "/api/me", token).json()["credits"]


def test_dkim_status_logged_and_cli(signed_mu):
    assert "dkim: DKIM signing enabled for domain mu.test with selector s1" in signed_mu.log()
    assert "enabled" in signed_mu.cli("dkim", "status").stdout


def test_signed_delivery_verifies_and_charges(signed_mu, dns, capture):
    dns.mail_domain("good.example")
    name, token = sender(signed_mu)
    msg = signed_mu.send(token, "bob@good.example", subject="Grüße aus mu", body="line\n" * 3)
    assert msg["status"] == "queued" and credits(signed_mu, token) == 16
    done = wait_status(signed_mu, token, msg["id"], {"sent"})
    assert done["status_detail"].startswith("250")
    got = capture.for_rcpt("bob@good.example")[-1]
    data = got["data"]
    assert got["from"] == f"{name}@mu.test" and got["helo"] == "mu.test"
    assert data.startswith(b"DKIM-Signature:")
    resolver_txt = {b"s1._domainkey.mu.test.": dns.records[("s1._domainkey.mu.test.", "TXT")][0]}

    def dnsfunc(qname, timeout=5):
        rd = resolver_txt.get(qname)
        return b"".join(rd.data) if rd else None

    assert dkim.verify(data, dnsfunc=dnsfunc)
    sig = data.split(b"\r\n\r\n")[0].decode()
    assert "a=rsa-sha256" in sig and "c=relaxed/relaxed" in sig
    for header in ("from", "to", "subject", "date", "message-id"):
        assert header in sig.lower().split("h=", 1)[1].split(";")[0]
    assert b"Subject: =?utf-8?" in data
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def test_mixed_internal_and_external_recipients(signed_mu, dns, capture):
    dns.mail_domain("mixed.example")
    name, token = sender(signed_mu)
    local = signed_mu.add_user()
    msg = signed_mu.send(token, f"{local}, carol@mixed.example", subject="mixed")
    assert credits(signed_mu, token) == 16
    assert signed_mu.inbox(signed_mu.token(local))["messages"][0]["subject"] == "mixed"
    wait_status(signed_mu, token, msg["id"], {"sent"})
    assert capture.for_rcpt("carol@mixed.example")


def test_not_enough_credits_402_nothing_queued(mu, dns):
    name, token = sender(mu, credits=3)
    resp = mu.http("POST", "/api/mail", token, {"to": "x@good.example", "subject": "s", "body": "b"})
    assert resp.status == 402 and "credits" in resp.json()["error"]
    assert credits(mu, token) == 3 and mu.inbox(token, folder="sent")["messages"] == []


def test_450_deferred_then_sent_on_retry(mu, dns, capture):
    dns.mail_domain("defer.example")
    capture.rcpt_rules["defer.example"] = ["450 4.2.0 Mailbox busy", "250 OK"]
    name, token = sender(mu)
    msg = mu.send(token, "dan@defer.example", subject="later")
    deferred = wait_status(mu, token, msg["id"], {"deferred"})
    assert "450" in deferred["status_detail"] and deferred["next_try"]
    wait_status(mu, token, msg["id"], {"sent"})
    assert capture.for_rcpt("dan@defer.example") and credits(mu, token) == 16


def test_550_fails_bounces_and_refunds(mu, dns, capture):
    dns.mail_domain("reject.example")
    capture.rcpt_rules["reject.example"] = ["550 5.1.1 No such user here"]
    name, token = sender(mu)
    msg = mu.send(token, "eve@reject.example", subject="doomed")
    failed = wait_status(mu, token, msg["id"], {"failed"})
    assert "550 5.1.1 No such user here" in failed["status_detail"]
    wait_for(lambda: credits(mu, token) == 20, message="refund")
    bounce = wait_for(lambda: [m for m in mu.inbox(token)["messages"] if m["kind"] == "bounce"])[0]
    assert bounce["from"].upper().startswith("MAILER-DAEMON@") and bounce["thread_id"] == msg["thread_id"]
    raw = mu.http("GET", f"/api/mail/{bounce['id']}/raw", token).text
    assert "multipart/report" in raw and "report-type=delivery-status" in raw
    assert "Final-Recipient: rfc822; eve@reject.example" in raw and "Status: 5.1.1" in raw


def test_null_mx_fails(mu, dns):
    dns.add("nullmx.example", "MX", (0, "."))
    name, token = sender(mu)
    msg = mu.send(token, "x@nullmx.example")
    failed = wait_status(mu, token, msg["id"], {"failed"})
    assert "null MX" in failed["status_detail"]


def test_no_mx_falls_back_to_a_record(mu, dns, capture):
    dns.add("amx.example", "A", "127.0.0.1")
    dns.add("amx.example", "TXT", "v=spf1 -all")
    name, token = sender(mu)
    msg = mu.send(token, "fran@amx.example")
    wait_status(mu, token, msg["id"], {"sent"})
    assert capture.for_rcpt("fran@amx.example")


def test_nonexistent_domain_fails(mu):
    name, token = sender(mu)
    msg = mu.send(token, "x@does-not-exist.example")
    failed = wait_status(mu, token, msg["id"], {"failed"})
    assert "does-not-exist.example does not exist" in failed["status_detail"]
    wait_for(lambda: credits(mu, token) == 20, message="refund")


def test_remote_hanging_after_data_is_deferred(mu, dns, capture):
    dns.mail_domain("hang.example")
    capture.data_delay["hang.example"] = 30
    name, token = sender(mu)
    msg = mu.send(token, "gil@hang.example")
    deferred = wait_status(mu, token, msg["id"], {"deferred"}, timeout=20)
    assert deferred["status_detail"]
    capture.data_delay.pop("hang.example")


def test_credits_never_negative_under_concurrent_sends(mu, dns):
    dns.mail_domain("race.example")
    name, token = sender(mu, credits=40)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda i: mu.http("POST", "/api/mail", token,
                                                   {"to": f"r{i}@race.example", "subject": "r", "body": "b"}).status,
                                 range(20)))
    assert statuses.count(201) == 10 and statuses.count(402) == 10
    assert credits(mu, token) == 0


def test_header_injection_is_neutralised(mu, dns, capture):
    dns.mail_domain("inject.example")
    name, token = sender(mu)
    msg = mu.send(token, "h@inject.example", subject="hi\r\nBcc: victim@evil.example")
    wait_status(mu, token, msg["id"], {"sent"})
    data = capture.for_rcpt("h@inject.example")[-1]["data"]
    assert b"\r\nBcc:" not in data.split(b"\r\n\r\n")[0]


def test_idn_and_invalid_domains(mu, dns):
    name, token = sender(mu)
    assert mu.http("POST", "/api/mail", token, {"to": "x@-bad-.example", "body": "b"}).status == 400
    msg = mu.send(token, "x@bücher.example")
    assert msg["to"] == ["x@xn--bcher-kva.example"]


def test_too_many_recipients_400(mu):
    name, token = sender(mu, credits=400)
    to = ",".join(f"r{i}@race.example" for i in range(51))
    resp = mu.http("POST", "/api/mail", token, {"to": to, "body": "b"})
    assert resp.status == 400 and credits(mu, token) == 400


def test_queue_survives_restart(make_mu, dns, capture):
    dns.mail_domain("later.example")
    capture.rcpt_rules["later.example"] = ["451 4.3.0 try later"]
    mu = make_mu(MAIL_RETRY_BASE_SECONDS="3600")
    name, token = sender(mu)
    msg = mu.send(token, "ivy@later.example")
    wait_status(mu, token, msg["id"], {"deferred"})
    mu.kill()
    capture.rcpt_rules["later.example"] = ["250 OK"]
    mu.start()
    admin = mu.add_user(admin=True)
    assert mu.http("GET", f"/api/mail/{msg['id']}", token).json()["status"] == "deferred"
    # An admin's "retry now" makes it due; it is delivered exactly once.
    resp = mu.http("GET", "/healthz")
    assert resp.json()["queue_depth"] == 1
    retry_via_admin_page(mu, admin)
    wait_status(mu, token, msg["id"], {"sent"})
    assert len(capture.for_rcpt("ivy@later.example")) == 1


def retry_via_admin_page(mu, admin):
    import http.cookiejar
    import re
    import urllib.request
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{mu.web_port}"
    page = opener.open(base + "/login").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    opener.open(base + "/login", data=f"csrf={csrf}&username={admin}&password=password1".encode())
    page = opener.open(base + "/admin/mail").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    opener.open(base + "/admin/mail/retry", data=f"csrf={csrf}".encode())


# ---------------------------------------------------------------- TLS, faults, retry discipline
#
# Each fault is injected at a dedicated MX (its own loopback address), and judged by what it
# does to that peer: connections in a window against what the retry schedule allows, and
# copies delivered. The shared `mu` retries after 0.3 s, 1.5 s, 4.5 s ... (MAIL_RETRY_BASE_SECONDS).

WINDOW_SECONDS = 3.0


def schedule_allows(seconds: float, base: float = 0.3) -> int:
    """Attempts the retry schedule makes within `seconds` of the first, plus one for timing."""
    at, attempts = 0.0, 1
    while True:
        at += retry_delay(attempts, base)
        if at > seconds:
            return attempts + 1
        attempts += 1


def watch_window(started: float, seconds: float = WINDOW_SECONDS) -> None:
    """Let a window of the peer's traffic pass (a rate is measured over time, not polled for)."""
    remaining = started + seconds - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def test_delivery_uses_starttls_with_the_mx_name_as_sni(mu, dns, capture):
    mx = capture.dedicated("tls.example", dns)
    name, token = sender(mu)
    msg = mu.send(token, "tia@tls.example")
    done = wait_status(mu, token, msg["id"], {"sent"})
    got = mx.messages()
    assert len(got) == 1 and got[0]["tls"] in ("TLSv1.2", "TLSv1.3")
    assert mx.sni == ["mx.tls.example"] and mx.connections() == 1
    assert done["status_detail"].startswith("250")
    line = next(l for l in mu.log_lines if "-> tia@tls.example" in l)
    assert f"via mx.tls.example, {got[0]['tls']} {got[0]['cipher']}: 250" in line


def test_every_capture_delivery_in_this_module_went_through_tls(mu, dns, capture):
    dns.mail_domain("alltls.example")
    name, token = sender(mu)
    msg = mu.send(token, "al@alltls.example")
    wait_status(mu, token, msg["id"], {"sent"})
    assert capture.for_rcpt("al@alltls.example")[0]["tls"]
    assert all(m["tls"] for m in capture.messages if m["mx"].starttls == "offer")


def test_tls_handshake_failure_falls_back_to_cleartext_on_a_new_connection(mu, dns, capture):
    mx = capture.dedicated("badtls.example", dns)
    mx.starttls = "fail"
    name, token = sender(mu)
    msg = mu.send(token, "bo@badtls.example")
    done = wait_status(mu, token, msg["id"], {"sent"})
    assert done["status_detail"].startswith("250")
    got = mx.messages()
    assert len(got) == 1 and got[0]["tls"] is None
    assert mx.connections() == 2            # the failed handshake, then cleartext
    log = mu.log()
    assert "TLS with mx.badtls.example[" in log and "trying again without TLS" in log
    assert "-> bo@badtls.example via mx.badtls.example, no TLS (handshake failed: " in log


def test_tls_failure_then_4xx_defers_on_the_retry_schedule(mu, dns, capture):
    mx = capture.dedicated("badtls451.example", dns)
    mx.starttls = "fail"
    capture.rcpt_rules["badtls451.example"] = ["451 4.3.0 greylisted"]
    name, token = sender(mu)
    started = time.monotonic()
    msg = mu.send(token, "cy@badtls451.example")
    deferred = wait_status(mu, token, msg["id"], {"deferred"})
    assert deferred["status_detail"] == "451 4.3.0 greylisted"
    watch_window(started)
    # Two connections an attempt (TLS, then cleartext), never more than the schedule allows.
    assert mx.connections(started, started + WINDOW_SECONDS) <= 2 * schedule_allows(WINDOW_SECONDS)
    assert mx.messages() == []


def test_connection_lost_mid_data_defers_on_schedule_then_delivers_once(mu, dns, capture):
    mx = capture.dedicated("dropdata.example", dns)
    mx.drop_in_data = True
    name, token = sender(mu)
    started = time.monotonic()
    msg = mu.send(token, "kim@dropdata.example")
    deferred = wait_status(mu, token, msg["id"], {"deferred"})
    assert "lost connection with mx.dropdata.example[" in deferred["status_detail"]
    watch_window(started)
    assert 1 <= mx.connections(started, started + WINDOW_SECONDS) <= schedule_allows(WINDOW_SECONDS)
    mx.drop_in_data = False
    wait_status(mu, token, msg["id"], {"sent"}, timeout=30)
    assert len(mx.messages()) == 1 and credits(mu, token) == 16


def test_451_after_data_defers_then_554_fails_bounces_and_refunds(mu, dns, capture):
    mx = capture.dedicated("datareply.example", dns)
    capture.data_rules["datareply.example"] = ["451 4.7.1 try again", "554 5.7.1 Message refused"]
    name, token = sender(mu)
    msg = mu.send(token, "dee@datareply.example", subject="refused")
    assert "451 4.7.1" in wait_status(mu, token, msg["id"], {"deferred"})["status_detail"]
    failed = wait_status(mu, token, msg["id"], {"failed"})
    assert failed["status_detail"] == "554 5.7.1 Message refused"
    wait_for(lambda: credits(mu, token) == 20, message="refund")
    bounce = wait_for(lambda: [m for m in mu.inbox(token)["messages"] if m["kind"] == "bounce"])[0]
    raw = mu.http("GET", f"/api/mail/{bounce['id']}/raw", token).text
    assert "Status: 5.7.1" in raw and "Remote-MTA: dns; mx.datareply.example" in raw
    assert "Diagnostic-Code: smtp; 554 5.7.1 Message refused" in raw
    assert mx.connections() == 2 and mx.messages() == []


def test_dkim_signing_failure_defers_without_connecting_then_sends_signed(make_mu, dns, capture):
    mx = capture.dedicated("signfail.example", dns)
    mu = make_mu()
    key_path = os.path.join(mu.home, "keys", "dkim.key")
    os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
    with open(key_path, "wb") as f:
        f.write(too_small_rsa_key())     # parses, but no RSA signature fits in it
    name, token = sender(mu)
    started = time.monotonic()
    msg = mu.send(token, "sig@signfail.example")
    deferred = wait_status(mu, token, msg["id"], {"deferred"})
    assert deferred["status_detail"].startswith("DKIM signing failed")
    watch_window(started)
    assert mx.connections() == 0 and mx.messages() == []
    attempts = sum("delivery deferred: " in l and "sig@signfail.example" in l for l in mu.log_lines)
    assert 1 <= attempts <= schedule_allows(WINDOW_SECONDS)
    subprocess.run(["openssl", "genrsa", "-out", key_path + ".new", "2048"], check=True, capture_output=True)
    os.replace(key_path + ".new", key_path)
    wait_status(mu, token, msg["id"], {"sent"}, timeout=30)
    assert len(mx.messages()) == 1 and mx.messages()[0]["data"].startswith(b"DKIM-Signature:")


def test_unreadable_queued_message_defers_on_schedule_instead_of_looping(make_mu, dns, capture):
    mx = capture.dedicated("lostblob.example", dns)
    capture.rcpt_rules["lostblob.example"] = ["451 4.3.0 not yet"]
    mu = make_mu()
    name, token = sender(mu)
    msg = mu.send(token, "bea@lostblob.example")
    wait_status(mu, token, msg["id"], {"deferred"})
    for pack in os.listdir(os.path.join(mu.home, "blobs")):   # the raw message is gone
        os.truncate(os.path.join(mu.home, "blobs", pack), 0)   # (the server holds packs open)
    before, started = mx.connections(), time.monotonic()
    wait_for(lambda: "cannot prepare the queued message" in
             mu.http("GET", f"/api/mail/{msg['id']}", token).json()["status_detail"], message="the error")
    watch_window(started)
    attempts = sum("delivery deferred: " in l and "cannot prepare" in l for l in mu.log_lines)
    assert 1 <= attempts <= schedule_allows(WINDOW_SECONDS)
    assert mx.connections() == before        # nothing to send: no connection opened


# Sends through the API; while mu/addr.py still refuses UTF-8 local parts (its character class
# reads `~-\u0080` as a range), the same Mailbox.send runs in a CLI process with an RFC 6531
# dot-atom in its place, so the queue, not the address check, is what these tests exercise.
_UTF8_SEND = """
import json, re, sys
sys.path.insert(0, sys.argv[1])
from mu import addr, config
from mu.app import App
atext = r"[^\\x00-\\x20\\x7f()<>\\[\\]:;@\\\\,.\\"]+"
addr._DOT_ATOM = re.compile(rf"^{atext}(\\.{atext})*$")
print(json.dumps(App(config.load()).mailbox.send(sys.argv[2], sys.argv[3], sys.argv[4], "hi there")))
"""


def send_utf8(mu, token, name, to, subject="hello"):
    import json
    import sys
    resp = mu.http("POST", "/api/mail", token, {"to": to, "subject": subject, "body": "hi there"})
    if resp.status == 201:
        return resp.json()
    assert resp.status == 400 and "invalid local part" in resp.json()["error"], resp.text
    out = subprocess.run([sys.executable, "-c", _UTF8_SEND, ROOT, name, to, subject], env=mu.env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_smtputf8_recipient_is_sent_with_the_smtputf8_parameter(mu, dns, capture):
    mx = capture.dedicated("utf8.example", dns)
    name, token = sender(mu)
    msg = send_utf8(mu, token, name, "jörg@utf8.example", subject="Grüße")
    assert msg["to"] == ["jörg@utf8.example"]
    wait_status(mu, token, msg["id"], {"sent"})
    got = mx.messages()[0]
    assert got["rcpts"] == ["jörg@utf8.example"] and "SMTPUTF8" in got["mail_options"]
    headers = got["data"].split(b"\r\n\r\n", 1)[0]
    assert "\r\nTo: jörg@utf8.example\r\n".encode() in headers      # RFC 6532, not encoded words
    assert b"Subject: =?utf-8?" in headers


def test_smtputf8_recipient_without_remote_support_fails_5_6_7_at_once_and_refunds(mu, dns, capture):
    mx = capture.dedicated("ascii-only.example", dns)
    mx.smtputf8 = False
    name, token = sender(mu)
    started = time.monotonic()
    msg = send_utf8(mu, token, name, "zoë@ascii-only.example")
    failed = wait_status(mu, token, msg["id"], {"failed"})
    assert failed["status_detail"].startswith("5.6.7 mx.ascii-only.example does not offer SMTPUTF8")
    wait_for(lambda: credits(mu, token) == 20, message="refund")
    bounce = wait_for(lambda: [m for m in mu.inbox(token)["messages"] if m["kind"] == "bounce"])[0]
    raw = mu.http("GET", f"/api/mail/{bounce['id']}/raw", token).text
    assert "Status: 5.6.7" in raw and "Final-Recipient: utf-8; zo\\x{EB}@ascii-only.example" in raw
    watch_window(started)
    assert mx.connections() == 1 and mx.messages() == []


def test_outbound_date_is_utc_with_plus_0000(mu, dns, capture):
    import email
    import email.policy
    mx = capture.dedicated("date.example", dns)
    name, token = sender(mu)
    msg = mu.send(token, "dot@date.example")
    wait_status(mu, token, msg["id"], {"sent"})
    parsed = email.message_from_bytes(mx.messages()[0]["data"], policy=email.policy.default)
    assert parsed["Date"].endswith(" +0000")       # RFC 5322 §3.3: "-0000" means zone unknown
    sent_at = datetime.datetime.fromisoformat(msg["created_at"])
    assert abs((parsed["Date"].datetime - sent_at).total_seconds()) < 2


def test_bounce_arrival_date_is_when_the_message_was_queued(mu, dns, capture):
    capture.dedicated("late.example", dns)
    capture.rcpt_rules["late.example"] = ["451 4.2.0 busy", "451 4.2.0 busy", "550 5.1.1 gone"]
    name, token = sender(mu)
    msg = mu.send(token, "lou@late.example")
    wait_status(mu, token, msg["id"], {"failed"}, timeout=30)
    bounce = wait_for(lambda: [m for m in mu.inbox(token)["messages"] if m["kind"] == "bounce"])[0]
    raw = mu.http("GET", f"/api/mail/{bounce['id']}/raw", token).text
    fields = dict(line.split(": ", 1) for line in raw.split("\r\n") if line.startswith(("Arrival-Date", "Last-Attempt")))
    arrival = email_date(fields["Arrival-Date"])
    assert abs((arrival - datetime.datetime.fromisoformat(msg["created_at"])).total_seconds()) < 1
    assert (email_date(fields["Last-Attempt-Date"]) - arrival).total_seconds() >= 1   # two retries: 1.8 s


def email_date(text: str) -> datetime.datetime:
    import email.utils
    return email.utils.parsedate_to_datetime(text)


def queued_as_earlier_mu_wrote_it(home: str, user: str, credits: int, rcpts: list, seq: int) -> str:
    """Write the files of a store in format 1 (as a mu before the mailbox model wrote them,
    see tests/data/store-v1), holding `user` charged 4 credits for a message queued to `rcpts`;
    the server upgrades it when it starts. Called again, it adds to the same store."""
    import base64
    import json
    os.makedirs(os.path.join(home, "blobs"), mode=0o700, exist_ok=True)
    snapshot, journal = os.path.join(home, "mail.json"), os.path.join(home, "mail.journal")
    if not os.path.exists(snapshot):
        with open(snapshot, "w") as f:
            json.dump({"format": "mu-store-1", "seq": 0, "state": {
                "users": {}, "tokens": {}, "sessions": {}, "messages": {}, "queue": {}}}, f)
    with open(journal, "a+") as f:
        f.seek(0)
        last = [json.loads(line) for line in f.read().splitlines() if line.strip()]
    next_seq = (last[-1]["seq"] if last else 0) + 1
    msg_id, now = f"{seq:016x}beef", time.time()
    raw = (f"From: {user} <{user}@mu.test>\r\nTo: {', '.join(rcpts)}\r\nSubject: from before\r\n"
           f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{seq}@mu.test>\r\n\r\nhello\r\n").encode()
    pack = os.path.join(home, "blobs", "000001.jsonl")
    offset = os.path.getsize(pack) if os.path.exists(pack) else 0
    line = b'"' + base64.b64encode(raw) + b'"\n'
    with open(pack, "ab") as f:
        f.write(line)
    records = []
    if not any(r.get("op") == "user.put" and r.get("name") == user for r in last):
        records.append({"op": "user.put", "name": user,
                        "fields": {"credits": credits, "role": "user", "pw": {}, "created_at": now}})
    records += [
        {"op": "user.credit", "name": user, "delta": -4},
        {"op": "msg.add", "msg": {
            "id": msg_id, "kind": "outbound", "from": user, "from_addr": f"{user}@mu.test",
            "from_name": user, "to": rcpts, "subject": "from before",
            "created_at": now, "message_id": f"<{seq}@mu.test>", "thread_id": msg_id,
            "in_reply_to": "", "references": [], "attachments": [], "snippet": "hello", "body": "hello",
            "raw_blob": f"000001:{offset}:{len(line)}", "status": "queued", "status_detail": "", "charged": 4,
            "delivery": {r: {"status": "queued", "detail": ""} for r in rcpts},
            "boxes": {user: {"folder": "sent", "read": True}}}},
        {"op": "queue.put", "id": f"{seq:016x}cafe", "entry": {
            "msg": msg_id, "sender": user, "from_addr": f"{user}@mu.test",
            "domain": rcpts[0].rpartition("@")[2], "rcpts": rcpts, "attempts": 0,
            "created_at": now, "next_try": now, "status": "queued", "detail": ""}},
    ]
    with open(journal, "a") as f:
        for i, record in enumerate(records):
            f.write(json.dumps(dict(record, seq=next_seq + i)) + "\n")
    return msg_id


def test_queue_entry_written_by_earlier_mu_still_delivers(tmp_path, mu_env, dns, capture):
    from conftest import Mu
    mx = capture.dedicated("oldformat.example", dns)
    home = str(tmp_path / "home")
    msg_id = queued_as_earlier_mu_wrote_it(home, "old", 6, ["ola@oldformat.example"], 1)
    server = Mu(home, mu_env).start()
    try:
        token = server.token("old")
        wait_status(server, token, msg_id, {"sent"})
        assert mx.messages()[0]["data"].endswith(b"\r\n\r\nhello\r\n")
        assert server.http("GET", "/healthz").json()["queue_depth"] == 0 and credits(server, token) == 2
    finally:
        server.stop()


def test_malformed_address_at_evil_test_fails_once_and_never_loops(tmp_path, mu_env, dns, capture):
    """An address no SMTP command can carry (a C1 control in it), queued by a mu that let it
    through, fails at once (5.1.3) with a refund: no connection storm, none after a restart,
    and the domain's other mail still goes out."""
    from conftest import Mu
    mx = capture.dedicated("evil.test", dns)
    home = str(tmp_path / "home")
    bad = queued_as_earlier_mu_wrote_it(home, "eve", 4, ["a\u0080b@evil.test"], 1)
    good = queued_as_earlier_mu_wrote_it(home, "eve", 4, ["fine@evil.test"], 2)
    started = time.monotonic()
    server = Mu(home, mu_env).start()
    try:
        token = server.token("eve")
        failed = wait_status(server, token, bad, {"failed"})
        assert failed["status_detail"].startswith("5.1.3 control character")
        wait_status(server, token, good, {"sent"})
        assert credits(server, token) == 4 - 8 + 4           # the failed one refunded
        assert "delivery failed: eve@mu.test -> a\\x{80}b@evil.test" in server.log()   # escaped in the log
        assert "\u0080" not in server.log()
        watch_window(started)
        assert mx.connections() == 1 and [m["rcpts"] for m in mx.messages()] == [["fine@evil.test"]]
        server.restart()
        watch_window(time.monotonic())
        assert mx.connections() == 1 and server.http("GET", "/healthz").json()["queue_depth"] == 0
    finally:
        server.stop()


def too_small_rsa_key() -> bytes:
    """A well-formed PKCS#1 RSA key with a 216-bit modulus: too small for any signature."""
    def der_len(n):
        return bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")

    def der_int(n):
        b = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")
        return b"\x02" + der_len(len(b)) + b
    p, q, e = 2 ** 127 - 1, 2 ** 89 - 1, 65537     # two Mersenne primes
    d = pow(e, -1, (p - 1) * (q - 1))
    body = b"".join(der_int(x) for x in (0, p * q, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p)))
    der = b"\x30" + der_len(len(body)) + body
    return b"-----BEGIN RSA PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PRIVATE KEY-----\n"


# ---------------------------------------------------------------- a full disk

class MuOnSmallDisk:
    """mu with MU_HOME on a small tmpfs of its own, mounted in a private mount namespace
    (`unshare -m`), so a test can fill that disk while the server runs; the CLI and the
    filling run inside the same namespace (`nsenter -m`)."""

    def __init__(self, home: str, env: dict, size: str = "8m"):
        from conftest import Mu
        self.mu = Mu(home, env)
        self.size = size

    def __getattr__(self, name):
        return getattr(self.mu, name)

    def start(self):
        import sys
        mu = self.mu
        os.makedirs(mu.home, exist_ok=True)
        script = f'mount -t tmpfs -o size={self.size},mode=0700 mu-test "$MU_HOME" && exec "$@"'
        mu.log_lines = []
        mu.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
             sys.executable, os.path.join(ROOT, "mu.py"), "--serve", "--address", f"127.0.0.1:{mu.web_port}"],
            env=mu.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        threading.Thread(target=mu._pump, args=(mu.proc,), daemon=True).start()
        wait_for(lambda: mu.proc.poll() is not None or any("web: Listening on" in l for l in mu.log_lines),
                 timeout=20, message="mu to start")
        if mu.proc.poll() is not None:
            raise RuntimeError("mu exited: " + mu.log())
        return self

    def inside(self, *command, check=True, input=None):
        return subprocess.run(["nsenter", "-t", str(self.mu.proc.pid), "-m", "--", *command], env=self.mu.env,
                              input=input, capture_output=True, text=True, cwd=ROOT, timeout=60, check=check)

    def cli(self, *args, input: str = None, check: bool = True):
        import sys
        return self.inside(sys.executable, os.path.join(ROOT, "mu.py"), *args, input=input, check=check)

    def add_user(self, credits=0):
        from conftest import unique
        name = unique()
        self.cli("users", "add", name, "--credits", str(credits), input="password1\n")
        return name

    def token(self, name):
        return self.cli("users", "token", name).stdout.strip()

    def fill_disk(self, leave_bytes: int = 0):
        """Fill MU_HOME's disk, leaving about `leave_bytes` free (whole pages)."""
        self.inside("sh", "-c", f'head -c {leave_bytes} /dev/zero > "$MU_HOME/.spare"; '
                                'cat /dev/zero > "$MU_HOME/.filler" 2>/dev/null; rm "$MU_HOME/.spare"')

    def free_disk(self):
        self.inside("rm", "-f", os.path.join(self.mu.home, ".filler"))


@pytest.fixture
def small_disk_mu(tmp_path, mu_env):
    import shutil
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs root and util-linux unshare/nsenter for a private tmpfs")
    started = []

    def make(**env):
        server = MuOnSmallDisk(str(tmp_path / f"home{len(started)}"), dict(mu_env, **env)).start()
        started.append(server)
        return server
    yield make
    for server in started:
        server.stop()


def test_disk_full_after_the_remote_accepted_never_sends_again(small_disk_mu, dns, capture):
    mx = capture.dedicated("diskfull.example", dns)
    mx.hold_data = threading.Event()
    # A long reply for each of 20 recipients: the outcome's record is larger than the free
    # end of the journal's last page, so it needs disk the filled tmpfs does not have.
    accepted = "250 2.0.0 Accepted " + "as queue id 0123456789abcdef; " * 14
    capture.data_rules["diskfull.example"] = [accepted.strip()]
    mu = small_disk_mu(MAIL_OUTBOUND_TIMEOUT="30")
    name, token = sender(mu)
    msg = mu.send(token, ", ".join(f"lee{i:02d}@diskfull.example" for i in range(20)))
    wait_for(mx.data_waiting.is_set, message="mu in DATA")
    mu.fill_disk()
    mx.hold_data.set()                          # the remote says 250; mu cannot write that down
    wait_for(lambda: "could not record the outcome of delivery" in mu.log() or len(mx.messages()) > 1,
             message="the held outcome")
    started = time.monotonic()
    watch_window(started, 3.0)                  # past a rewrite attempt (every 2 s), disk still full
    assert len(mx.messages()) == 1 and mx.connections() == 1
    mu.free_disk()
    done = wait_status(mu, token, msg["id"], {"sent"}, timeout=30)
    assert done["status_detail"] == accepted.strip()
    assert "recorded the outcome of delivery" in mu.log()
    assert len(mx.messages()) == 1 and mx.connections() == 1
    assert mu.http("GET", "/healthz").json()["queue_depth"] == 0


def test_bounce_is_written_in_the_same_commit_as_the_failure(small_disk_mu, dns, capture):
    """Room on the disk for the failure alone, not for failure and bounce: the failure must
    not be recorded without its bounce (once there is room, both are)."""
    mx = capture.dedicated("bigbounce.example", dns)
    mx.hold_data = threading.Event()
    capture.data_rules["bigbounce.example"] = ["554 5.7.1 " + "refused by local policy; " * 16]
    mu = small_disk_mu(MAIL_OUTBOUND_TIMEOUT="30")
    name, token = sender(mu)
    rcpts = [f"rcpt{i:02d}@bigbounce.example" for i in range(50)]
    msg = mu.send(token, ", ".join(rcpts), subject="s" * 900)
    wait_for(mx.data_waiting.is_set, message="mu in DATA")
    mu.fill_disk(leave_bytes=64 * 1024)
    mx.hold_data.set()
    wait_for(lambda: "could not record the outcome" in mu.log() or "could not store bounce" in mu.log(),
             message="a write that did not fit")
    mu.free_disk()
    failed = wait_status(mu, token, msg["id"], {"failed"}, timeout=30)
    assert failed["status_detail"].startswith("554 5.7.1 refused by local policy")
    bounces = wait_for(lambda: [m for m in mu.inbox(token)["messages"] if m["kind"] == "bounce"], timeout=15,
                       message="the bounce")
    assert len(bounces) == 1 and credits(mu, token) == 20
    raw = mu.http("GET", f"/api/mail/{bounces[0]['id']}/raw", token).text
    assert raw.count("Action: failed") == 50


# ---------------------------------------------------------------- the records and the chores

def test_refund_only_when_every_external_recipient_failed():
    from mu.outbox import refund_records
    msg = {"charged": 4}
    failed, sent, deferred = ({"status": s, "detail": ""} for s in ("failed", "sent", "deferred"))
    assert refund_records(msg, {"a@x": failed, "b@y": failed}, "al") == [
        {"op": "user.credit", "name": "al", "delta": 4}]
    assert refund_records(msg, {"a@x": failed, "b@y": sent}, "al") == []       # someone got it
    assert refund_records(msg, {"a@x": failed, "b@y": deferred}, "al") == []   # not over yet
    assert refund_records(dict(msg, refunded=True), {"a@x": failed}, "al") == []
    assert refund_records({"charged": 0}, {"a@x": failed}, "al") == []


def test_store_chores_compact_on_a_thread_of_their_own(tmp_path):
    import threading as threads
    from mu import store as store_mod
    from mu.chores import StoreChores
    from mu.store import Store
    store = Store(str(tmp_path / "home"))
    filler = "x" * (1 << 20)
    store.commit(lambda state, refs: ([{"op": "user.put", "name": f"u{i}", "fields": {"note": filler}}
                                       for i in range(34)], None))
    assert store.journal_bytes() > store_mod.COMPACT_MIN_JOURNAL_BYTES
    chores = StoreChores(store, interval_seconds=0.05)
    chores.start()
    try:
        wait_for(lambda: store.journal_bytes() == 0, message="compaction")
        assert chores.name == "store-chores" and chores in threads.enumerate()
    finally:
        chores.stop()
    assert not chores.is_alive()
    with Store(str(tmp_path / "home")).reading() as state:
        assert len(state.users) == 34
