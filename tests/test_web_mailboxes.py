"""Mailboxes in the browser (Debian's Chromium through Playwright): the folder list, message
actions, selecting several messages, Trash, folders, drafts and local times."""

import datetime
import re
import urllib.parse
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

import test_web
from test_web import login, shot

browser, site = test_web.browser, test_web.site    # the same fixtures: one Chromium per module

DEFAULT_LINKS = ("Inbox", "Drafts", "Sent", "Archive", "Junk", "Trash")


def folders_of(mu, token) -> dict:
    return {f["name"]: f for f in mu.http("GET", "/api/folders", token).json()["folders"]}


def subjects(mu, token, folder) -> list:
    query = urllib.parse.urlencode({"folder": folder})
    return [m["subject"] for m in mu.http("GET", f"/api/mail?{query}", token).json()["messages"]]


def folder_link(page, name):
    return page.get_by_role("navigation", name="Folders").get_by_role("link", name=name, exact=True)


def folder_count(page, name):
    """The count beside a folder's link."""
    row = page.locator("nav.folders li.folder", has=page.get_by_role("link", name=name, exact=True))
    return row.locator(".count")


def test_folder_list_links_with_unread_counts(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    assert mu.http("POST", "/api/folders", tb, {"name": "Projects/2026"}).status == 201
    for i in range(3):
        mu.send(ta, b, subject=f"unread {i}")
    moved = mu.send(ta, b, subject="filed away")
    mu.http("POST", f"/api/mail/{moved['id']}/move", tb, {"folder": "Projects/2026"})
    page = login(browser, site, b)
    for name in DEFAULT_LINKS + ("Projects", "Projects/2026"):
        expect(folder_link(page, name)).to_be_visible()
    expect(folder_count(page, "Inbox")).to_have_text("3 unread")
    expect(folder_count(page, "Projects/2026")).to_have_text("1 unread")
    shot(page, "folders-inbox")
    folder_link(page, "Projects/2026").click()
    page.wait_for_url(re.compile(r"folder=Projects/2026"))
    expect(page.get_by_role("heading", name="Projects/2026")).to_be_visible()
    expect(page.get_by_role("link", name="filed away")).to_be_visible()
    expect(page.locator("li.message")).to_have_count(1)
    folder_link(page, "Sent").click()
    expect(page.get_by_role("heading", name="Sent")).to_be_visible()
    folder_link(page, "Inbox").click()
    expect(page.locator("li.message")).to_have_count(3)
    page.context.close()


def test_archive_junk_delete_star_from_message_view(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    first = mu.send(ta, b, subject="keep this one")
    mu.send(ta, b, subject="cheap watches")
    third = mu.send(ta, b, subject="old news")
    page = login(browser, site, b)

    page.get_by_role("link", name="keep this one").click()
    star = page.get_by_role("button", name="Star")
    expect(star).to_have_attribute("aria-pressed", "false")
    star.click()
    expect(page.get_by_role("button", name="Starred")).to_have_attribute("aria-pressed", "true")
    assert mu.http("GET", f"/api/mail/{first['id']}", tb).json()["flagged"] is True
    shot(page, "message-starred")
    page.get_by_role("button", name="Starred").click()
    expect(page.get_by_role("button", name="Star", exact=True)).to_be_visible()
    assert mu.http("GET", f"/api/mail/{first['id']}", tb).json()["flagged"] is False
    page.get_by_role("button", name="Archive").click()
    expect(page.get_by_role("status")).to_have_text("Moved to Archive")
    expect(page.get_by_role("link", name="keep this one")).to_have_count(0)
    assert subjects(mu, tb, "Archive") == ["keep this one"]

    page.get_by_role("link", name="cheap watches").click()
    page.get_by_role("button", name="Junk").click()
    expect(page.get_by_role("status")).to_have_text("Moved to Junk")
    assert subjects(mu, tb, "Junk") == ["cheap watches"]

    page.get_by_role("link", name="old news").click()
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("Moved to Trash")
    assert subjects(mu, tb, "INBOX") == [] and subjects(mu, tb, "Trash") == ["old news"]
    folder_link(page, "Trash").click()
    page.get_by_role("link", name="old news").click()
    page.get_by_role("button", name="Delete").click()                 # in Trash: for good, no question
    expect(page.get_by_role("status")).to_have_text("Deleted for good")
    assert mu.http("GET", f"/api/mail/{third['id']}", tb).status == 404
    assert mu.http("GET", f"/api/mail/{third['id']}", ta).status == 200
    page.context.close()


def test_select_several_and_move_by_mouse_and_keyboard(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    for name in ("alpha", "beta", "gamma", "delta"):
        mu.send(ta, b, subject=name)
    page = login(browser, site, b)
    page.get_by_role("link", name="Manage folders").click()
    page.get_by_label("New folder").fill("Greek")
    page.get_by_role("button", name="Create folder").click()
    expect(folder_link(page, "Greek")).to_be_visible()
    folder_link(page, "Inbox").click()
    page.get_by_label("Select alpha").check()
    page.get_by_label("Select gamma").check()
    expect(page.locator("li.message.picked")).to_have_count(2)
    shot(page, "inbox-selected")
    page.get_by_label("Move to").select_option("Greek")
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("2 messages moved to Greek")
    assert sorted(subjects(mu, tb, "Greek")) == ["alpha", "gamma"]
    assert subjects(mu, tb, "INBOX") == ["delta", "beta"]

    page.keyboard.press("j")              # the first message (delta) ...
    page.keyboard.press("x")              # ... ticked
    expect(page.get_by_label("Select delta")).to_be_checked()
    page.keyboard.press("j")
    page.keyboard.press("s")              # star the ticked one, not the focused one
    expect(page.get_by_role("status")).to_have_text("1 message starred")
    assert [m["flagged"] for m in mu.inbox(tb)["messages"]] == [True, False]
    page.get_by_label("All", exact=True).check()                       # the script's select-all
    expect(page.locator(".pick:checked")).to_have_count(2)
    page.keyboard.press("e")                                           # focus on a checkbox: still a shortcut
    expect(page.get_by_role("status")).to_have_text("2 messages moved to Archive")
    assert subjects(mu, tb, "INBOX") == [] and sorted(subjects(mu, tb, "Archive")) == ["beta", "delta"]
    page.context.close()


def test_select_and_act_without_script(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    for name in ("one", "two", "three"):
        mu.send(ta, b, subject=name)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(site + "/login")
    page.get_by_label("Username").fill(b)
    page.get_by_label("Password").fill("password1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_label("All", exact=True)).to_be_hidden()          # select-all needs the script
    page.get_by_label("Select one").check()
    page.get_by_label("Select three").check()
    page.get_by_role("button", name="Mark read").click()
    expect(page.get_by_role("status")).to_have_text("2 messages marked read")
    assert folders_of(mu, tb)["INBOX"]["unread"] == 1
    page.get_by_role("link", name="two").click()
    page.get_by_role("button", name="Star").click()
    expect(page.get_by_role("button", name="Starred")).to_be_visible()
    page.get_by_label("Move to").select_option("Junk")
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Moved to Junk")
    assert subjects(mu, tb, "Junk") == ["two"]
    expect(page.locator("time").first).to_contain_text("UTC")           # readable UTC without script
    context.close()


def test_empty_trash_asks_first(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    ids = [mu.send(ta, b, subject=f"bin {i}")["id"] for i in range(3)]
    mu.http("POST", "/api/mail/batch", tb, {"ids": ids, "action": "trash"})
    page = login(browser, site, b)
    folder_link(page, "Trash").click()
    questions = []
    page.once("dialog", lambda d: (questions.append(d.message), d.dismiss()))
    page.get_by_role("button", name="Empty Trash").click()
    expect(page.locator("li.message")).to_have_count(3)                 # said no: nothing gone
    assert questions == ["Delete every message in Trash for good?"]
    assert folders_of(mu, tb)["Trash"]["total"] == 3
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Empty Trash").click()
    expect(page.get_by_role("status")).to_have_text("Trash emptied: 3 messages deleted for good")
    expect(page.get_by_text("Trash is empty.")).to_be_visible()
    assert folders_of(mu, tb)["Trash"]["total"] == 0
    shot(page, "trash-emptied")

    mu.http("POST", "/api/mail/batch", tb, {"ids": [mu.send(ta, b, subject="late")["id"]], "action": "trash"})
    context = browser.new_context(java_script_enabled=False)          # without script: a page asks
    plain = context.new_page()
    plain.goto(site + "/login")
    plain.get_by_label("Username").fill(b)
    plain.get_by_label("Password").fill("password1")
    plain.get_by_role("button", name="Log in").click()
    plain.goto(site + "/mail?folder=Trash")
    plain.get_by_role("button", name="Empty Trash").click()
    expect(plain.get_by_text("Delete the message in Trash for good?")).to_be_visible()
    assert folders_of(mu, tb)["Trash"]["total"] == 1
    plain.get_by_role("button", name="Empty Trash").click()
    expect(plain.get_by_role("status")).to_have_text("Trash emptied: 1 message deleted for good")
    context.close()
    page.context.close()


def test_draft_saved_continued_and_sent(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    page = login(browser, site, a)
    page.get_by_role("link", name="Compose").click()
    page.get_by_label("Subject").fill("Picnic plans")
    page.get_by_label("Message").fill("Bring")
    page.get_by_role("button", name="Save draft").click()              # no recipient yet: still saved
    expect(page.get_by_role("status")).to_have_text("Draft saved")
    assert subjects(mu, ta, "Drafts") == ["Picnic plans"]
    expect(folder_count(page, "Drafts")).to_have_text("1 drafts")

    folder_link(page, "Drafts").click()
    page.get_by_role("link", name="Picnic plans").click()
    expect(page.get_by_label("Subject")).to_have_value("Picnic plans")
    expect(page.get_by_label("Message")).to_have_value("Bring")
    page.get_by_label("To").fill(b)
    page.get_by_label("Message").fill("Bring a blanket.")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("status")).to_have_text("Draft saved")
    drafts = mu.http("GET", "/api/mail?folder=Drafts", ta).json()["messages"]
    assert [(d["to"], d["body"]) for d in drafts] == [([b], "Bring a blanket.")]
    shot(page, "draft")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/mail/\w+\?flash=Message"))
    assert subjects(mu, ta, "Drafts") == []
    assert mu.inbox(tb)["messages"][0]["body"] == "Bring a blanket."
    page.context.close()


def test_dates_shown_in_the_readers_time_zone(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    sent = mu.send(mu.token(a), b, subject="what time is it")
    when = datetime.datetime.fromisoformat(sent["created_at"]).astimezone(ZoneInfo("Asia/Kathmandu"))
    context = browser.new_context(timezone_id="Asia/Kathmandu")         # UTC+05:45: no whole hours
    page = context.new_page()
    page.goto(site + "/login")
    page.get_by_label("Username").fill(b)
    page.get_by_label("Password").fill("password1")
    page.get_by_role("button", name="Log in").click()
    listed = page.locator("li.message time")
    # (ICU may spell the zone's name the older way, "Asia/Katmandu")
    expect(listed).to_have_attribute("title", re.compile(re.escape(when.strftime("%Y-%m-%d %H:%M")) + r" \(Asia/"))
    assert listed.inner_text() in (when.strftime("%H:%M"), when.strftime("%Y-%m-%d"))
    page.get_by_role("link", name="what time is it").click()
    expect(page.locator("section.mail time")).to_have_text(when.strftime("%Y-%m-%d %H:%M"))
    context.close()


def test_folders_created_renamed_and_deleted_on_their_page(browser, site, mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    msg = mu.send(ta, b, subject="minutes")
    page = login(browser, site, b)
    page.get_by_role("link", name="Manage folders").click()
    page.get_by_label("New folder").fill("Club/Board")
    page.get_by_role("button", name="Create folder").click()
    expect(page.get_by_role("status")).to_have_text("Folder Club/Board created")
    mu.http("POST", f"/api/mail/{msg['id']}/move", tb, {"folder": "Club/Board"})
    page.get_by_label("New name for Club", exact=True).fill("Society")
    page.get_by_role("button", name="Rename Club", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Folder Club renamed to Society")
    expect(folder_link(page, "Society/Board")).to_be_visible()
    shot(page, "folders-page")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete folder Society", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Folder Society deleted; 1 message moved to Trash")
    assert not {"Society", "Society/Board"} & set(folders_of(mu, tb))
    assert subjects(mu, tb, "Trash") == ["minutes"]
    page.context.close()
