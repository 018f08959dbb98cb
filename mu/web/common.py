"""What every request shares: the signed-in user, CSRF checks, JSON errors, security headers,
and which proxy headers to believe."""

import ipaddress
import json
import secrets
import urllib.parse

import bottle
from bottle import request, response

SESSION_COOKIE = "mu_session"
PRESESSION_CSRF_COOKIE = "mu_csrf"

# Pages may run only our own script and show only our own resources.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'self'")


# Headers a client could send to claim another scheme, host or address; Bottle would believe
# them (request.url, request.remote_addr), so they are removed unless a trusted proxy set them.
_FORWARDED_KEYS = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST",
                   "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_SSL", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


def _ip(text: str):
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


class ProxyHeaders:
    """WSGI middleware: MU_TRUSTED_PROXY. A request from a trusted proxy takes its scheme
    from X-Forwarded-Proto and its client address from X-Forwarded-For (the right-most
    address that is not itself a trusted proxy: the proxies append, a client can only
    prepend); from anyone else these headers are dropped."""

    def __init__(self, wsgi, trusted_networks):
        self.wsgi = wsgi
        self.trusted = tuple(trusted_networks)

    def _is_trusted(self, ip) -> bool:
        return ip is not None and any(ip.version == net.version and ip in net for net in self.trusted)

    def __call__(self, environ, start_response):
        sent = {key: environ.pop(key) for key in _FORWARDED_KEYS if key in environ}
        peer = environ.get("REMOTE_ADDR", "")
        environ["mu.peer_addr"] = peer
        if self.trusted and self._is_trusted(_ip(peer)):
            proto = sent.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
            client = None
            for hop in reversed(sent.get("HTTP_X_FORWARDED_FOR", "").split(",")):
                ip = _ip(hop)
                if ip is None:
                    break
                client = ip
                if not self._is_trusted(ip):
                    break
            if client is not None:
                environ["REMOTE_ADDR"] = str(client)
        return self.wsgi(environ, start_response)


def client_address() -> str:
    """The client's address: the peer's, or what a trusted proxy says it is."""
    return request.environ.get("REMOTE_ADDR", "")


def is_https() -> bool:
    return request.environ.get("wsgi.url_scheme") == "https"


class SecurityHeaders:
    """WSGI middleware: the headers every response carries, errors included."""

    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            names = {k.lower() for k, _ in headers}
            headers = list(headers)
            headers.append(("X-Content-Type-Options", "nosniff"))
            headers.append(("Referrer-Policy", "same-origin"))
            if "x-frame-options" not in names:
                headers.append(("X-Frame-Options", "SAMEORIGIN"))
            if "content-security-policy" not in names:
                headers.append(("Content-Security-Policy", PAGE_CSP))
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)
        return self.wsgi(environ, start)


def json_error(status: int, message: str):
    """Abort the request with a JSON body {"error": message}."""
    raise bottle.HTTPResponse(status=status, body=json.dumps({"error": message}),
                              headers={"Content-Type": "application/json"})


def is_api() -> bool:
    return request.path.startswith("/api/")


def current():
    """(user dict, csrf token or None) for this request, or (None, None)."""
    cached = request.environ.get("mu.auth")
    if cached is not None:
        return cached
    app = request.app.config["mu.app"]
    result = (None, None)
    header = request.get_header("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        user = app.accounts.user_for_token(token.strip()) if scheme.lower() == "bearer" else None
        if user is None and is_api():
            json_error(401, "invalid or missing API token")
        result = (user, None)
    else:
        found = app.accounts.session(request.get_cookie(SESSION_COOKIE))
        if found:
            result = found
    request.environ["mu.auth"] = result
    return result


def current_user():
    return current()[0]


def require_user():
    user = current_user()
    if user is None:
        if is_api():
            json_error(401, "authentication required")
        bottle.redirect("/login?next=" + urllib.parse.quote(request.fullpath[:200], safe="/"))
    return user


def require_admin():
    # Anyone who is not a signed-in admin gets 403, signed out or not (the page links to login).
    user = current_user()
    if user is None and is_api():
        json_error(401, "authentication required")
    if user is None or user["role"] != "admin":
        if is_api():
            json_error(403, "admins only")
        raise bottle.HTTPError(403, "Admins only. Log in with an admin account.")
    return user


def csrf_token() -> str:
    """The token forms must carry: the session's, or a pre-session cookie's on login/signup."""
    _user, token = current()
    if token:
        return token
    token = request.get_cookie(PRESESSION_CSRF_COOKIE) or request.environ.get("mu.presession_csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.environ["mu.presession_csrf"] = token
        response.set_cookie(PRESESSION_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=is_https())
    return token


def check_csrf() -> None:
    sent = request.forms.get("csrf", "")
    _user, session_token = current()
    expected = session_token or request.get_cookie(PRESESSION_CSRF_COOKIE)
    if not expected or not secrets.compare_digest(str(sent), str(expected)):
        raise bottle.HTTPError(403, "Invalid or missing CSRF token; reload the page and try again.")


def render(_template: str, **values):
    app = request.app.config["mu.app"]
    user = values.get("user", current_user())
    values.setdefault("user", user)
    values.setdefault("csrf", csrf_token())
    values.setdefault("unread", app.mailbox.unread_count(user["name"]) if user else 0)
    values.setdefault("flash", request.query.get("flash", ""))
    values.setdefault("error", "")
    values.setdefault("domain", app.config.domain)
    return bottle.template(_template, **values)


def install(web, app):
    @web.error(403)
    @web.error(404)
    @web.error(405)
    @web.error(413)
    @web.error(429)
    @web.error(500)
    def error_page(err):
        message = err.body if isinstance(err.body, str) and err.body else err.status_line
        if is_api():
            response.content_type = "application/json"
            return json.dumps({"error": message})
        return bottle.template("error", status=err.status_line, message=message)
