"""The JSON API's mailboxes: folders, moving, flags, batches, Trash and drafts (in-process)."""

import base64
import shutil
import urllib.parse

import pytest

from inproc import InProcess

DEFAULTS = {"INBOX": "", "Drafts": "\\Drafts", "Sent": "\\Sent", "Archive": "\\Archive", "Junk": "\\Junk",
            "Trash": "\\Trash"}


USERS = ("alice", "bobby", "carol")


class Site:
    """Three users with 10 credits and API tokens; `call` answers (status, JSON or None).

    Each test gets a copy of one MU_HOME made per module: hashing three passwords with
    scrypt costs more than most of these tests do."""

    def __init__(self, tmp_path, template):
        home, self.tokens = template
        shutil.copytree(home, tmp_path / "home")
        self.inproc = InProcess(tmp_path)
        self.app = self.inproc.app

    def call(self, user, method, path, body=None):
        resp = self.inproc.web.request(method, path, token=self.tokens[user], json_body=body)
        return resp.status, (resp.json() if resp.body else None)

    def send(self, sender="alice", to="bobby", subject="hello", body="hi", **extra):
        status, msg = self.call(sender, "POST", "/api/mail", {"to": to, "subject": subject, "body": body, **extra})
        assert status == 201, msg
        return msg

    def folders(self, user) -> dict:
        status, data = self.call(user, "GET", "/api/folders")
        assert status == 200
        return {f["name"]: f for f in data["folders"]}

    def listing(self, user, folder, **params) -> list:
        query = urllib.parse.urlencode(dict(folder=folder, **params))
        status, data = self.call(user, "GET", f"/api/mail?{query}")
        assert status == 200, data
        return data["messages"]

    def subjects(self, user, folder) -> list:
        return [m["subject"] for m in self.listing(user, folder)]

    def imap_flags(self, user, folder, msg_id) -> set:
        """The message's flags as an IMAP client sees them in that mailbox."""
        view = self.app.mailstore.view(user, folder)
        with self.app.store.reading() as state:
            n = state.messages.number_of(msg_id)
        return set(view.flags(list(view.msgs).index(n)))


def quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    made = InProcess(tmp_path_factory.mktemp("template"))
    for name in USERS:
        made.add_user(name, credits=10)
    tokens = {name: made.token(name) for name in USERS}
    return made.config.home, tokens


@pytest.fixture
def site(tmp_path, template):
    return Site(tmp_path, template)


# ---------------------------------------------------------------- folders

def test_folders_list_every_default_mailbox_with_counts(site):
    site.send(subject="one")
    site.send(subject="two")
    folders = site.folders("bobby")
    assert {name: f["special_use"] for name, f in folders.items()} == DEFAULTS
    assert folders["INBOX"]["total"] == 2 and folders["INBOX"]["unread"] == 2
    assert site.folders("alice")["Sent"] == {"name": "Sent", "special_use": "\\Sent", "total": 2, "unread": 0}
    status, data = site.call("bobby", "GET", "/api/folders")
    assert [f["name"] for f in data["folders"]] == list(DEFAULTS)   # the order mail clients show


def test_create_folder_201_nested_creates_parents(site):
    status, folder = site.call("bobby", "POST", "/api/folders", {"name": "Projects/2026"})
    assert status == 201 and folder == {"name": "Projects/2026", "special_use": "", "total": 0, "unread": 0}
    names = list(site.folders("bobby"))
    assert names[len(DEFAULTS):] == ["Projects", "Projects/2026"]
    assert "Projects" not in site.folders("alice")          # one user's folders only


@pytest.mark.parametrize("body,status", [
    ({"name": "Archive"}, 400), ({"name": "inbox"}, 400), ({"name": ""}, 400), ({}, 400), ({"name": 7}, 400),
    ({"name": "a//b"}, 400), ({"name": "/lead"}, 400), ({"name": "x%"}, 400), ({"name": "tab\there"}, 400),
    ({"name": "x" * 256}, 400),
])
def test_create_folder_bad_or_taken_name(site, body, status):
    before = list(site.folders("bobby"))
    got, data = site.call("bobby", "POST", "/api/folders", body)
    assert got == status and data["error"]
    assert list(site.folders("bobby")) == before


def test_rename_folder_keeps_messages_and_subfolders(site):
    msg = site.send(subject="plans")
    site.call("bobby", "POST", "/api/folders", {"name": "Work/Old"})
    assert site.call("bobby", "POST", f"/api/mail/{msg['id']}/move", {"folder": "Work"})[0] == 200
    status, folder = site.call("bobby", "PATCH", "/api/folders/Work", {"name": "Jobs"})
    assert status == 200 and folder["name"] == "Jobs" and folder["total"] == 1
    names = set(site.folders("bobby"))
    assert {"Jobs", "Jobs/Old"} <= names and not {"Work", "Work/Old"} & names
    assert site.subjects("bobby", "Jobs") == ["plans"]
    assert site.call("bobby", "GET", "/api/mail?folder=Work")[0] == 404


@pytest.mark.parametrize("name,body,status", [
    ("Nope", {"name": "X"}, 404), ("Work", {"name": "Archive"}, 400), ("Work", {"name": "Work/Inner"}, 400),
    ("Work", {"name": ""}, 400), ("Work", {}, 400), ("INBOX", {"name": "X"}, 403), ("Sent", {"name": "X"}, 403),
    ("Trash", {"name": "Bin"}, 403),
])
def test_rename_folder_refusals(site, name, body, status):
    site.call("bobby", "POST", "/api/folders", {"name": "Work"})
    before = site.folders("bobby")
    got, data = site.call("bobby", "PATCH", f"/api/folders/{name}", body)
    assert got == status and data["error"]
    assert site.folders("bobby") == before


def test_delete_folder_204_its_messages_go_to_trash(site):
    kept = site.send(subject="only in Work")
    both = site.send(subject="also in INBOX")
    site.call("bobby", "POST", "/api/folders", {"name": "Work/Sub"})
    site.call("bobby", "POST", f"/api/mail/{kept['id']}/move", {"folder": "Work/Sub"})
    site.app.mailstore.copy("bobby", "INBOX", [site.app.mailstore.view("bobby", "INBOX").uids[-1]], "Work")
    status, _ = site.call("bobby", "DELETE", "/api/folders/Work")
    assert status == 204
    assert not {"Work", "Work/Sub"} & set(site.folders("bobby"))       # with the folders under it
    assert site.subjects("bobby", "Trash") == ["only in Work"]
    assert site.subjects("bobby", "INBOX") == ["also in INBOX"]          # a copy elsewhere stays put
    assert site.call("bobby", "GET", f"/api/mail/{both['id']}")[1]["folders"] == ["INBOX"]


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_delete_default_folder_403(site, name):
    site.send()
    status, data = site.call("bobby", "DELETE", f"/api/folders/{name}")
    assert status == 403 and "cannot" in data["error"]
    assert site.folders("bobby")["INBOX"]["total"] == 1


def test_delete_unknown_folder_404(site):
    status, data = site.call("bobby", "DELETE", "/api/folders/Nope")
    assert status == 404 and data["error"]


def test_folder_names_with_slash_and_non_ascii_in_urls(site):
    name = "Reisen/Grüße 2026"
    assert site.call("bobby", "POST", "/api/folders", {"name": name})[0] == 201
    msg = site.send(subject="postcard")
    assert site.call("bobby", "POST", f"/api/mail/{msg['id']}/move", {"folder": name})[1]["folder"] == name
    assert site.subjects("bobby", name) == ["postcard"]
    status, folder = site.call("bobby", "PATCH", f"/api/folders/{quoted(name)}", {"name": "Reisen/Ärger"})
    assert status == 200 and folder["total"] == 1
    assert site.call("bobby", "DELETE", f"/api/folders/{quoted('Reisen/Ärger')}")[0] == 204
    assert site.subjects("bobby", "Trash") == ["postcard"]


def test_empty_trash_204_deletes_for_good(site):
    ids = [site.send(subject=f"m{i}")["id"] for i in range(3)]
    site.call("bobby", "POST", "/api/mail/batch", {"ids": ids[:2], "action": "trash"})
    status, _ = site.call("bobby", "POST", "/api/folders/Trash/empty")
    assert status == 204
    assert site.folders("bobby")["Trash"]["total"] == 0
    assert all(site.call("bobby", "GET", f"/api/mail/{i}")[0] == 404 for i in ids[:2])
    assert site.subjects("bobby", "INBOX") == ["m2"]
    assert site.call("alice", "GET", f"/api/mail/{ids[0]}")[0] == 200     # the sender keeps theirs


def test_empty_junk_and_only_trash_or_junk(site):
    msg = site.send(subject="spammy")
    site.call("bobby", "POST", "/api/mail/batch", {"ids": [msg["id"]], "action": "junk"})
    assert site.call("bobby", "POST", "/api/folders/Junk/empty")[0] == 204
    assert site.folders("bobby")["Junk"]["total"] == 0
    site.send(subject="keep")
    status, data = site.call("bobby", "POST", "/api/folders/INBOX/empty")
    assert status == 400 and "Trash" in data["error"]
    assert site.call("bobby", "POST", "/api/folders/Nope/empty")[0] == 404
    assert site.subjects("bobby", "INBOX") == ["keep"]


# ---------------------------------------------------------------- listing any mailbox

def test_list_any_folder_and_the_old_names(site):
    msg = site.send(subject="to archive")
    site.send(subject="stays")
    site.call("bobby", "POST", f"/api/mail/{msg['id']}/move", {"folder": "Archive"})
    assert site.subjects("bobby", "Archive") == ["to archive"]
    assert site.subjects("bobby", "inbox") == site.subjects("bobby", "INBOX") == ["stays"]
    assert site.subjects("alice", "sent") == site.subjects("alice", "Sent") == ["stays", "to archive"]
    entry = site.listing("bobby", "Archive")[0]
    assert entry["folder"] == "Archive" and entry["flagged"] is False and "folders" not in entry


def test_list_unknown_folder_404(site):
    status, data = site.call("bobby", "GET", "/api/mail?folder=Nowhere")
    assert status == 404 and "Nowhere" in data["error"]


def test_list_pages_through_any_folder(site):
    ids = [site.send(subject=f"n{i}")["id"] for i in range(5)]
    site.call("bobby", "POST", "/api/mail/batch", {"ids": ids, "action": "archive"})
    first = site.listing("bobby", "Archive", limit=2)
    assert [m["id"] for m in first] == ids[::-1][:2]
    rest = site.listing("bobby", "Archive", limit=10, before=first[-1]["id"])
    assert [m["id"] for m in rest] == ids[::-1][2:]


def test_search_within_a_named_folder(site):
    moved = site.send(subject="zebra one")
    site.send(subject="zebra two")
    site.call("bobby", "POST", f"/api/mail/{moved['id']}/move", {"folder": "Archive"})
    everywhere = site.call("bobby", "GET", "/api/mail?q=zebra")[1]["messages"]
    assert sorted(m["subject"] for m in everywhere) == ["zebra one", "zebra two"]
    assert [m["subject"] for m in site.listing("bobby", "Archive", q="zebra")] == ["zebra one"]


def test_a_search_while_the_index_is_behind_answers_at_once_and_says_so(site, monkeypatch):
    from mu import search
    for i in range(5):
        site.send(subject=f"zebra {i}")
    # The index may not catch up within a request: one message a batch, no time to spare.
    monkeypatch.setattr(search, "INDEX_BATCH", 1)
    monkeypatch.setattr(search, "WEB_INDEX_SECONDS", 0)
    status, data = site.call("bobby", "GET", "/api/mail?q=zebra")
    assert status == 200 and 0 < data["indexing"] < 10 and len(data["messages"]) < 5
    page = site.inproc.web.request("GET", "/mail?q=zebra", token=site.tokens["bobby"]).text
    assert "Search is still indexing" in page
    monkeypatch.setattr(search, "WEB_INDEX_SECONDS", 60)
    monkeypatch.setattr(search, "INDEX_BATCH", 2000)
    status, data = site.call("bobby", "GET", "/api/mail?q=zebra")
    assert "indexing" not in data and len(data["messages"]) == 5


# ---------------------------------------------------------------- one message

def test_patch_read_and_flagged_200_seen_by_imap(site):
    msg = site.send(subject="flag me")
    status, got = site.call("bobby", "PATCH", f"/api/mail/{msg['id']}", {"flagged": True})
    assert status == 200 and got["flagged"] is True and got["read"] is False
    assert site.imap_flags("bobby", "INBOX", msg["id"]) == {"\\Flagged"}
    status, got = site.call("bobby", "PATCH", f"/api/mail/{msg['id']}", {"read": True, "flagged": False})
    assert status == 200 and got["read"] is True and got["flagged"] is False
    assert site.imap_flags("bobby", "INBOX", msg["id"]) == {"\\Seen"}
    assert site.folders("bobby")["INBOX"]["unread"] == 0
    site.call("bobby", "PATCH", f"/api/mail/{msg['id']}", {"read": False})
    assert site.folders("bobby")["INBOX"]["unread"] == 1


@pytest.mark.parametrize("body", [{}, {"read": "yes"}, {"flagged": 1}, {"starred": True}, {"read": True, "x": 1}])
def test_patch_bad_input_400_changes_nothing(site, body):
    msg = site.send()
    status, data = site.call("bobby", "PATCH", f"/api/mail/{msg['id']}", body)
    assert status == 400 and data["error"]
    assert site.imap_flags("bobby", "INBOX", msg["id"]) == set()


def test_other_users_message_404_for_every_change(site):
    msg = site.send(subject="private")
    for method, path, body in (("PATCH", f"/api/mail/{msg['id']}", {"flagged": True}),
                               ("POST", f"/api/mail/{msg['id']}/move", {"folder": "Archive"})):
        status, data = site.call("carol", method, path, body)
        assert status == 404 and data["error"]
    assert site.call("carol", "POST", "/api/mail/batch", {"ids": [msg["id"]], "action": "delete"})[1] == {"done": 0}
    got = site.call("bobby", "GET", f"/api/mail/{msg['id']}")[1]
    assert got["folder"] == "INBOX" and got["flagged"] is False


def test_move_200_and_its_refusals(site):
    msg = site.send(subject="move me")
    status, got = site.call("bobby", "POST", f"/api/mail/{msg['id']}/move", {"folder": "Archive"})
    assert status == 200 and got["folder"] == "Archive" and got["folders"] == ["Archive"]
    assert site.subjects("bobby", "INBOX") == []
    assert site.call("bobby", "POST", f"/api/mail/{msg['id']}/move", {"folder": "Nope"})[0] == 404
    assert site.call("bobby", "POST", f"/api/mail/{msg['id']}/move", {})[0] == 400
    assert site.call("bobby", "POST", "/api/mail/no-such-id/move", {"folder": "INBOX"})[0] == 404
    assert site.call("bobby", "POST", f"/api/mail/{msg['id']}/move", {"folder": "inbox"})[1]["folder"] == "INBOX"


def test_single_message_lists_every_folder_holding_it(site):
    msg = site.send(subject="copied")
    uid = site.app.mailstore.view("bobby", "INBOX").uids[-1]
    site.app.mailstore.copy("bobby", "INBOX", [uid], "Archive")     # as an IMAP COPY does
    got = site.call("bobby", "GET", f"/api/mail/{msg['id']}")[1]
    assert got["folder"] == "INBOX" and got["folders"] == ["Archive", "INBOX"]
    assert site.call("bobby", "DELETE", f"/api/mail/{msg['id']}")[0] == 204   # gone from both at once
    assert site.folders("bobby")["INBOX"]["total"] == site.folders("bobby")["Archive"]["total"] == 0
    assert site.call("alice", "GET", f"/api/mail/{msg['id']}")[0] == 200


def test_delete_in_any_folder_204(site):
    msg = site.send()
    site.call("bobby", "POST", "/api/folders", {"name": "Keep"})
    site.call("bobby", "POST", f"/api/mail/{msg['id']}/move", {"folder": "Keep"})
    assert site.call("bobby", "DELETE", f"/api/mail/{msg['id']}")[0] == 204
    assert site.call("bobby", "GET", f"/api/mail/{msg['id']}")[0] == 404
    assert site.folders("bobby")["Keep"]["total"] == 0 and site.folders("bobby")["Trash"]["total"] == 0


# ---------------------------------------------------------------- batches

def test_batch_actions_each_do_what_they_say(site):
    ids = [site.send(subject=f"b{i}")["id"] for i in range(4)]

    def batch(action, **extra):
        status, data = site.call("bobby", "POST", "/api/mail/batch", {"ids": ids[:3], "action": action, **extra})
        assert status == 200, data
        return data

    assert batch("read") == {"done": 3}
    assert site.folders("bobby")["INBOX"]["unread"] == 1
    batch("unread")
    assert site.folders("bobby")["INBOX"]["unread"] == 4
    batch("flag")
    assert [m["flagged"] for m in site.listing("bobby", "INBOX")] == [False, True, True, True]
    batch("unflag")
    assert not any(m["flagged"] for m in site.listing("bobby", "INBOX"))
    site.call("bobby", "POST", "/api/folders", {"name": "Box"})
    batch("move", folder="Box")
    assert site.subjects("bobby", "Box") == ["b2", "b1", "b0"] and site.subjects("bobby", "INBOX") == ["b3"]
    batch("archive")
    assert site.subjects("bobby", "Archive") == ["b2", "b1", "b0"] and site.subjects("bobby", "Box") == []
    batch("junk")
    assert len(site.subjects("bobby", "Junk")) == 3
    batch("trash")
    assert len(site.subjects("bobby", "Trash")) == 3 and site.subjects("bobby", "Junk") == []
    batch("trash")                                              # in Trash already: for good
    assert site.folders("bobby")["Trash"]["total"] == 0
    assert site.call("bobby", "GET", f"/api/mail/{ids[0]}")[0] == 404
    status, data = site.call("bobby", "POST", "/api/mail/batch", {"ids": [ids[3]], "action": "delete"})
    assert data == {"done": 1} and site.folders("bobby")["INBOX"]["total"] == 0


def test_batch_counts_only_the_callers_messages(site):
    mine = site.send(subject="mine")["id"]
    theirs = site.send(to="carol", subject="theirs")["id"]
    status, data = site.call("bobby", "POST", "/api/mail/batch",
                             {"ids": [mine, theirs, "nonsense", mine], "action": "archive"})
    assert status == 200 and data == {"done": 1}
    assert site.subjects("carol", "INBOX") == ["theirs"]


@pytest.mark.parametrize("body", [
    {"ids": [], "action": "read"}, {"ids": "abc", "action": "read"}, {"ids": [1, 2], "action": "read"},
    {"action": "read"}, {"ids": ["x"]}, {"ids": ["x"], "action": "explode"}, {"ids": ["x"], "action": "move"},
    {"ids": ["x"] * 1001, "action": "read"},
])
def test_batch_bad_input_400(site, body):
    msg = site.send()
    body = {k: ([msg["id"] if i == "x" else i for i in v] if k == "ids" and isinstance(v, list) else v)
            for k, v in body.items()}
    status, data = site.call("bobby", "POST", "/api/mail/batch", body)
    assert status == 400 and data["error"]
    assert site.imap_flags("bobby", "INBOX", msg["id"]) == set()


def test_batch_move_to_unknown_folder_404_moves_nothing(site):
    msg = site.send()
    status, data = site.call("bobby", "POST", "/api/mail/batch", {"ids": [msg["id"]], "action": "move",
                                                                  "folder": "Nowhere"})
    assert status == 404 and data["error"]
    assert site.subjects("bobby", "INBOX") == ["hello"]


def test_batch_is_one_commit_per_mailbox(site):
    ids = [site.send(subject=f"c{i}")["id"] for i in range(40)]
    site.call("bobby", "POST", "/api/mail/batch", {"ids": ids[:10], "action": "junk"})
    commits = []
    real_commit = site.app.store.commit

    def counting(*args, **kwargs):
        commits.append(1)
        return real_commit(*args, **kwargs)

    site.app.store.commit = counting
    status, data = site.call("bobby", "POST", "/api/mail/batch", {"ids": ids, "action": "archive"})
    assert data == {"done": 40} and len(commits) == 2          # one move from INBOX, one from Junk
    commits.clear()
    site.call("bobby", "POST", "/api/mail/batch", {"ids": ids, "action": "read"})
    assert len(commits) == 1
    assert site.folders("bobby")["Archive"] == {"name": "Archive", "special_use": "\\Archive", "total": 40,
                                                "unread": 0}


# ---------------------------------------------------------------- drafts

def test_save_draft_201_in_drafts_and_replace(site):
    status, draft = site.call("alice", "POST", "/api/mail", {"draft": True, "subject": "half", "body": "wri"})
    assert status == 201 and draft["folder"] == "Drafts" and draft["draft"] is True and draft["to"] == []
    assert site.imap_flags("alice", "Drafts", draft["id"]) == {"\\Draft", "\\Seen"}
    status, newer = site.call("alice", "POST", "/api/mail", {"draft": True, "to": "bobby", "subject": "half",
                                                            "body": "written", "replace": draft["id"]})
    assert status == 201 and newer["id"] != draft["id"]
    assert [m["body"] for m in site.listing("alice", "Drafts")] == ["written"]
    assert site.call("alice", "GET", f"/api/mail/{draft['id']}")[0] == 404
    assert site.listing("bobby", "INBOX") == []                   # a draft goes to nobody


def test_send_draft_by_id_uses_its_content_and_removes_it(site):
    payload = base64.b64encode(b"col1,col2\n").decode()
    _, draft = site.call("alice", "POST", "/api/mail", {
        "draft": True, "to": "bobby", "subject": "report", "body": "attached",
        "attachments": [{"name": "r.csv", "type": "text/csv", "content": payload}]})
    status, sent = site.call("alice", "POST", "/api/mail", {"draft_id": draft["id"]})
    assert status == 201, sent
    assert sent["folder"] == "Sent" and sent["to"] == ["bobby"] and sent["subject"] == "report"
    assert [a["name"] for a in sent["attachments"]] == ["r.csv"]
    assert site.folders("alice")["Drafts"]["total"] == 0
    got = site.listing("bobby", "INBOX")[0]
    assert got["body"] == "attached" and got["draft"] is False
    att = site.inproc.web.request("GET", got["attachments"][0]["url"], token=site.tokens["bobby"])
    assert att.body == b"col1,col2\n"


def test_send_draft_fields_given_override_the_draft(site):
    _, draft = site.call("alice", "POST", "/api/mail", {"draft": True, "to": "carol", "subject": "s", "body": "old"})
    status, sent = site.call("alice", "POST", "/api/mail", {"draft_id": draft["id"], "to": "bobby", "body": "new"})
    assert status == 201 and sent["to"] == ["bobby"] and sent["subject"] == "s"
    assert site.listing("bobby", "INBOX")[0]["body"] == "new" and site.listing("carol", "INBOX") == []


def test_draft_reply_keeps_its_thread_when_sent(site):
    first = site.send(subject="question")
    _, draft = site.call("bobby", "POST", "/api/mail", {"draft": True, "to": "alice", "body": "answer",
                                                       "subject": "Re: question", "reply_to": first["id"]})
    assert draft["reply_to"] == first["id"] and draft["in_reply_to"] == first["message_id"]
    status, sent = site.call("bobby", "POST", "/api/mail", {"draft_id": draft["id"]})
    assert status == 201 and sent["thread_id"] == first["thread_id"] and sent["in_reply_to"] == first["message_id"]


@pytest.mark.parametrize("body_of", [
    lambda d, m: {"draft_id": m["id"]},                            # not a draft
    lambda d, m: {"draft_id": "no-such-id"},
    lambda d, m: {"draft": True, "replace": m["id"], "body": "x"},
    lambda d, m: {"draft": True, "replace": "no-such-id", "body": "x"},
    lambda d, m: {"draft": True, "draft_id": d["id"]},
    lambda d, m: {"to": "bobby", "replace": d["id"]},
    lambda d, m: {"draft": "yes", "body": "x"},
    lambda d, m: {"draft": True, "reply_to": "no-such-id"},
])
def test_draft_refusals_400_change_nothing(site, body_of):
    msg = site.send(subject="sent one")
    _, draft = site.call("alice", "POST", "/api/mail", {"draft": True, "to": "bobby", "body": "d"})
    before = (site.folders("alice"), site.folders("bobby"))
    status, data = site.call("alice", "POST", "/api/mail", body_of(draft, msg))
    assert status == 400 and data["error"]
    assert (site.folders("alice"), site.folders("bobby")) == before


def test_draft_to_external_without_credits_402_stays_a_draft(site):
    _, draft = site.call("alice", "POST", "/api/mail", {"draft": True, "to": "x@example.org", "body": "d"})
    while site.call("alice", "POST", "/api/mail", {"to": "y@example.org", "body": "spend"})[0] == 201:
        pass                                                       # spend every credit alice has
    status, data = site.call("alice", "POST", "/api/mail", {"draft_id": draft["id"]})
    assert status == 402 and "credits" in data["error"]
    assert [m["id"] for m in site.listing("alice", "Drafts")] == [draft["id"]]
