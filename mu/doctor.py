"""`mu.py doctor`: the DNS, reverse-DNS and port checks an operator would do by hand with dig.

Each check gives exactly one result (level, name, what was found, the fix); level is OK,
WARN or FAIL. With DNS unreachable every DNS check says so once, and nothing else.
"""

import os
import socket

import dns.reversename

from . import dkimkeys
from .auth import parse_tags, spf as spf_auth
from .dnsresolver import DNSTempError, NXDomain, Resolver

OK, WARN, FAIL = "OK", "WARN", "FAIL"
PROBE_TIMEOUT_SECONDS = 10
DNS_FIX = "check MAIL_DNS_SERVER or the system resolver (/etc/resolv.conf)"


def local_addresses(config=None) -> set:
    found = {"127.0.0.1", "::1"}
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            found |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    if config is not None:
        found |= set(config.public_ips)
    return found


def ehlo_name(config) -> str:
    """The name outbound sessions introduce themselves with (mu/delivery: MAIL_DOMAIN)."""
    return config.domain


def keygen_hint(config) -> str:
    from .runas import command_name
    return (f"{command_name()} dkim generate --selector {config.dkim_selector}   "
            f"(or ./scripts/generate-dkim-keys.sh {config.domain} {config.dkim_selector})")


class _Report:
    """Shared facts later checks need (the MX hosts, their addresses)."""

    def __init__(self, config, resolver):
        self.config, self.resolver = config, resolver
        self.domain = config.domain
        self.mail_host = f"mail.{config.domain}"
        self.mine = local_addresses(config)
        self.mx_hosts = []
        self.host_ips = []
        self.dns_down = False

    # MX (RFC 5321 §5.1)
    def mx(self):
        domain, fix = self.domain, f"{self.domain}. IN MX 10 {self.mail_host}."
        try:
            records = self.resolver.mx(domain)
        except NXDomain:
            return FAIL, "MX", f"{domain} does not exist in DNS", fix
        except DNSTempError as exc:
            self.dns_down = True
            return FAIL, "MX", str(exc), DNS_FIX
        self.mx_hosts = [h for _, h in records if h != "."]
        if not records:
            return WARN, "MX", f"{domain} has no MX record (mail falls back to its A record)", fix
        if not self.mx_hosts:
            return FAIL, "MX", f"{domain} publishes a null MX: it accepts no mail", fix
        return OK, "MX", f"{domain} MX " + ", ".join(f"{p} {h}" for p, h in records), ""

    # The MX hosts' addresses, and whether they are this host
    def a(self):
        found, missing, failed = {}, [], []
        for host in self.mx_hosts or [self.domain]:
            try:
                ips = self.resolver.addresses(host)
            except DNSTempError as exc:
                failed.append(str(exc))
                continue
            if ips:
                found[host] = ips
            else:
                missing.append(host)
        self.host_ips = [ip for ips in found.values() for ip in ips]
        shown = "; ".join(f"{h} -> {', '.join(ips)}" for h, ips in found.items())
        if failed:
            return FAIL, "A", "; ".join(failed), DNS_FIX
        if missing:
            return FAIL, "A", f"{', '.join(missing)} has no A/AAAA record", f"{missing[0]}. IN A <this server's IP>"
        if set(self.host_ips) & self.mine:
            return OK, "A", f"{shown} (this host)", ""
        return WARN, "A", f"{shown}, not an address of this host ({', '.join(sorted(self.mine))})", \
            f"{next(iter(found))}. IN A <this server's IP>  (or set MAIL_PUBLIC_IP if behind NAT)"

    # Reverse DNS of the sending address: receivers (Gmail, Outlook) want a PTR whose name
    # resolves back to the address (forward-confirmed) and is the name given at EHLO.
    def ptr(self):
        name = ehlo_name(self.config)
        ips = list(self.config.public_ips) or [ip for ip in self.host_ips if ip in self.mine]
        if not ips and self.dns_down:
            return FAIL, "PTR", "DNS look-up failed (see MX): the sending address is not known", DNS_FIX
        if not ips:
            return WARN, "PTR", "cannot tell this host's sending address", \
                "set MAIL_PUBLIC_IP to the server's public address"
        fix = f"ask your hosting provider to set the reverse DNS of {ips[0]} to {name}"
        problems = []
        for ip in ips:
            try:
                names = [r.target.to_text(omit_final_dot=True).lower()
                         for r in self.resolver.query(dns.reversename.from_address(ip).to_text(), "PTR")]
            except NXDomain:
                names = []
            except DNSTempError as exc:
                return FAIL, "PTR", str(exc), DNS_FIX
            if not names:
                return FAIL, "PTR", f"{ip} has no reverse DNS (PTR) record; large providers refuse or junk such mail", fix
            try:
                confirmed = [n for n in names if ip in self.resolver.addresses(n)]
            except DNSTempError as exc:
                return FAIL, "PTR", str(exc), DNS_FIX
            if not confirmed:
                return FAIL, "PTR", f"{ip} -> {names[0]}, which does not resolve back to {ip}", \
                    f"{names[0]}. IN A {ip}   (or: {fix})"
            if name.lower() not in confirmed:
                problems.append(f"{ip} -> {confirmed[0]}, but mu says EHLO {name}")
        if problems:
            return WARN, "PTR", "; ".join(problems), f"{fix} (and {name}. IN A {ips[0]})"
        return OK, "PTR", ", ".join(ips) + f" -> {name} (and back)", ""

    # SPF (RFC 7208)
    def spf(self):
        domain = self.domain
        suggestion = f'{domain}. IN TXT "v=spf1 mx a:{self.mx_hosts[0] if self.mx_hosts else self.mail_host} ~all"'
        try:
            records = [r for r in self.resolver.txt(domain) if r.lower().startswith("v=spf1")]
        except DNSTempError as exc:
            return FAIL, "SPF", str(exc), DNS_FIX
        if len(records) > 1:
            return FAIL, "SPF", f"{len(records)} SPF records (RFC 7208 §3.2 allows one)", suggestion
        if not records:
            return WARN, "SPF", f"no SPF record for {domain}", suggestion
        ip = next((i for i in self.config.public_ips), None) or \
            next((i for i in self.host_ips if i in self.mine), next(iter(self.host_ips), "127.0.0.1"))
        result, _expl = spf_auth.Checker(self.resolver).check(ip, f"postmaster@{domain}", domain)
        level = OK if result == "pass" else WARN
        return level, "SPF", f'"{records[0]}" gives {result} for {ip}', "" if level == OK else suggestion

    # DKIM (RFC 6376 §3.6.2)
    def dkim(self):
        config = self.config
        name = f"{config.dkim_selector}._domainkey.{self.domain}"
        pub_path = os.path.join(config.home, "keys", "dkim.pub")
        public = dkimkeys.public_key_text(pub_path)
        _key, why_not = dkimkeys.read_private_key(config.dkim_key_path)
        try:
            published = [r for r in self.resolver.txt(name) if "p=" in r]
        except DNSTempError as exc:
            return FAIL, "DKIM", str(exc), DNS_FIX
        if not public:
            return WARN, "DKIM", f"no key at {pub_path}: outbound mail is not signed", keygen_hint(config)
        record = dkimkeys.txt_record(config.dkim_selector, self.domain, public)
        if why_not:
            return FAIL, "DKIM", f"signing is off: {why_not}", "make the key readable by the user mu runs as"
        if not published:
            return FAIL, "DKIM", f"no DKIM record at {name}", record
        if "".join(parse_tags(published[0]).get("p", "").split()) == public:   # p= may hold FWS
            return OK, "DKIM", f"{name} matches {pub_path}", ""
        return FAIL, "DKIM", f"{name} does not match dkim.pub (old key or broken record)", record

    # DMARC (RFC 7489 §6.1)
    def dmarc(self):
        domain = self.domain
        try:
            records = [r for r in self.resolver.txt("_dmarc." + domain) if r.lower().startswith("v=dmarc1")]
        except DNSTempError as exc:
            return FAIL, "DMARC", str(exc), DNS_FIX
        if records:
            return OK, "DMARC", f'"{records[0]}"', ""
        return WARN, "DMARC", f"no DMARC record at _dmarc.{domain}", \
            f'_dmarc.{domain}. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"'

    def smtp_port(self):
        port = self.config.smtp_port
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                banner = s.recv(512).decode("ascii", "replace")
            if "mu" in banner:
                return OK, "SMTP port", f"mu is listening on port {port}", ""
            return FAIL, "SMTP port", f"port {port} is taken by another program: {banner.strip()[:80]}", \
                "stop it, or choose another MAIL_PORT"
        except OSError:
            pass
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", port))
            return OK, "SMTP port", f"port {port} is free to bind", ""
        except PermissionError:
            return FAIL, "SMTP port", f"no permission to bind port {port}", \
                "run under systemd (the unit grants CAP_NET_BIND_SERVICE); see docs: Port 25 without root"
        except OSError as exc:
            return FAIL, "SMTP port", f"cannot bind port {port}: {exc.strerror}", "stop what uses it"

    # Outbound port 25: connecting to our own MX proves nothing (it is this host); a big
    # provider's MX is what outbound mail will meet (MU_DOCTOR_MX).
    def outbound(self):
        host, port = self.config.doctor_mx
        port = port or self.config.outbound_port
        try:
            ips = [host] if _is_ip(host) else self.resolver.addresses(host)
        except (NXDomain, DNSTempError) as exc:
            return WARN, "outbound", f"cannot look up {host} (MU_DOCTOR_MX): {exc or 'no such host'}", DNS_FIX
        if not ips:
            return WARN, "outbound", f"{host} (MU_DOCTOR_MX) has no address", "set MU_DOCTOR_MX to an MX host"
        errors = []
        for ip in ips[:2]:
            try:
                with socket.create_connection((ip, port), timeout=PROBE_TIMEOUT_SECONDS) as s:
                    s.settimeout(PROBE_TIMEOUT_SECONDS)
                    banner = s.recv(512).decode("ascii", "replace").strip()
                    try:
                        s.sendall(b"QUIT\r\n")
                    except OSError:
                        pass
            except OSError as exc:
                errors.append(f"{ip}: {exc.strerror or exc.__class__.__name__}")
                continue
            if banner.startswith("220"):
                return OK, "outbound", f"port {port} open: {host}[{ip}] answered {banner[:60]}", ""
            errors.append(f"{ip} answered {banner[:60]!r}")
        return FAIL, "outbound", f"could not reach {host} on port {port} ({'; '.join(errors)})", \
            f"allow outbound TCP port {port} (many hosting providers block it until asked)"


def _is_ip(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        return True
    except OSError:
        return False


def checks(config, resolver=None):
    resolver = resolver or Resolver(config.dns_server, config.dns_timeout_seconds)
    report = _Report(config, resolver)
    return [check() for check in (report.mx, report.a, report.ptr, report.spf, report.dkim, report.dmarc,
                                  report.smtp_port, report.outbound)]


def run_doctor(config) -> int:
    results = checks(config)
    for level, name, found, fix in results:
        print(f"{level:<4}  {name:<9} {found}")
        if fix:
            print(f"      {'':<9} fix: {fix}")
    return 1 if any(r[0] == FAIL for r in results) else 0
