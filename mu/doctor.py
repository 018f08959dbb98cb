"""`mu.py doctor`: the DNS and port checks the guide asks an operator to do by hand with dig.

Each check yields (level, name, what was found, the fix); level is OK, WARN or FAIL.
"""

import os
import socket

from .auth import parse_tags, spf as spf_auth
from .dnsresolver import DNSTempError, NXDomain, Resolver

OK, WARN, FAIL = "OK", "WARN", "FAIL"


def local_addresses() -> set:
    found = {"127.0.0.1", "::1"}
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            found |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    extra = os.environ.get("MAIL_PUBLIC_IP", "")
    found |= {ip.strip() for ip in extra.split(",") if ip.strip()}
    return found


def dkim_public_key(config):
    path = os.path.join(config.home, "keys", "dkim.pub")
    try:
        with open(path) as f:
            return "".join(line.strip() for line in f if "-----" not in line)
    except OSError:
        return None


def checks(config, resolver=None):
    resolver = resolver or Resolver(config.dns_server, config.dns_timeout_seconds)
    domain, selector = config.domain, config.dkim_selector
    mine = local_addresses()
    results = []

    def add(level, name, found, fix=""):
        results.append((level, name, found, fix))

    mail_host = f"mail.{domain}"
    # MX (RFC 5321 §5.1)
    mx_hosts = []
    try:
        records = resolver.mx(domain)
        mx_hosts = [h for _, h in records if h != "."]
        if not records:
            add(WARN, "MX", f"{domain} has no MX record (mail falls back to its A record)",
                f"{domain}. IN MX 10 {mail_host}.")
        elif not mx_hosts:
            add(FAIL, "MX", f"{domain} publishes a null MX: it accepts no mail", f"{domain}. IN MX 10 {mail_host}.")
        else:
            add(OK, "MX", f"{domain} MX " + ", ".join(f"{p} {h}" for p, h in records))
    except NXDomain:
        add(FAIL, "MX", f"{domain} does not exist in DNS", f"{domain}. IN MX 10 {mail_host}.")
    except DNSTempError as exc:
        add(FAIL, "MX", f"DNS look-up failed: {exc}", "check MAIL_DNS_SERVER or the system resolver")
    # A records of the MX hosts, and whether they are this host
    host_ips = []
    for host in mx_hosts or [domain]:
        try:
            ips = resolver.addresses(host)
        except DNSTempError as exc:
            add(FAIL, "A", f"{host}: DNS look-up failed: {exc}")
            continue
        host_ips += ips
        if not ips:
            add(FAIL, "A", f"{host} has no A/AAAA record", f"{host}. IN A <this server's IP>")
        elif set(ips) & mine:
            add(OK, "A", f"{host} -> {', '.join(ips)} (this host)")
        else:
            add(WARN, "A", f"{host} -> {', '.join(ips)}, not an address of this host ({', '.join(sorted(mine))})",
                f"{host}. IN A <this server's IP>  (or set MAIL_PUBLIC_IP if behind NAT)")
    # SPF (RFC 7208)
    try:
        spf_records = [r for r in resolver.txt(domain) if r.lower().startswith("v=spf1")]
    except DNSTempError as exc:
        spf_records, _ = [], add(FAIL, "SPF", f"DNS look-up failed: {exc}")
    suggestion = f'{domain}. IN TXT "v=spf1 mx a:{mx_hosts[0] if mx_hosts else mail_host} ~all"'
    if len(spf_records) > 1:
        add(FAIL, "SPF", f"{len(spf_records)} SPF records (RFC 7208 §3.2 allows one)", suggestion)
    elif not spf_records:
        add(WARN, "SPF", f"no SPF record for {domain}", suggestion)
    else:
        ip = next((i for i in host_ips if i in mine), next(iter(host_ips), "127.0.0.1"))
        result, _expl = spf_auth.Checker(resolver).check(ip, f"postmaster@{domain}", domain)
        level = OK if result == "pass" else WARN
        add(level, "SPF", f'"{spf_records[0]}" gives {result} for {ip}', "" if level == OK else suggestion)
    # DKIM (RFC 6376 §3.6.2)
    name = f"{selector}._domainkey.{domain}"
    public = dkim_public_key(config)
    key_record = f'{name}. IN TXT "v=DKIM1; k=rsa; p={public}"' if public else ""
    try:
        published = [r for r in resolver.txt(name) if "p=" in r]
    except DNSTempError as exc:
        published = None
        add(FAIL, "DKIM", f"DNS look-up of {name} failed: {exc}")
    if published is not None:
        if not public:
            add(WARN, "DKIM", f"no key at {os.path.join(config.home, 'keys', 'dkim.pub')}: outbound mail is not signed",
                f"./scripts/generate-dkim-keys.sh {domain} {selector}")
        elif not published:
            add(FAIL, "DKIM", f"no DKIM record at {name}", key_record)
        elif "".join(parse_tags(published[0]).get("p", "").split()) == public:   # p= may hold FWS
            add(OK, "DKIM", f"{name} matches {os.path.join(config.home, 'keys', 'dkim.pub')}")
        else:
            add(FAIL, "DKIM", f"{name} does not match dkim.pub (old key or broken record)", key_record)
    # DMARC (RFC 7489 §6.1)
    try:
        dmarc = [r for r in resolver.txt("_dmarc." + domain) if r.lower().startswith("v=dmarc1")]
        if dmarc:
            add(OK, "DMARC", f'"{dmarc[0]}"')
        else:
            add(WARN, "DMARC", f"no DMARC record at _dmarc.{domain}",
                f'_dmarc.{domain}. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"')
    except DNSTempError as exc:
        add(FAIL, "DMARC", f"DNS look-up failed: {exc}")
    # Ports
    add(*_smtp_port_check(config))
    add(*_outbound_check(config, mx_hosts, resolver))
    return results


def _smtp_port_check(config):
    port = config.smtp_port
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
            "run under systemd with AmbientCapabilities=CAP_NET_BIND_SERVICE, or setcap cap_net_bind_service=+ep"
    except OSError as exc:
        return FAIL, "SMTP port", f"cannot bind port {port}: {exc.strerror}", "stop what uses it"


def _outbound_check(config, mx_hosts, resolver):
    port = config.outbound_port
    for host in mx_hosts:
        try:
            for ip in resolver.addresses(host):
                with socket.create_connection((ip, port), timeout=5) as s:
                    banner = s.recv(512).decode("ascii", "replace").strip()
                if banner.startswith("220"):
                    return OK, "outbound", f"connected to {host}[{ip}]:{port}", ""
        except (OSError, DNSTempError):
            continue
    target = mx_hosts[0] if mx_hosts else "an MX host"
    return WARN, "outbound", f"could not connect to {target} on port {port}", \
        f"allow outbound TCP port {port} in the firewall (many hosting providers block it)"


def run_doctor(config) -> int:
    results = checks(config)
    for level, name, found, fix in results:
        print(f"{level:<4}  {name:<9} {found}")
        if fix:
            print(f"      {'':<9} fix: {fix}")
    return 1 if any(r[0] == FAIL for r in results) else 0
