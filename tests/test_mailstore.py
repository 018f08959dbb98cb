"""The mailbox model: mailboxes, UIDs, flags, MODSEQs, copy/move/expunge, change tracking,
and the upgrade of a store written in format 1. In-process: the real store on a temporary
MU_HOME, reopened where a restart matters."""

import json
import os
import shutil
import threading
import time

import pytest

from inproc import InProcess
from mu.mailstore import CannotDelete, MailboxExists, NoSuchMailbox

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def message(subject="hello", body="body text", mid=None, extra_headers=""):
    mid = mid or f"<{subject.replace(' ', '.')}.{time.monotonic_ns()}@example.org>"
    return (f"From: Carol <carol@example.org>\r\nTo: alice@mu.test\r\nSubject: {subject}\r\n"
            f"Message-ID: {mid}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n{extra_headers}\r\n{body}\r\n").encode()


@pytest.fixture
def site(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    site.add_user("bobby")
    return site


def reopen(site, tmp_path):
    return InProcess(tmp_path)


def test_every_user_has_the_six_mailboxes_with_special_use(site):
    boxes = {b.name: b for b in site.app.mailstore.mailboxes("alice")}
    assert list(boxes)[0] == "INBOX"
    assert {n: b.special_use for n, b in boxes.items()} == {
        "INBOX": "", "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
        "Archive": "\\Archive"}
    assert all(b.subscribed and b.uidnext == 1 and b.total == 0 for b in boxes.values())


def test_append_assigns_ascending_uids_that_survive_restart_and_expunge(site, tmp_path):
    ms = site.app.mailstore
    uidvalidity, first = ms.append("alice", "INBOX", message("one"))
    _, second = ms.append("alice", "INBOX", message("two"), flags=["\\Seen", "$Important"])
    assert (first, second) == (1, 2)
    ms.set_flags("alice", "INBOX", [2], "add", ["\\Deleted"])
    assert ms.expunge("alice", "INBOX") == [2]
    again = reopen(site, tmp_path).app.mailstore
    info = again.mailbox("alice", "INBOX")
    assert info.uidvalidity == uidvalidity and info.uidnext == 3 and info.total == 1
    assert again.append("alice", "INBOX", message("three"))[1] == 3   # UIDs never go back


def test_flags_replace_add_remove_and_keywords_keep_first_spelling(site):
    ms = site.app.mailstore
    ms.append("alice", "INBOX", message("a"))
    changed, failed = ms.set_flags("alice", "INBOX", [1], "add", ["\\Flagged", "$Work"])
    assert failed == [] and changed[1][0] == {"\\Flagged", "$Work"}
    changed, _ = ms.set_flags("alice", "INBOX", [1], "add", ["$work"])
    assert changed == {}   # keywords are case-insensitive: nothing changed, no new MODSEQ
    changed, _ = ms.set_flags("alice", "INBOX", [1], "replace", ["\\Seen"])
    assert changed[1][0] == {"\\Seen"}
    changed, _ = ms.set_flags("alice", "INBOX", [1], "remove", ["\\Seen"])
    assert changed[1][0] == frozenset()
    view = ms.view("alice", "INBOX")
    assert "$Work" in view.keywords and view.modseq(0) == ms.mailbox("alice", "INBOX").highestmodseq


def test_unchangedsince_leaves_newer_messages_alone(site):
    ms = site.app.mailstore
    for s in ("a", "b"):
        ms.append("alice", "INBOX", message(s))
    view = ms.view("alice", "INBOX")
    old = view.modseq(0)
    ms.set_flags("alice", "INBOX", [2], "add", ["\\Seen"])   # 2 is now newer than `old`
    changed, failed = ms.set_flags("alice", "INBOX", [1, 2], "add", ["\\Flagged"],
                                   unchanged_since=max(old, view.modseq(1)))
    assert set(changed) == {1} and failed == [2]   # RFC 7162 §3.1.3


def test_copy_and_move_keep_flags_and_dates_and_report_uid_pairs(site):
    ms = site.app.mailstore
    for s in ("a", "b", "c"):
        ms.append("alice", "INBOX", message(s), internal_date=1_600_000_000)
    ms.set_flags("alice", "INBOX", [2], "add", ["\\Flagged"])
    ms.create_mailbox("alice", "Projects")
    uidvalidity, pairs = ms.copy("alice", "INBOX", [2, 3, 99], "Projects")
    assert pairs == [(2, 1), (3, 2)] and uidvalidity == ms.mailbox("alice", "Projects").uidvalidity
    view = ms.view("alice", "Projects")
    assert view.flags(0) == {"\\Flagged"} and view.internal_date(0) == 1_600_000_000
    _, moved = ms.move("alice", "INBOX", [1], "Archive")
    assert moved == [(1, 1)]
    assert list(ms.view("alice", "INBOX").uids) == [2, 3]
    assert ms.raw("alice", "Archive", 1) == message("a")[:0] + ms.raw("alice", "Archive", 1)
    assert b"Subject: a" in ms.raw("alice", "Archive", 1)


def test_a_view_is_shared_until_its_mailbox_changes_and_stays_as_it_was(site):
    ms = site.app.mailstore
    for subject in ("one", "two", "three"):
        ms.append("alice", "INBOX", message(subject), flags=["\\Seen"])
    first = ms.view("alice", "INBOX")
    assert ms.view("alice", "INBOX") is first and first.first_unseen() is None
    ms.set_flags("alice", "INBOX", [2], "remove", ["\\Seen"])
    second = ms.view("alice", "INBOX")
    assert second is not first and second.first_unseen() == 1
    assert first.first_unseen() is None and "\\Seen" in first.flags(1)   # a reader's copy holds still
    ms.append("alice", "INBOX", message("four"))
    third = ms.view("alice", "INBOX")
    assert len(third) == 4 and len(second) == 3
    ms.rename_mailbox("alice", "INBOX", "Old")
    assert ms.view("alice", "Old").name == "Old"
    assert len(ms.view("alice", "INBOX")) == 0


def test_create_rename_delete_mailboxes(site, tmp_path):
    ms = site.app.mailstore
    ms.create_mailbox("alice", "Work")
    ms.create_mailbox("alice", "Work/2026")
    with pytest.raises(MailboxExists):
        ms.create_mailbox("alice", "Work")
    ms.append("alice", "Work/2026", message("report"))
    ms.rename_mailbox("alice", "Work", "Jobs")
    names = [b.name for b in ms.mailboxes("alice")]
    assert "Jobs" in names and "Jobs/2026" in names and "Work" not in names
    assert ms.mailbox("alice", "Jobs/2026").total == 1
    for name in ("INBOX", "Sent", "Trash"):
        with pytest.raises(CannotDelete):
            ms.delete_mailbox("alice", name)
    old_validity = ms.mailbox("alice", "Jobs").uidvalidity
    ms.delete_mailbox("alice", "Jobs")
    with pytest.raises(NoSuchMailbox):
        ms.view("alice", "Jobs")
    ms.create_mailbox("alice", "Jobs")
    assert ms.mailbox("alice", "Jobs").uidvalidity > old_validity   # re-created: a new UIDVALIDITY
    assert [b.name for b in reopen(site, tmp_path).app.mailstore.mailboxes("alice")] == \
        [b.name for b in ms.mailboxes("alice")]


def test_renaming_inbox_moves_its_messages_and_leaves_it_empty(site):
    ms = site.app.mailstore
    ms.append("alice", "INBOX", message("old mail"))
    before = ms.mailbox("alice", "INBOX").uidvalidity
    ms.rename_mailbox("alice", "INBOX", "Old")
    assert ms.mailbox("alice", "Old").total == 1
    inbox = ms.mailbox("alice", "INBOX")
    assert inbox.total == 0 and inbox.uidvalidity != before


def test_bad_mailbox_names_are_refused(site):
    from mu.mailstore import BadMailboxName
    for name in ("", "a//b", "/lead", "trail/", "has*star", "per%cent", "ctl\x01", "x" * 300):
        with pytest.raises(BadMailboxName):
            site.app.mailstore.create_mailbox("alice", name)


def test_changes_since_lists_flag_changes_and_expunges(site):
    ms = site.app.mailstore
    for s in ("a", "b", "c"):
        ms.append("alice", "INBOX", message(s))
    mark = ms.mailbox("alice", "INBOX").highestmodseq
    ms.set_flags("alice", "INBOX", [1], "add", ["\\Seen"])
    ms.set_flags("alice", "INBOX", [3], "add", ["\\Deleted"])
    ms.expunge("alice", "INBOX")
    expunged, changed = ms.changes("alice", "INBOX", mark)
    assert expunged == [3] and [(uid, set(flags)) for uid, flags, _ in changed] == [(1, {"\\Seen"})]


def test_wait_wakes_when_mail_arrives(site):
    ms = site.app.mailstore
    generation = ms.generation("alice")
    threading.Timer(0.2, lambda: ms.append("alice", "INBOX", message("wake up"))).start()
    started = time.monotonic()
    assert ms.wait("alice", generation, timeout=10) > generation
    assert time.monotonic() - started < 5


def test_wait_sees_another_process_within_a_second(site, tmp_path):
    ms = site.app.mailstore
    generation = ms.generation("alice")
    other = InProcess(tmp_path)   # a second store on the same MU_HOME, as the CLI has
    threading.Timer(0.2, lambda: other.app.mailstore.append("alice", "INBOX", message("from the cli"))).start()
    started = time.monotonic()
    assert ms.wait("alice", generation, timeout=10) > generation
    assert time.monotonic() - started < 2


def test_web_read_state_is_imap_seen_and_back(site):
    token = site.token("bobby")
    sent = site.web.request("POST", "/api/mail", token=site.token("alice"),
                            json_body={"to": "bobby", "subject": "seen?", "body": "x"}).json()
    ms = site.app.mailstore
    view = ms.view("bobby", "INBOX")
    assert "\\Seen" not in view.flags(0)
    site.web.request("GET", f"/api/mail/{sent['id']}", token=token)   # read on the web
    assert "\\Seen" in ms.view("bobby", "INBOX").flags(0)
    ms.set_flags("bobby", "INBOX", [view.uids[0]], "remove", ["\\Seen"])   # unread in IMAP
    listed = site.web.request("GET", "/api/mail?folder=inbox", token=token).json()
    assert listed["messages"][0]["read"] is False and listed["unread"] == 1
    assert "\\Seen" in ms.view("alice", "Sent").flags(0)   # the sender's copy in Sent


def test_append_to_sent_of_a_message_mu_sent_is_not_stored_twice(site):
    sent = site.web.request("POST", "/api/mail", token=site.token("alice"),
                            json_body={"to": "bobby", "subject": "once", "body": "x"}).json()
    ms = site.app.mailstore
    raw = site.app.mailbox.raw("alice", sent["id"])
    before = ms.mailbox("alice", "Sent")
    uidvalidity, uid = ms.append("alice", "Sent", raw, flags=["\\Seen"])
    assert ms.mailbox("alice", "Sent").total == before.total
    assert (uidvalidity, uid) == (before.uidvalidity, ms.view("alice", "Sent").uids[-1])
    assert ms.append("alice", "INBOX", raw)[1] == 1   # elsewhere it is a message like any other


def test_raw_is_the_same_bytes_every_time_and_size_matches(site):
    sent = site.web.request("POST", "/api/mail", token=site.token("alice"),
                            json_body={"to": "bobby", "subject": "stable", "body": "é" * 3000,
                                       "attachments": [{"name": "a.bin", "type": "application/octet-stream",
                                                        "content": "AAEC"}]}).json()
    ms = site.app.mailstore
    uid = ms.view("bobby", "INBOX").uids[0]
    first, second = ms.raw("bobby", "INBOX", uid), ms.raw("bobby", "INBOX", uid)
    assert first == second == site.app.mailbox.raw("bobby", sent["id"])
    assert ms.message("bobby", "INBOX", uid).size == len(first)


def test_search_finds_body_and_subject_newest_first(site):
    ms = site.app.mailstore
    for i in range(30):
        ms.append("alice", "INBOX", message(f"note {i}", body="the zebra crossing" if i % 10 == 3 else "plain"))
    hits = site.app.mailbox.search("alice", "ZEBRA")
    assert [h["subject"] for h in hits] == ["note 23", "note 13", "note 3"]
    assert [h["subject"] for h in site.app.mailbox.search("alice", "note 2")][:2] == ["note 29", "note 28"]
    assert site.app.mailbox.search("bobby", "zebra") == []   # never another user's mail
    assert ms.search_text("alice", "INBOX", "zebra") == {4, 14, 24}


@pytest.mark.parametrize("chunk", [1, 37, 200, 4096])
def test_search_reads_its_index_in_chunks_without_losing_or_repeating_a_line(site, monkeypatch, chunk):
    from mu import search
    ms = site.app.mailstore
    for i in range(30):
        body = ("word " * (60 if i % 4 == 0 else 2)) + f"mark{i:02d} common"   # some lines longer than a chunk
        ms.append("alice", "INBOX", message(f"chunked {i}", body=body))
    monkeypatch.setattr(search, "CHUNK_BYTES", chunk)
    everything = site.app.mailbox.search("alice", "common", limit=100)
    assert [h["subject"] for h in everything] == [f"chunked {i}" for i in range(29, -1, -1)]
    assert [h["subject"] for h in site.app.mailbox.search("alice", "mark17")] == ["chunked 17"]
    assert [h["subject"] for h in site.app.mailbox.search("alice", "mark00")] == ["chunked 0"]


def test_upgrade_from_format_1(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(os.path.join(DATA, "store-v1"), home)
    token = open(os.path.join(DATA, "store-v1.token")).read().strip()
    site = InProcess(tmp_path)
    snapshot = json.loads((home / "mail.json").read_bytes())
    assert snapshot["format"] == "mu-store-2" and (home / "mail.journal").read_bytes() == b""
    web = site.web
    assert web.request("GET", "/api/me", token=token).json()["name"] == "alice"
    inbox = web.request("GET", "/api/mail?folder=inbox", token=token).json()
    subjects = [(m["subject"], m["read"]) for m in inbox["messages"]]
    assert subjects == [("Grüße", True), ("Re: Hello Bob", False)] and inbox["unread"] == 1
    sent = [m["subject"] for m in web.request("GET", "/api/mail?folder=sent", token=token).json()["messages"]]
    assert sent == ["Deleted by bob", "Outbound", "Hello Bob"]
    reply = next(m for m in inbox["messages"] if m["subject"] == "Re: Hello Bob")
    first = next(m for m in web.request("GET", "/api/mail?folder=sent", token=token).json()["messages"]
                 if m["subject"] == "Hello Bob")
    assert reply["thread_id"] == first["id"]
    att = web.request("GET", reply["attachments"][0]["url"], token=token)
    assert att.body == b"attached bytes\n"
    assert web.request("GET", f"/api/mail/{reply['id']}", token=token).json()["body"] == "long reply " * 200
    carol = next(m for m in inbox["messages"] if m["subject"] == "Grüße")
    raw = web.request("GET", f"/api/mail/{carol['id']}/raw", token=token).body
    assert raw.startswith(b"Received: from x ([192.0.2.1])") and b"--b\r\nContent-Type: text/html" in raw
    raw_first = site.app.mailbox.raw("alice", first["id"])
    assert raw_first == site.app.mailbox.raw("alice", first["id"]) and b"Subject: Hello Bob" in raw_first
    outbound = next(m for m in web.request("GET", "/api/mail?folder=sent", token=token).json()["messages"]
                    if m["subject"] == "Outbound")
    assert outbound["status"] == "queued"
    with site.app.store.reading() as state:
        assert [e["msg"] for e in state.queue.values()] == [outbound["id"]]
    ms = site.app.mailstore
    assert ms.mailbox("bobby", "INBOX").total == 1   # the message bobby deleted stays deleted
    validity = ms.mailbox("alice", "INBOX").uidvalidity
    again = InProcess(tmp_path)
    assert again.app.mailstore.mailbox("alice", "INBOX").uidvalidity == validity
    assert again.app.mailbox.search("alice", "plain body")[0]["subject"] == "Grüße"


def test_first_without_finds_the_first_mask_lacking_a_bit():
    from array import array
    from mu.folders import SEEN, first_without
    masks = array("Q", [SEEN | 1 << 40, SEEN | 1 << 9, 1 << 9, SEEN, 0])
    assert first_without(masks, SEEN) == 2
    assert first_without(array("Q", [SEEN] * 1000), SEEN) is None
    assert first_without(array("Q"), SEEN) is None
    assert first_without(masks, 2) == 0


def test_count_with_counts_the_masks_holding_a_bit():
    from array import array
    from mu.folders import DELETED, SEEN, count_with
    masks = array("Q", [DELETED | 1 << 40, SEEN, DELETED | SEEN, 1 << 9, 0] * 5000)
    assert count_with(masks, DELETED) == 10000 and count_with(masks, SEEN) == 10000
    assert count_with(array("Q"), DELETED) == 0

