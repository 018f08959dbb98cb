"""Real peers for the interop tier: private Postfix instances and an OpenDKIM milter.

Each peer lives in its own folder (configuration, queue, data, log) under one temporary
folder, listens on a free loopback port, and resolves only through the tests' fake DNS:
Postfix and OpenDKIM run in a private mount namespace (`unshare -m`) whose /etc/resolv.conf
says `nameserver 127.0.0.1`, Postfix is told never to use DNS, and OpenDKIM's libunbound
forwards every query to the FakeDNS port. Nothing here sends a packet off loopback.

    folder = PeerFolder()                       # a 0755 folder Postfix's users can enter
    cert, key = self_signed_certificate(folder.path, "mx.remote.test")
    mx = Postfix(folder, "mx", "mx.remote.test", {"smtpd_tls_cert_file": cert, ...})
    mx.settings["virtual_mailbox_maps"] = mx.write_map("vmailbox", {"bob@remote.test": "remote.test/bob/"})
    mx.start()
    mx.wait_log(r"status=sent")                 # polls the instance's maillog_file
    mx.stop(); folder.remove()

Fixtures register stop() before start(), so a peer is stopped however the test ends.
"""

import functools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

# What Debian's postfix package installs; every private instance shares the programs.
POSTFIX_PROGRAMS = {"command_directory": "/usr/sbin", "daemon_directory": "/usr/lib/postfix/sbin",
                    "shlib_directory": "/usr/lib/postfix", "meta_directory": "/etc/postfix"}
# The master.cf services a private instance needs, none chrooted (the chroot would need
# copies of /etc files). The smtpd line is added with the instance's own port.
MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
NOBODY_UID = 65534


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(predicate, timeout: float, message: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, read from /proc (a probe connection
    would show up in the peer's log as a client)."""
    wanted = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            return any(line.split()[1] == wanted and line.split()[3] == "0A" for line in list(f)[1:])
    except OSError:
        return False


class PeerFolder:
    """One temporary folder for a module's peers, outside pytest's 0700 tree: Postfix's
    daemons drop to the `postfix` user and must be able to enter it."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="mu-interop-")
        os.chmod(self.path, 0o755)
        self.resolv_conf = os.path.join(self.path, "resolv.conf")
        with open(self.resolv_conf, "w") as f:
            f.write("nameserver 127.0.0.1\n")

    def sub(self, name: str) -> str:
        path = os.path.join(self.path, name)
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chmod(path, 0o755)
        return path

    def isolated(self, argv: list) -> list:
        """`argv` run in a private mount namespace where the system resolver is loopback.

        Where mount namespaces are not allowed (a container without CAP_SYS_ADMIN) `argv`
        runs as it is: the peers' own settings already keep them off DNS but the fake one."""
        wrapped = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                   self.resolv_conf]
        return wrapped + argv if _namespaces_allowed(tuple(wrapped)) else argv

    def remove(self):
        if os.environ.get("MU_INTEROP_KEEP"):   # keep the peers' logs and mail to look at
            print(f"interop peers' folder kept: {self.path}")
            return
        shutil.rmtree(self.path, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def _namespaces_allowed(wrapper: tuple) -> bool:
    return subprocess.run([*wrapper, "true"], capture_output=True).returncode == 0


def self_signed_certificate(folder: str, name: str) -> tuple:
    """(certificate, key) PEM paths for CN=name, made with openssl."""
    cert, key = os.path.join(folder, name + ".crt"), os.path.join(folder, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    os.chmod(key, 0o644)   # a test key; mu and Postfix read it as different users
    return cert, key


# ---------------------------------------------------------------- Postfix

class Postfix:
    """A private Postfix instance: `postfix -c DIR start` with its own queue, data and log."""

    def __init__(self, folder: PeerFolder, name: str, hostname: str, settings: dict):
        self.folder = folder
        self.name = name
        self.root = folder.sub(name)
        self.config_dir = os.path.join(self.root, "conf")
        self.queue_dir = os.path.join(self.root, "queue")
        self.data_dir = os.path.join(self.root, "data")
        self.mail_dir = os.path.join(self.root, "mail")
        self.log_path = os.path.join(self.root, "maillog")
        self.hostname = hostname
        self.port = free_port()
        self.started = False
        for path in (self.config_dir, self.queue_dir, self.mail_dir):
            os.makedirs(path, mode=0o755, exist_ok=True)
        os.makedirs(self.data_dir, exist_ok=True)
        shutil.chown(self.data_dir, "postfix", "postfix")
        os.chown(self.mail_dir, NOBODY_UID, NOBODY_UID)
        self.settings = {
            **POSTFIX_PROGRAMS,
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": f"postfix-{name}",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.root,
            "myhostname": hostname,
            "mydomain": hostname.partition(".")[2] or hostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtputf8_enable": "yes",
            # Never DNS: client names, next hops and everything not routed by a test go
            # nowhere (mail to elsewhere, bounces included, is discarded, not sent).
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "default_transport": "discard:the interop tier delivers nowhere else",
            "relay_transport": "discard:the interop tier delivers nowhere else",
            "local_transport": "discard:the interop tier delivers nowhere else",
            "smtpd_tls_loglevel": "1",
            "smtp_tls_loglevel": "1",
            **settings,
        }

    # -- files
    def path(self, name: str) -> str:
        return os.path.join(self.config_dir, name)

    def write_map(self, name: str, entries: dict) -> str:
        """A `hash:` table from {key: value}, compiled with postmap; returns `hash:PATH`."""
        path = self.path(name)
        with open(path, "w", encoding="utf-8") as f:
            for key, value in entries.items():
                f.write(f"{key} {value}\n")
        self._write_config()   # postmap -c reads main.cf
        subprocess.run(["postmap", "-c", self.config_dir, path], check=True, capture_output=True)
        return f"hash:{path}"

    def _write_config(self):
        with open(self.path("main.cf"), "w", encoding="utf-8") as f:
            for key, value in self.settings.items():
                f.write(f"{key} = {value}\n")
        with open(self.path("master.cf"), "w") as f:
            f.write(f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + MASTER_SERVICES)

    # -- lifetime
    def start(self) -> "Postfix":
        self._write_config()
        self.started = True   # from here on stop() has something to stop, whatever happens
        result = subprocess.run(self.folder.isolated(["postfix", "-c", self.config_dir, "start"]),
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"postfix {self.name} did not start: {result.stderr}{self.log()}")
        poll(lambda: listening(self.port), 20, f"postfix {self.name} to listen on {self.port}")
        return self

    def master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        if not self.started:
            return
        self.started = False
        pid = self.master_pid()
        subprocess.run(["postfix", "-c", self.config_dir, "stop"], capture_output=True, timeout=60)
        if pid and not _wait_gone(pid, 10):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    # -- what it did
    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 20, count: int = 1) -> list:
        """The first `count` log lines matching the regular expression, waiting for them."""
        regex = re.compile(pattern)

        def found():
            lines = [l for l in self.log().splitlines() if regex.search(l)]
            return lines[:count] if len(lines) >= count else None
        return poll(found, timeout, f"postfix {self.name} to log {pattern!r} x{count}")

    def maildir_messages(self, relative: str) -> list:
        """The messages (bytes) in the Maildir `relative` to virtual_mailbox_base, oldest first."""
        new = os.path.join(self.mail_dir, relative, "new")
        try:
            names = sorted(os.listdir(new))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            with open(os.path.join(new, name), "rb") as f:
                out.append(f.read())
        return out


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- OpenDKIM

class OpenDKIM:
    """OpenDKIM in the foreground as a verifying milter; libunbound asks only the fake DNS."""

    def __init__(self, folder: PeerFolder, dns_port: int, authserv_id: str):
        self.folder = folder
        self.root = folder.sub("opendkim")
        self.port = free_port()
        self.proc = None
        self.conf = os.path.join(self.root, "opendkim.conf")
        unbound = os.path.join(self.root, "unbound.conf")
        with open(unbound, "w") as f:
            f.write("server:\n"
                    "    do-not-query-localhost: no\n"   # the fake DNS is on loopback
                    '    local-zone: "test." nodefault\n'   # unbound keeps test. empty otherwise
                    "forward-zone:\n"
                    '    name: "."\n'
                    f"    forward-addr: 127.0.0.1@{dns_port}\n")
        with open(self.conf, "w") as f:
            f.write(f"Mode v\nSocket inet:{self.port}@127.0.0.1\nAlwaysAddARHeader yes\n"
                    f"AuthservID {authserv_id}\nResolverConfiguration {unbound}\n"
                    "Syslog no\nBackground no\n")

    def start(self) -> "OpenDKIM":
        self.log_path = os.path.join(self.root, "opendkim.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.folder.isolated(["opendkim", "-f", "-x", self.conf]),
                                     stdout=self._log, stderr=subprocess.STDOUT)
        poll(lambda: self.proc.poll() is not None or listening(self.port), 20, "opendkim to listen")
        if self.proc.poll() is not None:
            raise RuntimeError("opendkim exited: " + open(self.log_path).read())
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
