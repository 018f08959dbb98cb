"""The store: durability, atomicity, cross-process visibility, compaction, crash safety."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, wait_for
from mu.store import Store


def put_user(store, name, credits=0):
    return store.commit(lambda state, refs: ([{"op": "user.put", "name": name, "fields": {"credits": credits}}], name))


def test_commit_survives_reload(tmp_path):
    s = Store(str(tmp_path))
    put_user(s, "alice", 3)
    s2 = Store(str(tmp_path))
    with s2.reading() as state:
        assert state.users["alice"]["credits"] == 3


def test_other_process_writes_are_seen(tmp_path):
    a, b = Store(str(tmp_path)), Store(str(tmp_path))
    put_user(a, "alice")
    with b.reading() as state:
        assert "alice" in state.users
    put_user(b, "bob")
    with a.reading() as state:
        assert {"alice", "bob"} <= set(state.users)


def test_torn_journal_line_is_dropped(tmp_path):
    s = Store(str(tmp_path))
    put_user(s, "alice")
    with open(tmp_path / "mail.journal", "ab") as f:
        f.write(b'{"seq": 99, "op": "user.put", "name": "ghost", "fie')
    s2 = Store(str(tmp_path))
    with s2.reading() as state:
        assert "alice" in state.users and "ghost" not in state.users
    put_user(s2, "bob")
    lines = (tmp_path / "mail.journal").read_bytes().splitlines()
    assert all(json.loads(l) for l in lines)


def test_compaction_keeps_state_and_replay_is_idempotent(tmp_path):
    s = Store(str(tmp_path))
    for i in range(50):
        put_user(s, f"user{i}", i)
    journal_before = (tmp_path / "mail.journal").read_bytes()
    s.compact()
    assert (tmp_path / "mail.journal").read_bytes() == b""
    snapshot = json.loads((tmp_path / "mail.json").read_bytes())
    assert snapshot["seq"] == 50 and len(snapshot["state"]["users"]) == 50
    # A crash between snapshot and journal replacement leaves the old journal: replay skips it.
    (tmp_path / "mail.journal").write_bytes(journal_before)
    s2 = Store(str(tmp_path))
    with s2.reading() as state:
        assert len(state.users) == 50 and state.users["user7"]["credits"] == 7
    other = Store(str(tmp_path))
    other.compact()
    put_user(other, "late")
    with s2.reading() as state:    # notices the journal was replaced by another process
        assert "late" in state.users


def test_failed_build_writes_nothing(tmp_path):
    s = Store(str(tmp_path))

    def bad(state, written):
        raise ValueError("nope")

    with pytest.raises(ValueError):
        s.commit(bad)
    assert (tmp_path / "mail.journal").read_bytes() == b""


def test_blobs_and_records_round_trip(tmp_path):
    s = Store(str(tmp_path))
    written = s.commit(lambda state, written: ([], written), blobs=[b"one", b"\x00two" * 1000],
                       metas=[b'{"subject":"hi"}'])
    assert s.blobs.read(*written.blobs[0]) == b"one" and s.blobs.read(*written.blobs[1]) == b"\x00two" * 1000
    assert s.meta.read(*written.metas[0]) == {"subject": "hi"}


CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
from mu.store import Store
s = Store(sys.argv[1])
i = int(sys.argv[3])
while True:
    name = f"m{i}"
    s.commit(lambda st, w: ([{"op": "user.put", "name": name, "fields": {"blob": list(w.blobs[0])}}], None),
             blobs=[name.encode() * 50])
    sys.stdout.write(name + "\n"); sys.stdout.flush()
    i += 1
"""


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path):
    home = str(tmp_path / "home")
    acknowledged = []
    start = 0
    for round_ in range(20):
        child = subprocess.Popen([sys.executable, "-c", CHILD, home, ROOT, str(start)], stdout=subprocess.PIPE)
        first = wait_for(lambda: child.stdout.readline(), timeout=10)   # running
        acknowledged.append(first.decode().strip())
        time.sleep(random.uniform(0.01, 0.15))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        done = [l for l in out.decode().split("\n") if l]
        acknowledged += done
        start += 100000
        s = Store(home)   # must load after every crash
        with s.reading() as state:
            missing = [n for n in acknowledged if n not in state.users]
            assert not missing, f"round {round_}: lost {missing[:5]}"
            for n in acknowledged[-5:]:
                assert s.blobs.read(*state.users[n]["blob"]) == n.encode() * 50
    assert len(acknowledged) > 20


def test_every_file_is_json_or_json_lines(make_mu):
    import smtplib
    mu = make_mu()
    name = mu.add_user()
    mu.cli("blocklist", "add", "x@y.org")
    mu.send(mu.token(name), name, subject="s", body="b" * 5000)
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        s.sendmail("a@example.org", [f"{name}@mu.test"], b"Subject: x\r\n\r\n" + b"\xc3\xa9 8bit\r\n" * 500)
    checked = 0
    for folder, _dirs, files in os.walk(mu.home):
        for f in files:
            data = open(os.path.join(folder, f), "rb").read()
            if f.endswith((".journal", ".jsonl")):
                for line in data.splitlines():
                    json.loads(line)
            else:
                json.loads(data)
            checked += 1
    assert checked >= 5


def test_torn_blob_line_is_cut_before_the_next_append(tmp_path):
    s = Store(str(tmp_path))
    s.commit(lambda state, written: ([], written), blobs=[b"first"])
    pack = next((tmp_path / "blobs").iterdir())
    with open(pack, "ab") as f:
        f.write(b'"dG9ybg')          # a crash mid-append
    s2 = Store(str(tmp_path))
    written = s2.commit(lambda state, written: ([], written), blobs=[b"second"])
    assert s2.blobs.read(*written.blobs[0]) == b"second"
    assert [json.loads(l) for l in pack.read_bytes().splitlines()] == ["Zmlyc3Q=", "c2Vjb25k"]


# ---------------------------------------------------------------- reclamation

def _mailstore(store):
    from mu import config as config_mod
    from mu.mailstore import MailStore
    with store.reading() as state:
        present = "alice" in state.users
    if not present:
        store.commit(lambda state, w: ([] if "alice" in state.users else [
            {"op": "user.put", "name": "alice", "fields": {"created_at": 1_700_000_000}}], None))
    return MailStore(store, config_mod.load({"MU_HOME": store.home}))


def add_message(store, i: int, size: int = 50_000, user: str = "alice") -> str:
    """A received message whose raw copy is a `size`-byte blob starting with a tag of i;
    returns its id."""
    from mu.records import NewMessage
    tag = f"{i:020x}".encode()
    raw = (tag * (size // 20 + 1))[:size]
    new = NewMessage({"kind": "inbound", "subject": str(i), "owners": [user], "attachments": []}, raw)
    return _mailstore(store).store_message(new, [(user, "INBOX", [], i, 0)])["id"]


def tag_of(i: int) -> bytes:
    return f"{i:020x}".encode()


def delete_message(store, mid: str, user: str = "alice") -> None:
    ms = _mailstore(store)
    with store.reading() as state:
        n = state.messages.number_of(mid)
        uids = [box.uids[i] for box, i in state.mail[user].entries_of(n)]
    ms.expunge(user, "INBOX", uids, deleted_only=False)


def raw_of(store, mid: str) -> bytes:
    with store.reading() as state:
        n = state.messages.number_of(mid)
    return _mailstore(store).raw_of(n)


def packs(home) -> dict:
    folder = os.path.join(home, "blobs")
    return {n: os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)}


def test_reclaim_gives_back_deleted_messages_space_and_keeps_the_rest(tmp_path):
    home = str(tmp_path)
    s = Store(home)
    ids = [add_message(s, i) for i in range(20)]
    keep = ids[::4]
    for mid in ids:
        if mid not in keep:
            delete_message(s, mid)
    before = sum(packs(home).values())
    other = Store(home)   # another process's view, loaded before the pass
    with other.reading() as state:
        n0 = state.messages.number_of(keep[0])
        old_pos = state.blobs.pos[state.messages.first_blob[n0]], state.blobs.len[state.messages.first_blob[n0]]

    first = s.reclaim(min_dead_bytes=0)
    assert first["rewritten"] == ["000001"] and first["removed"] == []
    assert other.blobs.read(*old_pos) == raw_of(s, keep[0])   # old positions still read until the next pass
    for i, mid in zip(range(0, 20, 4), keep):
        assert raw_of(s, mid) == raw_of(Store(home), mid) and raw_of(s, mid)[:20] == tag_of(i)

    second = s.reclaim(min_dead_bytes=0)
    assert second["removed"] == ["000001"] and second["bytes_freed"] > 0
    assert "000001.jsonl" not in packs(home)
    after = sum(packs(home).values())
    assert after < before * 0.35, (before, after)
    fresh = Store(home)
    assert [raw_of(fresh, mid)[:20] for mid in keep] == [tag_of(i) for i in range(0, 20, 4)]
    assert raw_of(other, keep[0]) == raw_of(s, keep[0])   # the other process caught up with the moves
    new = add_message(s, 99)   # appends go on after a pass
    assert raw_of(Store(home), new)[:20] == tag_of(99)
    assert s.reclaim(min_dead_bytes=0) == {"rewritten": [], "removed": [], "bytes_freed": 0}


def test_deleting_everything_gives_the_space_back_too(tmp_path):
    s = Store(str(tmp_path))
    for mid in [add_message(s, i) for i in range(5)]:
        delete_message(s, mid)
    assert s.reclaim(min_dead_bytes=0)["rewritten"] == ["000001"]   # a new newest pack
    assert s.reclaim(min_dead_bytes=0)["removed"] == ["000001"]
    assert s.reclaim(min_dead_bytes=0) == {"rewritten": [], "removed": [], "bytes_freed": 0}
    assert sum(packs(str(tmp_path)).values()) == 0
    mid = add_message(s, 7)
    assert raw_of(Store(str(tmp_path)), mid)[:20] == tag_of(7)


def test_reclaim_leaves_a_pack_that_is_mostly_alive(tmp_path):
    s = Store(str(tmp_path))
    ids = [add_message(s, i) for i in range(10)]
    delete_message(s, ids[0])
    assert s.reclaim(min_dead_bytes=0)["rewritten"] == []
    assert s.reclaim()["rewritten"] == []   # nor below the default minimum


RECLAIM_CHILD = r"""
import random, sys
sys.path.insert(0, sys.argv[2]); sys.path.insert(0, sys.argv[2] + "/tests")
from mu.store import Store
from test_store import add_message, delete_message
s = Store(sys.argv[1])
i = int(sys.argv[3])
alive = []
while True:
    alive.append(add_message(s, i, size=random.randint(1, 30_000)))
    print("add", alive[-1], i, flush=True)
    i += 1
    if len(alive) > 5 and random.random() < 0.6:
        mid = alive.pop(random.randrange(len(alive)))
        print("deleting", mid, 0, flush=True)
        delete_message(s, mid)
        print("deleted", mid, 0, flush=True)
    if random.random() < 0.2:
        s.reclaim(min_dead_bytes=0)
"""


def test_sigkill_during_reclaim_loses_nothing(tmp_path):
    """Writes, deletes and reclaim passes in a loop, killed at random moments: every message
    added and not deleted reads back whole after each reload."""
    home = str(tmp_path / "home")
    os.makedirs(home)
    added, deleted, start = {}, set(), 0
    for round_ in range(12):
        child = subprocess.Popen([sys.executable, "-c", RECLAIM_CHILD, home, ROOT, str(start)],
                                 stdout=subprocess.PIPE, cwd=ROOT)
        first = wait_for(lambda: child.stdout.readline(), timeout=10)
        time.sleep(random.uniform(0.05, 0.4))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        for line in (first + out).decode().split("\n")[:-1]:   # whole lines only: the kill may cut one
            kind, mid, i = line.split()
            if kind == "add":
                added[mid] = int(i)
            else:
                deleted.add(mid)   # "deleting" too: it may or may not have happened
        start += 1_000_000
        s = Store(home)
        for mid, i in added.items():
            if mid not in deleted:
                raw = raw_of(s, mid)
                assert raw == (tag_of(i) * (len(raw) // 20 + 1))[:len(raw)], f"round {round_}: {mid}"
    assert len(added) - len(deleted) > 20
    assert "000001.jsonl" not in packs(home)   # passes did run, and removed packs


def test_commits_during_compaction_are_kept_and_only_they_stay_in_the_journal(tmp_path, monkeypatch):
    """Compaction writes its snapshot without the locks: what is committed meanwhile (here
    by this process and by another) must survive it, a restart, and a crash between
    putting the snapshot in place and cutting the journal."""
    s, other = Store(str(tmp_path)), Store(str(tmp_path))
    for i in range(20):
        put_user(s, f"before{i}")
    write = Store._write_fresh_snapshot

    def write_while_others_commit(self, path, snapshot):
        put_user(s, "during-here", 1)
        put_user(other, "during-there", 2)
        write(self, path, snapshot)

    monkeypatch.setattr(Store, "_write_fresh_snapshot", write_while_others_commit)
    s.compact()
    monkeypatch.undo()
    journal = open(tmp_path / "mail.journal", "rb").read().splitlines()
    assert [json.loads(line)["name"] for line in journal] == ["during-here", "during-there"]
    for store in (s, other, Store(str(tmp_path))):
        with store.reading() as state:
            assert {f"before{i}" for i in range(20)} | {"during-here", "during-there"} <= set(state.users)
            assert state.users["during-there"]["credits"] == 2
    put_user(other, "after")
    with s.reading() as state:
        assert "after" in state.users

    # A crash after the snapshot is in place but before the journal is cut: replay skips
    # the records the snapshot already holds.
    def crash(self, offset):
        raise KeyboardInterrupt("crash")

    put_user(s, "late")
    monkeypatch.setattr(Store, "_keep_journal_after", crash)
    with pytest.raises(KeyboardInterrupt):
        s.compact()
    monkeypatch.undo()
    again = Store(str(tmp_path))
    with again.reading() as state:
        assert {"during-here", "during-there", "after", "late"} <= set(state.users)
        assert len([u for u in state.users if u.startswith("before")]) == 20


def test_compact_command_gives_back_space_while_the_server_runs(make_mu):
    """Deleted through the API, reclaimed by `mu.py compact` (twice: the second pass removes
    what the first emptied); the running server still shows every kept message whole."""
    import smtplib
    mu = make_mu()
    name = mu.add_user()
    token = mu.token(name)
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:
        for i in range(12):
            body = (f"message {i} ".encode() * 10_000)[:100_000]
            s.sendmail("a@example.org", [f"{name}@{mu.domain}"],
                       b"Subject: big %d\r\n\r\n" % i + b"\r\n".join(body[j:j + 76] for j in range(0, len(body), 76)))
    listed = mu.inbox(token)["messages"]
    keep = {m["id"]: mu.http("GET", f"/api/mail/{m['id']}/raw", token).body for m in listed[:3]}
    for m in listed[3:]:
        assert mu.http("DELETE", f"/api/mail/{m['id']}", token).status in (200, 204)
    blobs = os.path.join(mu.home, "blobs")
    before = sum(os.path.getsize(os.path.join(blobs, n)) for n in os.listdir(blobs))
    assert "1 rewritten" in mu.cli("compact").stdout
    for mid, raw in keep.items():   # the server reads through the new refs at once
        assert mu.http("GET", f"/api/mail/{mid}/raw", token).body == raw
    with smtplib.SMTP("127.0.0.1", mu.smtp_port) as s:   # and appends to the new pack
        s.sendmail("a@example.org", [f"{name}@{mu.domain}"], b"Subject: later\r\n\r\n" + b"\r\n".join([b"x" * 70] * 80) + b"\r\n")
    assert "1 removed" in mu.cli("compact").stdout
    after = sum(os.path.getsize(os.path.join(blobs, n)) for n in os.listdir(blobs))
    assert after < before / 3, (before, after)
    for mid, raw in keep.items():
        assert mu.http("GET", f"/api/mail/{mid}/raw", token).body == raw
        assert "message" in mu.http("GET", f"/api/mail/{mid}", token).json()["body"]
    mu.restart()
    assert {m["id"] for m in mu.inbox(token)["messages"]} - set(keep) == {mu.inbox(token)["messages"][0]["id"]}
    for mid, raw in keep.items():
        assert mu.http("GET", f"/api/mail/{mid}/raw", token).body == raw


def test_sweeper_reclaims_hourly_and_only_when_worth_it(tmp_path, monkeypatch):
    import mu.store as store_mod
    s = Store(str(tmp_path))
    ids = [add_message(s, i) for i in range(10)]
    assert s.maybe_reclaim() is False                      # not an hour since start-up
    s._last_reclaim_check -= store_mod.RECLAIM_INTERVAL_SECONDS
    assert s.maybe_reclaim() is False                      # nothing dead
    for mid in ids[:8]:
        delete_message(s, mid)
    monkeypatch.setattr(store_mod, "RECLAIM_MIN_DEAD_BYTES", 1000)
    assert s.maybe_reclaim() is False                      # checked within the hour
    s._last_reclaim_check -= store_mod.RECLAIM_INTERVAL_SECONDS
    assert s.maybe_reclaim() is True
    assert [raw_of(Store(str(tmp_path)), mid)[:20] for mid in ids[8:]] == [tag_of(8), tag_of(9)]


def test_compaction_by_another_process_is_followed_without_reloading(tmp_path):
    """A process that folded the journal we had read to its end into a snapshot leaves our
    state as it is (a million-message state is not parsed again); one that also moved
    lines (reclamation) makes us load its snapshot."""
    s, other = Store(str(tmp_path)), Store(str(tmp_path))
    put_user(s, "alice")
    with other.reading():
        pass                     # caught up to the end
    held = other.state
    s.compact()
    put_user(s, "bob")
    with other.reading() as state:
        assert state is held and {"alice", "bob"} <= set(state.users)
    keep = add_message(s, 1)
    for mid in [add_message(s, i) for i in range(2, 8)]:
        delete_message(s, mid)
    with other.reading():
        held = other.state
    assert s.reclaim(min_dead_bytes=0)["rewritten"]
    with other.reading() as state:
        assert state is not held   # positions moved: loaded again
    assert raw_of(other, keep)[:20] == tag_of(1)


def test_segment_lines_read_together_are_the_lines_read_one_by_one(tmp_path, monkeypatch):
    from mu import segments
    seg = segments.Segments(str(tmp_path / "blobs"), rotate_bytes=5000)   # several segments
    rng = random.Random(7)
    spans = []
    for i in range(400):
        line = (f"{i}:" + "x" * rng.choice([1, 10, 300, 3000])).encode() + b"\n"
        spans += seg.append_lines([line])
    monkeypatch.setattr(segments, "READ_GAP_BYTES", 500)
    monkeypatch.setattr(segments, "READ_SPAN_BYTES", 4000)
    for _ in range(20):
        picked = sorted(rng.sample(spans, rng.randint(1, 60)) + [spans[5]] * rng.randint(0, 2))
        assert seg.read_lines(picked) == [seg.read_line(pos, length) for pos, length in picked]
    assert seg.read_lines([]) == []
    pos, length = spans[0]
    with pytest.raises(OSError):
        seg.read_lines([(pos, length + 1)])   # a span that does not end a line
