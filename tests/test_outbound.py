"""Outbound delivery to a capture MX found through the fake DNS: DKIM, retries, bounces, credits."""

import concurrent.futures
import os
import subprocess

import dkim
import pytest

from conftest import ROOT, wait_for


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
