"""The web pages in Debian's Chromium through Playwright, plus HTTP-level security checks."""

import os
import re
import smtplib
import urllib.request
from email.message import EmailMessage

import pytest

from conftest import ARTIFACTS, unique
from playwright.sync_api import expect

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def site(mu):
    return f"http://127.0.0.1:{mu.web_port}"


def shot(page, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)


def _enter(browser, site, path, button, name, password, **context_args):
    page = browser.new_context(**context_args).new_page()
    page.goto(site + path)
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name=button).click()
    page.wait_for_url(site + "/mail")
    return page


def signup(browser, site, name, password="password1", **context_args):
    return _enter(browser, site, "/signup", "Sign up", name, password, **context_args)


def login(browser, site, name, password="password1"):
    return _enter(browser, site, "/login", "Log in", name, password)


def test_signup_send_read_reply(browser, site, mu):
    alice, bob = unique("a"), unique("b")
    pa = signup(browser, site, alice)
    pb = signup(browser, site, bob, viewport={"width": 375, "height": 740})
    pa.get_by_role("link", name="Compose").click()
    pa.get_by_label("To").fill(bob)
    pa.get_by_label("Subject").fill("Lunch <tomorrow>?")
    pa.get_by_label("Message").fill("Are you free at noon?")
    shot(pa, "compose")
    pa.get_by_role("button", name="Send").click()
    pa.wait_for_url(re.compile(r"/mail/\w+"))
    pb.goto(site + "/mail")
    entry = pb.locator("li.message.unread").filter(has_text="Lunch <tomorrow>?")
    assert entry.count() == 1
    shot(pb, "inbox-phone")
    assert "(1)" in pb.title()
    pb.get_by_role("link", name="Lunch <tomorrow>?").click()
    expect(pb.get_by_text("Are you free at noon?")).to_be_visible()
    pb.get_by_role("link", name="Reply", exact=True).click()
    assert pb.get_by_label("To").input_value() == alice
    pb.get_by_label("Message").fill("Yes, see you there.")
    pb.get_by_role("button", name="Send").click()
    pb.wait_for_url(re.compile(r"/mail/\w+"))
    pa.goto(site + "/mail")
    pa.get_by_role("link", name="Re: Lunch <tomorrow>?").click()
    expect(pa.get_by_text("Are you free at noon?").first).to_be_visible()     # the thread shows both
    assert pa.get_by_text("Yes, see you there.").is_visible()
    shot(pa, "conversation")
    pa.context.close()
    pb.context.close()


def test_keyboard_compose_shortcut_and_search(browser, site, mu):
    name = unique("k")
    page = signup(browser, site, name)
    page.keyboard.press("c")
    page.wait_for_url(site + "/mail/compose")
    page.get_by_label("To").fill(name)
    page.get_by_label("Subject").fill("note to self about pelicans")
    page.get_by_label("Message").fill("remember the pelicans")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/mail/\w+"))
    page.goto(site + "/mail")
    page.get_by_label("Search mail").fill("pelicans")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=pelicans"))
    assert page.get_by_role("link", name="note to self about pelicans").count() >= 1
    page.context.close()


def test_attachment_download(browser, site, mu):
    name = unique("f")
    page = signup(browser, site, name)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "x@example.org", f"{name}@mu.test", "with file"
    msg.set_content("see attached")
    msg.add_attachment(b"col1,col2\n1,2\n", maintype="text", subtype="csv", filename="data.csv")
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.send_message(msg)
    page.goto(site + "/mail")
    page.get_by_role("link", name="with file").click()
    with page.expect_download() as info:
        page.get_by_role("link", name="data.csv").click()
    path = info.value.path()
    assert open(path, "rb").read() == b"col1,col2\n1,2\n" and info.value.suggested_filename == "data.csv"
    page.context.close()


HOSTILE = [
    "<script>parent.document.title='PWNED';alert(1)</script>",
    "<img src=x onerror=\"parent.document.title='PWNED';alert(2)\">",
    "<a id=l href=\"javascript:parent.document.title='PWNED'\">click me</a>",
    "<svg onload=\"alert(3)\"><script>alert(4)</script></svg>",
    "<div style=\"width:expression(alert(5))\">css</div>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(6)\">",
    "<form action=\"http://127.0.0.1:1/steal\"><input name=q><button id=b>go</button></form>",
    "<iframe src=\"javascript:alert(7)\"></iframe><body onload=alert(8)>",
    "<object data=\"javascript:alert(9)\"></object><embed src=\"javascript:alert(10)\">",
]


def test_hostile_html_executes_nothing(browser, site, mu):
    name = unique("h")
    page = signup(browser, site, name)
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        for i, html in enumerate(HOSTILE):
            msg = EmailMessage()
            msg["From"] = "<script>alert('name')</script> <evil@example.org>"
            msg["To"], msg["Subject"] = f"{name}@mu.test", f"hostile {i} <script>alert('subject')</script>"
            msg.set_content("plain")
            msg.add_alternative(f"<html><body>{html}<p>visible text {i}</p></body></html>", subtype="html")
            s.sendmail("evil@example.org", [f"{name}@mu.test"], msg.as_bytes())
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(site + "/mail")
    assert page.locator("script", has_text="alert").count() == 0
    for i in range(len(HOSTILE)):
        page.goto(site + "/mail")
        page.get_by_role("link", name=f"hostile {i} ").first.click()
        frame_el = page.locator("iframe.html-body")
        assert frame_el.get_attribute("sandbox") == ""
        frame = frame_el.content_frame
        frame.get_by_text(f"visible text {i}").wait_for()
        for target in ("#l", "#b"):
            if frame.locator(target).count():
                frame.locator(target).click(timeout=2000, no_wait_after=True)
        page.wait_for_timeout(150)
        assert "PWNED" not in page.title()
        shot(page, f"hostile-{i}")
    assert dialogs == []
    page.context.close()


def test_blocklist_admin_page(browser, site, mu):
    admin = mu.add_user(admin=True)
    page = login(browser, site, admin)
    page.goto(site + "/admin/blocklist")
    page.get_by_label("Block Email").fill("spammer@bad.example")
    page.get_by_role("button", name="Block Email").click()
    page.get_by_label("Block IP").fill("192.0.2.7")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile("Blocked%20192.0.2.7"))
    assert page.get_by_role("cell", name="spammer@bad.example", exact=True).is_visible()
    assert "spammer@bad.example" in mu.cli("blocklist", "list").stdout
    assert "mail: Blocked email: spammer@bad.example" in mu.log()
    assert "mail: Blocked IP: 192.0.2.7" in mu.log()
    shot(page, "blocklist")
    page.get_by_role("button", name="Unblock spammer@bad.example").click()
    expect(page.get_by_role("cell", name="spammer@bad.example", exact=True)).to_have_count(0)
    assert "spammer@bad.example" not in mu.cli("blocklist", "list").stdout
    page.goto(site + "/admin/users")
    other = mu.add_user()
    page.goto(site + "/admin/users")
    page.get_by_label(f"Credits to add for {other}").fill("12")
    with page.expect_navigation():
        page.locator(f"form[action='/admin/users/{other}']").get_by_role("button", name="Add credits").click()
    with page.expect_navigation():
        page.locator(f"form[action='/admin/users/{other}']").get_by_role("button", name="Make admin").click()
    assert f"{other} admin 12" in mu.cli("users", "list").stdout
    shot(page, "users")
    page.goto(site + "/admin/mail")
    shot(page, "mail-log")
    page.context.close()


def test_non_admin_gets_403_on_admin_pages(browser, site, mu):
    name = mu.add_user()
    page = login(browser, site, name)
    for path in ("/admin/blocklist", "/admin/users", "/admin/mail"):
        assert page.goto(site + path).status == 403
    page.context.close()


# ---------------------------------------------------------------- HTTP-level checks

def _opener():
    import http.cookiejar
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())
    return opener, jar


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _status(opener, url, data=None):
    try:
        resp = opener.open(url, data=data)
        return resp.status, resp
    except urllib.error.HTTPError as exc:
        return exc.code, exc


def test_forged_posts_without_csrf_are_403(site, mu):
    name = mu.add_user()
    opener, jar = _opener()
    page = opener.open(site + "/login").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert _status(opener, site + "/login", f"username={name}&password=password1".encode())[0] == 403
    status, _ = _status(opener, site + "/login", f"csrf={csrf}&username={name}&password=password1".encode())
    assert status == 303
    for path, data in (("/mail/compose", f"to={name}&subject=forged&body=x"), ("/logout", ""),
                       ("/signup", "username=zz9&password=password1")):
        assert _status(opener, site + path, (data + "&csrf=wrong").encode())[0] == 403, path
    token = mu.token(name)
    assert all(m["subject"] != "forged" for m in mu.inbox(token)["messages"])


def test_security_headers_and_session_cookie(site, mu):
    name = mu.add_user()
    opener, jar = _opener()
    status, resp = _status(opener, site + "/login")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'self'" in resp.headers["Content-Security-Policy"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', resp.read().decode()).group(1)
    sessions = []
    for _ in range(2):
        status, resp = _status(opener, site + "/login", f"csrf={csrf}&username={name}&password=password1".encode())
        cookie = [v for k, v in resp.headers.items() if k.lower() == "set-cookie" and v.startswith("mu_session=")][0]
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        sessions.append(cookie.split(";")[0])
        page = opener.open(site + "/mail").read().decode()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert sessions[0] != sessions[1]           # a new session id at every login


def test_login_throttled_after_10_failures(site, mu):
    name = mu.add_user()
    opener, _ = _opener()
    csrf = re.search(r'name="csrf" value="([^"]+)"', opener.open(site + "/login").read().decode()).group(1)
    for _ in range(10):
        assert _status(opener, site + "/login", f"csrf={csrf}&username={name}&password=wrong".encode())[0] == 401
    assert _status(opener, site + "/login", f"csrf={csrf}&username={name}&password=password1".encode())[0] == 429


def test_html_body_served_with_no_script_csp(site, mu):
    name = mu.add_user()
    token = mu.token(name)
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.sendmail("x@example.org", [f"{name}@mu.test"],
                   b"Subject: h\r\nContent-Type: text/html\r\n\r\n<script>alert(1)</script>\r\n")
    msg_id = mu.inbox(token)["messages"][0]["id"]
    opener, _ = _opener()
    csrf = re.search(r'name="csrf" value="([^"]+)"', opener.open(site + "/login").read().decode()).group(1)
    _status(opener, site + "/login", f"csrf={csrf}&username={name}&password=password1".encode())
    resp = opener.open(site + f"/mail/{msg_id}/html")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "sandbox" in csp


def test_conversation_view_groups_threads(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    first = mu.send(ta, b, subject="plans")
    mu.send(tb, a, subject="", body="ok", reply_to=first["id"])
    mu.send(ta, b, subject="", body="great", reply_to=first["id"])
    mu.send(ta, b, subject="other topic")
    page = login(browser, site, b)
    page.goto(site + "/mail?view=conversations")
    rows = page.locator("#message-list li.message")
    assert rows.count() == 2
    assert rows.nth(1).locator(".count").inner_text() == "2"      # two messages of the thread in the inbox
    assert "unread" in rows.nth(1).get_attribute("class")
    with page.expect_navigation():
        rows.nth(1).locator("a.subject").click()
    expect(page.locator("section.mail")).to_have_count(3)          # the conversation shows all three
    page.context.close()


def test_compose_with_attachment_and_reply_by_keyboard(browser, site, mu, tmp_path):
    a, b = unique("p"), unique("q")
    pa = signup(browser, site, a)
    pb = signup(browser, site, b)
    upload = tmp_path / "notes.txt"
    upload.write_text("attached notes")
    pa.goto(site + "/mail/compose")
    pa.get_by_label("To").fill(b)
    pa.get_by_label("Subject").fill("files for you")
    pa.get_by_label("Message").fill("see the file")
    pa.get_by_label("Attach files").set_input_files(str(upload))
    pa.get_by_role("button", name="Send").click()
    pa.wait_for_url(re.compile(r"/mail/\w+"))
    pb.goto(site + "/mail")
    pb.keyboard.press("j")                    # select the first message
    pb.keyboard.press("Enter")                # open it
    pb.wait_for_url(re.compile(r"/mail/\w+"))
    with pb.expect_download() as info:
        pb.get_by_role("link", name="notes.txt").click()
    assert open(info.value.path()).read() == "attached notes"
    pb.keyboard.press("r")
    pb.wait_for_url(re.compile(r"/mail/compose\?reply="))
    assert pb.get_by_label("To").input_value() == a
    pa.context.close()
    pb.context.close()


def test_admin_pages_403_when_signed_out(site):
    for path in ("/admin/blocklist", "/admin/users", "/admin/mail"):
        status, _ = _status(_opener()[0], site + path)
        assert status == 403, path
    status, resp = _status(_opener()[0], site + "/mail")
    assert status in (302, 303) and "/login" in resp.headers["Location"]
