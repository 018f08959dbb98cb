"""The installed layout, as an administrator meets it: `make install` inside a private mount
namespace (overlays on /opt, /etc and /var/lib, so the host is untouched), the server run as
user mu the way the unit runs it (User=, Environment=, EnvironmentFile=, ExecStart=), the CLI
and the key and certificate scripts run as root, then an upgrade by running install again."""

import http.client
import json
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import threading

import pytest

from conftest import ROOT, free_port, wait_for

SYSTEM_PYTHON = "/usr/bin/python3"
TOOLS = ("unshare", "nsenter", "setpriv", "make", "openssl")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON) or not all(shutil.which(t) for t in TOOLS),
    reason="needs root, util-linux and the system python3")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Namespace:
    """A process holding a private mount namespace in which mu is installed."""

    def __init__(self, base):
        self.base = base
        script = base / "holder.sh"
        script.write_text(
            "set -e\n"
            + "".join(f"mkdir -p {base}/up{i} {base}/work{i}\n"
                      f"mount -t overlay overlay -o lowerdir={d},upperdir={base}/up{i},workdir={base}/work{i} {d}\n"
                      for i, d in enumerate(("/opt", "/etc", "/var/lib")))
            + f"make -s -C {ROOT} install PYTHON={SYSTEM_PYTHON} > {base}/install.log 2>&1\n"
            + "echo ready\nexec sleep 3600\n")
        self.holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "bash", str(script)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            log = (base / "install.log").read_text() if (base / "install.log").exists() else ""
            raise AssertionError(f"make install failed: {self.holder.stderr.read()} {log}")

    def path(self, inside: str) -> str:
        """A path inside the namespace, as seen from outside it."""
        return f"/proc/{self.holder.pid}/root{inside}"

    def command(self, args, user: str = None, wd: str = None) -> list:
        enter = ["nsenter", "-t", str(self.holder.pid), "-m", "--"]
        if wd:   # nsenter --wd resolves the folder outside the namespace
            enter += ["sh", "-c", 'cd "$0" && exec "$@"', wd]
        if user:
            enter += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--inh-caps=-all"]
        return enter + list(args)

    def run(self, *args, user=None, env=None, input=None, cwd="/"):
        return subprocess.run(self.command(args, user), env={"PATH": PATH, **(env or {})}, input=input,
                              capture_output=True, text=True, timeout=120, cwd=cwd)

    def close(self):
        self.holder.kill()
        self.holder.wait()


def unit_service(text: str) -> dict:
    """[Service] keys of a unit file; repeated keys as lists."""
    section, found = None, {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def environment_file(text: str) -> dict:
    """NAME=value lines as systemd's EnvironmentFile= reads them (later lines win)."""
    env = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


class Server:
    """mu started as the unit starts it, inside the namespace."""

    def __init__(self, ns: Namespace):
        unit = unit_service(open(ns.path("/etc/systemd/system/mu.service")).read())
        env = {"PATH": PATH}
        for assignment in unit["Environment"]:
            key, _, value = assignment.strip('"').partition("=")
            env[key] = value
        for name in unit["EnvironmentFile"]:
            path = name.lstrip("-")
            if os.path.exists(ns.path(path)):
                env.update(environment_file(open(ns.path(path)).read()))
        self.env = env
        self.lines = []
        command = ns.command(unit["ExecStart"][0].split(), user=unit["User"][0], wd=unit["WorkingDirectory"][0])
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=lambda: [self.lines.append(l.decode()) for l in self.proc.stderr], daemon=True).start()
        wait_for(lambda: self.proc.poll() is not None or any("web: Listening" in l for l in self.lines), timeout=30,
                 message="the installed mu to start")
        assert self.proc.poll() is None, "".join(self.lines)

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def http_get(port: int, path: str, token: str = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def owners(ns: Namespace, folder: str) -> set:
    root = ns.path(folder)
    found = {os.lstat(root).st_uid}
    for d, dirs, files in os.walk(root):
        found |= {os.lstat(os.path.join(d, name)).st_uid for name in dirs + files}
    return found


def test_installed_server_as_mu_with_cli_as_root_then_upgrade(tmp_path, dns, capture):
    host_before = {p: os.path.exists(p) for p in ("/opt/mu", "/etc/mu", "/var/lib/mu", "/etc/systemd/system/mu.service")}
    ns = Namespace(tmp_path)
    server = None
    try:
        mu_uid = next(line.split(":")[2] for line in open(ns.path("/etc/passwd")) if line.startswith("mu:"))
        mu_uid = int(mu_uid)
        # the unit is valid, and the settings file is root's, readable by the mu group
        verify = ns.run("systemd-analyze", "verify", "/etc/systemd/system/mu.service")
        assert verify.returncode == 0 and "mu.service" not in verify.stdout + verify.stderr, verify
        env_path = ns.path("/etc/mu/mu.env")
        st = os.stat(env_path)
        assert st.st_uid == 0 and st.st_mode & 0o777 == 0o640
        unit = unit_service(open(ns.path("/etc/systemd/system/mu.service")).read())
        assert not any("MAIL_DOMAIN" in e for e in unit["Environment"])   # settings live in mu.env
        web_port, smtp_port = free_port(), free_port()
        with open(env_path, "a") as f:   # the administrator's settings
            f.write(f"\nMAIL_DOMAIN=mu.test\nMAIL_PORT={smtp_port}\nIMAP_PORT={free_port()}\nMU_WEB_ADDRESS=127.0.0.1:{web_port}\n"
                    f"SUBMISSION_PORT={free_port()}\nSUBMISSIONS_PORT={free_port()}\n"
                    f"MAIL_DNS_SERVER=127.0.0.1:{dns.port}\nMAIL_OUTBOUND_PORT={capture.port}\nMU_DOCTOR_MX=127.0.0.1\n"
                    f"MAIL_RATE_CONNECTIONS=1000\n"
                    f"MAIL_TLS_CERT=/etc/mu/tls/fullchain.pem\nMAIL_TLS_KEY=/etc/mu/tls/privkey.pem\n")

        # as root, with no MU_HOME: the command finds /var/lib/mu in mu.env and runs as mu
        out = ns.run("/opt/mu/mu", "users", "add", "alice", "--admin", input="alice-password\n")
        assert out.returncode == 0, out.stderr
        assert not os.path.exists(ns.path("/root/.mu"))
        out = ns.run("/opt/mu/scripts/generate-dkim-keys.sh", "mu.test")
        assert out.returncode == 0 and "IN TXT" in out.stdout, out.stderr
        lineage = tmp_path / "live"
        lineage.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(lineage / "privkey.pem"),
                        "-out", str(lineage / "fullchain.pem"), "-days", "1", "-subj", "/CN=mu.test"],
                       check=True, capture_output=True)
        out = ns.run("/opt/mu/deploy/certbot-deploy-hook", env={"RENEWED_LINEAGE": str(lineage), "MU_RELOAD": "true"})
        assert out.returncode == 0, out.stderr

        server = Server(ns)
        assert "dkim: DKIM signing enabled for domain mu.test" in server.log()
        assert "tls: using /etc/mu/tls/fullchain.pem" in server.log()
        # the CLI as root while the server runs, the way the issue broke it
        for args, stdin in ((("users", "add", "bobby"), "bobby-password\n"), (("compact",), None),
                            (("blocklist", "add", "x@spam.test"), None), (("users", "passwd", "alice"), "new-pass\n")):
            out = ns.run("/opt/mu/mu", *args, input=stdin)
            assert out.returncode == 0, (args, out.stderr)
        token = ns.run("/opt/mu/mu", "users", "token", "bobby").stdout.strip()
        status, body = http_get(web_port, "/healthz")
        assert status == 200 and json.loads(body)["ok"] is True and json.loads(body)["dkim"] is True
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as s:
            s.starttls(context=ctx)
            s.ehlo()
            refused = s.sendmail("someone@example.org", ["bobby@mu.test"], b"Subject: installed\r\n\r\nhello\r\n")
        assert refused == {}
        status, body = http_get(web_port, "/api/mail?folder=inbox", token)
        assert status == 200 and [m["subject"] for m in json.loads(body)["messages"]] == ["installed"]
        assert owners(ns, "/var/lib/mu") == {mu_uid}

        # SIGHUP as `systemctl reload mu` sends it; a key the server cannot read turns signing off
        key = ns.path("/var/lib/mu/keys/dkim.key")
        os.chown(key, 0, 0)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "DKIM signing disabled: cannot read DKIM private key at /var/lib/mu/keys/dkim.key: "
                         "Permission denied" in server.log(), timeout=10)
        assert "tls: reloaded /etc/mu/tls/fullchain.pem (SIGHUP)" in server.log()
        status_line = ns.run("/opt/mu/mu", "dkim", "status").stdout
        assert "Permission denied" in status_line
        assert server.stop() == 0
        server = Server(ns)   # an unreadable key never stops the server from starting
        assert http_get(web_port, "/healthz")[0] == 200
        assert server.stop() == 0
        server = None
        os.chown(key, mu_uid, mu_uid)

        # the upgrade: install again over an old tree with a module since removed
        stale = ns.path("/opt/mu/lib/mu/removed_module.py")
        open(stale, "w").write("# from an older version\n")
        leftover = ns.path("/var/lib/mu/left-by-root.json")
        open(leftover, "w").write("{}")
        out = ns.run("make", "-s", "-C", ROOT, "install", f"PYTHON={SYSTEM_PYTHON}")
        assert out.returncode == 0, out.stderr
        assert "kept /etc/mu/mu.env" in out.stdout
        assert not os.path.exists(stale)
        assert "MAIL_DOMAIN=mu.test" in open(env_path).read()
        assert os.stat(leftover).st_uid == mu_uid
        server = Server(ns)
        status, body = http_get(web_port, "/api/mail?folder=inbox", token)
        assert status == 200 and json.loads(body)["messages"][0]["subject"] == "installed"
        assert server.stop() == 0
        server = None
    finally:
        if server is not None and server.proc.poll() is None:
            server.proc.kill()
        ns.close()
    assert {p: os.path.exists(p) for p in host_before} == host_before   # the host was never written


def _fake_install(tmp_path):
    """deploy/mu in a tree whose `python` prints the environment it was given."""
    (tmp_path / "lib" / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "deploy", "mu"), tmp_path / "mu")
    fake = tmp_path / "lib" / ".venv" / "bin" / "python"
    fake.write_text("#!/bin/sh\nenv\n")
    fake.chmod(0o755)
    return str(tmp_path / "mu")


def test_installed_command_reads_mu_env_like_systemd_but_the_caller_wins(tmp_path):
    import pathlib
    import tempfile
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="mu-wrapper-", dir="/tmp"))   # reachable by nobody too
    tmp_path.chmod(0o755)
    command = _fake_install(tmp_path)
    env_file = tmp_path / "mu.env"
    env_file.write_text("# a comment\n  MU_HOME=/var/lib/mu\nMAIL_DOMAIN=first.test\nMAIL_DOMAIN=\"second.test\"\n"
                        "MAIL_SELECTOR='sel'\n; also a comment\nnot a line\nMAIL_PORT=25\n")
    out = subprocess.run([command, "users", "list"], capture_output=True, text=True,
                         env={"PATH": PATH, "MU_ENV_FILE": str(env_file), "MAIL_PORT": "2525"})
    seen = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert seen["MU_HOME"] == "/var/lib/mu" and seen["MAIL_DOMAIN"] == "second.test" and seen["MAIL_SELECTOR"] == "sel"
    assert seen["MAIL_PORT"] == "2525"              # the caller's environment wins over the file
    assert seen["MU_COMMAND"] == command
    env_file.chmod(0o600)   # as if the file were another user's: the command says so, not ~/.mu
    out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", command, "users", "list"],
                         capture_output=True, text=True, env={"PATH": PATH, "MU_ENV_FILE": str(env_file)})
    shutil.rmtree(tmp_path)
    assert out.returncode == 2 and f"cannot read {env_file}" in out.stderr and "MU_HOME" not in out.stdout
