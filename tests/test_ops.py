"""Operating mu: start-up and reload errors that name the setting and the file, the CLI run
by root on another user's MU_HOME, unreadable keys, TLS certificate reload, log timestamps,
and doctor's DNS, PTR and outbound checks."""

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

import pytest

from conftest import MU, ROOT, free_port, wait_for

SYSTEM_PYTHON = "/usr/bin/python3"   # readable by every user, unlike a venv under /root
NOBODY = 65534


def run(env_extra, *args, input=None, python=None, preexec=None):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env_extra}
    cmd = [python, "-c", "import sys; from mu.cli import main; sys.exit(main())", *args] if python \
        else [sys.executable, MU, *args]
    return subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          preexec_fn=preexec)


def one_line_error(out, *words):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ---------------------------------------------------------------- settings and MU_HOME

@pytest.mark.parametrize("var, value", [
    ("MU_HOME", ""), ("MAIL_DOMAIN", "foo..bar"), ("MAIL_DOMAIN", "-x.example"), ("MAIL_PUBLIC_IP", "not-an-ip"),
    ("MU_SIGNUP", "sometimes"), ("MU_TRUSTED_PROXY", "proxy.example"), ("MU_WEB_ADDRESS", "nowhere:port"),
])
def test_malformed_operating_settings_exit_2_naming_the_variable(tmp_path, var, value):
    env = {"MU_HOME": str(tmp_path / "home"), var: value}
    before = set(os.listdir(tmp_path))
    one_line_error(run(env, "users", "list"), var)
    assert set(os.listdir(tmp_path)) == before   # nothing written (an empty MU_HOME used to chmod the cwd)


def test_mu_home_that_is_a_file_is_one_line_error(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    one_line_error(run({"MU_HOME": str(path)}, "users", "list"), "MU_HOME", str(path), "not a folder")


def _world_reachable_dir() -> str:
    base = tempfile.mkdtemp(prefix="mu-owner-", dir="/tmp")
    os.chmod(base, 0o755)
    return base


def _as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON), reason="needs root")


@needs_root
def test_mu_home_not_writable_names_owner_and_fix():
    base = _world_reachable_dir()
    home = os.path.join(base, "home")
    os.mkdir(home, 0o700)   # root's
    out = run({"MU_HOME": home}, "users", "list", python=SYSTEM_PYTHON, preexec=_as_nobody)
    one_line_error(out, "MU_HOME", home, "root", "nobody")
    subprocess.run(["rm", "-rf", base])


@needs_root
def test_root_cli_on_another_users_home_writes_as_that_user():
    base = _world_reachable_dir()
    home = os.path.join(base, "home")
    os.mkdir(home, 0o700)
    os.chown(home, NOBODY, NOBODY)
    try:
        out = run({"MU_HOME": home}, "users", "add", "alice", "--admin", input="pw-alice\n", python=SYSTEM_PYTHON)
        assert out.returncode == 0, out.stderr
        assert run({"MU_HOME": home}, "users", "token", "alice", python=SYSTEM_PYTHON).returncode == 0
        assert run({"MU_HOME": home}, "compact", python=SYSTEM_PYTHON).returncode == 0, "compact"
        owners = {(p, os.lstat(os.path.join(d, p)).st_uid) for d, dirs, files in os.walk(home) for p in dirs + files}
        assert owners and all(uid == NOBODY for _p, uid in owners), owners
        # the server itself is not started as root on it: it says how to start it
        out = run({"MU_HOME": home, "MAIL_PORT": str(free_port())}, "--address", "127.0.0.1:0", python=SYSTEM_PYTHON)
        one_line_error(out, "belongs to user nobody", "runuser -u nobody")
    finally:
        subprocess.run(["rm", "-rf", base])


@needs_root
def test_file_left_by_root_is_named_with_the_chown_fix():
    base = _world_reachable_dir()
    home = os.path.join(base, "home")
    os.mkdir(home, 0o700)
    os.chown(home, NOBODY, NOBODY)
    try:
        journal = os.path.join(home, "mail.journal")
        with open(journal, "w"):
            pass
        os.chmod(journal, 0o600)   # root's, as an older mu run by root left it
        out = run({"MU_HOME": home}, "users", "list", python=SYSTEM_PYTHON, preexec=_as_nobody)
        one_line_error(out, journal, "root", f"chown -R nobody: {home}")
    finally:
        subprocess.run(["rm", "-rf", base])


# ---------------------------------------------------------------- DKIM key

def _write_key(home, content: bytes = None, folder: bool = False):
    keys = os.path.join(home, "keys")
    os.makedirs(keys, mode=0o700, exist_ok=True)
    path = os.path.join(keys, "dkim.key")
    if folder:
        os.mkdir(path)
    else:
        with open(path, "wb") as f:
            f.write(content)
    return path


@pytest.mark.parametrize("content, says", [
    (b"just some text\n", "is not a PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n", "corrupt"),
    (None, "cannot read DKIM private key"),
])
def test_dkim_status_says_why_signing_is_off(tmp_path, content, says):
    home = str(tmp_path / "home")
    path = _write_key(home, content, folder=content is None)
    out = run({"MU_HOME": home}, "dkim", "status")
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert out.stdout.startswith("DKIM signing disabled:") and says in out.stdout and path in out.stdout


def test_unusable_dkim_key_disables_signing_and_server_starts(make_mu, tmp_path):
    home = str(tmp_path / "home0")
    _write_key(home, folder=True)   # open() fails as it does for a key the server may not read
    mu = make_mu()
    assert mu.home == home
    assert "mail: DKIM signing disabled: cannot read DKIM private key at" in mu.log()
    assert mu.http("GET", "/healthz").json()["dkim"] is False


def test_dkim_generate_prints_record_in_255_character_strings(tmp_path):
    home = str(tmp_path / "home")
    out = run({"MU_HOME": home, "MAIL_DOMAIN": "keys.test"}, "dkim", "generate", "--selector", "s1")
    assert out.returncode == 0, out.stderr
    record = next(line for line in out.stdout.splitlines() if " IN TXT " in line)
    assert record.startswith("s1._domainkey.keys.test. IN TXT ")
    strings = re.findall(r'"([^"]*)"', record)
    assert len(strings) >= 2 and all(len(s) <= 255 for s in strings)
    pub = "".join(l.strip() for l in open(os.path.join(home, "keys", "dkim.pub")) if "-----" not in l)
    assert "".join(strings) == f"v=DKIM1; k=rsa; p={pub}"
    assert os.stat(os.path.join(home, "keys", "dkim.key")).st_mode & 0o777 == 0o600
    assert "enabled" in run({"MU_HOME": home, "MAIL_DOMAIN": "keys.test"}, "dkim", "status").stdout
    again = run({"MU_HOME": home}, "dkim", "generate")
    one_line_error(again, "already exists")


def test_script_and_dist_build_generate_keys_the_same_way(tmp_path):
    home = str(tmp_path / "h1")
    out = subprocess.run([os.path.join(ROOT, "scripts", "generate-dkim-keys.sh"), "script.test", "sel"],
                         env={"PATH": os.environ["PATH"], "MU_HOME": home}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'sel._domainkey.script.test. IN TXT "v=DKIM1; k=rsa; p=' in out.stdout
    assert max(map(len, re.findall(r'"([^"]*)"', out.stdout))) <= 255


# ---------------------------------------------------------------- TLS

def make_cert(folder, name: str, serial: int, cn: str = "mu.test") -> tuple:
    cert, key = os.path.join(folder, f"{name}.crt"), os.path.join(folder, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", f"/CN={cn}", "-set_serial", str(serial)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("certs"))
    return folder, make_cert(folder, "a", 1001), make_cert(folder, "b", 2002)


def starttls_serial(port: int) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO x\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220")
        with ctx.wrap_socket(s) as tls:
            der = tls.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                         capture_output=True, check=True)
    return int(out.stdout.decode().split("=")[1], 16)


def serve_once(tmp_path, **env):
    env = {"MU_HOME": str(tmp_path / "home"), "MAIL_PORT": str(free_port()), "IMAP_PORT": str(free_port()), **env}
    return run(env, "--address", f"127.0.0.1:{free_port()}")


def test_tls_startup_errors_name_variable_file_and_cause(tmp_path, certs):
    folder, (cert_a, key_a), (cert_b, key_b) = certs
    missing = os.path.join(folder, "missing.pem")
    cases = [
        ({"MAIL_TLS_CERT": missing, "MAIL_TLS_KEY": key_a}, ["MAIL_TLS_CERT", missing, "no such file"]),
        ({"MAIL_TLS_CERT": cert_a, "MAIL_TLS_KEY": folder}, ["MAIL_TLS_KEY", folder]),
        ({"MAIL_TLS_CERT": key_a, "MAIL_TLS_KEY": cert_a}, ["MAIL_TLS_CERT", "swapped"]),
        ({"MAIL_TLS_CERT": cert_a, "MAIL_TLS_KEY": key_b}, ["MAIL_TLS_KEY", key_b, "not the key"]),
        ({"MAIL_TLS_CERT": os.path.join(ROOT, "README.md"), "MAIL_TLS_KEY": key_a}, ["MAIL_TLS_CERT", "no PEM certificate"]),
    ]
    for env, words in cases:
        line = one_line_error(serve_once(tmp_path, **env), *words)
        assert "cannot listen" not in line and "PEM lib" not in line


@needs_root
def test_unreadable_tls_key_is_named_not_called_a_port_problem(tmp_path, certs):
    folder, (cert_a, key_a), _ = certs
    base = _world_reachable_dir()
    try:
        home = os.path.join(base, "home")
        os.mkdir(home, 0o700)
        os.chown(home, NOBODY, NOBODY)
        key = os.path.join(base, "key.pem")
        cert = os.path.join(base, "cert.pem")
        subprocess.run(["cp", key_a, key], check=True)
        subprocess.run(["cp", cert_a, cert], check=True)
        os.chmod(key, 0o600)   # root's: the server's user cannot read it
        os.chmod(cert, 0o644)
        env = {"MU_HOME": home, "MAIL_PORT": str(free_port()), "MAIL_TLS_CERT": cert, "MAIL_TLS_KEY": key}
        from mu import config as config_mod, tls
        cfg = config_mod.load(env)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:   # the start-up check as the server's user meets it
            os.close(r)
            try:
                _as_nobody()
                tls.ReloadingContext.for_config(cfg)
                os.write(w, b"loaded")
            except BaseException as exc:
                os.write(w, str(exc).encode())
            os._exit(0)
        os.close(w)
        message = os.read(r, 4096).decode()
        os.close(r)
        os.waitpid(pid, 0)
        assert message.startswith(f"MAIL_TLS_KEY: cannot read {key}: Permission denied"), message
    finally:
        subprocess.run(["rm", "-rf", base])


def test_sighup_reloads_certificate_for_new_connections(make_mu, tmp_path, certs):
    folder, (cert_a, key_a), (cert_b, key_b) = certs
    live = tmp_path / "live"
    live.mkdir()
    cert, key = str(live / "fullchain.pem"), str(live / "privkey.pem")
    for src, dst in ((cert_a, cert), (key_a, key)):
        subprocess.run(["cp", src, dst], check=True)
    mu = make_mu(MAIL_TLS_CERT=cert, MAIL_TLS_KEY=key)
    assert starttls_serial(mu.smtp_port) == 1001
    assert "tls: using " + cert in mu.log()
    # a broken renewal (a key that does not match) keeps the old pair, and says why
    subprocess.run(["cp", key_b, key + ".new"], check=True)
    os.replace(key + ".new", key)
    mu.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "certificate not reloaded (SIGHUP)" in mu.log(), timeout=10)
    assert "not the key of the certificate" in mu.log()
    assert starttls_serial(mu.smtp_port) == 1001
    subprocess.run(["cp", cert_b, cert + ".new"], check=True)
    os.replace(cert + ".new", cert)
    mu.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "tls: reloaded " + cert + " (SIGHUP): serial" in mu.log(), timeout=10)
    assert starttls_serial(mu.smtp_port) == 2002


def test_changed_certificate_files_are_picked_up_without_a_signal(make_mu, tmp_path, certs):
    folder, (cert_a, key_a), (cert_b, key_b) = certs
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    subprocess.run(["cp", cert_a, cert], check=True)
    subprocess.run(["cp", key_a, key], check=True)
    mu = make_mu(MAIL_TLS_CERT=cert, MAIL_TLS_KEY=key)
    assert starttls_serial(mu.smtp_port) == 1001
    for src, dst in ((key_b, key), (cert_b, cert)):
        subprocess.run(["cp", src, dst + ".new"], check=True)
        os.replace(dst + ".new", dst)
    wait_for(lambda: starttls_serial(mu.smtp_port) == 2002, timeout=15, interval=0.5, message="new certificate")
    assert "tls: reloaded" in mu.log() and "(files changed)" in mu.log()


def test_certbot_deploy_hook_installs_the_pair_and_reloads_mu(make_mu, tmp_path, certs):
    folder, (cert_a, key_a), (cert_b, key_b) = certs
    tls_dir = tmp_path / "tls"
    lineage = tmp_path / "letsencrypt-live"
    lineage.mkdir()
    hook = os.path.join(ROOT, "deploy", "certbot-deploy-hook")
    group = "root"

    def renew(cert, key, reload_command):
        subprocess.run(["cp", cert, str(lineage / "fullchain.pem")], check=True)
        subprocess.run(["cp", key, str(lineage / "privkey.pem")], check=True)
        out = subprocess.run([hook], env={"PATH": os.environ["PATH"], "RENEWED_LINEAGE": str(lineage),
                                          "MU_TLS_DIR": str(tls_dir), "MU_GROUP": group, "MU_RELOAD": reload_command},
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr

    renew(cert_a, key_a, "true")
    assert oct(os.stat(tls_dir / "privkey.pem").st_mode & 0o777) == "0o640"
    mu = make_mu(MAIL_TLS_CERT=str(tls_dir / "fullchain.pem"), MAIL_TLS_KEY=str(tls_dir / "privkey.pem"))
    assert starttls_serial(mu.smtp_port) == 1001
    renew(cert_b, key_b, f"kill -HUP {mu.proc.pid}")
    wait_for(lambda: "(SIGHUP): serial" in mu.log(), timeout=10)
    assert starttls_serial(mu.smtp_port) == 2002
    assert sorted(os.listdir(tls_dir)) == ["fullchain.pem", "privkey.pem"]


# ---------------------------------------------------------------- log lines

def test_log_lines_carry_a_timestamp_unless_stderr_is_the_journal(tmp_path):
    env = {"MU_HOME": str(tmp_path / "home")}
    out = run(env, "blocklist", "add", "spammer@bad.com")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d mail: Blocked email: spammer@bad.com\n",
                        out.stderr), out.stderr
    with open(tmp_path / "journal-stand-in", "w+") as err:
        st = os.fstat(err.fileno())
        subprocess.run([sys.executable, MU, "blocklist", "add", "x@bad.com"], stderr=err, capture_output=False,
                       stdout=subprocess.DEVNULL, cwd=ROOT, timeout=60,
                       env={"PATH": "/usr/bin:/bin", **env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        err.seek(0)
        assert err.read() == "mail: Blocked email: x@bad.com\n"


# ---------------------------------------------------------------- doctor

def doctor(dns, home, **env):
    env = {"MU_HOME": str(home), "MAIL_DNS_SERVER": f"127.0.0.1:{dns.port}", "MAIL_DNS_TIMEOUT": "2",
           "MU_DOCTOR_MX": "127.0.0.1", "MAIL_OUTBOUND_PORT": str(free_port()), "MAIL_PORT": str(free_port()), **env}
    out = run(env, "doctor")
    assert "Traceback" not in out.stderr, out.stderr
    return out


def result_lines(out) -> dict:
    found = {}
    for line in out.stdout.splitlines():
        m = re.match(r"^(OK|WARN|FAIL)\s+(SMTP port|\S+)\s+(.*)$", line)
        if m:
            found.setdefault(m.group(2), []).append((m.group(1), m.group(3)))
    return found


def test_doctor_with_dns_unreachable_gives_one_result_per_check(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:   # a DNS server that never answers
        silent.bind(("127.0.0.1", 0))
        env = {"MU_HOME": str(tmp_path / "h"), "MAIL_DNS_SERVER": f"127.0.0.1:{silent.getsockname()[1]}",
               "MAIL_DNS_TIMEOUT": "0.5", "MU_DOCTOR_MX": "127.0.0.1", "MAIL_OUTBOUND_PORT": str(free_port()),
               "MAIL_DOMAIN": "down.test", "MAIL_PORT": str(free_port())}
        out = run(env, "doctor")
    found = result_lines(out)
    assert out.returncode == 1
    assert all(len(v) == 1 for v in found.values()), out.stdout
    for check in ("MX", "A", "SPF", "DKIM", "DMARC"):
        assert found[check][0][0] == "FAIL" and "look-up" in found[check][0][1], (check, out.stdout)
    assert "no SPF record" not in out.stdout


class _Listener:
    """A bare TCP server that greets like an MX and counts who connected."""

    def __init__(self, banner=b"220 probe.test ESMTP\r\n"):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.banner = banner
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(self.banner)
                conn.settimeout(2)
                try:
                    conn.recv(100)
                except OSError:
                    pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # wakes the accept(): a bare close() would not
        except OSError:
            pass
        self.sock.close()


def test_doctor_outbound_probe_connects_to_the_named_mx(dns, tmp_path):
    dns.add("probe-own.test", "MX", (10, "mx.probe-own.test"))
    dns.add("mx.probe-own.test", "A", "127.0.0.1")
    own, probe = _Listener(), _Listener()
    try:
        out = doctor(dns, tmp_path / "h", MAIL_DOMAIN="probe-own.test", MU_DOCTOR_MX=f"127.0.0.1:{probe.port}",
                     MAIL_OUTBOUND_PORT=str(own.port))
        assert result_lines(out)["outbound"] == [("OK", f"port {probe.port} open: 127.0.0.1[127.0.0.1] answered 220 probe.test ESMTP")]
        assert probe.connections == 1 and own.connections == 0   # not our own MX: that proves nothing
    finally:
        probe.close()
    out = doctor(dns, tmp_path / "h", MAIL_DOMAIN="probe-own.test", MU_DOCTOR_MX=f"127.0.0.1:{probe.port}")
    level, text = result_lines(out)["outbound"][0]
    assert level == "FAIL" and "could not reach 127.0.0.1" in text and "outbound TCP port" in out.stdout
    own.close()


@pytest.mark.parametrize("case", ["none", "not-confirmed", "other-name", "good"])
def test_doctor_ptr_check(dns, tmp_path, case):
    domain = f"ptr-{case}.test"
    ip = {"none": "127.0.10.1", "not-confirmed": "127.0.10.2", "other-name": "127.0.10.3", "good": "127.0.10.4"}[case]
    reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    dns.add(domain, "MX", (10, "mx." + domain))
    dns.add("mx." + domain, "A", ip)
    if case == "not-confirmed":
        dns.add(reverse, "PTR", "host.elsewhere.test")
        dns.add("host.elsewhere.test", "A", "192.0.2.1")
    elif case == "other-name":
        dns.add(reverse, "PTR", "mx." + domain)
    elif case == "good":
        dns.add(reverse, "PTR", domain)
        dns.add(domain, "A", ip)
    out = doctor(dns, tmp_path / "h", MAIL_DOMAIN=domain, MAIL_PUBLIC_IP=ip)
    [(level, text)] = result_lines(out)["PTR"]
    expected = {"none": ("FAIL", "no reverse DNS"), "not-confirmed": ("FAIL", "does not resolve back"),
                "other-name": ("WARN", f"but mu says EHLO {domain}"), "good": ("OK", f"{ip} -> {domain}")}[case]
    assert level == expected[0] and expected[1] in text, out.stdout


# ---------------------------------------------------------------- backup as the docs describe it

def test_backup_under_load_has_everything_acknowledged_before_it(make_mu, tmp_path):
    """docs/README.md "Backup and restore": `mu backup` while mail keeps arriving; a server
    started on the copy has every message acknowledged before the backup began, and
    `mu check` finds the copy whole."""
    import shutil
    import smtplib
    mu = make_mu()
    name = mu.add_user()
    acknowledged, stop = [], threading.Event()

    def sender():
        i = 0
        while not stop.is_set():
            with smtplib.SMTP("127.0.0.1", mu.smtp_port, timeout=10) as s:
                s.sendmail("a@example.org", [f"{name}@mu.test"], (f"Subject: b{i}\r\n\r\n" + ("x" * 70 + "\r\n") * 40).encode())
            acknowledged.append(f"b{i}")
            i += 1

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        wait_for(lambda: len(acknowledged) >= 20, timeout=30)
        before = list(acknowledged)
        dest = tmp_path / "backup"
        result = mu.cli("backup", str(dest))
        during = len(acknowledged) - len(before)
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 0 and "backed up" in result.stdout
    restored = tmp_path / "restored"
    shutil.copytree(dest, restored)
    env = {k: v for k, v in mu.env.items() if k.startswith(("MAIL_DNS", "MU_DOCTOR"))}
    from conftest import Mu
    copy = Mu(str(restored), env)
    assert copy.cli("check").stdout.splitlines()[-1] == "store OK"
    copy.start()
    try:
        subjects = {m["subject"] for m in copy.inbox(copy.token(name), limit=500)["messages"]}
    finally:
        copy.stop()
    assert set(before) <= subjects
    assert during >= 0 and len(subjects) <= len(acknowledged)


@needs_root
def test_root_cli_refuses_when_the_owner_cannot_run_this_python():
    """The dev venv's Python lives under /root (0700): switching to the owner would make every
    later import fail, so the command refuses, saying what to run instead."""
    if os.access(os.path.dirname(os.__file__), os.R_OK) and not os.path.realpath(sys.executable).startswith("/root/"):
        pytest.skip("this Python is readable by every user")
    base = _world_reachable_dir()
    home = os.path.join(base, "home")
    os.mkdir(home, 0o700)
    os.chown(home, NOBODY, NOBODY)
    try:
        out = run({"MU_HOME": home}, "users", "list")
        one_line_error(out, "belongs to user nobody, who cannot read", "/opt/mu/mu")
        assert os.listdir(home) == []
    finally:
        subprocess.run(["rm", "-rf", base])
