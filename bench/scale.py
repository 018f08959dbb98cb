"""Scale benchmarks (part of `make bench`): a store built with `mu.py import` from a
generated mbox, measured at 1,000, 100,000, 200,000 and MU_BENCH_MESSAGES (default
1,000,000) messages in one mailbox:

- import speed (messages/s from a local mbox);
- RSS of the running server, and state bytes per message;
- restart: from starting the process to the API (and IMAP, where it runs) answering;
- the cost of a page (`GET /api/mail`, newest 50) at 200,000 against 1,000 messages;
- a search over a 100,000-message mailbox;
- SMTP delivery at the largest size against an empty store.
"""

import http.client
import os
import random
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import MU, Mu, wait_for  # noqa: E402

LARGEST = int(os.environ.get("MU_BENCH_MESSAGES", "1000000"))
WORDS = ("report budget meeting invoice travel garden concert project deadline review coffee "
         "holiday family photo update reminder question answer ticket order release draft").split()


def write_mbox(path: str, start: int, count: int) -> int:
    """Messages start..start+count-1 as an mbox (about 2 KB each; a tenth multipart with an
    attachment, a tenth with HTML); every one holds the word `tok<i>`, for searches."""
    rng = random.Random(start)
    size = 0
    with open(path, "wb") as f:
        for i in range(start, start + count):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            sender = f"person{rng.randint(1, 500)}@example{rng.randint(1, 40)}.org"
            body = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(rng.randint(5, 25)))
            body += f"\nreference tok{i}\n"
            head = (f"From {sender} Mon Jan  1 10:00:00 2024\nFrom: Person <{sender}>\nTo: bench@mu.test\n"
                    f"Subject: {words} {i}\nMessage-ID: <{i}.{start}@bench.example>\n"
                    f"Date: Mon, 1 Jan 2024 10:00:00 +0000\nMIME-Version: 1.0\n")
            kind = i % 10
            if kind == 0:
                text = (head + 'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
                        + body + "\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
                        + 'Content-Disposition: attachment; filename="data.bin"\n\n'
                        + "\n".join(["QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwMTIzNDU2Nzg5MA=="] * 40) + "\n--b--\n")
            elif kind == 1:
                text = (head + 'Content-Type: multipart/alternative; boundary="a"\n\n--a\nContent-Type: text/plain\n\n'
                        + body + "\n--a\nContent-Type: text/html\n\n<p>" + body.replace("\n", "<br>") + "</p>\n--a--\n")
            else:
                text = head + "Content-Type: text/plain; charset=utf-8\n\n" + body + "\n"
            data = text.replace("\nFrom ", "\n>From ").encode() + b"\n"
            f.write(data)
            size += len(data)
    return size


def import_mbox(home: str, path: str, env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, MU, "import", "bench", path], env=dict(env, MU_HOME=home), check=True,
                   capture_output=True, timeout=7200)
    return time.perf_counter() - t


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def api_get(port: int, path: str, token: str) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return time.perf_counter() - t, resp.status, body


def median_ms(port: int, path: str, token: str, n: int = 40) -> float:
    api_get(port, path, token)
    return statistics.median(api_get(port, path, token)[0] for _ in range(n)) * 1000


def wait_indexed(mu, token: str, word: str, timeout: float = 1800) -> None:
    """The background indexer has caught up when a search for the newest message's word hits."""
    wait_for(lambda: b'"subject"' in api_get(mu.web_port, f"/api/mail?q={word}&limit=1", token)[2],
             timeout=timeout, interval=1.0, message="search index")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float = 900) -> None:
    """Until the server spends under 5% of a CPU for a second: its background work after a
    start (search indexing, journal compaction) is done, so figures are of a settled server."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now - last < 0.05:
            return
        last = now
    raise RuntimeError(f"server {pid} still busy after {timeout:.0f} s")


def start_timed(mu) -> float:
    """Seconds from starting the server process until the API and IMAP both answer (a
    login and a SELECT of the inbox)."""
    t = time.perf_counter()
    mu.start(timeout=300)
    token = mu.bench_token
    while api_get(mu.web_port, "/api/mail?limit=1", token)[1] != 200:
        time.sleep(0.05)
    while not imap_answers(mu, mu.imap_password):
        time.sleep(0.05)
    return time.perf_counter() - t


def imap_newest_ms(mu, password: str, n: int = 20) -> float:
    """Median milliseconds of SELECT INBOX + UID FETCH of the newest 50 (UID FLAGS ENVELOPE),
    on one logged-in connection, as a client opening a mailbox does."""
    from imap import RawClient
    c = RawClient(mu.imap_port)
    try:
        c.command(f"LOGIN bench {password}")
        times = []
        for _ in range(n + 1):
            t = time.perf_counter()
            selected = c.command("SELECT INBOX")
            uidnext = int(re.search(rb"UIDNEXT (\d+)", selected).group(1))
            data = c.command(f"UID FETCH {max(1, uidnext - 50)}:* (UID FLAGS ENVELOPE)")
            times.append(time.perf_counter() - t)
            assert data.count(b" FETCH (") == 50, data[-200:]
            c.command("UNSELECT")
        return statistics.median(times[1:]) * 1000
    finally:
        c.close()


def imap_answers(mu, password: str) -> bool:
    try:
        from imap import RawClient
        c = RawClient(mu.imap_port)
    except OSError:
        return False
    try:
        c.command(f"LOGIN bench {password}")
        c.command("SELECT INBOX")
        return True
    except (OSError, RuntimeError):
        return False
    finally:
        c.close()


def smtp_rate(port: int) -> float:
    t = time.perf_counter()
    subprocess.run(["/usr/sbin/smtp-source", "-s", "5", "-m", "1000", "-l", "4096", "-f", "load@example.org",
                    "-t", "bench@mu.test", f"127.0.0.1:{port}"], check=True, capture_output=True, timeout=600)
    return 1000 / (time.perf_counter() - t)


def bench_scale(tmp: str, row) -> None:
    print(f"scale (mu.py import into one mailbox, up to {LARGEST:,} messages)", flush=True)
    env = dict(os.environ, MAIL_DOMAIN="mu.test", MAIL_RATE_CONNECTIONS="1000000", MAIL_RATE_MESSAGES="1000000")
    servers = {}
    for name in ("small", "big", "empty"):
        home = os.path.join(tmp, f"scale-{name}")
        mu = Mu(home, {"MAIL_DOMAIN": "mu.test"})
        mu.add_user("bench")
        mu.bench_token = mu.token("bench")
        # Mail clients are given app passwords (an account password is scrypt, ~50 ms a login).
        mu.imap_password = mu.cli("users", "app-password", "bench", "--label", "bench").stdout.strip()
        servers[name] = mu
    mbox = os.path.join(tmp, "scale.mbox")

    def grow(mu, upto: int, have: int) -> float:
        """Import messages have..upto-1 in chunks; returns the import seconds."""
        seconds = 0.0
        step = 100_000
        for start in range(have, upto, step):
            count = min(step, upto - start)
            write_mbox(mbox, start, count)
            seconds += import_mbox(mu.home, mbox, env)
        os.remove(mbox)
        return seconds

    small, big, empty = servers["small"], servers["big"], servers["empty"]
    grow(small, 1_000, 0)
    seconds = grow(big, 100_000, 0)
    row("import from a local mbox", f"{100_000 / seconds:.0f}", "msg/s", "100,000 messages; target ≥ 2,000")

    # Search over a 100,000-message mailbox (the index is built by the server in the background).
    big.start(timeout=300)
    try:
        wait_indexed(big, big.bench_token, "tok99999")
        hit = statistics.median(api_get(big.web_port, "/api/mail?q=tok12345&limit=50", big.bench_token)[0]
                                for _ in range(5))
        miss = statistics.median(api_get(big.web_port, "/api/mail?q=nowhere7&limit=50", big.bench_token)[0]
                                 for _ in range(5))
        row("search a 100,000-message mailbox (one hit)", f"{hit * 1000:.0f}", "ms", "median of 5; target ≤ 1,000")
        row("search a 100,000-message mailbox (no hit)", f"{miss * 1000:.0f}", "ms", "median of 5; reads it all")
    finally:
        big.stop()

    grow(big, 200_000, 100_000)
    pages, selects = {"1,000": [], "200,000": []}, {"1,000": [], "200,000": []}
    sized = (("1,000", small), ("200,000", big))
    for _name, mu in sized:
        mu.start(timeout=300)
    try:
        wait_indexed(big, big.bench_token, "tok199999")
        for _name, mu in sized:
            wait_idle(mu.proc.pid)
        row("server RSS, 200,000 messages", f"{rss_mib(big.proc.pid):.0f}", "MiB")
        for _ in range(5):   # interleaved rounds: the machine's drift hits both alike
            for name, mu in sized:
                pages[name].append(median_ms(mu.web_port, "/api/mail?folder=inbox&limit=50", mu.bench_token, n=20))
                selects[name].append(imap_newest_ms(mu, mu.imap_password, n=10))
    finally:
        for _name, mu in sized:
            mu.stop()
    pages = {name: statistics.median(values) for name, values in pages.items()}
    selects = {name: statistics.median(values) for name, values in selects.items()}
    row("GET /api/mail newest 50, 1,000 messages", f"{pages['1,000']:.2f}", "ms", "median of 5 x 20, interleaved")
    row("GET /api/mail newest 50, 200,000 messages", f"{pages['200,000']:.2f}", "ms", "median of 5 x 20, interleaved")
    row("  ratio 200,000 / 1,000", f"{pages['200,000'] / pages['1,000']:.2f}", "x", "target ≤ 1.5")
    row("IMAP SELECT + UID FETCH newest 50, 1,000 messages", f"{selects['1,000']:.2f}", "ms", "median of 5 x 10, interleaved")
    row("IMAP SELECT + UID FETCH newest 50, 200,000 messages", f"{selects['200,000']:.2f}", "ms", "median of 5 x 10, interleaved")
    row("  ratio 200,000 / 1,000", f"{selects['200,000'] / selects['1,000']:.2f}", "x", "target ≤ 1.5")

    if LARGEST > 200_000:
        seconds = grow(big, LARGEST, 200_000)
        row(f"import {LARGEST - 200_000:,} more", f"{(LARGEST - 200_000) / seconds:.0f}", "msg/s")
    restart = start_timed(big)
    try:
        wait_indexed(big, big.bench_token, f"tok{LARGEST - 1}")
        wait_idle(big.proc.pid)
        median_ms(big.web_port, "/api/mail?folder=inbox&limit=50", big.bench_token, n=10)
        rss = rss_mib(big.proc.pid)
        row(f"server RSS, {LARGEST:,} messages", f"{rss:.0f}", "MiB", "target ≤ 512")
        state_bytes = os.path.getsize(os.path.join(big.home, "mail.json"))
        row("  snapshot bytes per message", f"{state_bytes / LARGEST:.0f}", "B")
        row(f"restart to the API and IMAP answering, {LARGEST:,} messages", f"{restart:.1f}", "s", "target ≤ 10")
        empty.start()
        try:
            rates = {"big": [], "empty": []}
            for _ in range(3):   # interleaved rounds: the machine's drift hits both alike
                rates["big"].append(smtp_rate(big.smtp_port))
                rates["empty"].append(smtp_rate(empty.smtp_port))
            rb, re_ = statistics.median(rates["big"]), statistics.median(rates["empty"])
            row(f"SMTP delivery, store of {LARGEST:,}", f"{rb:.0f}", "msg/s", "smtp-source -s 5 -m 1000 -l 4096")
            row("SMTP delivery, empty store", f"{re_:.0f}", "msg/s")
            row("  ratio empty / large", f"{re_ / rb:.2f}", "x", "target ≤ 1.2")
        finally:
            empty.stop()
    finally:
        big.stop()


if __name__ == "__main__":
    import tempfile
    rows = []
    with tempfile.TemporaryDirectory(prefix="mu-scale-") as tmp:
        bench_scale(tmp, lambda *r: (rows.append(r), print("  ", *r, flush=True)))
