"""Operating mu: DNS self-check, graceful shutdown, durability under load and faults,
idle-connection floods, the single-file build, and docs that match the settings."""

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

from conftest import MU, ROOT, Mu, free_port, smtp_dialog, wait_for


def test_doctor_all_good(make_mu, dns, capture):
    domain = "doctor-good.test"
    home_env = {"MAIL_DOMAIN": domain, "MAIL_SELECTOR": "d1"}
    mu = make_mu(**home_env)
    out = subprocess.run([os.path.join(ROOT, "scripts", "generate-dkim-keys.sh"), domain, "d1"],
                         env=dict(mu.env), capture_output=True, text=True, check=True).stdout
    dns.add(domain, "MX", (10, "mx." + domain))
    dns.add("mx." + domain, "A", "127.0.0.1")
    dns.add(domain, "TXT", "v=spf1 ip4:127.0.0.1 -all")
    record = next(line for line in out.splitlines() if " IN TXT " in line)
    strings = re.findall(r'"([^"]*)"', record)   # RFC 1035 §3.3.14: at most 255 each
    assert len(strings) > 1 and max(map(len, strings)) <= 255
    dns.add("d1._domainkey." + domain, "TXT", "".join(strings))
    dns.add("_dmarc." + domain, "TXT", "v=DMARC1; p=quarantine")
    dns.add("1.0.0.127.in-addr.arpa", "PTR", domain)   # the sending address's name is the EHLO name
    dns.add(domain, "A", "127.0.0.1")
    result = mu.cli("doctor", check=False)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    for check in ("MX", "A", "PTR", "SPF", "DKIM", "DMARC", "SMTP port", "outbound"):
        assert any(l.startswith("OK") and f" {check} " in l + " " for l in lines), (check, result.stdout)


def test_doctor_broken_records_say_fail_and_fix(make_mu, dns):
    domain = "doctor-bad.test"
    mu = make_mu(MAIL_DOMAIN=domain)
    subprocess.run([os.path.join(ROOT, "scripts", "generate-dkim-keys.sh"), domain], env=dict(mu.env),
                   capture_output=True, check=True)
    dns.add(domain, "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add("default._domainkey." + domain, "TXT", "v=DKIM1; k=rsa; p=MIIBwrongkey")
    result = mu.cli("doctor", check=False)
    assert result.returncode == 1
    text = result.stdout
    assert re.search(r"^WARN\s+MX ", text, re.M) and re.search(r"^FAIL\s+DKIM .*does not match", text, re.M)
    pub = "".join(l.strip() for l in open(os.path.join(mu.home, "keys", "dkim.pub")) if "-----" not in l)
    from mu.dkimkeys import txt_strings
    assert f'default._domainkey.{domain}. IN TXT {txt_strings(f"v=DKIM1; k=rsa; p={pub}")}' in text
    assert re.search(r"^WARN\s+SPF .*gives fail", text, re.M) and "_dmarc." + domain in text


def test_sigterm_finishes_open_data_then_exits_0(make_mu):
    mu = make_mu()
    name = mu.add_user()
    s = socket.create_connection(("127.0.0.1", mu.smtp_port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"HELO x\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<" + name.encode() + b"@mu.test>\r\nDATA\r\n")
    for _ in range(4):
        f.readline()
    s.sendall(b"Subject: in flight\r\n\r\npart one\r\n")
    mu.proc.send_signal(signal.SIGTERM)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", mu.smtp_port), timeout=1).close()
            return False
        except OSError:
            return True
    wait_for(refused, timeout=5, message="SMTP to stop accepting")
    s.sendall(b"part two\r\n.\r\n")
    assert f.readline().startswith(b"250")
    s.sendall(b"QUIT\r\n")
    assert mu.proc.wait(20) == 0
    mu.start()
    assert mu.inbox(mu.token(name))["messages"][0]["subject"] == "in flight"


def test_sigterm_closes_idle_sessions_at_once(make_mu):
    mu = make_mu()
    s = socket.create_connection(("127.0.0.1", mu.smtp_port), timeout=10)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO x\r\n")
    while f.readline()[3:4] == b"-":
        pass
    started = time.monotonic()
    mu.proc.send_signal(signal.SIGTERM)
    assert f.readline().startswith(b"421 4.3.2")
    assert mu.proc.wait(10) == 0
    assert time.monotonic() - started < 3
    s.close()


def test_sigterm_stops_within_the_bound_when_a_client_never_finishes_data(make_mu):
    mu = make_mu(MU_SHUTDOWN_SECONDS="2")
    name = mu.add_user()
    s = socket.create_connection(("127.0.0.1", mu.smtp_port), timeout=10)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"HELO x\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<" + name.encode() + b"@mu.test>\r\nDATA\r\n")
    for _ in range(4):
        f.readline()
    started = time.monotonic()
    mu.proc.send_signal(signal.SIGTERM)
    while mu.proc.poll() is None and time.monotonic() - started < 10:
        try:
            s.sendall(b"a line every tenth of a second, and never the final dot\r\n")
        except OSError:
            break
        time.sleep(0.1)
    assert mu.proc.wait(10) == 0
    assert time.monotonic() - started < 4
    assert f.readline().startswith(b"421 4.3.2")   # (then a reset: the server left our lines unread)
    s.close()
    mu.start()
    assert mu.inbox(mu.token(name))["messages"] == []


STALLING_MU = """if True:
    import re, sys
    sys.path.insert(0, sys.argv[1])
    from mu.smtp import policy
    real_deliver = policy.ReceivePolicy.deliver

    def deliver(self, envelope, data):
        if b"STALL" in data:   # exponential backtracking: one C call that keeps the GIL for ages
            re.fullmatch(r"(x+x+)+y", "x" * 64)
        return real_deliver(self, envelope, data)

    policy.ReceivePolicy.deliver = deliver
    from mu.cli import main
    sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_stops_a_server_whose_thread_keeps_the_interpreter_lock(tmp_path, mu_env):
    """A thread inside one long C call keeps the GIL, so no Python signal handler can run:
    the backstop process ends the server MU_SHUTDOWN_SECONDS + 5 s after SIGTERM."""
    mu = Mu(str(tmp_path / "home"), dict(mu_env, MU_SHUTDOWN_SECONDS="1"))
    mu.program = ["-c", STALLING_MU, ROOT]
    mu.start()
    try:
        name = mu.add_user()
        s = socket.create_connection(("127.0.0.1", mu.smtp_port), timeout=10)
        s.sendall(b"HELO x\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<" + name.encode() + b"@mu.test>\r\nDATA\r\n"
                  b"Subject: STALL\r\n\r\nx\r\n.\r\n")
        time.sleep(0.5)   # the stall holds the GIL: nothing in the server can tell us it began
        started = time.monotonic()
        mu.proc.send_signal(signal.SIGTERM)
        assert mu.proc.wait(15) == -signal.SIGKILL
        assert 5 < time.monotonic() - started < 9
        wait_for(lambda: "mail: shutdown took longer than 6 s; stopping the process" in mu.log(), timeout=5)
        wait_for(lambda: "in deliver" in mu.log(), timeout=5, message="the stuck thread's stack in the log")
        s.close()
    finally:
        if mu.proc.poll() is None:
            mu.kill()


def test_sigkill_under_smtp_load_loses_no_acknowledged_message(make_mu):
    mu = make_mu()
    name = mu.add_user()
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            subject = f"c{n}-{i}"
            try:
                with smtplib.SMTP("127.0.0.1", mu.smtp_port, timeout=5) as c:
                    c.sendmail("load@example.org", [f"{name}@mu.test"], f"Subject: {subject}\r\n\r\nx\r\n".encode())
                with lock:
                    acknowledged.append(subject)
            except (OSError, smtplib.SMTPException):
                pass
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acknowledged) >= 100, timeout=30)
    mu.kill()
    stop.set()
    for t in threads:
        t.join()
    mu.start()
    token = mu.token(name)
    stored, before = set(), None
    while True:
        page = mu.inbox(token, limit=500, **({"before": before} if before else {}))
        stored |= {m["subject"] for m in page["messages"]}
        if len(page["messages"]) < 500:
            break
        before = page["messages"][-1]["id"]
    lost = [s for s in acknowledged if s not in stored]
    assert not lost, f"{len(lost)} acknowledged messages lost"


def test_outbound_queue_sigkill_nothing_lost_or_sent_twice(make_mu, dns, capture):
    domain = "killq.example"
    dns.mail_domain(domain)
    capture.rcpt_rules[domain] = ["451 4.3.0 not now"]
    mu = make_mu(MAIL_RETRY_BASE_SECONDS="0.5")
    name = mu.add_user(credits=1000)
    token = mu.token(name)
    ids = [mu.send(token, f"r{i}@{domain}", subject=f"q{i}")["id"] for i in range(30)]
    wait_for(lambda: all(mu.http("GET", f"/api/mail/{i}", token).json()["status"] == "deferred" for i in ids),
             timeout=30, message="every message deferred")
    mu.kill()
    capture.rcpt_rules[domain] = ["250 OK"]
    mu.start()
    wait_for(lambda: mu.http("GET", "/healthz").json()["queue_depth"] == 0, timeout=30)
    for msg_id in ids:
        assert mu.http("GET", f"/api/mail/{msg_id}", token).json()["status"] == "sent"
    for i in range(30):
        assert len(capture.for_rcpt(f"r{i}@{domain}")) == 1


def test_outbound_sigkill_mid_delivery_loses_nothing(make_mu, dns, capture):
    """Killed while delivering: every message still arrives. Only a message whose remote 250
    came in the instant before the kill can arrive twice (as with any MTA), so at most one
    per delivery worker."""
    domain = "killmid.example"
    dns.mail_domain(domain)
    mu = make_mu()
    name = mu.add_user(credits=1000)
    token = mu.token(name)
    for i in range(40):
        mu.send(token, f"m{i}@{domain}", subject=f"m{i}")
    wait_for(lambda: len([m for m in capture.messages if m["rcpts"][0].endswith(domain)]) >= 5, timeout=30)
    mu.kill()
    mu.start()
    wait_for(lambda: mu.http("GET", "/healthz").json()["queue_depth"] == 0, timeout=30)
    counts = [len(capture.for_rcpt(f"m{i}@{domain}")) for i in range(40)]
    assert min(counts) == 1
    assert sum(counts) - 40 <= 4


def _connect_from(source_ip: str, port: int, timeout: float = 10):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source_ip, 0))


def test_300_idle_connections_from_ten_addresses_do_not_block_new_clients(make_mu):
    """With 100 idle connections (the old total cap) every new client got 421 for as long
    as the attacker liked."""
    mu = make_mu(MAIL_TIMEOUT="3")
    idle = [_connect_from(f"127.0.0.{2 + i % 10}", mu.smtp_port) for i in range(300)]
    greetings = [s.recv(200)[:4] for s in idle]
    assert greetings.count(b"220 ") == 200 and greetings.count(b"421 ") == 100   # 20 per client address
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", mu.smtp_port), timeout=5) as s:
        assert s.makefile("rb").readline().startswith(b"220")
    assert time.monotonic() - started < 2
    # the idle ones that were let in are dropped after MAIL_TIMEOUT
    for s in [s for s, greeting in zip(idle, greetings) if greeting == b"220 "][:20]:
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"421 4.4.2")
    for s in idle:
        s.close()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_connection_threads_end_after_a_burst(make_mu):
    mu = make_mu()
    smtp_dialog(mu.smtp_port, [b"QUIT"])
    before = _threads(mu.proc.pid)
    held = [_connect_from(f"127.0.0.{2 + i % 10}", mu.smtp_port) for i in range(150)]
    for s in held:
        assert s.recv(200).startswith(b"220")
    assert _threads(mu.proc.pid) >= before + 145   # a thread for each connection
    for s in held:
        s.close()
    from mu.smtp.server import KEEP_THREADS, SPARE_ACCEPTORS
    wait_for(lambda: _threads(mu.proc.pid) <= before + KEEP_THREADS + SPARE_ACCEPTORS, timeout=10,
             message="connection threads to end")


def test_thread_stacks_hold_the_deepest_recursion(tmp_path):
    """Threads get small stacks (THREAD_STACK_BYTES): CPython's deepest recursion in one must
    end in RecursionError, never a crash of the whole server."""
    code = """if True:
        import sys, threading
        sys.path.insert(0, sys.argv[1])
        from mu.smtp.server import THREAD_STACK_BYTES
        threading.stack_size(THREAD_STACK_BYTES)
        class Deep:
            def __getattr__(self, name):
                return getattr(self, name)
        def run():
            try:
                Deep().x
            except RecursionError:
                print("RecursionError")
        t = threading.Thread(target=run)
        t.start()
        t.join()
    """
    out = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "RecursionError"), out.stderr[-500:]


def test_connection_limit_421(make_mu):
    mu = make_mu(MAIL_MAX_CONNECTIONS="3")
    held = [socket.create_connection(("127.0.0.1", mu.smtp_port)) for _ in range(3)]
    for s in held:
        assert s.makefile("rb").readline().startswith(b"220")
    assert smtp_dialog(mu.smtp_port, [b"QUIT"])[0].startswith("421")
    for s in held:
        s.close()


def test_healthz(mu):
    body = mu.http("GET", "/healthz").json()
    assert body["ok"] is True and body["smtp_port"] == mu.smtp_port and "queue_depth" in body


def test_single_file_build_runs_in_fresh_folder(tmp_path):
    subprocess.run(["make", "-s", "dist"], cwd=ROOT, check=True, capture_output=True)
    exe = tmp_path / "mu"
    exe.write_bytes(open(os.path.join(ROOT, "dist", "mu"), "rb").read())
    exe.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MU_HOME": str(tmp_path / "data"),
           "MAIL_PORT": str(free_port()), "IMAP_PORT": str(free_port()), "MAIL_RATE_CONNECTIONS": "1000"}
    out = subprocess.run([str(exe), "users", "add", "alice"], input="password1\n", env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    keys = subprocess.run([str(exe), "dkim", "generate"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert keys.returncode == 0 and 'default._domainkey.localhost. IN TXT "v=DKIM1;' in keys.stdout, keys.stderr
    web = free_port()
    proc = subprocess.Popen([str(exe), "--serve", "--address", f"127.0.0.1:{web}"], env=env, cwd=tmp_path,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: b"web: Listening" in proc.stderr.readline(), timeout=20)
        import urllib.request
        page = urllib.request.urlopen(f"http://127.0.0.1:{web}/login").read().decode()
        assert 'for="username"' in page
        with smtplib.SMTP("127.0.0.1", int(env["MAIL_PORT"])) as s:
            s.sendmail("a@example.org", ["alice@localhost"], b"Subject: zipapp\r\n\r\nhi\r\n")
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_every_setting_is_documented():
    from mu.config import SETTINGS
    docs = open(os.path.join(ROOT, "docs", "configuration.md")).read()
    readme = open(os.path.join(ROOT, "README.md")).read()
    for name, *_ in SETTINGS:
        assert f"`{name}`" in docs, name
    documented = set(re.findall(r"^\| `([A-Z_]+)`", docs, re.M))
    assert documented == {s[0] for s in SETTINGS}
    assert "docs/" in readme


def test_mu_py_reexecs_into_venv_from_system_python(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MU_HOME": str(tmp_path / "h")}
    out = subprocess.run(["/usr/bin/env", "python3", MU, "users", "list"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_sighup_reloads_and_keeps_serving(make_mu):
    mu = make_mu()
    mu.cli("blocklist", "add", "x@y.org")
    mu.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "mail: reloaded: blocklist has 1 entries" in mu.log(), timeout=5)
    assert smtp_dialog(mu.smtp_port, [b"QUIT"])[0].startswith("220")


def test_admin_dns_page_shows_the_doctor_report(make_mu):
    import http.cookiejar
    import urllib.request
    mu = make_mu(MAIL_DOMAIN="doctor-page.test")
    admin = mu.add_user(admin=True)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    base = f"http://127.0.0.1:{mu.web_port}"
    csrf = re.search(r'name="csrf" value="([^"]+)"', opener.open(base + "/login").read().decode()).group(1)
    opener.open(base + "/login", data=f"csrf={csrf}&username={admin}&password=password1".encode())
    page = opener.open(base + "/admin/dns").read().decode()
    assert "DNS check for doctor-page.test" in page and "doctor-page.test does not exist in DNS" in page
    assert "./scripts/generate-dkim-keys.sh doctor-page.test default" in page


def _thread_cpus(pid: int) -> set:
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            found.add(next(line.split(":", 1)[1].strip() for line in f if line.startswith("Cpus_allowed_list")))
    return found


def test_server_threads_keep_to_one_core_unless_told(make_mu):
    """MU_CPUS: every thread shares one core by default (the last allowed), all with `all`."""
    allowed = sorted(os.sched_getaffinity(0))
    one = make_mu()
    smtp_dialog(one.smtp_port, [b"QUIT"])   # connection threads exist too
    assert _thread_cpus(one.proc.pid) == {str(allowed[-1])}
    if len(allowed) > 1:
        spread = make_mu(MU_CPUS="all")
        assert _thread_cpus(spread.proc.pid) == _thread_cpus(os.getpid())
        assert _thread_cpus(spread.proc.pid) != {str(allowed[-1])}
