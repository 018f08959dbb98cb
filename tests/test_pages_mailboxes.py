"""The mail pages' mailboxes without a browser: folder list, message actions, selections,
Trash, folder management and drafts, as plain form posts (in-process)."""

import base64
import html
import re
import shutil
import urllib.parse

import pytest

from inproc import InProcess

USERS = ("alice", "bobby")


class Browser:
    """One signed-in user's pages; `post` sends a form with the session's CSRF token."""

    def __init__(self, tmp_path, template, user="bobby"):
        home, tokens = template
        shutil.copytree(home, tmp_path / "home")
        self.site = InProcess(tmp_path)
        self.app, self.web, self.tokens = self.site.app, self.site.web, tokens
        sid, self.csrf = self.app.accounts.new_session(user)
        self.web.cookies["mu_session"] = sid
        self.user = user

    def get(self, path):
        return self.web.request("GET", path)

    def post(self, path, fields=(), csrf=True):
        fields = list(fields.items() if isinstance(fields, dict) else fields)
        return self.web.request("POST", path, form=fields + ([("csrf", self.csrf)] if csrf else []))

    def api(self, method, path, body=None, user=None):
        resp = self.web.request(method, path, token=self.tokens[user or self.user], json_body=body)
        return resp.json() if resp.body else None

    def send(self, subject="hello", to="bobby", sender="alice", **extra):
        return self.api("POST", "/api/mail", {"to": to, "subject": subject, "body": "text", **extra}, user=sender)

    def subjects(self, folder, user=None):
        query = urllib.parse.urlencode({"folder": folder})
        return [m["subject"] for m in self.api("GET", f"/api/mail?{query}", user=user)["messages"]]

    def message(self, msg_id):
        return self.api("GET", f"/api/mail/{msg_id}")


def location(resp) -> str:
    assert resp.status in (302, 303), (resp.status, resp.text[:500])
    parts = urllib.parse.urlsplit(resp.headers["location"])
    assert parts.netloc in ("", "localhost:8080")                   # never off the site
    return urllib.parse.unquote(parts.path + ("?" + parts.query if parts.query else ""))


def links(page) -> dict:
    """Link text (tags stripped) -> href, as a person reading the page sees them."""
    out = {}
    for href, inner in re.findall(r'<a[^>]*href="([^"]+)"[^>]*>(.*?)</a>', page.text, re.S):
        out[html.unescape(re.sub(r"<[^>]+>", "", inner)).strip()] = html.unescape(href)
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    made = InProcess(tmp_path_factory.mktemp("template"))
    for name in USERS:
        made.add_user(name, credits=10)
    return made.config.home, {name: made.token(name) for name in USERS}


@pytest.fixture
def b(tmp_path, template):
    return Browser(tmp_path, template)


# ---------------------------------------------------------------- the folder list

def test_folder_list_links_every_mailbox_by_name(b):
    b.api("POST", "/api/folders", {"name": "Projects/2026"})
    b.send("one")
    b.send("two")
    page = b.get("/mail")
    found = links(page)
    for name, href in [("Inbox", "/mail"), ("Drafts", "/mail?folder=Drafts"), ("Sent", "/mail?folder=Sent"),
                       ("Archive", "/mail?folder=Archive"), ("Junk", "/mail?folder=Junk"),
                       ("Trash", "/mail?folder=Trash"), ("Projects", "/mail?folder=Projects"),
                       ("Projects/2026", "/mail?folder=Projects/2026")]:
        assert found.get(name) == href, name
    assert re.search(r'aria-current="page">Inbox</a>\s*<span class="count">2<', page.text)


def test_any_folder_lists_its_messages_and_unknown_is_404(b):
    msg = b.send("archived one")
    b.send("in the inbox")
    b.api("POST", f"/api/mail/{msg['id']}/move", {"folder": "Archive"})
    page = b.get("/mail?folder=Archive")
    assert page.status == 200 and "archived one" in page.text and "in the inbox" not in page.text
    assert "<h1>Archive</h1>" in page.text
    assert b.get("/mail?folder=Nowhere").status == 404
    assert "in the inbox" in b.get("/mail?folder=inbox").text


def test_sent_keeps_working_and_shows_recipients(b):
    b.send("from bobby", to="alice", sender="bobby")
    for path in ("/mail/sent", "/mail?folder=sent", "/mail?folder=Sent"):
        page = b.get(path)
        assert page.status == 200 and "from bobby" in page.text
        assert '<span class="who">alice</span>' in page.text


# ---------------------------------------------------------------- one message

def test_message_view_buttons_archive_junk_delete_star(b):
    msg = b.send("act on me")
    page = b.get(f"/mail/{msg['id']}")
    for label in ("Archive", "Junk", "Delete", "Star", "Move", "Mark unread"):
        assert re.search(rf"<button[^>]*>(<span[^>]*>[^<]*</span> )?{label}</button>", page.text), label
    assert 'aria-pressed="false"' in page.text

    assert location(b.post(f"/mail/{msg['id']}/star")) == f"/mail/{msg['id']}?flash=Starred"
    assert b.message(msg["id"])["flagged"] is True
    assert re.search(r'aria-pressed="true"[^>]*><span aria-hidden="true">★</span> Starred</button>',
                     b.get(f"/mail/{msg['id']}").text)
    b.post(f"/mail/{msg['id']}/unstar")
    assert b.message(msg["id"])["flagged"] is False

    assert location(b.post(f"/mail/{msg['id']}/archive")) == "/mail?flash=Moved to Archive"
    assert b.subjects("Archive") == ["act on me"] and b.subjects("INBOX") == []
    page = b.get(f"/mail/{msg['id']}")
    assert ">Move to Inbox</button>" in page.text and ">Archive</button>" not in page.text
    assert location(b.post(f"/mail/{msg['id']}/junk")) == "/mail?folder=Archive&flash=Moved to Junk"
    assert b.subjects("Junk") == ["act on me"]
    assert ">Not junk</button>" in b.get(f"/mail/{msg['id']}").text

    assert location(b.post(f"/mail/{msg['id']}/delete")) == "/mail?folder=Junk&flash=Moved to Trash"
    assert b.subjects("Trash") == ["act on me"]
    assert location(b.post(f"/mail/{msg['id']}/delete")) == "/mail?folder=Trash&flash=Deleted for good"
    assert b.get(f"/mail/{msg['id']}").status == 404
    assert b.subjects("Sent", user="alice") == ["act on me"]           # the sender's copy stays


def test_message_move_to_any_folder_and_back_to_inbox(b):
    msg = b.send("wander")
    b.api("POST", "/api/folders", {"name": "Reisen/Grüße"})
    assert location(b.post(f"/mail/{msg['id']}/move", {"folder": "Reisen/Grüße"})) == \
        "/mail?flash=Moved to Reisen/Grüße"
    assert b.subjects("Reisen/Grüße") == ["wander"]
    assert b.post(f"/mail/{msg['id']}/move", {"folder": "Nowhere"}).status == 404
    b.post(f"/mail/{msg['id']}/inbox")
    assert b.subjects("INBOX") == ["wander"]


def test_message_actions_need_csrf_and_own_message(b):
    msg = b.send("guarded")
    theirs = b.send("alice's own", to="alice", sender="alice")
    for action in ("archive", "junk", "delete", "star", "move", "unread"):
        assert b.post(f"/mail/{msg['id']}/{action}", {"folder": "Archive"}, csrf=False).status == 403
        assert b.post(f"/mail/{theirs['id']}/{action}", {"folder": "Archive"}).status == 404
    assert b.post(f"/mail/{msg['id']}/explode").status == 404
    got = b.message(msg["id"])
    assert got["folder"] == "INBOX" and got["flagged"] is False
    assert b.subjects("INBOX", user="alice") == ["alice's own"]


# ---------------------------------------------------------------- several at once

def test_batch_form_moves_the_ticked_messages(b):
    ids = [b.send(f"m{i}")["id"] for i in range(4)]
    b.api("POST", "/api/folders", {"name": "Box"})
    page = b.get("/mail")
    assert page.text.count('class="pick" name="ids"') == 4 and 'aria-label="Select m0"' in page.text
    resp = b.post("/mail/batch", [("ids", ids[0]), ("ids", ids[2]), ("action", "move"), ("folder", "Box"),
                                  ("back", "INBOX")])
    assert location(resp) == "/mail?flash=2 messages moved to Box"
    assert b.subjects("Box") == ["m2", "m0"] and b.subjects("INBOX") == ["m3", "m1"]
    assert location(b.post("/mail/batch", [("ids", ids[1]), ("action", "star"), ("back", "INBOX")])) == \
        "/mail?flash=1 message starred"
    assert b.message(ids[1])["flagged"] is True


@pytest.mark.parametrize("action,check", [
    ("archive", lambda b: b.subjects("Archive") == ["m1", "m0"]),
    ("junk", lambda b: b.subjects("Junk") == ["m1", "m0"]),
    ("delete", lambda b: b.subjects("Trash") == ["m1", "m0"]),
    ("read", lambda b: b.api("GET", "/api/folders")["folders"][0]["unread"] == 1),
    ("unstar", lambda b: [m["flagged"] for m in b.api("GET", "/api/mail")["messages"]] == [True, False, False]),
])
def test_batch_form_actions(b, action, check):
    ids = [b.send(f"m{i}")["id"] for i in range(3)]
    b.api("POST", "/api/mail/batch", {"ids": ids, "action": "flag"})
    b.post("/mail/batch", [("ids", ids[0]), ("ids", ids[1]), ("action", action), ("back", "INBOX")])
    assert check(b)


def test_batch_delete_in_trash_is_for_good_and_returns_to_trash(b):
    ids = [b.send(f"t{i}")["id"] for i in range(2)]
    b.api("POST", "/api/mail/batch", {"ids": ids, "action": "trash"})
    resp = b.post("/mail/batch", [("ids", ids[0]), ("ids", ids[1]), ("action", "delete"), ("back", "Trash")])
    assert location(resp) == "/mail?folder=Trash&flash=2 messages deleted for good"
    assert b.subjects("Trash") == []


def test_batch_form_without_selection_or_csrf_changes_nothing(b):
    msg = b.send("untouched")
    assert location(b.post("/mail/batch", {"action": "archive", "back": "INBOX"})) == \
        "/mail?flash=Select messages first"
    assert b.post("/mail/batch", {"ids": msg["id"], "action": "archive"}, csrf=False).status == 403
    assert b.post("/mail/batch", {"ids": msg["id"], "action": "explode"}).status == 400
    assert b.subjects("INBOX") == ["untouched"]


def test_search_results_can_be_acted_on_and_name_their_folder(b):
    msg = b.send("needle in archive")
    b.api("POST", f"/api/mail/{msg['id']}/move", {"folder": "Archive"})
    page = b.get("/mail?q=needle")
    assert "needle in archive" in page.text and '<span class="in-folder">Archive</span>' in page.text
    resp = b.post("/mail/batch", [("ids", msg["id"]), ("action", "star"), ("back", ""), ("q", "needle")])
    assert location(resp) == "/mail?q=needle&flash=1 message starred"


# ---------------------------------------------------------------- Trash and Junk

def test_empty_trash_asks_first_without_script(b):
    ids = [b.send(f"bin{i}")["id"] for i in range(3)]
    b.api("POST", "/api/mail/batch", {"ids": ids, "action": "trash"})
    page = b.get("/mail?folder=Trash")
    assert ">Empty Trash</button>" in page.text and 'data-confirm="' in page.text
    asked = b.post("/mail/folders/empty", {"folder": "Trash"})
    assert asked.status == 200 and "Delete the 3 messages in Trash for good?" in asked.text
    assert 'name="confirm" value="1"' in asked.text and 'name="folder" value="Trash"' in asked.text
    assert b.subjects("Trash") == ["bin2", "bin1", "bin0"]                   # asking deleted nothing
    resp = b.post("/mail/folders/empty", {"folder": "Trash", "confirm": "1"})
    assert location(resp) == "/mail?folder=Trash&flash=Trash emptied: 3 messages deleted for good"
    assert b.subjects("Trash") == []
    assert ">Empty Trash</button>" not in b.get("/mail?folder=Trash").text


def test_empty_only_trash_or_junk_and_with_csrf(b):
    b.send("stay")
    assert b.post("/mail/folders/empty", {"folder": "INBOX", "confirm": "1"}).status == 400
    assert b.post("/mail/folders/empty", {"folder": "Trash", "confirm": "1"}, csrf=False).status == 403
    assert b.subjects("INBOX") == ["stay"]


# ---------------------------------------------------------------- folder management

def test_folders_page_creates_renames_and_deletes(b):
    page = b.get("/mail/folders")
    assert '<label for="new-folder">New folder</label>' in page.text and ">Create folder</button>" in page.text
    assert location(b.post("/mail/folders", {"name": "Clubs/Chess"})) == \
        "/mail/folders?flash=Folder Clubs/Chess created"
    msg = b.send("checkmate")
    b.post(f"/mail/{msg['id']}/move", {"folder": "Clubs/Chess"})
    page = b.get("/mail/folders")
    assert 'aria-label="Rename Clubs/Chess"' in page.text and 'aria-label="Delete folder Clubs"' in page.text
    assert location(b.post("/mail/folders/rename", {"folder": "Clubs", "name": "Games"})) == \
        "/mail/folders?flash=Folder Clubs renamed to Games"
    assert b.subjects("Games/Chess") == ["checkmate"]
    asked = b.post("/mail/folders/delete", {"folder": "Games"})
    assert asked.status == 200 and "the 1 folder under it" in asked.text
    assert location(b.post("/mail/folders/delete", {"folder": "Games", "confirm": "1"})) == \
        "/mail/folders?flash=Folder Games deleted; 1 message moved to Trash"
    names = [f["name"] for f in b.api("GET", "/api/folders")["folders"]]
    assert "Games" not in names and "Games/Chess" not in names and b.subjects("Trash") == ["checkmate"]


@pytest.mark.parametrize("path,fields,status", [
    ("/mail/folders", {"name": "Archive"}, 400),
    ("/mail/folders", {"name": "a//b"}, 400),
    ("/mail/folders/rename", {"folder": "Sent", "name": "Outbox"}, 403),
    ("/mail/folders/rename", {"folder": "Nope", "name": "X"}, 404),
    ("/mail/folders/delete", {"folder": "INBOX", "confirm": "1"}, 403),
    ("/mail/folders/delete", {"folder": "Nope", "confirm": "1"}, 404),
])
def test_folder_refusals_show_the_page_with_the_error(b, path, fields, status):
    before = b.api("GET", "/api/folders")
    resp = b.post(path, fields)
    assert resp.status == status and 'class="error" role="alert"' in resp.text and "<h1>Folders</h1>" in resp.text
    assert b.api("GET", "/api/folders") == before
    assert b.post(path, fields, csrf=False).status == 403


# ---------------------------------------------------------------- drafts

def compose_fields(**values):
    return dict({"to": "", "subject": "", "body": "", "reply_to": "", "draft_id": ""}, **values)


def test_save_draft_then_continue_then_send(b):
    resp = b.post("/mail/compose", compose_fields(to="alice", subject="plan", body="first go", action="draft"))
    where = location(resp)
    assert where.startswith("/mail/compose?draft=") and where.endswith("&flash=Draft saved")
    draft_id = re.search(r"draft=(\w+)", where).group(1)
    assert b.subjects("Drafts") == ["plan"]
    page = b.get(f"/mail/compose?draft={draft_id}")
    assert f'name="draft_id" value="{draft_id}"' in page.text and 'value="alice"' in page.text
    assert ">first go</textarea>" in page.text and ">Save draft</button>" in page.text
    assert location(b.get(f"/mail/{draft_id}")) == f"/mail/compose?draft={draft_id}"   # opening continues it
    assert f'href="/mail/compose?draft={draft_id}"' in b.get("/mail?folder=Drafts").text
    resp = b.post("/mail/compose", compose_fields(to="alice", subject="plan", body="final", draft_id=draft_id,
                                                  action="draft"))
    newer = re.search(r"draft=(\w+)", location(resp)).group(1)
    assert newer != draft_id and b.subjects("Drafts") == ["plan"]
    sent = location(b.post("/mail/compose", compose_fields(to="alice", subject="plan", body="final",
                                                           draft_id=newer)))
    assert sent.endswith("?flash=Message sent")
    assert b.subjects("Drafts") == [] and b.subjects("Sent") == ["plan"]
    assert b.api("GET", "/api/mail", user="alice")["messages"][0]["body"] == "final"


def test_draft_without_recipient_is_kept_and_send_error_keeps_the_draft(b):
    resp = b.post("/mail/compose", compose_fields(subject="someday", body="idea", action="draft"))
    draft_id = re.search(r"draft=(\w+)", location(resp)).group(1)
    failed = b.post("/mail/compose", compose_fields(to="nobody-here", subject="someday", body="idea",
                                                    draft_id=draft_id))
    assert failed.status == 400 and "unknown recipient" in failed.text
    assert f'name="draft_id" value="{draft_id}"' in failed.text
    assert b.subjects("Drafts") == ["someday"]


def test_draft_attachments_kept_unless_unticked(b):
    files = [{"name": n, "type": "text/plain", "content": base64.b64encode(n.encode()).decode()}
             for n in ("keep.txt", "drop.txt")]
    draft = b.api("POST", "/api/mail", {"draft": True, "to": "alice", "subject": "files", "attachments": files})
    page = b.get(f"/mail/compose?draft={draft['id']}")
    assert page.text.count('name="keep_attachment"') == 2 and "keep.txt" in page.text
    b.post("/mail/compose", compose_fields(to="alice", subject="files", draft_id=draft["id"], keep_attachment="0"))
    got = b.api("GET", "/api/mail", user="alice")["messages"][0]
    assert [a["name"] for a in got["attachments"]] == ["keep.txt"]


def test_draft_reply_keeps_its_thread(b):
    first = b.send("question", to="bobby", sender="alice")
    page = b.get(f"/mail/compose?reply={first['id']}")
    assert f'name="reply_to" value="{first["id"]}"' in page.text
    resp = b.post("/mail/compose", compose_fields(to="alice", subject="Re: question", body="answer",
                                                  reply_to=first["id"], action="draft"))
    draft_id = re.search(r"draft=(\w+)", location(resp)).group(1)
    assert f'name="reply_to" value="{first["id"]}"' in b.get(f"/mail/compose?draft={draft_id}").text
    b.post("/mail/compose", compose_fields(to="alice", subject="Re: question", body="answer",
                                           reply_to=first["id"], draft_id=draft_id))
    reply = b.api("GET", "/api/mail", user="alice")["messages"][0]
    assert reply["thread_id"] == first["thread_id"]


def test_discard_draft_moves_it_to_trash(b):
    draft = b.api("POST", "/api/mail", {"draft": True, "subject": "scrap"})
    assert 'formaction="/mail/%s/delete"' % draft["id"] in b.get(f"/mail/compose?draft={draft['id']}").text
    assert location(b.post(f"/mail/{draft['id']}/delete")) == "/mail?folder=Drafts&flash=Moved to Trash"
    assert b.subjects("Drafts") == [] and b.subjects("Trash") == ["scrap"]


def test_compose_of_unknown_draft_404(b):
    msg = b.send("not a draft")
    assert b.get("/mail/compose?draft=nope").status == 404
    assert b.get(f"/mail/compose?draft={msg['id']}").status == 404


# ---------------------------------------------------------------- dates

def test_dates_are_readable_utc_without_script(b):
    msg = b.send("when")
    stamp = msg["created_at"][:16].replace("T", " ")
    assert f'<time datetime="{msg["created_at"]}" data-style="short">{stamp} UTC</time>' in b.get("/mail").text
    assert f'<time datetime="{msg["created_at"]}">{stamp} UTC</time>' in b.get(f"/mail/{msg['id']}").text
