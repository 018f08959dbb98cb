"""Real IMAP clients against mu's live IMAP server: mbsync (Debian isync) syncing a whole
account down and changes back up, and neomutt driven through tmux reading, flagging and
moving a message."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import wait_for
from imap_site import PASSWORD, IMAPSite, message


def _flags_of(store, user, box):
    view = store.view(user, box)
    return {view.uids[i]: set(view.flags(i)) for i in range(len(view.uids))}


@pytest.mark.skipif(not shutil.which("mbsync"), reason="needs isync (make test installs it)")
def test_mbsync_syncs_the_account_down_and_changes_back_up(tmp_path):
    site = IMAPSite(tmp_path / "server")
    try:
        site.add_user("alice")
        for i in range(5):
            site.deliver("alice", message(f"inbox {i}"))
        site.deliver("alice", message("filed"), mailbox="Archive")
        site.store.create_mailbox("alice", "Projects/2026")
        site.deliver("alice", message("plans"), mailbox="Projects/2026")
        local = tmp_path / "mail"
        local.mkdir()
        rc = tmp_path / "mbsyncrc"
        rc.write_text(f"""IMAPAccount mu
Host 127.0.0.1
Port {site.port}
User alice
Pass {PASSWORD}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account mu

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel mu
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")

        def sync():
            out = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stdout + out.stderr
            return out

        sync()
        inbox = sorted((local / "INBOX" / "new").iterdir())
        assert len(inbox) == 5
        assert len(list((local / "Archive" / "new").iterdir())) == 1
        assert len(list((local / "Projects" / "2026" / "new").iterdir())) == 1
        assert b"Subject: inbox 0" in inbox[0].read_bytes() or any(b"Subject: inbox 0" in f.read_bytes()
                                                                       for f in inbox)
        # changes made locally: read and flag one, delete another, file a new message
        seen, gone = inbox[0], inbox[1]
        cur = local / "INBOX" / "cur"
        seen.rename(cur / (seen.name.split(":2,")[0] + ":2,FS"))
        gone.rename(cur / (gone.name.split(":2,")[0] + ":2,T"))
        (local / "Projects" / "2026" / "new" / "local.1:2,S").write_bytes(message("written offline"))
        sync()
        flags = _flags_of(site.store, "alice", "INBOX")
        assert len(flags) == 4
        assert sum(1 for f in flags.values() if {"\\Seen", "\\Flagged"} <= f) == 1
        projects = site.store.view("alice", "Projects/2026")
        assert len(projects.uids) == 2 and "\\Seen" in projects.flags(1)
        # and a change made on the server comes down
        uid = next(u for u, f in flags.items() if not f)
        site.store.set_flags("alice", "INBOX", [uid], "add", ["\\Answered"])
        sync()
        assert any(p.name.endswith(":2,R") for p in cur.iterdir()) or any(
            ",U=%d:2,R" % uid in p.name for p in (local / "INBOX" / "cur").iterdir())
    finally:
        site.close()


@pytest.mark.skipif(not (shutil.which("neomutt") and shutil.which("tmux")), reason="needs neomutt and tmux")
def test_neomutt_reads_flags_and_moves_a_message(tmp_path):
    site = IMAPSite(tmp_path / "server")
    session = f"mu-neomutt-{os.getpid()}"
    try:
        site.add_user("bob")
        site.deliver("bob", message("hello from neomutt's test", "The body neomutt shows."))
        home = tmp_path / "home"
        home.mkdir()
        muttrc = home / "muttrc"
        muttrc.write_text(f"""set folder = "imap://bob@127.0.0.1:{site.port}/"
set imap_pass = "{PASSWORD}"
set spoolfile = "+INBOX"
set ssl_starttls = no
set ssl_force_tls = no
set imap_check_subscribed = no
set mail_check = 1
set timeout = 1
set confirmappend = no
set confirmcreate = no
set move = no
set delete = yes
set sort = date
set pager_stop = yes
set header_cache = ""
set message_cachedir = ""
set wait_key = no
""")
        env = dict(os.environ, HOME=str(home), TERM="xterm", LANG="C.UTF-8")

        def tmux(*args):
            return subprocess.run(["tmux", *args], capture_output=True, text=True, env=env, timeout=30)

        def screen():
            return tmux("capture-pane", "-p", "-t", session).stdout

        tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "40", f"neomutt -n -F {muttrc}")
        wait_for(lambda: "hello from neomutt" in screen(), timeout=30, message="neomutt to list the message")
        tmux("send-keys", "-t", session, "Enter")             # read it
        wait_for(lambda: "The body neomutt shows." in screen(), timeout=20, message="the message body")
        tmux("send-keys", "-t", session, "q")
        tmux("send-keys", "-t", session, "F")                 # flag it
        tmux("send-keys", "-t", session, "$")                 # write the change to the server
        wait_for(lambda: any({"\\Seen", "\\Flagged"} <= f for f in _flags_of(site.store, "bob", "INBOX").values()),
                 timeout=20, message="\\Seen and \\Flagged on the server")
        tmux("send-keys", "-t", session, "s")                 # save (move) to Archive
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "C-u", "=Archive", "Enter")
        tmux("send-keys", "-t", session, "$")
        wait_for(lambda: site.store.mailbox("bob", "Archive").total == 1, timeout=20, message="the move")
        wait_for(lambda: site.store.mailbox("bob", "INBOX").total == 0, timeout=20, message="INBOX emptied")
        tmux("send-keys", "-t", session, "q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        site.close()
