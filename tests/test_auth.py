"""SPF, DKIM and DMARC on received mail, against records served by the fake DNS."""

import smtplib
import subprocess

import dkim
import pytest

from conftest import unique, wait_for


@pytest.fixture(scope="module")
def rcpt(mu):
    name = mu.add_user()
    return name, mu.token(name)


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    path = tmp_path_factory.mktemp("k") / "key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(path), "-pubout"], check=True, capture_output=True,
                         text=True).stdout
    return path.read_bytes(), "".join(l for l in pub.splitlines() if "-----" not in l)


def deliver(mu, rcpt, sender, data: bytes):
    name, token = rcpt
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.sendmail(sender, [f"{name}@mu.test"], data)
    msg = mu.inbox(token)["messages"][0]
    raw = mu.http("GET", f"/api/mail/{msg['id']}/raw", token).text
    return msg, raw


@pytest.mark.parametrize("record,expected", [
    ("v=spf1 ip4:127.0.0.1 -all", "pass"),
    ("v=spf1 ip4:192.0.2.1 -all", "fail"),
    ("v=spf1 ip4:192.0.2.1 ~all", "softfail"),
    ("v=spf1 include:_spf.{d} -all", "pass"),
    ("v=spf1 redirect=_spf.{d}", "pass"),
])
def test_spf_results_recorded_never_rejected(mu, dns, rcpt, record, expected):
    domain = unique("spf") + ".example"
    dns.add(domain, "TXT", record.format(d=domain))
    dns.add("_spf." + domain, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    msg, raw = deliver(mu, rcpt, f"someone@{domain}", f"From: someone@{domain}\r\nSubject: spf\r\n\r\nx\r\n".encode())
    assert msg["auth"]["spf"] == expected
    assert f"Received-SPF: {expected} " in raw
    assert f"spf={expected} smtp.mailfrom=someone@{domain}" in raw


def test_spf_none_without_record(mu, rcpt):
    msg, raw = deliver(mu, rcpt, "x@no-spf-here.example", b"Subject: none\r\n\r\nx\r\n")
    assert msg["auth"]["spf"] == "none"


def signed(key, domain, body=b"hello\r\n", selector=b"s1"):
    data = (f"From: Alice <alice@{domain}>\r\nTo: someone@mu.test\r\nSubject: signed\r\n"
            f"Message-ID: <{unique()}@{domain}>\r\n\r\n").encode() + body
    sig = dkim.sign(data, selector, domain.encode(), key, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"From", b"To", b"Subject", b"Message-ID"])
    return sig + data


def test_dkim_pass_and_dmarc_pass(mu, dns, rcpt, signing_key):
    key, pub = signing_key
    domain = unique("dk") + ".example"
    dns.add("s1._domainkey." + domain, "TXT", f"v=DKIM1; k=rsa; p={pub}")
    dns.add("_dmarc." + domain, "TXT", "v=DMARC1; p=reject")
    msg, raw = deliver(mu, rcpt, f"bounce@{domain}", signed(key, domain))
    assert msg["auth"]["dkim"] == "pass" and msg["auth"]["dmarc"] == "pass"
    assert f"dkim=pass header.d={domain}" in raw and f"dmarc=pass (p=reject) header.from={domain}" in raw


def test_dkim_fail_when_body_altered_and_dmarc_fail(mu, dns, rcpt, signing_key):
    key, pub = signing_key
    domain = unique("dk") + ".example"
    dns.add("s1._domainkey." + domain, "TXT", f"v=DKIM1; k=rsa; p={pub}")
    dns.add("_dmarc." + domain, "TXT", "v=DMARC1; p=quarantine")
    dns.add(domain, "TXT", "v=spf1 ip4:192.0.2.1 -all")
    data = signed(key, domain).replace(b"hello", b"HELLO")
    msg, raw = deliver(mu, rcpt, f"bounce@{domain}", data)
    assert msg["auth"]["dkim"] == "fail" and msg["auth"]["dmarc"] == "fail"
    assert msg["auth"]["dmarc_policy"] == "quarantine"
    assert "dkim=fail" in raw and "dmarc=fail (p=quarantine)" in raw


def test_dkim_fail_when_key_is_missing(mu, dns, rcpt, signing_key):
    key, _ = signing_key
    domain = unique("nokey") + ".example"
    msg, _raw = deliver(mu, rcpt, f"a@{domain}", signed(key, domain))
    assert msg["auth"]["dkim"] == "fail"


def test_dmarc_passes_on_aligned_spf_alone(mu, dns, rcpt):
    domain = unique("al") + ".example"
    dns.add(domain, "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns.add("_dmarc." + domain, "TXT", "v=DMARC1; p=none")
    msg, _ = deliver(mu, rcpt, f"a@{domain}", f"From: a@{domain}\r\nSubject: x\r\n\r\ny\r\n".encode())
    assert msg["auth"]["spf"] == "pass" and msg["auth"]["dmarc"] == "pass"


def test_spf_result_follows_a_changed_record_once_its_ttl_ends(mu, dns, rcpt):
    """Repeated senders reuse an SPF result only while the DNS answers behind it are
    cached (the fake DNS serves a 1-second TTL)."""
    domain = unique("spfttl") + ".example"
    dns.add(domain, "TXT", "v=spf1 ip4:127.0.0.1 -all")
    data = f"From: a@{domain}\r\nSubject: ttl\r\n\r\nx\r\n".encode()
    assert deliver(mu, rcpt, f"a@{domain}", data)[0]["auth"]["spf"] == "pass"
    assert deliver(mu, rcpt, f"a@{domain}", data)[0]["auth"]["spf"] == "pass"
    dns.records[(domain + ".", "TXT")] = []
    dns.add(domain, "TXT", "v=spf1 ip4:192.0.2.1 -all")
    wait_for(lambda: deliver(mu, rcpt, f"a@{domain}", data)[0]["auth"]["spf"] == "fail", timeout=10,
             message="the new SPF record to be used")
