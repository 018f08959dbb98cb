"""Accounts an admin can run, in process: sign-up modes and invitations, the first admin,
throttles per account and per client address, safe redirects, logout, password change,
token listing and revocation, trusted proxies, the ACME webroot, and two API fixes."""

import re
import subprocess
import sys

import pytest

from inproc import InProcess, Web
from conftest import MU, ROOT
from mu.web.auth import Throttle


def csrf_of(resp) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', resp.text).group(1)


def browser(site) -> Web:
    """Another browser on the same server: its own cookies."""
    return Web(site.web.wsgi)


def _web(site_or_web) -> Web:
    return site_or_web if isinstance(site_or_web, Web) else site_or_web.web


def signup(site, name, password="password1", query="", remote_addr=None, **extra):
    web = _web(site)
    page = web.request("GET", "/signup" + query, remote_addr=remote_addr)
    if 'name="csrf"' not in page.text:   # a closed sign-up page has no form: take the token from login
        page = web.request("GET", "/login", remote_addr=remote_addr)
    csrf = csrf_of(page)
    form = {"username": name, "password": password, "csrf": csrf, **extra}
    return web.request("POST", "/signup" + query, form=form, remote_addr=remote_addr)


def login(site, name, password="password1", next_path=None, remote_addr=None, headers=None):
    web = _web(site)
    page = web.request("GET", "/login", remote_addr=remote_addr, headers=headers)
    form = {"username": name, "password": password, "csrf": csrf_of(page)}
    if next_path is not None:
        form["next"] = next_path
    return web.request("POST", "/login", form=form, remote_addr=remote_addr, headers=headers)


# ---------------------------------------------------------------- sign-up modes and the first admin

def test_signup_closed_answers_403_and_creates_nothing(tmp_path):
    site = InProcess(tmp_path, MU_SIGNUP="closed")
    assert site.web.request("GET", "/signup").status == 403
    resp = signup(site, "mallory")
    assert resp.status == 403 and "closed" in resp.text
    assert site.app.accounts.get("mallory") is None


def test_signup_invite_needs_a_valid_link_used_once(tmp_path):
    site = InProcess(tmp_path, MU_SIGNUP="invite")
    site.add_user("boss", admin=True)
    assert signup(site, "stranger").status == 403
    assert login(site, "boss").status == 303
    page = site.web.request("GET", "/admin/users")
    resp = site.web.request("POST", "/admin/invites", form={"csrf": csrf_of(page)})
    link = re.search(r'id="invite-link"[^>]*value="([^"]+)"', resp.text).group(1)
    code = link.split("invite=", 1)[1]
    assert link.startswith("http://localhost") and "/signup?invite=" in link
    guest = browser(site)
    assert guest.request("GET", "/signup?invite=" + code).status == 200
    resp = signup(guest, "newbie", query="?invite=" + code, invite=code)
    assert resp.status == 303 and site.app.accounts.get("newbie")["role"] == "user"
    resp = signup(browser(site), "second", query="?invite=" + code, invite=code)
    assert resp.status == 403 and site.app.accounts.get("second") is None   # used up


def test_revoked_invitation_no_longer_works(tmp_path):
    site = InProcess(tmp_path, MU_SIGNUP="invite")
    site.add_user("boss", admin=True)
    code = site.app.accounts.create_invite("boss")
    [invite] = site.app.accounts.invites()
    login(site, "boss")
    page = site.web.request("GET", "/admin/users")
    assert invite["id"] in page.text
    site.web.request("POST", f"/admin/invites/{invite['id']}/revoke", form={"csrf": csrf_of(page)})
    assert site.app.accounts.invites() == []
    assert signup(browser(site), "late", query="?invite=" + code, invite=code).status == 403


def test_first_web_signup_is_not_admin_without_the_setup_link(tmp_path):
    site = InProcess(tmp_path)
    site.app.setup_code = "s3cret-setup"
    assert signup(site, "stranger").status == 303
    assert site.app.accounts.get("stranger")["role"] == "user"
    assert site.app.accounts.has_admin() is False


def test_setup_link_makes_the_admin_once(tmp_path):
    site = InProcess(tmp_path, MU_SIGNUP="closed")   # works even with sign-up closed
    site.app.setup_code = "s3cret-setup"
    assert signup(site, "intruder", query="?setup=wrong", setup="wrong").status == 403
    page = site.web.request("GET", "/signup?setup=s3cret-setup")
    assert page.status == 200 and "becomes its admin" in page.text
    resp = signup(site, "owner", query="?setup=s3cret-setup", setup="s3cret-setup")
    assert resp.status == 303 and site.app.accounts.get("owner")["role"] == "admin"
    assert signup(browser(site), "another", query="?setup=s3cret-setup", setup="s3cret-setup").status == 403


def test_server_logs_setup_link_only_while_no_admin(make_mu):
    mu = make_mu()
    line = next(l for l in mu.log_lines if "No admin yet" in l)
    code = re.search(r"/signup\?setup=([\w-]+)", line).group(1)
    assert "users add NAME --admin" in line
    assert mu.http("GET", "/signup?setup=" + code).status == 200
    mu.add_user("chief", admin=True)
    mu.restart()
    assert not any("No admin yet" in l for l in mu.log_lines)


# ---------------------------------------------------------------- throttles

def test_signup_throttled_per_client_address(tmp_path):
    site = InProcess(tmp_path, MU_SIGNUPS_PER_HOUR="3")
    for i in range(3):
        assert signup(site, f"user{i}x", remote_addr="198.51.100.7").status == 303
        site.web.cookies.clear()
    resp = signup(site, "user9x", remote_addr="198.51.100.7")
    assert resp.status == 429 and site.app.accounts.get("user9x") is None
    site.web.cookies.clear()
    assert signup(site, "fromelse", remote_addr="198.51.100.8").status == 303


def test_login_throttled_per_address_across_accounts(tmp_path):
    """Password spraying: one wrong guess for each of many accounts from one address."""
    site = InProcess(tmp_path, MU_LOGIN_FAILURES_PER_ADDRESS="5")
    site.add_user("victim")
    for i in range(5):
        assert login(site, f"name{i}", "guess", remote_addr="203.0.113.9").status == 401
    assert login(site, "victim", "password1", remote_addr="203.0.113.9").status == 429
    assert login(site, "victim", "password1", remote_addr="203.0.113.10").status == 303
    # IPv6 clients are counted by their /64
    for i in range(5):
        login(site, f"v6name{i}", "guess", remote_addr=f"2001:db8:1:2::{i + 1}")
    assert login(site, "victim", remote_addr="2001:db8:1:2::ff").status == 429


def test_login_with_huge_username_stores_nothing(tmp_path):
    site = InProcess(tmp_path)
    by_account, by_address = site.web.wsgi.wsgi.wsgi.config["mu.login_throttle"]
    resp = login(site, "a" * 1_000_000, "x")
    assert resp.status == 413 and len(resp.body) < 20_000   # refused before the form is parsed
    resp = login(site, "b" * 5_000, "x")                    # fits the form, names nobody
    assert resp.status == 401 and "b" * 100 not in resp.text
    assert len(by_account) == 0 and len(by_address) == 1
    assert signup(site, "c" * 1_000_000).status == 413


def test_throttle_memory_is_bounded_and_never_cleared_wholesale():
    clock = [0.0]
    throttle = Throttle(limit=3, window_seconds=60, max_keys=100, clock=lambda: clock[0])
    for _ in range(3):
        throttle.count("locked")
    for i in range(99):
        throttle.count(f"k{i}")
    assert len(throttle) == 100 and throttle.refused("locked")
    throttle.count("one-more")                 # the least recently counted key goes, only it
    assert len(throttle) == 100 and not throttle.refused("locked") and throttle.refused("k0") is False
    clock[0] += 61
    assert not throttle.refused("k5")


def test_account_lock_still_answers_429_after_10_failures(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    for _ in range(10):
        assert login(site, "alice", "wrong", remote_addr="192.0.2.1").status == 401
    assert login(site, "alice", "password1", remote_addr="192.0.2.2").status == 429


# ---------------------------------------------------------------- redirects and logout

@pytest.mark.parametrize("target", ["/\t/evil.test", "/%09/evil.test", "/\n/evil.test", "//evil.test",
                                    "/\\evil.test", "https://evil.test/", "/\r\n/evil.test"])
def test_login_next_never_leaves_the_site(tmp_path, target):
    site = InProcess(tmp_path)
    site.add_user("alice")
    import urllib.parse
    resp = login(site, "alice", next_path=urllib.parse.unquote(target))
    location = resp.headers["location"]
    assert resp.status == 303 and urllib.parse.urlsplit(location).netloc == "localhost:8080", location
    assert location.endswith("/mail")


def test_login_next_keeps_a_path_on_the_site(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    assert login(site, "alice", next_path="/mail/compose").headers["location"].endswith("/mail/compose")


def test_logout_needs_post_with_csrf(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    login(site, "alice")
    page = site.web.request("GET", "/logout")
    assert page.status == 200 and 'action="/logout"' in page.text
    assert site.web.request("GET", "/api/me").status == 200          # GET did not log out
    assert site.web.request("POST", "/logout", form={"csrf": "forged"}).status == 403
    assert site.web.request("GET", "/api/me").status == 200
    assert site.web.request("POST", "/logout", form={"csrf": csrf_of(page)}).status == 303
    assert site.web.request("GET", "/api/me").status == 401


# ---------------------------------------------------------------- passwords and tokens

def test_settings_password_change_signs_out_other_sessions(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice", password="old-password")
    other = browser(site)
    login(other, "alice", "old-password")
    login(site, "alice", "old-password")
    page = site.web.request("GET", "/settings")
    assert page.status == 200 and 'for="new-password"' in page.text
    bad = site.web.request("POST", "/settings/password", form={"csrf": csrf_of(page), "current": "nope",
                                                                "new": "new-password", "repeat": "new-password"})
    assert bad.status == 400 and site.app.accounts.authenticate("alice", "old-password")
    resp = site.web.request("POST", "/settings/password", form={"csrf": csrf_of(page), "current": "old-password",
                                                                 "new": "new-password", "repeat": "new-password"})
    assert resp.status == 303
    assert site.app.accounts.authenticate("alice", "new-password")
    assert not site.app.accounts.authenticate("alice", "old-password")
    assert site.web.request("GET", "/api/me").status == 200      # this session goes on
    assert other.request("GET", "/api/me").status == 401     # the other one ended


def cli(home, *args, input=None):
    env = {"PATH": "/usr/bin:/bin", "MU_HOME": str(home), "MAIL_DOMAIN": "mu.test"}
    return subprocess.run([sys.executable, MU, *args], env=env, input=input, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_users_passwd_sets_a_new_password(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "users", "add", "alice", input="first-pw\n").returncode == 0
    out = cli(home, "users", "passwd", "alice", input="second-pw\n")
    assert out.returncode == 0, out.stderr
    site = InProcess(tmp_path)
    assert site.app.accounts.authenticate("alice", "second-pw") and not site.app.accounts.authenticate("alice", "first-pw")
    missing = cli(home, "users", "passwd", "ghost", input="x\n")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "ghost" in missing.stderr
    assert cli(home, "users", "passwd", "alice", input="\n").returncode == 2


def test_users_token_list_and_revoke(tmp_path):
    home = tmp_path / "home"
    cli(home, "users", "add", "alice", input="pw\n")
    token = cli(home, "users", "token", "alice").stdout.strip()
    spare = cli(home, "users", "token", "alice").stdout.strip()
    listing = cli(home, "users", "token", "alice", "--list").stdout.splitlines()
    assert len(listing) == 2 and all(token not in line and spare not in line for line in listing)
    assert all(re.fullmatch(r"[0-9a-f]{8} \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ never", line) for line in listing), listing
    site = InProcess(tmp_path)
    assert site.web.request("GET", "/api/me", token=token).status == 200
    import hashlib
    token_id = hashlib.sha256(token.encode()).hexdigest()[:8]
    used = [line for line in cli(home, "users", "token", "alice", "--list").stdout.splitlines() if line.startswith(token_id)]
    assert used and not used[0].endswith("never")
    out = cli(home, "users", "token", "alice", "--revoke", token_id)
    assert out.returncode == 0 and token_id in out.stdout
    assert site.web.request("GET", "/api/me", token=token).status == 401
    assert site.web.request("GET", "/api/me", token=spare).status == 200
    again = cli(home, "users", "token", "alice", "--revoke", token_id)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "--revoke" in cli(home, "users", "token", "--help").stdout


def test_settings_page_lists_and_revokes_own_tokens(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    token = site.token("alice")
    login(site, "alice")
    page = site.web.request("GET", "/settings")
    [entry] = site.app.accounts.tokens("alice")
    assert entry["id"] in page.text and token not in page.text
    site.web.request("POST", f"/settings/tokens/{entry['id']}/revoke", form={"csrf": csrf_of(page)})
    assert site.web.request("GET", "/api/me", headers={"Authorization": f"Bearer {token}"}).status == 401


def test_users_list_shows_disabled_accounts(tmp_path):
    home = tmp_path / "home"
    cli(home, "users", "add", "alice", input="pw\n")
    cli(home, "users", "add", "bobby", input="pw\n")
    cli(home, "users", "set", "bobby", "--disable")
    assert cli(home, "users", "list").stdout.splitlines() == ["alice user 0", "bobby user 0 disabled"]


# ---------------------------------------------------------------- trusted proxies

def test_forwarded_headers_ignored_from_untrusted_peers(tmp_path):
    site = InProcess(tmp_path, MU_TRUSTED_PROXY="10.0.0.1")
    site.add_user("alice")
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.1", "X-Forwarded-Host": "evil.test"}
    resp = login(site, "alice", remote_addr="203.0.113.5", headers=forged)
    assert resp.headers["location"].startswith("http://localhost:8080/")
    assert not resp.cookies()["mu_session"]["secure"]


def test_trusted_proxy_gives_https_redirects_secure_cookie_and_client_address(tmp_path):
    site = InProcess(tmp_path, MU_TRUSTED_PROXY="10.0.0.1, ::1", MU_LOGIN_FAILURES_PER_ADDRESS="3")
    site.add_user("alice")
    via_proxy = {"X-Forwarded-Proto": "https", "Host": "mail.mu.test"}
    resp = login(site, "alice", remote_addr="10.0.0.1", headers=dict(via_proxy, **{"X-Forwarded-For": "198.51.100.1"}))
    assert resp.headers["location"] == "https://mail.mu.test/mail"
    assert resp.cookies()["mu_session"]["secure"]
    # the throttle counts the forwarded client, not the proxy: one sprayer does not lock out everyone
    for i in range(3):
        login(site, f"n{i}ame", "x", remote_addr="10.0.0.1",
              headers=dict(via_proxy, **{"X-Forwarded-For": "1.2.3.4, 198.51.100.66"}))
    assert login(site, "alice", remote_addr="10.0.0.1",
                 headers=dict(via_proxy, **{"X-Forwarded-For": "198.51.100.66"})).status == 429
    assert login(site, "alice", remote_addr="10.0.0.1",
                 headers=dict(via_proxy, **{"X-Forwarded-For": "198.51.100.67"})).status == 303
    # a client-prepended address is not believed: the proxy's own entry (right-most) is the client
    assert login(site, "alice", remote_addr="10.0.0.1",
                 headers=dict(via_proxy, **{"X-Forwarded-For": "198.51.100.67, 198.51.100.66"})).status == 429


def test_acme_challenge_served_from_webroot(tmp_path):
    webroot = tmp_path / "acme"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    (webroot / ".well-known" / "acme-challenge" / "tok-EN_123").write_text("tok-EN_123.thumbprint")
    site = InProcess(tmp_path, MU_ACME_WEBROOT=str(webroot))
    resp = site.web.request("GET", "/.well-known/acme-challenge/tok-EN_123")
    assert resp.status == 200 and resp.text == "tok-EN_123.thumbprint"
    assert site.web.request("GET", "/.well-known/acme-challenge/..%2f..%2fetc").status == 404
    assert InProcess(tmp_path / "b").web.request("GET", "/.well-known/acme-challenge/tok-EN_123").status == 404


# ---------------------------------------------------------------- API

def test_api_search_in_sent_searches_sent(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    site.add_user("bobby")
    ta, tb = site.token("alice"), site.token("bobby")
    site.web.request("POST", "/api/mail", token=ta, json_body={"to": "bobby", "subject": "needle out", "body": "x"})
    site.web.request("POST", "/api/mail", token=tb, json_body={"to": "alice", "subject": "needle in", "body": "y"})
    sent = site.web.request("GET", "/api/mail?folder=sent&q=needle", token=ta).json()
    inbox = site.web.request("GET", "/api/mail?folder=inbox&q=needle", token=ta).json()
    assert [m["subject"] for m in sent["messages"]] == ["needle out"]
    assert [m["subject"] for m in inbox["messages"]] == ["needle in"]


def test_api_unknown_before_id_is_400(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    site.add_user("bobby")
    token = site.token("alice")
    msg = site.web.request("POST", "/api/mail", token=site.token("bobby"),
                           json_body={"to": "alice", "subject": "s", "body": "b"}).json()
    resp = site.web.request("GET", "/api/mail?folder=inbox&before=nonexistent", token=token)
    assert resp.status == 400 and "before" in resp.json()["error"]
    assert site.web.request("GET", f"/api/mail?folder=inbox&before={msg['id']}", token=token).status == 200
