"""Moving mail in and out: `mu.py import` (mbox, Maildir, .eml), `export`, `backup`, `check`."""

import mailbox
import os
import shutil
import subprocess
import sys

import pytest

from conftest import MU, ROOT
from inproc import InProcess


def cli(home, *args, input=None):
    env = dict(os.environ, MU_HOME=str(home), MAIL_DOMAIN="mu.test")
    return subprocess.run([sys.executable, MU, *args], env=env, input=input, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def mbox_text(count=5, start=0):
    out = []
    for i in range(start, start + count):
        out.append(f"From sender{i}@example.org Mon Jan  1 10:{i % 60:02d}:00 2024\n"
                   f"From: s{i}@example.org\nTo: alice@mu.test\nSubject: mbox {i}\nMessage-ID: <m{i}@x>\n"
                   f"Status: {'RO' if i % 2 else 'O'}\nX-Status: {'F' if i == 2 else ''}\n\n"
                   f"body {i}\n>From the quoted line\n>>From twice quoted\nFrom inside a line is fine\n\n")
    return "".join(out)


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "users", "add", "alice", input="pw\n").returncode == 0
    return home


def test_import_mbox_unquotes_keeps_flags_and_dates_and_is_idempotent(home, tmp_path):
    path = tmp_path / "t.mbox"
    path.write_text(mbox_text())
    first = cli(home, "import", "alice", str(path))
    assert first.returncode == 0 and first.stdout.splitlines()[-1] == "imported 5, skipped 0, failed 0"
    again = cli(home, "import", "alice", str(path))
    assert again.stdout.splitlines()[-1] == "imported 0, skipped 5, failed 0"
    site = InProcess(home.parent)
    ms = site.app.mailstore
    view = ms.view("alice", "INBOX")
    assert len(view) == 5
    raw = ms.raw("alice", "INBOX", view.uids[0])
    assert raw.endswith(b"body 0\r\nFrom the quoted line\r\n>From twice quoted\r\nFrom inside a line is fine\r\n")
    assert [sorted(view.flags(i)) for i in range(5)] == [[], ["\\Seen"], ["\\Flagged"], ["\\Seen"], []]
    assert view.internal_date(0) == 1704103200   # the From line's date: 2024-01-01 10:00:00 UTC
    listed = site.app.mailbox.list("alice", "inbox")[0]
    assert listed[-1]["created_at"] == "2024-01-01T10:00:00+00:00"


def test_import_to_a_folder_creates_it_and_counts_failures(home, tmp_path):
    path = tmp_path / "t.mbox"
    big = "x" * 2000
    path.write_text(mbox_text(3) + f"From big@example.org Mon Jan  1 11:00:00 2024\nSubject: huge\n\n{big}\n")
    env_limit = dict(MAIL_MAX_SIZE="1500")
    result = subprocess.run([sys.executable, MU, "import", "alice", str(path), "--folder", "Old/2024"],
                            env=dict(os.environ, MU_HOME=str(home), MAIL_DOMAIN="mu.test", **env_limit),
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "imported 3, skipped 0, failed 1"
    assert "message 4" in result.stderr and "MAIL_MAX_SIZE" in result.stderr
    names = [b.name for b in InProcess(home.parent).app.mailstore.mailboxes("alice")]
    assert "Old" in names and "Old/2024" in names


def test_import_refuses_unknown_user_and_missing_path_writing_nothing(tmp_path):
    fresh = tmp_path / "fresh"
    result = cli(fresh, "import", "nobody", str(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("mu: error:") and not fresh.exists()
    home = tmp_path / "home"
    cli(home, "users", "add", "alice", input="pw\n")
    before = sorted(os.listdir(home))
    journal = (home / "mail.journal").read_bytes()
    result = cli(home, "import", "alice", str(tmp_path / "missing.mbox"))
    assert result.returncode == 2 and "no such file" in result.stderr
    assert sorted(os.listdir(home)) == before and (home / "mail.journal").read_bytes() == journal


def test_export_is_a_maildir_that_pythons_mailbox_reads_and_round_trips(home, tmp_path):
    path = tmp_path / "t.mbox"
    path.write_text(mbox_text(4))
    cli(home, "import", "alice", str(path))
    site = InProcess(home.parent)
    ms = site.app.mailstore
    ms.create_mailbox("alice", "Projects")
    ms.create_mailbox("alice", "Projects/v1.0")
    ms.copy("alice", "INBOX", [1, 3], "Projects/v1.0")
    ms.set_flags("alice", "Projects/v1.0", [1], "add", ["$Label1", "\\Answered"])
    out = tmp_path / "out"
    result = cli(home, "export", "alice", str(out))
    assert result.returncode == 0 and "exported 6 messages" in result.stdout
    md = mailbox.Maildir(str(out), factory=None, create=False)   # Python's own Maildir reader
    assert len(md) == 4 and {"Sent", "Drafts", "Trash", "Junk", "Archive", "Projects"} <= set(md.list_folders())
    assert "Projects.v1%2E0" in md.list_folders()   # Maildir++: one flat level, "." between names
    sub = md.get_folder("Projects.v1%2E0")
    assert sorted(m["Subject"] for m in sub) == ["mbox 0", "mbox 2"]
    assert sorted(m.get_flags() for m in sub) == ["F", "Ra"]   # X-Status F; \\Answered and keyword a
    # ... and importing the export into a new account gives the same mailboxes, bytes and flags
    cli(home, "users", "add", "bobby", input="pw\n")
    back = cli(home, "import", "bobby", str(out))
    assert back.stdout.splitlines()[-1] == "imported 6, skipped 0, failed 0"
    site = InProcess(home.parent)
    ms = site.app.mailstore
    for name in ("INBOX", "Projects/v1.0"):
        a, b = ms.view("alice", name), ms.view("bobby", name)
        assert [ms.raw("alice", name, u) for u in a.uids] == [ms.raw("bobby", name, u) for u in b.uids]
        assert [a.flags(i) for i in range(len(a))] == [b.flags(i) for i in range(len(b))]
        assert [a.internal_date(i) for i in range(len(a))] == [b.internal_date(i) for i in range(len(b))]


def test_import_eml_folder_and_bare_lf(home, tmp_path):
    folder = tmp_path / "emls"
    folder.mkdir()
    (folder / "a.eml").write_bytes(b"Subject: first\nFrom: a@example.org\n\nline one\nline two\n")
    (folder / "b.eml").write_bytes(b"Subject: second\r\nFrom: b@example.org\r\n\r\ncrlf already\r\n")
    (folder / "notes.txt").write_bytes(b"not mail")
    result = cli(home, "import", "alice", str(folder))
    assert result.stdout.splitlines()[-1] == "imported 2, skipped 0, failed 0"
    ms = InProcess(home.parent).app.mailstore
    raws = [ms.raw("alice", "INBOX", u) for u in ms.view("alice", "INBOX").uids]
    assert raws[0] == b"Subject: first\r\nFrom: a@example.org\r\n\r\nline one\r\nline two\r\n"
    assert raws[1].endswith(b"crlf already\r\n")


def test_backup_while_writing_restores_everything_acknowledged_before_it(home, tmp_path):
    site = InProcess(home.parent)
    ms = site.app.mailstore
    for i in range(20):
        ms.append("alice", "INBOX", b"Subject: before %d\r\n\r\nkept\r\n" % i)
    dest = tmp_path / "backup"
    assert cli(home, "backup", str(dest)).returncode == 0
    ms.append("alice", "INBOX", b"Subject: after\r\n\r\nnot in the backup\r\n")
    copy = tmp_path / "restored" / "home"
    shutil.copytree(dest, copy)
    restored = InProcess(copy.parent).app.mailstore
    assert len(restored.view("alice", "INBOX")) == 20
    assert restored.raw("alice", "INBOX", 20) == b"Subject: before 19\r\n\r\nkept\r\n"
    assert cli(copy, "check").stdout.splitlines()[-1] == "store OK"
    assert cli(home, "backup", str(dest)).returncode == 2   # never over an existing backup


def test_check_names_a_damaged_blob(home, tmp_path):
    site = InProcess(home.parent)
    site.app.mailstore.append("alice", "INBOX", b"Subject: x\r\n\r\n" + b"y" * 5000 + b"\r\n")
    pack = next((home / "blobs").iterdir())
    data = bytearray(pack.read_bytes())
    data[10:14] = b"!!!!"
    pack.write_bytes(bytes(data))
    result = cli(home, "check")
    assert result.returncode == 1 and "PROBLEM: message 0: blob at blobs/000001.jsonl" in result.stdout
