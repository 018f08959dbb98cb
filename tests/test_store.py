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

    def bad(state, refs):
        raise ValueError("nope")

    with pytest.raises(ValueError):
        s.commit(bad)
    assert (tmp_path / "mail.journal").read_bytes() == b""


def test_blobs_round_trip(tmp_path):
    s = Store(str(tmp_path))
    refs = s.commit(lambda state, refs: ([], refs), blobs=[b"one", b"\x00two" * 1000])
    assert s.read_blob(refs[0]) == b"one" and s.read_blob(refs[1]) == b"\x00two" * 1000


CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
from mu.store import Store
s = Store(sys.argv[1])
i = int(sys.argv[3])
while True:
    name = f"m{i}"
    s.commit(lambda st, refs: ([{"op": "user.put", "name": name, "fields": {"blob": refs[0]}}], None),
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
                assert s.read_blob(state.users[n]["blob"]) == n.encode() * 50
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
    s.commit(lambda state, refs: ([], refs), blobs=[b"first"])
    pack = next((tmp_path / "blobs").iterdir())
    with open(pack, "ab") as f:
        f.write(b'"dG9ybg')          # a crash mid-append
    s2 = Store(str(tmp_path))
    refs = s2.commit(lambda state, refs: ([], refs), blobs=[b"second"])
    assert s2.read_blob(refs[0]) == b"second"
    assert [json.loads(l) for l in pack.read_bytes().splitlines()] == ["Zmlyc3Q=", "c2Vjb25k"]
