#!/usr/bin/env python3
"""mu benchmarks: `make bench`. Prints one table; every figure is measured in this run.

Everything runs on loopback: mu, an aiosmtpd sink, Postfix's smtp-sink, a dnslib DNS
server and a bare Bottle+Waitress app, so ratios compare like with like on this machine.
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from conftest import FakeDNS, Mu, free_port, wait_for  # noqa: E402
from mu.store import Store  # noqa: E402

ROWS = []


def row(name, value, unit, note=""):
    ROWS.append((name, value, unit, note))
    print(f"  {name:<58} {value:>12} {unit:<8} {note}", flush=True)


def fake_message(i: int, user: str) -> tuple:
    """A stored message for `user`'s INBOX: (NewMessage, entries) for MailStore.store_messages."""
    from mu.records import NewMessage
    raw = (f"From: alice@localhost\r\nTo: {user}@localhost\r\nSubject: message number {i}\r\n"
           f"Message-ID: <{i}@bench>\r\n\r\n" + "hello " * 40 + "\r\n").encode()
    new = NewMessage({"kind": "internal", "from": "alice", "from_addr": "alice@localhost", "from_name": "alice",
                      "to": [user], "subject": f"message number {i}", "created_at": 1_700_000_000 + i,
                      "message_id": f"<{i}@bench>", "in_reply_to": "", "references": [], "owners": [user],
                      "attachments": []}, raw)
    new.set_body("hello " * 40)
    return new, [(user, "INBOX", [], 1_700_000_000 + i, 0)]


def _mailstore(store: Store, user: str):
    from mu import config as config_mod
    from mu.mailstore import MailStore
    with store.reading() as state:
        missing = user not in state.users
    if missing:
        store.commit(lambda state, w: ([{"op": "user.put", "name": user, "fields": {"created_at": 1_700_000_000}}]
                                       if user not in state.users else [], None))
    return MailStore(store, config_mod.load({"MU_HOME": store.home}))


def fill(store: Store, count: int, user: str = "bench", start: int = 0) -> None:
    ms = _mailstore(store, user)
    batch = 2000
    for base in range(start, start + count, batch):
        ms.store_messages([fake_message(i, user) for i in range(base, min(base + batch, start + count))])


# ---------------------------------------------------------------- store

def bench_store(tmp):
    print("store", flush=True)
    sizes = (0, 10_000, 100_000)
    stores = {}
    for size in sizes:
        stores[size] = Store(os.path.join(tmp, f"store{size}"))
        fill(stores[size], size)
    # Interleaved: each round adds one message to every store, so drift in the machine's
    # speed (this VM varies by ±20% over minutes) hits all sizes alike.
    samples = {size: [] for size in sizes}
    mailstores = {size: _mailstore(stores[size], "bench") for size in sizes}
    for i in range(500):
        for size in sizes:
            item = fake_message(10_000_000 + i, "bench")
            t = time.perf_counter()
            mailstores[size].store_messages([item])
            samples[size].append(time.perf_counter() - t)
    costs = {size: statistics.median(samples[size]) * 1e6 for size in sizes}
    for size in sizes:
        row(f"add one message (fsynced), store of {size:,}", f"{costs[size]:.0f}", "µs", "median of 500, interleaved")
    row("add cost ratio 100,000 / 0", f"{costs[100_000] / costs[0]:.2f}", "x", "target ≤ 1.2")
    home = os.path.join(tmp, "store100000")
    Store(home).compact()
    code = ("import sys,time; sys.path.insert(0, sys.argv[2]); from mu.store import Store;"
            "rss=lambda: int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]);"
            "b=rss(); t=time.perf_counter(); s=Store(sys.argv[1]);"
            "d=time.perf_counter()-t; print(d, rss()-b, len(s.state.messages))")
    out = subprocess.run([sys.executable, "-c", code, home, ROOT], capture_output=True, text=True, check=True).stdout
    seconds, rss_kb, count = out.split()
    row(f"load a {int(count):,}-message store (snapshot)", f"{float(seconds):.2f}", "s")
    row("  memory held after that load (RSS growth)", f"{int(rss_kb) / 1024:.0f}", "MiB")


# ---------------------------------------------------------------- SMTP receive

SMTP_RUNS = 5   # rounds; each round runs every server once, so drift in the machine hits all alike


def smtp_source_seconds(port: int, rcpt: str) -> float:
    t = time.perf_counter()
    subprocess.run(["/usr/sbin/smtp-source", "-s", "5", "-m", "1000", "-l", "4096", "-f", "load@example.org",
                    "-t", rcpt, f"127.0.0.1:{port}"], check=True, capture_output=True, timeout=600)
    return time.perf_counter() - t


def wait_port(port):
    wait_for(lambda: _connectable(port), timeout=20, message=f"port {port}")


def _connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def bench_smtp(tmp, dns_port):
    print(f"SMTP receive (smtp-source -s 5 -m 1000 -l 4096; median of {SMTP_RUNS} interleaved rounds)", flush=True)
    aio_port, pf_port = free_port(), free_port()
    sinks = [
        subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{aio_port}", "-c",
                          "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{pf_port}", "256"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    mu = Mu(os.path.join(tmp, "smtp"), {"MAIL_DOMAIN": "localhost", "MAIL_DNS_SERVER": f"127.0.0.1:{dns_port}"})
    mu.add_user("bench")
    mu.start()
    times = {"aiosmtpd": [], "smtp-sink": [], "mu": []}
    try:
        wait_port(aio_port)
        wait_port(pf_port)
        for _ in range(SMTP_RUNS):
            times["aiosmtpd"].append(smtp_source_seconds(aio_port, "x@localhost"))
            times["smtp-sink"].append(smtp_source_seconds(pf_port, "x@localhost"))
            times["mu"].append(smtp_source_seconds(mu.smtp_port, "bench@localhost"))
        stored = mu.inbox(mu.token("bench"), limit=1)["unread"]
    finally:
        mu.stop()
        for sink in sinks:
            sink.terminate()
            sink.wait()
    rate = {name: 1000 / statistics.median(t) for name, t in times.items()}
    row("aiosmtpd Sink (discards)", f"{rate['aiosmtpd']:.0f}", "msg/s")
    row("Postfix smtp-sink (discards)", f"{rate['smtp-sink']:.0f}", "msg/s")
    row("mu (stores every message durably)", f"{rate['mu']:.0f}", "msg/s", f"{stored} stored")
    assert stored == 1000 * SMTP_RUNS, stored
    row("ratio mu / aiosmtpd", f"{rate['mu'] / rate['aiosmtpd']:.2f}", "x", "target ≥ 1.0")


IDLE_CONNECTIONS = 1000
IDLE_CLIENT_ADDRESSES = 50   # 127.0.0.2 ... : 20 connections each, the per-client cap


def _proc_status(pid: int) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return {"threads": int(fields["Threads"]), "rss_kib": int(fields["VmRSS"].split()[0]),
            "vsz_kib": int(fields["VmSize"].split()[0])}


def _private_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty")))


def _time_to_greeting(port: int) -> float:
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(200).startswith(b"220")
    return time.perf_counter() - t


def bench_smtp_idle(tmp, dns_port):
    print(f"SMTP with {IDLE_CONNECTIONS:,} idle connections from {IDLE_CLIENT_ADDRESSES} addresses", flush=True)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, IDLE_CONNECTIONS + 1024)), hard))
    # Room for one more client, and timeouts long enough to hold the idle ones while measuring.
    mu = Mu(os.path.join(tmp, "idle"), {"MAIL_DOMAIN": "localhost", "MAIL_DNS_SERVER": f"127.0.0.1:{dns_port}",
                                        "MAIL_MAX_CONNECTIONS": str(IDLE_CONNECTIONS + 100),
                                        "MAIL_TIMEOUT": "600", "MAIL_STRESS_TIMEOUT_SECONDS": "600"})
    mu.start()
    idle = []
    try:
        pid = mu.proc.pid
        _time_to_greeting(mu.smtp_port)
        at_rest = _proc_status(pid)
        fresh = statistics.median(_time_to_greeting(mu.smtp_port) for _ in range(20))
        for i in range(IDLE_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", mu.smtp_port), timeout=30,
                                         source_address=(f"127.0.0.{2 + i % IDLE_CLIENT_ADDRESSES}", 0))
            idle.append(s)
        for s in idle:
            assert s.recv(200).startswith(b"220")
        loaded = _proc_status(pid)
        busy = statistics.median(_time_to_greeting(mu.smtp_port) for _ in range(20))
        for s in idle:
            s.close()
        idle = []
        settle = time.monotonic() + 10
        while _proc_status(pid)["threads"] > at_rest["threads"] + 40 and time.monotonic() < settle:
            time.sleep(0.05)
        after = _proc_status(pid)
        watchers = open(f"/proc/{pid}/task/{pid}/children").read().split()
        watcher_kib = _private_kib(int(watchers[0])) if watchers else None
    finally:
        for s in idle:
            s.close()
        mu.stop()
    row("server threads, no connection", at_rest["threads"], "")
    row(f"server threads, {IDLE_CONNECTIONS:,} idle connections", loaded["threads"], "")
    row("server threads, after they closed", after["threads"], "")
    row("server RSS, no connection", f"{at_rest['rss_kib'] / 1024:.1f}", "MiB")
    row(f"server RSS, {IDLE_CONNECTIONS:,} idle connections", f"{loaded['rss_kib'] / 1024:.1f}", "MiB",
        f"{(loaded['rss_kib'] - at_rest['rss_kib']) / IDLE_CONNECTIONS:.0f} KiB a connection")
    row(f"server address space, {IDLE_CONNECTIONS:,} idle connections", f"{loaded['vsz_kib'] / 1024:.0f}", "MiB",
        "virtual: thread stacks are reserved, not used")
    row("time to 220 for a new client, no connection", f"{fresh * 1000:.2f}", "ms", "median of 20")
    row(f"time to 220 for a new client, {IDLE_CONNECTIONS:,} idle connections", f"{busy * 1000:.2f}", "ms", "median of 20")
    if watcher_kib is not None:
        row("shutdown watcher process, private memory", f"{watcher_kib / 1024:.1f}", "MiB", "mu/backstop.py")


# ---------------------------------------------------------------- outbound

def bench_outbound(tmp, dns):
    print("outbound delivery to a local sink", flush=True)
    sink_port = free_port()
    sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{sink_port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(sink_port)
        for n_domains in (1, 50):
            domains = [f"sink{n_domains}-{i}.example" for i in range(n_domains)]
            for d in domains:
                dns.mail_domain(d)
            home = os.path.join(tmp, f"out{n_domains}")
            env = {"MAIL_DOMAIN": "localhost", "MAIL_DNS_SERVER": f"127.0.0.1:{dns.port}",
                   "MAIL_OUTBOUND_PORT": str(sink_port), "CREDIT_COST_EMAIL": "0"}
            mu = Mu(home, env)
            mu.add_user("sender")
            _queue_offline(mu, "sender", [f"rcpt{i}@{domains[i % n_domains]}" for i in range(1000)])
            t0 = time.perf_counter()
            mu.start()
            wait_for(lambda: mu.http("GET", "/healthz").json()["queue_depth"] == 0, timeout=600, interval=0.05)
            elapsed = time.perf_counter() - t0
            mu.stop()
            row(f"1,000 queued messages to {n_domains} domain{'s' if n_domains > 1 else ''}",
                f"{1000 / elapsed:.0f}", "msg/s", "DKIM off; includes start-up")
    finally:
        sink.terminate()
        sink.wait()
    bench_outbound_tls(tmp, dns)


OUTBOUND_TLS_RUNS = 3


def bench_outbound_tls(tmp, dns):
    """The same 1,000 messages to an aiosmtpd MX that offers STARTTLS (self-signed, as most
    MX hosts' certificates are to an unverifying client) and to the same MX without it,
    in interleaved rounds; smtp-sink cannot do TLS."""
    from conftest import CaptureSMTP
    print(f"outbound delivery to aiosmtpd, STARTTLS offered or not (median of {OUTBOUND_TLS_RUNS} rounds)",
          flush=True)
    capture = CaptureSMTP()
    rates = {"offer": [], "off": []}
    try:
        for run in range(OUTBOUND_TLS_RUNS):
            for tls in ("offer", "off"):
                domain = f"tls-{tls}-{run}.example"
                mx = capture.dedicated(domain, dns)
                mx.starttls = tls
                home = os.path.join(tmp, f"out-{domain}")
                env = {"MAIL_DOMAIN": "localhost", "MAIL_DNS_SERVER": f"127.0.0.1:{dns.port}",
                       "MAIL_OUTBOUND_PORT": str(capture.port), "CREDIT_COST_EMAIL": "0"}
                mu = Mu(home, env)
                mu.add_user("sender")
                _queue_offline(mu, "sender", [f"rcpt{i}@{domain}" for i in range(1000)])
                t0 = time.perf_counter()
                mu.start()
                wait_for(lambda: mu.http("GET", "/healthz").json()["queue_depth"] == 0, timeout=600, interval=0.05)
                elapsed = time.perf_counter() - t0
                mu.stop()
                got = mx.messages()
                assert len(got) == 1000, len(got)
                assert all(m["tls"] for m in got) == (tls == "offer")
                rates[tls].append(1000 / elapsed)
                capture.messages.clear()
    finally:
        capture.stop()
    offer, off = statistics.median(rates["offer"]), statistics.median(rates["off"])
    row("1,000 queued messages to 1 domain, MX offers STARTTLS", f"{offer:.0f}", "msg/s",
        "aiosmtpd; TLS 1.3, 100 messages a connection")
    row("  the same MX without STARTTLS", f"{off:.0f}", "msg/s", "aiosmtpd")
    row("  ratio with TLS / without", f"{offer / off:.2f}", "x")


def _queue_offline(mu, user, rcpts):
    """Queue messages with the server stopped, through mu's own Mailbox."""
    env = dict(os.environ, **mu.env)
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]);"
            "from mu import config; from mu.app import App;"
            "app = App(config.load());"
            "[app.mailbox.send(sys.argv[2], r, 'bench', 'hello from the benchmark\\n' * 20) for r in json.loads(sys.argv[3])]")
    subprocess.run([sys.executable, "-c", code, ROOT, user, json.dumps(rcpts)], env=env, check=True)


# ---------------------------------------------------------------- web

def timed_gets(port, path, headers, n=100):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        samples.append(time.perf_counter() - t)
        assert resp.status == 200, resp.status
    conn.close()
    return statistics.median(samples) * 1000


def throughput(port, path, headers, seconds=4.0, threads=8):
    count = [0]
    stop = time.perf_counter() + seconds

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port)
        n = 0
        while time.perf_counter() < stop:
            conn.request("GET", path, headers=headers)
            conn.getresponse().read()
            n += 1
        count[0] += n
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return count[0] / (time.perf_counter() - t0)


HELLO_APP = """
import sys, bottle, waitress
app = bottle.Bottle()
@app.get('/')
def hello():
    return 'hello'
waitress.serve(app, host='127.0.0.1', port=int(sys.argv[1]), threads=16, _quiet=True)
"""


def bench_web(tmp):
    print("web", flush=True)
    home = os.path.join(tmp, "web")
    mu = Mu(home, {"MAIL_DOMAIN": "localhost"})
    mu.add_user("small")
    mu.add_user("big")
    store = Store(home)
    fill(store, 10, user="small")
    fill(store, 20_000, user="big", start=100)
    del store
    mu.start()
    try:
        results = {}
        for user in ("small", "big"):
            auth = {"Authorization": "Bearer " + mu.token(user)}
            api = timed_gets(mu.web_port, "/api/mail?folder=inbox", auth)
            api10 = timed_gets(mu.web_port, "/api/mail?folder=inbox&limit=10", auth)
            cookie = _session_cookie(mu, user)
            page = timed_gets(mu.web_port, "/mail", {"Cookie": cookie})
            results[user] = (api, page, cookie, api10)
        row("GET /api/mail, inbox of 10 (page of 10)", f"{results['small'][0]:.2f}", "ms", "median")
        row("GET /api/mail, inbox of 20,000 (page of 50)", f"{results['big'][0]:.2f}", "ms", "median")
        row("  ratio 20,000 / 10", f"{results['big'][0] / results['small'][0]:.2f}", "x", "pages differ in size")
        row("GET /api/mail?limit=10, inbox of 20,000", f"{results['big'][3]:.2f}", "ms", "median")
        row("  ratio 20,000 / 10, same page size", f"{results['big'][3] / results['small'][3]:.2f}", "x")
        row("GET /mail page, inbox of 10 (10 rows)", f"{results['small'][1]:.2f}", "ms", "median")
        row("GET /mail page, inbox of 20,000 (50 rows)", f"{results['big'][1]:.2f}", "ms", "median")
        row("  ratio 20,000 / 10", f"{results['big'][1] / results['small'][1]:.2f}", "x")
        inbox_rps = throughput(mu.web_port, "/mail", {"Cookie": results["small"][2]})
    finally:
        mu.stop()
    port = free_port()
    hello = subprocess.Popen([sys.executable, "-c", HELLO_APP, str(port)])
    try:
        wait_port(port)
        hello_rps = throughput(port, "/", {})
    finally:
        hello.terminate()
        hello.wait()
    row("inbox page requests/s (8 clients)", f"{inbox_rps:.0f}", "req/s")
    row("bare Bottle+Waitress 'hello' requests/s", f"{hello_rps:.0f}", "req/s")
    row("  ratio inbox / hello", f"{inbox_rps / hello_rps:.2f}", "x")


def _session_cookie(mu, user):
    import re
    conn = http.client.HTTPConnection("127.0.0.1", mu.web_port)
    conn.request("GET", "/login")
    resp = conn.getresponse()
    csrf = re.search(r'name="csrf" value="([^"]+)"', resp.read().decode()).group(1)
    pre = resp.getheader("Set-Cookie").split(";")[0]
    conn.request("POST", "/login", body=f"csrf={csrf}&username={user}&password=password1",
                 headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": pre})
    resp = conn.getresponse()
    resp.read()
    cookies = [v.split(";")[0] for k, v in resp.getheaders() if k.lower() == "set-cookie"]
    return next(c for c in cookies if c.startswith("mu_session="))


def main():
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="mu-bench-")
    dns = FakeDNS()
    print(f"mu benchmarks on {os.cpu_count()} cores, Python {sys.version.split()[0]}\n", flush=True)
    try:
        only = sys.argv[1:] or ["store", "smtp", "smtp-idle", "outbound", "web", "imap", "scale"]
        if "store" in only:
            bench_store(tmp)
            # The store section leaves some hundred MB of dirty pages; written back during the
            # next section they would slow every fsync mu makes there (the sinks make none).
            for name in os.listdir(tmp):
                if name.startswith("store"):
                    shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
            os.sync()
        if "smtp" in only:
            bench_smtp(tmp, dns.port)
        if "smtp-idle" in only:
            bench_smtp_idle(tmp, dns.port)
        if "outbound" in only:
            bench_outbound(tmp, dns)
        if "web" in only:
            bench_web(tmp)
        if "imap" in only:
            import imap as imap_bench   # bench/imap.py
            imap_bench.bench_mimeinfo(row)
            imap_bench.bench_imap(tmp, row, free_port, wait_port)
        if "scale" in only:
            from scale import bench_scale
            bench_scale(tmp, row)
    finally:
        dns.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| benchmark | value | unit | note |\n|---|---:|---|---|")
    for name, value, unit, note in ROWS:
        print(f"| {name.strip()} | {value} | {unit} | {note} |")
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
