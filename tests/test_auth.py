"""SPF, DKIM and DMARC on received mail, against records served by the fake DNS: results
recorded, failures never in the way of storage, DMARC policy applied."""

import re
import smtplib
import subprocess
import threading
import time

import dkim
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import FakeDNS, unique, wait_for
from receiving import Receiver

from mu.auth import dmarc, spf as spf_auth
from mu.dnsresolver import Resolver
from mu.smtp import replies as R


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


@pytest.fixture
def site(tmp_path, dns):
    """In-process receiver with the real pct sampling (pct=100 always applies, pct=0 never)."""
    receiver = Receiver(tmp_path, dns)
    receiver.add_user("alice")
    return receiver


def deliver(mu, rcpt, sender, data: bytes, folder: str = "inbox"):
    name, token = rcpt
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.sendmail(sender, [f"{name}@mu.test"], data)
    msg = mu.inbox(token, folder=folder)["messages"][0]
    raw = mu.http("GET", f"/api/mail/{msg['id']}/raw", token).text
    return msg, raw


def auth_results(raw: str) -> str:
    """mu's Authentication-Results field, unfolded."""
    match = re.search(r"^Authentication-Results: .*?(?=\r\n\S)", raw, re.S | re.M)
    return re.sub(r"\r\n[ \t]+", " ", match.group(0))


# RFC 8601 §2.2: pvalue = value (token / quoted-string) / [[local-part] "@"] domain-name
_PVALUE = r'(?:"(?:[^"\\\r\n]|\\.)*"(?:@[^\s;()"\\]+)?|[^\s;()"\\]+)'


def assert_grammatical(field: str):
    """Every property of the field is `ptype.property=pvalue` followed by a separator."""
    for match in re.finditer(r"\b(smtp\.mailfrom|smtp\.helo|header\.d|header\.from)=", field):
        rest = field[match.end():]
        value = re.match(_PVALUE + r"(?=;|\s|$)", rest)
        assert value, f"bad pvalue after {match.group(0)!r} in {field!r}"


# ---------------------------------------------------------------- SPF

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


def test_spf_explanation_with_a_newline_cannot_forge_a_log_line(mu, dns, rcpt):
    domain = unique("exp") + ".example"
    dns.add(domain, "TXT", f"v=spf1 ip4:192.0.2.1 exp=why.{domain} -all")
    dns.add("why." + domain, "TXT", "denied\nsmtp: Rejected blocked sender: forged@victim.example (IP: 6.6.6.6)")
    msg, raw = deliver(mu, rcpt, f"a@{domain}", f"From: a@{domain}\r\nSubject: exp\r\n\r\nx\r\n".encode())
    assert msg["auth"]["spf"] == "fail"
    wait_for(lambda: f"SPF fail for a@{domain}" in mu.log(), message="the SPF log line")
    lines = mu.log().splitlines()
    assert not any(line.startswith("smtp: Rejected blocked sender: forged@victim.example") for line in lines)
    spf_line = next(line for line in lines if f"SPF fail for a@{domain}" in line)
    assert "denied\\x0asmtp: Rejected" in spf_line
    received_spf = re.search(r"^Received-SPF: .*$", raw, re.M).group(0)
    assert "smtp: Rejected" in received_spf   # the comment kept, on the header's own line


def test_spf_resolver_is_the_callers_own(tmp_path):
    """Two checkers, two DNS servers that answer differently for one domain, checking at the
    same time on many threads: each sees only its own resolver's answers."""
    first, second = FakeDNS(), FakeDNS()
    try:
        first.add("shared.example", "TXT", "v=spf1 ip4:127.0.0.1 -all")
        second.add("shared.example", "TXT", "v=spf1 ip4:192.0.2.1 -all")
        checkers = {"pass": spf_auth.Checker(Resolver(("127.0.0.1", first.port), 2)),
                    "fail": spf_auth.Checker(Resolver(("127.0.0.1", second.port), 2))}
        seen, errors = [], []

        def run(expected):
            try:
                for i in range(20):
                    # a new sender each time, so the result cache is not what answers
                    result, _ = checkers[expected].check("127.0.0.1", f"u{i}@shared.example", "helo.example")
                    seen.append((expected, result))
            except Exception as exc:   # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(kind,)) for kind in ("pass", "fail") * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert len(seen) == 120 and all(expected == result for expected, result in seen)
    finally:
        first.stop()
        second.stop()


def test_dns_admin_page_does_not_swap_the_servers_resolver(tmp_path, dns):
    """Opening /admin/dns runs the doctor's checks with a resolver of its own; the receiver
    keeps asking its own DNS server."""
    other = FakeDNS()
    try:
        domain = unique("swap") + ".example"
        dns.add(domain, "TXT", "v=spf1 ip4:127.0.0.1 -all")
        other.add(domain, "TXT", "v=spf1 ip4:192.0.2.1 -all")
        site = Receiver(tmp_path, dns)
        from mu.doctor import checks
        checks(site.config, Resolver(("127.0.0.1", other.port), 1))
        assert site.policy.spf.check("127.0.0.1", f"a@{domain}", "h.example")[0] == "pass"
    finally:
        other.stop()


# ---------------------------------------------------------------- DKIM

def signed(key, domain, body=b"hello\r\n", selector=b"s1", extra_headers=b""):
    data = (f"From: Alice <alice@{domain}>\r\nTo: someone@mu.test\r\nSubject: signed\r\n"
            f"Message-ID: <{unique()}@{domain}>\r\n").encode() + extra_headers + b"\r\n" + body
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
    assert f"dkim=pass header.d={domain}" in raw
    assert f"dmarc=pass (p=reject dis=none) header.from={domain}" in raw


def test_dkim_fail_when_body_altered_and_dmarc_fail(mu, dns, rcpt, signing_key):
    key, pub = signing_key
    domain = unique("dk") + ".example"
    dns.add("s1._domainkey." + domain, "TXT", f"v=DKIM1; k=rsa; p={pub}")
    dns.add("_dmarc." + domain, "TXT", "v=DMARC1; p=quarantine")
    dns.add(domain, "TXT", "v=spf1 ip4:192.0.2.1 -all")
    data = signed(key, domain).replace(b"hello", b"HELLO")
    msg, raw = deliver(mu, rcpt, f"bounce@{domain}", data, folder="Junk")   # p=quarantine: to Junk
    assert msg["auth"]["dkim"] == "fail" and msg["auth"]["dmarc"] == "fail"
    assert msg["auth"]["dmarc_policy"] == "quarantine"
    assert "dkim=fail" in raw and "dmarc=fail (p=quarantine dis=quarantine)" in raw


def test_dkim_permerror_when_key_is_missing(site, signing_key):
    """RFC 6376 §6.1.2: no key record is PERMFAIL, RFC 8601's permerror, not fail."""
    key, _ = signing_key
    domain = unique("nokey") + ".example"
    assert site.send(f"a@{domain}", "alice@mu.test", signed(key, domain)).code == 250
    assert site.inbox("alice")[0]["auth"]["dkim"] == "permerror"


def test_dkim_permerror_when_key_record_is_malformed(site, dns, signing_key):
    key, _ = signing_key
    domain = unique("badkey") + ".example"
    dns.add("s1._domainkey." + domain, "TXT", "v=DKIM1; k=rsa; p=notbase64!!")
    assert site.send(f"a@{domain}", "alice@mu.test", signed(key, domain)).code == 250
    assert site.inbox("alice")[0]["auth"]["dkim"] == "permerror"


def test_dkim_temperror_when_the_key_lookup_fails(site, dns, signing_key):
    """RFC 6376 §6.1.2: a DNS failure is TEMPFAIL, temperror; the message is still stored."""
    key, _ = signing_key
    domain = unique("slowkey") + ".example"
    dns.delay["s1._domainkey." + domain + "."] = 3   # longer than MAIL_DNS_TIMEOUT
    reply = site.send(f"a@{domain}", "alice@mu.test", signed(key, domain))
    assert reply.code == 250
    assert site.inbox("alice")[0]["auth"]["dkim"] == "temperror"


def test_each_signature_has_its_result_and_one_pass_makes_the_summary_pass(site, dns, signing_key):
    key, pub = signing_key
    good, missing = unique("good") + ".example", unique("gone") + ".example"
    dns.add("s1._domainkey." + good, "TXT", f"v=DKIM1; k=rsa; p={pub}")
    data = signed(key, good)
    data = dkim.sign(data, b"s1", missing.encode(), key, include_headers=[b"From", b"Subject"]) + data
    assert site.send(f"a@{good}", "alice@mu.test", data).code == 250
    msg = site.inbox("alice")[0]
    assert msg["auth"]["dkim"] == "pass" and msg["auth"]["dkim_domains"] == [missing, good]
    field = auth_results(msg["raw"])
    assert f"dkim=permerror header.d={missing}; dkim=pass header.d={good};" in field


@pytest.mark.parametrize("signature", [
    b"DKIM-Signature: garbage\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s1; h=from; bh=!!; b=\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=a\\999.com; s=s1; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=\xff\xfe; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s1; h=from; bh=AAAA; b=AAAA; x=1\r\n",
])
def test_dkim_malformed_signature_is_permerror_and_stored(site, signature):
    data = signature + b"From: a@x.example\r\nSubject: s\r\n\r\nbody\r\n"
    assert site.send("a@x.example", "alice@mu.test", data).code == 250
    assert site.inbox("alice")[0]["auth"]["dkim"] == "permerror"


def test_authentication_results_values_from_the_message_are_sanitised(site):
    data = (b'DKIM-Signature: v=1; a=rsa-sha256; d=evil"\tdkim=pass (x; s=s1; h=from; bh=AAAA; b=AAAA\r\n'
            b"From: a@x.example\r\nSubject: s\r\n\r\nbody\r\n")
    assert site.send('"we;ird\\"x"@x.example', "alice@mu.test", data).code == 250
    raw = site.inbox("alice")[0]["raw"]
    field = auth_results(raw)
    assert_grammatical(field)
    assert 'header.d="evil\\"dkim=pass (x"' in field
    assert re.sub(r'"(?:[^"\\]|\\.)*"', '""', field).count("dkim=") == 1   # one result, whatever d= said
    assert 'smtp.mailfrom="we;ird\\"x"@x.example' in field


# ---------------------------------------------------------------- never in the way of storage

def test_from_with_a_bad_escape_is_stored_not_451(mu, rcpt):
    """`From: x@a\\999.com` made the DMARC look-up raise and DATA answer 451 forever."""
    name, token = rcpt
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.ehlo("client.example")
        s.mail("sender@ok.example")
        s.rcpt(f"{name}@mu.test")
        code, text = s.data(b"From: x@a\\999.com\r\nSubject: odd from\r\n\r\nbody\r\n")
    assert code == 250, text
    msg = mu.inbox(token)["messages"][0]
    assert msg["subject"] == "odd from" and msg["auth"]["dmarc"] == "permerror"


@pytest.mark.parametrize("from_header", [
    b"From: x@a\\999.com", b"From: x@" + b"a" * 70 + b".com", b"From: x@-bad-.com", b"From: undisclosed",
    b"From: x@[300.1.1.1]", b"From: a@b.example, c@\xff\xfe.example", b"From: =?utf-8?q?x?= <x@a..b>",
    b"From: x@" + ".".join(["a" * 63] * 5).encode(), b"From:", b"From: " + b"a" * 9000 + b"@x.example",
])
def test_odd_from_headers_are_stored_with_a_dmarc_error(site, from_header):
    assert site.send("s@ok.example", "alice@mu.test", from_header + b"\r\nSubject: odd\r\n\r\nbody\r\n").code == 250
    assert site.inbox("alice")[0]["auth"]["dmarc"] in ("permerror", "none")


def test_an_unexpected_error_inside_authentication_still_stores_the_message(site):
    class Broken:
        def check(self, *args, **kwargs):
            raise RuntimeError("bug\r\nsmtp: forged")

    site.policy.spf = Broken()
    log = []
    reply = site.send("a@x.example", "alice@mu.test", b"From: a@x.example\r\nSubject: s\r\n\r\nx\r\n", log=log)
    assert reply.code == 250
    msg = site.inbox("alice")[0]
    assert msg["auth"]["spf"] == "permerror" and msg["auth"]["dmarc"] == "permerror"
    assert msg["raw"].startswith("Received: from client.test ([127.0.0.1])")
    assert [line for line in log if "failed unexpectedly" in line] and not any(l.startswith("smtp: forged") for l in log)


def test_incoming_authentication_results_claiming_mu_are_removed(site):
    forged = (b"Authentication-Results: mu.test; dkim=pass header.d=bank.example\r\n"
              b"Authentication-Results: (comment) MU.TEST 1;\r\n\tspf=pass\r\n"
              b"Authentication-Results: relay.example; spf=pass smtp.mailfrom=a@x.example\r\n"
              b"From: a@x.example\r\nSubject: forged\r\n\r\n"
              b"Authentication-Results: mu.test; this line is body text\r\n")
    assert site.send("a@x.example", "alice@mu.test", forged).code == 250
    raw = site.inbox("alice")[0]["raw"]
    fields = re.findall(r"^Authentication-Results: (\S+)", raw, re.M)
    assert fields == ["mu.test;", "relay.example;", "mu.test;"]   # mine, theirs, the body line
    assert "header.d=bank.example" not in raw and "MU.TEST 1" not in raw
    assert raw.endswith("Authentication-Results: mu.test; this line is body text\r\n")


def test_received_carries_the_ipv6_tag_for_an_ipv6_peer(site):
    assert site.send("a@x.example", "alice@mu.test", b"Subject: v6\r\n\r\nx\r\n", peer_ip="2001:db8::5").code == 250
    raw = site.inbox("alice")[0]["raw"]
    assert raw.startswith("Received: from client.test ([IPv6:2001:db8::5])\r\n")
    assert 'client-ip="2001:db8::5";' in raw


def test_received_over_ipv6_loopback_live(mu, rcpt):
    name, token = rcpt
    try:
        s = smtplib.SMTP("::1", mu.smtp_port, timeout=10)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with s:
        s.sendmail("a@v6.example", [f"{name}@mu.test"], b"Subject: over v6\r\n\r\nx\r\n")
    msg = mu.inbox(token)["messages"][0]
    raw = mu.http("GET", f"/api/mail/{msg['id']}/raw", token).text
    assert "([IPv6:::1])" in raw.split("\r\n")[0]


def test_helo_that_is_no_domain_never_reaches_received_raw(site):
    assert site.send("a@x.example", "alice@mu.test", b"Subject: h\r\n\r\nx\r\n", helo="evil;(x)\"y").code == 250
    raw = site.inbox("alice")[0]["raw"]
    assert raw.startswith("Received: from unknown ([127.0.0.1])")
    assert 'helo="evil;(x)\\"y";' in raw


# ---------------------------------------------------------------- DMARC applied

def dmarc_domain(dns, record, spf_ok=False):
    domain = unique("dm") + ".example"
    dns.add("_dmarc." + domain, "TXT", record)
    dns.add(domain, "TXT", "v=spf1 ip4:127.0.0.1 -all" if spf_ok else "v=spf1 ip4:192.0.2.1 -all")
    return domain


def message_from(domain):
    return f"From: Someone <someone@{domain}>\r\nSubject: dmarc\r\n\r\nbody\r\n".encode()


def test_dmarc_reject_refused_550_at_end_of_data(mu, dns, rcpt):
    domain = dmarc_domain(dns, "v=DMARC1; p=reject")
    name, token = rcpt
    before = len(mu.inbox(token)["messages"])
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.ehlo("client.example")
        s.mail(f"someone@{domain}")
        s.rcpt(f"{name}@mu.test")
        code, text = s.data(message_from(domain))
    assert (code, text.split()[0]) == (550, b"5.7.1")
    assert domain.encode() in text
    assert len(mu.inbox(token)["messages"]) == before
    wait_for(lambda: "DMARC reject" in mu.log() and domain in mu.log(), message="the DMARC reject log line")


def test_dmarc_reject_is_not_applied_when_aligned_spf_passes(site, dns):
    domain = dmarc_domain(dns, "v=DMARC1; p=reject", spf_ok=True)
    assert site.send(f"someone@{domain}", "alice@mu.test", message_from(domain)).code == 250
    assert site.inbox("alice")[0]["auth"]["dmarc"] == "pass"


def test_dmarc_temperror_never_rejects(site, dns):
    domain = unique("dmslow") + ".example"
    dns.add(domain, "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.delay["_dmarc." + domain + "."] = 3
    assert site.send(f"someone@{domain}", "alice@mu.test", message_from(domain)).code == 250
    auth = site.inbox("alice")[0]["auth"]
    assert auth["dmarc"] == "temperror" and auth["dmarc_disposition"] == "none"


def test_dmarc_quarantine_is_marked_on_the_stored_message(site, dns):
    domain = dmarc_domain(dns, "v=DMARC1; p=quarantine")
    assert site.send(f"someone@{domain}", "alice@mu.test", message_from(domain)).code == 250
    auth = site.inbox("alice", "Junk")[0]["auth"]
    assert auth["dmarc"] == "fail" and auth["dmarc_disposition"] == "quarantine"
    assert site.inbox("alice") == []   # quarantined mail goes to Junk, not INBOX


def test_dmarc_pct_0_applies_the_next_weaker_policy(site, dns):
    """RFC 7489 §6.6.4: a failing message outside the sample gets quarantine, not reject."""
    domain = dmarc_domain(dns, "v=DMARC1; p=reject; pct=0")
    for _ in range(5):
        assert site.send(f"someone@{domain}", "alice@mu.test", message_from(domain)).code == 250
    assert [m["auth"]["dmarc_disposition"] for m in site.inbox("alice", "Junk")] == ["quarantine"] * 5
    quarantine = dmarc_domain(dns, "v=DMARC1; p=quarantine; pct=0")
    assert site.send(f"someone@{quarantine}", "alice@mu.test", message_from(quarantine)).code == 250
    assert site.inbox("alice")[0]["auth"]["dmarc_disposition"] == "none"


def test_dmarc_pct_100_always_rejects(site, dns):
    domain = dmarc_domain(dns, "v=DMARC1; p=reject; pct=100")
    for _ in range(5):
        reply = site.send(f"someone@{domain}", "alice@mu.test", message_from(domain))
        assert (reply.code, reply.enhanced) == (550, "5.7.1")
    assert site.inbox("alice") == []


def test_dmarc_pct_samples_the_stated_share():
    record = dmarc.Record({"v": "DMARC1", "p": "reject", "pct": "30"}, False)
    rejected = sum(dmarc._evaluate_one("x.example", "fail", "x.example", [], _StaticResolver(record), dmarc._sampled)
                   .disposition == "reject" for _ in range(2000))
    assert 450 < rejected < 750


class _StaticResolver:
    """Answers every _dmarc TXT query with one record (for the sampling arithmetic only)."""

    def __init__(self, record):
        self.text = "; ".join(f"{k}={v}" for k, v in record.tags.items())

    def txt(self, name):
        return [self.text]


def test_dmarc_sp_applies_to_subdomains_found_at_the_organizational_domain(site, dns):
    org = unique("org") + ".example"
    dns.add("_dmarc." + org, "TXT", "v=DMARC1; p=none; sp=reject")
    dns.add("mail." + org, "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add(org, "TXT", "v=spf1 ip4:192.0.2.1 -all")
    reply = site.send(f"a@mail.{org}", "alice@mu.test", message_from("mail." + org))
    assert reply.code == 550
    assert site.send(f"a@{org}", "alice@mu.test", message_from(org)).code == 250   # p=none for the domain itself
    # A subdomain with its own record: its p= applies, not the parent's sp=.
    dns.add("_dmarc.own." + org, "TXT", "v=DMARC1; p=quarantine")
    assert site.send(f"a@own.{org}", "alice@mu.test", message_from("own." + org)).code == 250
    assert site.inbox("alice", "Junk")[0]["auth"]["dmarc_disposition"] == "quarantine"


def test_dmarc_organizational_domain_comes_from_the_public_suffix_list(site, dns):
    """duckdns.org is a public suffix (the list's private section): x.duckdns.org and
    y.duckdns.org are different organizations, so SPF for one does not align with the other."""
    x, y = unique("x") + ".duckdns.org", unique("y") + ".duckdns.org"
    dns.add("_dmarc." + x, "TXT", "v=DMARC1; p=reject")
    dns.add(y, "TXT", "v=spf1 ip4:127.0.0.1 -all")
    reply = site.send(f"a@{y}", "alice@mu.test", message_from(x))
    assert reply.code == 550
    assert dmarc.organizational_domain("mail.shop.example.co.uk") == "example.co.uk"
    assert dmarc.organizational_domain("a.b.x.duckdns.org") == "x.duckdns.org"
    assert dmarc.organizational_domain("co.uk") == "co.uk"


def test_dmarc_relaxed_alignment_within_one_organization(site, dns):
    org = unique("rel") + ".co.uk"
    dns.add("_dmarc." + org, "TXT", "v=DMARC1; p=reject")
    dns.add("bounces." + org, "TXT", "v=spf1 ip4:127.0.0.1 -all")
    assert site.send(f"b@bounces.{org}", "alice@mu.test", message_from(org)).code == 250
    assert site.inbox("alice")[0]["auth"]["dmarc"] == "pass"
    dns.records[("_dmarc." + org + ".", "TXT")] = []
    dns.add("_dmarc." + org, "TXT", "v=DMARC1; p=reject; aspf=s")
    site.app.resolver._cache.clear()
    assert site.send(f"b@bounces.{org}", "alice@mu.test", message_from(org)).code == 550


def test_dmarc_with_several_from_domains_applies_the_strictest(site, dns):
    """RFC 7489 §6.6.1: each From domain is checked; a failing p=reject anywhere rejects."""
    lax = dmarc_domain(dns, "v=DMARC1; p=none")
    strict = dmarc_domain(dns, "v=DMARC1; p=reject")
    data = f"From: a@{lax}, b@{strict}\r\nSender: a@{lax}\r\nSubject: two\r\n\r\nx\r\n".encode()
    assert site.send(f"a@{lax}", "alice@mu.test", data).code == 550


def test_dmarc_record_that_is_not_v_dmarc1_first_is_ignored(site, dns):
    domain = dmarc_domain(dns, "p=reject; v=DMARC1")
    assert site.send(f"someone@{domain}", "alice@mu.test", message_from(domain)).code == 250
    assert site.inbox("alice")[0]["auth"]["dmarc"] == "none"


def test_many_slow_from_domains_cost_at_most_the_auth_timeout(tmp_path, dns):
    """Each From domain costs DMARC look-ups; past MAIL_AUTH_TIMEOUT the rest are temperror,
    so ten domains whose DNS never answers hold the session for seconds, not ten timeouts."""
    site = Receiver(tmp_path, dns, MAIL_DNS_TIMEOUT="1", MAIL_AUTH_TIMEOUT="1.5")
    site.add_user("alice")
    domains = [unique("slow") + ".example" for _ in range(10)]
    for domain in domains:
        dns.delay["_dmarc." + domain + "."] = 3
    data = ("From: " + ", ".join(f"a@{d}" for d in domains) + "\r\nSubject: slow\r\n\r\nx\r\n").encode()
    started = time.monotonic()
    assert site.send("a@fast.example", "alice@mu.test", data).code == 250
    assert time.monotonic() - started < 6
    assert site.inbox("alice")[0]["auth"]["dmarc"] == "temperror"


_phrase = st.lists(st.sampled_from(list("Ab z.,;:<>@\"\\()=?-_'") + ["=?utf-8?q?J=C3=B6rg?="]), max_size=12).map("".join)
_mailbox = st.sampled_from(["a@b.example", "x.y+z@mail.example.org", "o'neil@x-y.example", "a@b", "a..b@c.example",
                            "@x.example", "a@", "a@[1.2.3.4]"])


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(_mailbox, st.builds(lambda p, m, a, b: f"{a}{p}{b}<{m}>", _phrase, _mailbox,
                                     st.sampled_from(["", " ", '"']), st.sampled_from(["", " ", '"', "\t"])),
                 st.builds(lambda p, m: p + m, _phrase, _mailbox)))
def test_from_fast_path_reads_the_address_getaddresses_reads(value):
    import email.utils
    if dmarc._SIMPLE_FROM.match(value):
        assert dmarc._addresses([value]) == [a for _n, a in email.utils.getaddresses([value])], value


# ---------------------------------------------------------------- property: DATA answers 250 or a deliberate 5xx

DELIBERATE = {(R.DMARC_REJECTED.code, R.DMARC_REJECTED.enhanced), (R.EMPTY_MESSAGE.code, R.EMPTY_MESSAGE.enhanced)}

_domains = st.sampled_from(["x.example", "a\\999.com", "-x-.example", "bücher.example", "xn--zz.example",
                            "[127.0.0.1]", "[IPv6:::1]", "a..b", "", "reject.fuzz.example", "duck.duckdns.org",
                            "a" * 64 + ".example", "x.example.", "quarantine.fuzz.example"])
_locals = st.sampled_from(["a", "jörg", '"a b"', '"a\\"b"', "a+tag", "", "a\x7f", "a\u0080b", ".a", "a;b", "\u2028",
                           '"', "a" * 70, "x\r\ny"])
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["\r\n", "\r\n\t", "\\", '"', "(", ")", ";", "=?utf-8?q?=FF?=", "<>", ",", "@", "\x00", "\ud800"])
_header_value = st.one_of(
    st.builds(lambda l, d: f"{l}@{d}", _locals, _domains),
    st.builds(lambda n, l, d: f"{n} <{l}@{d}>", _text, _locals, _domains),
    st.lists(st.builds(lambda l, d: f"{l}@{d}", _locals, _domains), min_size=2, max_size=4).map(", ".join),
    _text)
_dkim_value = st.one_of(
    _text,
    st.builds(lambda d, s, rest: f"v=1; a=rsa-sha256; d={d}; s={s}; h=from:to; bh=AAAA; b=AAAA{rest}",
              _domains, _text, _text))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(from_values=st.lists(_header_value, max_size=2), sender_values=st.lists(_header_value, max_size=1),
       signatures=st.lists(_dkim_value, max_size=2), envelope=st.builds(lambda l, d: f"{l}@{d}", _locals, _domains),
       helo=st.one_of(_domains, _text), smtputf8=st.booleans())
def test_no_header_or_envelope_value_makes_data_answer_other_than_250_or_a_deliberate_5xx(
        fuzz_site, from_values, sender_values, signatures, envelope, helo, smtputf8):
    header = "".join(f"From: {v}\r\n" for v in from_values) + "".join(f"Sender: {v}\r\n" for v in sender_values)
    header += "".join(f"DKIM-Signature: {v}\r\n" for v in signatures)
    data = header.encode("utf-8", "surrogatepass") + b"Subject: fuzz\r\n\r\nbody\r\n"
    helo = helo.replace("\r", "").replace("\n", "").strip() or "h"
    replies = fuzz_site.dialog([f"EHLO {helo}", f"MAIL FROM:<{envelope}>" + (" SMTPUTF8" if smtputf8 else ""),
                                "RCPT TO:<alice@mu.test>", "DATA"], data)
    if len(replies) < 5 or replies[4].code != 354:
        for reply in replies[2:]:   # refused before DATA: a 5xx syntax answer, never a 4xx
            assert reply.code < 400 or reply.code >= 500, reply
        return
    final = replies[-1]
    assert final.code == 250 or (final.code, final.enhanced) in DELIBERATE, final


@pytest.fixture(scope="module")
def fuzz_site(tmp_path_factory, dns):
    dns.add("_dmarc.reject.fuzz.example", "TXT", "v=DMARC1; p=reject")
    dns.add("_dmarc.quarantine.fuzz.example", "TXT", "v=DMARC1; p=quarantine; sp=reject")
    dns.add("_dmarc.duck.duckdns.org", "TXT", "v=DMARC1; p=reject")
    site = Receiver(tmp_path_factory.mktemp("fuzz"), dns, MAIL_RATE_MESSAGES="1000000",
                    MAIL_RATE_CONNECTIONS="1000000")
    site.add_user("alice")
    return site
