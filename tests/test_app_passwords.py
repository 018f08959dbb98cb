"""App passwords and the one login every mail client uses (`Accounts.authenticate_client`):
the CLI, the web settings page (in process), revocation at once, the shared throttles."""

import os
import re

import pytest

from inproc import InProcess
from mu.accounts import LoginThrottled
from test_accounts_web import cli, csrf_of, login

APP_PASSWORD = re.compile(r"[a-km-np-z2-9]{5}(?:-[a-km-np-z2-9]{5}){3}")


@pytest.fixture
def site(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    site.add_user("bob")
    return site


def journal(home) -> bytes:
    path = os.path.join(home, "mail.journal")
    return open(path, "rb").read() if os.path.exists(path) else b""


# ---------------------------------------------------------------- the CLI

def test_users_app_password_prints_one_line_lists_and_revokes(tmp_path):
    home = tmp_path / "home"
    cli(home, "users", "add", "alice", input="pw\n")
    out = cli(home, "users", "app-password", "alice", "--label", "Alice's phone")
    assert out.returncode == 0 and APP_PASSWORD.fullmatch(out.stdout.rstrip("\n")) and out.stdout.count("\n") == 1
    phone = out.stdout.strip()
    laptop = cli(home, "users", "app-password", "alice").stdout.strip()   # no label: device-1
    listing = cli(home, "users", "app-password", "alice", "--list").stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in listing] == ["Alice's phone", "device-1"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ never .+", line) for line in listing), listing
    assert phone not in "".join(listing) and laptop not in "".join(listing)
    site = InProcess(tmp_path)
    assert site.app.accounts.authenticate_client("alice", phone, "192.0.2.1")["credential"] == "app-password:Alice's phone"
    out = cli(home, "users", "app-password", "alice", "--revoke", "alice's PHONE")
    assert out.returncode == 0 and out.stdout == "revoked app password Alice's phone of alice\n"
    assert site.app.accounts.authenticate_client("alice", phone, "192.0.2.1") is None   # at once
    assert site.app.accounts.authenticate_client("alice", laptop, "192.0.2.1") is not None
    assert "--revoke" in cli(home, "users", "app-password", "--help").stdout


@pytest.mark.parametrize("args", [("ghost",), ("alice", "--revoke", "nothing"), ("alice", "--label", "device-1"),
                                  ("alice", "--label", ""), ("alice", "--label", "x" * 65),
                                  ("alice", "--label", "tab\there"), ("alice", "--list", "--label", "x"),
                                  ("alice", "--list", "--revoke", "device-1")])
def test_users_app_password_bad_arguments_exit_2_and_write_nothing(tmp_path, args):
    home = tmp_path / "home"
    cli(home, "users", "add", "alice", input="pw\n")
    cli(home, "users", "app-password", "alice")
    before = journal(home)
    out = cli(home, "users", "app-password", *args)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2   # argparse's usage line, then one error line
    assert journal(home) == before


# ---------------------------------------------------------------- the settings page

def test_settings_page_creates_an_app_password_shown_once(site):
    login(site, "alice")
    page = site.web.request("GET", "/settings")
    assert "App passwords" in page.text and "No app passwords yet" in page.text
    assert "port 1587 (this server has no TLS certificate" in page.text   # where apps send, and how
    assert '<label for="app-password-label">Device</label>' in page.text
    resp = site.web.request("POST", "/settings/app-passwords", form={"csrf": csrf_of(page), "label": "Phone"})
    assert resp.status == 201 and resp.headers["cache-control"] == "no-store"
    (password,) = APP_PASSWORD.findall(resp.text)
    user = site.app.accounts.authenticate_client("alice@mu.test", password, "192.0.2.1")
    assert user["name"] == "alice"
    again = site.web.request("GET", "/settings")
    assert password not in again.text and "Phone" in again.text and "Revoke app password Phone" in again.text
    assert login(site, "alice", password).status == 401   # the web takes the account password only


def test_settings_app_password_needs_the_csrf_token(site):
    login(site, "alice")
    resp = site.web.request("POST", "/settings/app-passwords", form={"label": "Phone"})
    assert resp.status == 403 and site.app.accounts.app_passwords("alice") == []
    resp = site.web.request("POST", "/settings/app-passwords/revoke", form={"label": "Phone"})
    assert resp.status == 403


def test_settings_revokes_an_app_password_at_once(site):
    _label, password = site.app.accounts.create_app_password("alice", "Phone")
    login(site, "alice")
    page = site.web.request("GET", "/settings")
    resp = site.web.request("POST", "/settings/app-passwords/revoke", form={"csrf": csrf_of(page), "label": "Phone"})
    assert resp.status == 303 and "revoked" in resp.headers["location"]
    assert site.app.accounts.authenticate_client("alice", password, "192.0.2.1") is None
    assert site.app.accounts.app_passwords("alice") == []


def test_settings_refuses_a_label_in_use_and_anothers_label(site):
    site.app.accounts.create_app_password("alice", "Phone")
    login(site, "alice")
    page = site.web.request("GET", "/settings")
    resp = site.web.request("POST", "/settings/app-passwords", form={"csrf": csrf_of(page), "label": "phone"})
    assert resp.status == 400 and "already has an app password" in resp.text and not APP_PASSWORD.search(resp.text)
    site.web.cookies.clear()
    login(site, "bob")
    page = site.web.request("GET", "/settings")
    resp = site.web.request("POST", "/settings/app-passwords/revoke", form={"csrf": csrf_of(page), "label": "Phone"})
    assert resp.status == 404 and len(site.app.accounts.app_passwords("alice")) == 1


# ---------------------------------------------------------------- authenticate_client

def test_client_login_takes_the_name_or_address_and_either_password(site):
    accounts = site.app.accounts
    _label, password = accounts.create_app_password("alice", "phone")
    for name in ("alice", "Alice", "alice@mu.test", "ALICE@MU.TEST"):
        assert accounts.authenticate_client(name, "password1", "192.0.2.1")["credential"] == "password"
    assert accounts.authenticate_client("alice", password.replace("-", ""), "192.0.2.1")["credential"] == "app-password:phone"
    assert accounts.authenticate_client("alice", " ".join(password.upper().split("-")), "192.0.2.1")
    for name in ("alice@other.example", "alice+tag@mu.test", "", "a" * 40):
        assert accounts.authenticate_client(name, "password1", "192.0.2.1") is None, name
    assert accounts.authenticate_client("bob", password, "192.0.2.1") is None   # alice's, not bob's
    accounts.update("alice", disabled=True)
    assert accounts.authenticate_client("alice", password, "192.0.2.1") is None


def test_locked_account_still_takes_its_app_passwords_but_a_locked_address_takes_nothing(tmp_path):
    site = InProcess(tmp_path, MU_LOGIN_FAILURES_PER_ADDRESS="15")
    site.add_user("alice")
    accounts = site.app.accounts
    _label, password = accounts.create_app_password("alice", "phone")
    for i in range(10):
        assert accounts.authenticate_client("alice", "guess", f"192.0.2.{i + 1}") is None
    with pytest.raises(LoginThrottled) as refused:
        accounts.authenticate_client("alice", "password1", "198.51.100.1")
    assert refused.value.scope == "account"
    assert accounts.authenticate_client("alice", password, "198.51.100.1") is not None
    assert login(site, "alice", "password1", remote_addr="198.51.100.2").status == 429   # shared with the web
    for i in range(15):
        accounts.authenticate_client(f"name{i}", "guess", "203.0.113.7")
    with pytest.raises(LoginThrottled) as refused:
        accounts.authenticate_client("alice", password, "203.0.113.7")
    assert refused.value.scope == "address"


def test_web_login_failures_lock_mail_clients_too(site):
    for _ in range(10):
        assert login(site, "bob", "wrong", remote_addr="192.0.2.5").status == 401
    with pytest.raises(LoginThrottled):
        site.app.accounts.authenticate_client("bob", "password1", "192.0.2.6")


def test_app_password_last_use_recorded_at_most_hourly(site):
    accounts = site.app.accounts
    _label, password = accounts.create_app_password("alice", "phone")
    size = len(journal(site.config.home))
    for _ in range(5):
        assert accounts.authenticate_client("alice", password, "192.0.2.1")
    assert journal(site.config.home)[size:].count(b'"apppw.used"') == 1
    (entry,) = accounts.app_passwords("alice")
    assert entry["last_used"] is not None


def test_still_valid_follows_revocation_password_change_and_disabling(site):
    accounts = site.app.accounts
    _label, password = accounts.create_app_password("alice", "phone")
    by_app = accounts.authenticate_client("alice", password, "192.0.2.1")
    by_password = accounts.authenticate_client("alice", "password1", "192.0.2.1")
    assert accounts.still_valid(by_app) and accounts.still_valid(by_password)
    accounts.revoke_app_password("alice", "phone")
    accounts.create_app_password("alice", "phone")   # the same label again: another password
    assert not accounts.still_valid(by_app) and accounts.still_valid(by_password)
    accounts.set_password("alice", "another1")
    assert not accounts.still_valid(by_password)
    by_bob = accounts.authenticate_client("bob", "password1", "192.0.2.1")
    accounts.update("bob", disabled=True)
    assert not accounts.still_valid(by_bob)
