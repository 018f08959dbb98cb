"""The command line: users, tokens, blocklist, dkim status, errors, and a running server
seeing CLI changes without a restart."""

import os
import stat
import subprocess
import sys

import pytest

from conftest import MU, ROOT, Mu, unique


@pytest.fixture
def home_mu(tmp_path):
    return Mu(str(tmp_path / "home"))   # not started: CLI only


def test_help_exits_0():
    out = subprocess.run([sys.executable, MU, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "users" in out.stdout and "blocklist" in out.stdout


def test_runs_as_executable():
    assert os.access(MU, os.X_OK)
    out = subprocess.run([MU, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0


def test_users_add_list_set(home_mu):
    home_mu.cli("users", "add", "alice", "--admin", "--credits", "10", input="secret-pw\n")
    home_mu.cli("users", "add", "Bob", input="secret-pw\n")
    assert home_mu.cli("users", "list").stdout.splitlines() == ["alice admin 10", "bob user 0"]
    home_mu.cli("users", "set", "bob", "--admin", "--credits", "7")
    home_mu.cli("users", "set", "alice", "--no-admin")
    assert home_mu.cli("users", "list").stdout.splitlines() == ["alice user 10", "bob admin 7"]


def test_password_stdin_flag(home_mu):
    home_mu.cli("users", "add", "carol", "--password-stdin", input="another-pw\n")
    assert "carol user 0" in home_mu.cli("users", "list").stdout


@pytest.mark.parametrize("args", [
    ["users", "add", "ab"], ["users", "add", "postmaster"], ["users", "add", "1abc"],
    ["users", "set", "ghost", "--credits", "3"], ["users", "set", "alice", "--credits", "-1"],
    ["users", "set", "alice", "--credits", "many"], ["users", "token", "ghost"],
    ["users", "frobnicate"], ["blocklist", "add", "not an address"], ["nonsense"],
    ["blocklist", "remove", "never@blocked.org"],
])
def test_bad_arguments_exit_2_without_traceback_or_writes(home_mu, args):
    home_mu.cli("users", "add", "alice", input="secret-pw\n")
    journal = os.path.join(home_mu.home, "mail.journal")
    before = open(journal, "rb").read()
    blocklist_before = open(os.path.join(home_mu.home, "blocklist.json"), "rb").read() \
        if os.path.exists(os.path.join(home_mu.home, "blocklist.json")) else None
    out = home_mu.cli(*args, input="secret-pw\n", check=False)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and out.stderr.strip()
    assert open(journal, "rb").read() == before
    if blocklist_before is not None:
        assert open(os.path.join(home_mu.home, "blocklist.json"), "rb").read() == blocklist_before


def test_duplicate_user_and_empty_password(home_mu):
    home_mu.cli("users", "add", "alice", input="secret-pw\n")
    assert home_mu.cli("users", "add", "ALICE", input="secret-pw\n", check=False).returncode == 2
    assert home_mu.cli("users", "add", "dave", input="\n", check=False).returncode == 2
    assert home_mu.cli("users", "add", "erin", input="pw\n").returncode == 0   # the operator's choice


def test_malformed_environment_exit_2_names_variable(home_mu):
    for var, value in (("MAIL_PORT", "abc"), ("MAIL_MAX_SIZE", "-5"), ("MAIL_TIMEOUT", "soon"),
                       ("MAIL_DNS_SERVER", "nohostport"), ("MU_CPUS", "some")):
        env = dict(home_mu.env, **{var: value})
        out = subprocess.run([sys.executable, MU, "users", "list"], env=env, capture_output=True, text=True)
        assert out.returncode == 2 and var in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_mail_port_forms(home_mu):
    from mu import config
    assert config.load({"MAIL_PORT": ":2526"}).smtp_port == 2526
    assert config.load({"MAIL_PORT": "2527"}).smtp_port == 2527
    assert config.load({}).smtp_port == 2525


def test_tokens_are_distinct_lines(home_mu):
    home_mu.cli("users", "add", "alice", input="secret-pw\n")
    t1 = home_mu.cli("users", "token", "alice").stdout
    t2 = home_mu.cli("users", "token", "alice").stdout
    assert t1 != t2 and t1.count("\n") == 1 and t1.strip()


def test_blocklist_cli_logs_and_lists(home_mu):
    out = home_mu.cli("blocklist", "add", "spammer@bad.com")
    assert "mail: Blocked email: spammer@bad.com" in out.stderr
    assert "mail: Blocked IP: 1.2.3.4" in home_mu.cli("blocklist", "add", "1.2.3.4").stderr
    home_mu.cli("blocklist", "add", "*@spam.example")
    assert sorted(home_mu.cli("blocklist", "list").stdout.split()) == ["*@spam.example", "1.2.3.4", "spammer@bad.com"]
    assert "mail: Unblocked email: spammer@bad.com" in home_mu.cli("blocklist", "remove", "spammer@bad.com").stderr
    assert "spammer@bad.com" not in home_mu.cli("blocklist", "list").stdout


def test_dkim_status(home_mu):
    out = home_mu.cli("dkim", "status").stdout
    assert "disabled" in out and os.path.join(home_mu.home, "keys", "dkim.key") in out


def test_files_are_private(home_mu):
    home_mu.cli("users", "add", "alice", input="secret-pw\n")
    home_mu.cli("blocklist", "add", "x@y.org")
    for folder, dirs, files in os.walk(home_mu.home):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(folder, f)).st_mode) == 0o600, f


def test_cli_changes_seen_by_running_server(make_mu):
    mu = make_mu()
    a = mu.add_user()
    ta = mu.token(a)
    b = unique()
    assert mu.http("POST", "/api/mail", ta, {"to": b, "subject": "x", "body": "y"}).status == 400
    mu.cli("users", "add", b, input="password1\n")          # while the server runs
    assert mu.http("POST", "/api/mail", ta, {"to": b, "subject": "x", "body": "y"}).status == 201
    mu.cli("users", "set", a, "--credits", "42")
    assert mu.http("GET", "/api/me", ta).json()["credits"] == 42
    # and the server's writes are not lost to the CLI's
    assert "42" in mu.cli("users", "list").stdout
