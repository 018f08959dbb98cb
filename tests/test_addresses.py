"""Address syntax (mu/addr.py) against the RFC 5321 §4.1.2 / RFC 6531 §3.3 grammar, and
UTF-8 addresses end to end: SMTPUTF8 in MAIL and RCPT, external recipients in the API."""

import re
import smtplib
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from inproc import InProcess
from receiving import Receiver

from mu import addr
from mu.smtp import replies as R

# ---------------------------------------------------------------- the grammar, written out again
#
# Written from the RFCs independently of mu/addr.py, over a small alphabet whose characters'
# standing is known: a few letters RFC 6531 allows, and characters that are never text.

ALLOWED_NON_ASCII = "öяé中Ü"          # UTF8-non-ascii that mu accepts (letters)
NEVER = ["\x00", "\x01", "\t", "\r", "\n", "\x1f", "\x7f", "\x80", "\x85", "\x9f", "\u2028", "\u2029", "\ud800",
         "\udfff", "\u202e", "\ufeff"]
_ATEXT = "A-Za-z0-9" + re.escape("!#$%&'*+-/=?^_`{|}~") + ALLOWED_NON_ASCII
_DOT_STRING = f"[{_ATEXT}]+(?:\\.[{_ATEXT}]+)*"                           # RFC 5321 Dot-string
_QUOTED = f'"(?:[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e{ALLOWED_NON_ASCII}\u00a0]|\\\\[\\x20-\\x7e])*"'   # Quoted-string
_LOCAL = re.compile(f"(?:{_DOT_STRING}|{_QUOTED})")
_LDH = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")             # sub-domain = Let-dig [Ldh-str]


def a_label(label: str):
    """The A-label of a sub-domain of our alphabet, or None if it is not one (RFC 5890)."""
    if label.isascii():
        return label.lower() if _LDH.fullmatch(label) else None
    if not re.fullmatch(r"[A-Za-z0-9" + ALLOWED_NON_ASCII + "ü-]+", label):
        return None
    if label[0] == "-" or label[-1] == "-" or label[2:4] == "--":
        return None
    return "xn--" + unicodedata.normalize("NFC", label.lower()).encode("punycode").decode()


def oracle(address: str):
    """(local, A-label domain) if `address` is a Mailbox by the grammar and limits, else None."""
    local, sep, domain = address.rpartition("@")
    if not sep or not _LOCAL.fullmatch(local) or len(local.encode()) > 64:
        return None
    labels = [a_label(label) for label in domain.split(".")]
    if None in labels or any(len(label) > 63 for label in labels):
        return None
    ascii_domain = ".".join(labels)
    if len(ascii_domain) > 255 or len(local.encode()) + 1 + len(ascii_domain) > 254:
        return None
    return local, ascii_domain


_local_chars = st.sampled_from(list("abzAZ09!#$%&'*+-/=?^_`{|}~.\"\\ @(),:;<>[]") + list(ALLOWED_NON_ASCII) + ["\u00a0"])
_domain_chars = st.sampled_from(list("ab0-.Z") + ["ü", "中", "Ü", "_", " ", "@", "\\"])
_atoms = st.text(alphabet=st.sampled_from(list("az09!#$%&'*+-/=?^_`{|}~") + list(ALLOWED_NON_ASCII)), min_size=1, max_size=12)
_qcontent = st.lists(st.sampled_from(list(' !#az[]~@,;."') + ["\\\\", '\\"', "\\a", "ö", "\u00a0"]),
                     max_size=10).map("".join)
_labels = st.text(alphabet=st.sampled_from(list("ab09") + ["ü", "中"]), min_size=1, max_size=10)


def _join_labels(parts, hyphen):
    return ".".join(p if not hyphen else p[:1] + "-" + p[1:] for p in parts)


_likely_valid = st.builds(
    lambda local, labels, hyphen: f"{local}@{_join_labels(labels, hyphen)}",
    st.one_of(st.lists(_atoms, min_size=1, max_size=4).map(".".join), _qcontent.map(lambda q: f'"{q}"')),
    st.lists(_labels, min_size=1, max_size=4), st.booleans())
_anything = st.builds(lambda l, d: f"{l}@{d}", st.text(alphabet=_local_chars, max_size=20),
                      st.text(alphabet=_domain_chars, max_size=20))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(_likely_valid, _anything, st.text(alphabet=_local_chars, max_size=30)))
def test_parse_agrees_with_the_rfc_5321_and_6531_grammar(address):
    expected = oracle(address)
    try:
        got = addr.parse(address)
    except addr.AddressError:
        got = None
    assert got == expected, address


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(_likely_valid, st.sampled_from(NEVER), st.integers(0, 200))
def test_controls_separators_and_surrogates_are_never_accepted(address, char, position):
    at = position % (len(address) + 1)
    assert not addr.is_address(address[:at] + char + address[at:])


@pytest.mark.parametrize("address", ["a\x7f@x.test", "a\u0080b@evil.test", "a\u0085@x.test", "jörg\u2028@x.test",
                                     '"a\u2029"@x.test', "\ud800@x.test", "a@x.test\u2028", "a@x\u0080.test",
                                     "a@[IPv6:1.2.3.4]", "a@[300.1.1.1]", "a@x.", "a\\b@x.test"])
def test_character_class_slip_no_longer_admits_these(address):
    """`~-\\u0080` in the atext class was a range, letting in DEL, C1 controls and more."""
    assert not addr.is_address(address)


def test_utf8_and_idn_addresses_parse_to_a_labels():
    assert addr.parse("jörg@sender.test") == ("jörg", "sender.test")
    assert addr.parse("Jörg@Bücher.Test") == ("Jörg", "xn--bcher-kva.test")
    assert addr.parse("a@faß.de") == ("a", "xn--fa-hia.de")   # IDNA2008: ß is itself, not ss
    assert addr.parse("a@[IPv6:2001:DB8::1]") == ("a", "[IPv6:2001:db8::1]")
    assert addr.parse('"a b"@x.test') == ('"a b"', "x.test")


def test_mailbox_key_is_one_spelling_per_mailbox():
    key = addr.mailbox_key("spammer@bad.test")
    for spelling in ['"spammer"@bad.test', "spammer+x@bad.test", "SPAMMER@BAD.TEST", '"sp\\am\\mer"@bad.test',
                     '"Spammer+tag"@Bad.Test']:
        assert addr.mailbox_key(spelling) == key, spelling
    assert addr.mailbox_key('"john doe"@x.test') == '"john doe"@x.test'
    assert addr.mailbox_key("jörg@bücher.test") == "jörg@xn--bcher-kva.test"
    assert addr.mailbox_key("Jo\u0308rg@x.test") == addr.mailbox_key("jörg@x.test")   # NFC


# ---------------------------------------------------------------- SMTPUTF8 (RFC 6531)

@pytest.fixture
def site(tmp_path, dns):
    receiver = Receiver(tmp_path, dns)
    receiver.add_user("alice")
    return receiver


def test_utf8_sender_with_smtputf8_is_accepted_and_kept_intact(site):
    replies = site.dialog(["EHLO client.test", "MAIL FROM:<jörg@sender.test> SMTPUTF8", "RCPT TO:<alice@mu.test>",
                           "DATA"], "From: Jörg <jörg@sender.test>\r\nSubject: grüße\r\n\r\nhallo\r\n".encode())
    assert [r.code for r in replies] == [220, 250, 250, 250, 354, 250]
    msg = site.inbox("alice")[0]
    assert msg["envelope_from"] == "jörg@sender.test"
    assert "with UTF8SMTP" in msg["raw"] and 'envelope-from="jörg@sender.test"' in msg["raw"]


def test_idn_sender_domain_with_smtputf8_is_accepted(site):
    replies = site.dialog(["EHLO client.test", "MAIL FROM:<info@bücher.test> SMTPUTF8"])
    assert replies[-1].code == 250


def test_utf8_local_part_without_smtputf8_is_553_5_6_7(site):
    for command in ["MAIL FROM:<jörg@sender.test>", "MAIL FROM:<a@bücher.test>"]:
        reply = site.dialog(["EHLO client.test", command])[-1]
        assert (reply.code, reply.enhanced) == (553, "5.6.7"), command
    reply = site.dialog(["EHLO client.test", "MAIL FROM:<a@x.test>", "RCPT TO:<ålice@mu.test>"])[-1]
    assert (reply.code, reply.enhanced) == (553, "5.6.7")


def test_utf8_recipient_with_smtputf8_is_looked_up_not_refused_as_syntax(site):
    reply = site.dialog(["EHLO client.test", "MAIL FROM:<a@x.test> SMTPUTF8", "RCPT TO:<jörg@mu.test>"])[-1]
    assert reply is R.USER_NOT_FOUND


@pytest.mark.parametrize("address", ["a\x7f@x.test", "a\u0080b@evil.test", "a\u2028@x.test", "a@x\u2029.test",
                                     "a\u202eb@x.test"])
def test_controls_in_mail_from_are_501(site, address):
    reply = site.dialog(["EHLO client.test", f"MAIL FROM:<{address}> SMTPUTF8"])[-1]
    assert reply is R.SYNTAX_ADDRESS


def test_smtputf8_sender_accepted_by_the_live_server(mu):
    """Postfix bounced this: MAIL FROM:<jörg@sender.test> SMTPUTF8 got 501 5.1.7."""
    name = mu.add_user()
    token = mu.token(name)
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.ehlo("client.test")
        assert s.has_extn("smtputf8")
        code, _ = s.mail("jörg@sender.test", ["SMTPUTF8"])
        assert code == 250
        assert s.rcpt(f"{name}@mu.test")[0] == 250
        assert s.data("Subject: utf8\r\n\r\nhallo\r\n".encode())[0] == 250
    assert mu.inbox(token)["messages"][0]["from"] == "jörg@sender.test"


# ---------------------------------------------------------------- the API's external recipients

@pytest.fixture
def web(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice", credits=100)
    site.alice = site.token("alice")
    return site


def queued(site) -> list:
    with site.app.store.reading() as state:
        return sorted(r for entry in state.queue.values() for r in entry["rcpts"])


def test_api_utf8_external_recipient_reaches_the_queue_intact(web):
    resp = web.web.request("POST", "/api/mail", token=web.alice,
                           json_body={"to": "jörg@bücher.example, \"a b\"@x.example", "subject": "s", "body": "b"})
    assert resp.status == 201, resp.text
    assert queued(web) == ['"a b"@x.example', "jörg@xn--bcher-kva.example"]


@pytest.mark.parametrize("to", ["a\u0080b@evil.test", "x@a\\999.com", "jö rg@x.test", "a@x.example\u2028",
                                "a\x7f@x.test", "\ud800@x.test", "a@-x.example", "a..b@x.example", "a@x..example"])
def test_api_malformed_recipient_is_400_and_nothing_is_queued(web, to):
    resp = web.web.request("POST", "/api/mail", token=web.alice, json_body={"to": to, "subject": "s", "body": "b"})
    assert resp.status == 400 and "error" in resp.json(), resp.text
    assert queued(web) == []
    with web.app.store.reading() as state:
        assert state.users["alice"]["credits"] == 100


def test_quoted_local_part_of_a_local_user_delivers_to_that_user(site):
    """RFC 5322 §3.2.4: `"alice"` is `alice`, as `alice+tag` is (the contract's subaddressing)."""
    for rcpt in ['"alice"', '"ali\\ce"', '"alice+tag"', "ALICE"]:
        reply = site.dialog(["EHLO client.test", "MAIL FROM:<a@x.test>", f"RCPT TO:<{rcpt}@mu.test>"])[-1]
        assert reply is R.RECIPIENT_OK, rcpt
