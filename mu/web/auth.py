"""Sign-up (open, by invitation or closed), login and logout, throttled per account and per
client address, and the session cookie."""

import bottle
from bottle import request, response

from ..accounts import MAX_USERNAME_CHARS, AccountError, InviteInvalid, LoginThrottled
from ..log import log
from ..ratelimit import Throttle, address_key
from .common import PRESESSION_CSRF_COOKIE, SESSION_COOKIE, check_csrf, client_address, current, is_https, render

SIGNUP_WINDOW_SECONDS = 3600
# A login or sign-up form is a username (32), a password (1024), a token or two and their
# percent-encoding: anything larger is refused before it is read, let alone parsed.
MAX_ACCOUNT_FORM_BYTES = 16 * 1024


def _safe_next(target: str) -> str:
    """Only a path on this site: never an open redirect. Browsers drop tabs and newlines
    from URLs (WHATWG URL parsing), so `/\\t/evil.test` would become `//evil.test`."""
    target = target or ""
    if any(c in target for c in "\\\t\r\n") or any(ord(c) < 0x20 or ord(c) == 0x7f for c in target):
        return "/mail"
    if not target.startswith("/") or target.startswith("//"):
        return "/mail"
    return target


def refuse_large_form() -> None:
    """413 for a login/sign-up body larger than any real one (its length as declared, or as
    read when it is chunked), before anything parses it."""
    declared = request.content_length
    if declared > MAX_ACCOUNT_FORM_BYTES or (declared < 0 and
                                             len(request.body.read(MAX_ACCOUNT_FORM_BYTES + 1)) > MAX_ACCOUNT_FORM_BYTES):
        raise bottle.HTTPError(413, "This form is far larger than a username and password can be.")


def start_session(app, name: str) -> None:
    old = request.get_cookie(SESSION_COOKIE)
    if old:
        app.accounts.end_session(old)
    sid, _csrf = app.accounts.new_session(name)   # a fresh id at every login (no fixation)
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="lax", path="/", secure=is_https(),
                        max_age=30 * 24 * 3600)
    response.delete_cookie(PRESESSION_CSRF_COOKIE, path="/")


def install(web, app):
    config = app.config
    # The login throttles are the accounts' own, shared with IMAP and submission.
    web.config["mu.login_throttle"] = (app.accounts.throttle.by_account, app.accounts.throttle.by_address)
    signups = Throttle(config.signups_per_hour_per_address, SIGNUP_WINDOW_SECONDS)
    web.config["mu.signup_throttle"] = signups

    @web.get("/")
    def home():
        bottle.redirect("/mail" if current()[0] else "/login")

    def signup_mode() -> tuple:
        """(may this request sign up, becomes admin, the reason when not)."""
        setup = request.params.get("setup", "")
        if app.setup_code and setup:
            import secrets
            if secrets.compare_digest(setup, app.setup_code) and not app.accounts.has_admin():
                return True, True, ""
            return False, False, "This admin set-up link is no longer valid: an admin exists, or the server restarted."
        if config.signup == "closed":
            return False, False, "Sign-up is closed on this server. Ask an admin for an account."
        if config.signup == "invite" and not app.accounts.invite_valid(request.params.get("invite", "")):
            return False, False, ("Sign-up on this server is by invitation only. Ask an admin for an "
                                  "invitation link (or the link you have was used, revoked or expired).")
        return True, False, ""

    def signup_page(status: int = 200, **values):
        response.status = status
        values.setdefault("name", "")
        return render("signup", invite=request.params.get("invite", "")[:100],
                      setup=request.params.get("setup", "")[:100], **values)

    @web.get("/signup")
    def signup_form():
        allowed, as_admin, why = signup_mode()
        if not allowed:
            return signup_page(403, closed=True, error=why)
        return signup_page(as_admin=as_admin)

    @web.post("/signup")
    def signup():
        refuse_large_form()
        check_csrf()
        allowed, as_admin, why = signup_mode()
        if not allowed:
            return signup_page(403, closed=True, error=why)
        client = address_key(client_address())
        if signups.refused(client):
            return signup_page(429, error="Too many sign-ups from your network. Try again in an hour.")
        signups.count(client)
        name = (request.forms.getunicode("username", "") or "")[:MAX_USERNAME_CHARS + 1]
        password = request.forms.getunicode("password", "") or ""
        invite = request.forms.get("invite") if config.signup == "invite" and not as_admin else None
        try:
            user = app.accounts.create(name, password, admin_if_first=as_admin, invite=invite)
        except InviteInvalid as exc:
            return signup_page(403, closed=True, error=str(exc))
        except AccountError as exc:
            return signup_page(400, name=name, error=str(exc), as_admin=as_admin)
        if as_admin:
            app.setup_code = None
        log("web", f"new account {user['name']} ({user['role']}) from {client_address()}")
        start_session(app, user["name"])
        bottle.redirect("/mail")

    @web.get("/login")
    def login_form():
        return render("login", name="", next=_safe_next(request.query.get("next", "/mail")))

    @web.post("/login")
    def login():
        refuse_large_form()
        check_csrf()
        name = (request.forms.getunicode("username", "") or "").strip().lower()
        password = request.forms.getunicode("password", "") or ""
        target = _safe_next(request.forms.get("next", "/mail"))
        shown = name if app.accounts.login_name(name) else ""   # a name that names nobody is not echoed
        try:
            user = app.accounts.login(name, password, client_address())
        except LoginThrottled as exc:
            response.status = 429
            if exc.scope == "address":
                return render("login", name="", next=target,
                              error="Too many failed logins from your network. Try again in 15 minutes.")
            return render("login", name=shown, next=target,
                          error="Too many failed attempts for this account. Try again in 15 minutes.")
        if user is None:
            response.status = 401
            return render("login", name=shown, next=target, error="Wrong username or password.")
        start_session(app, user["name"])
        bottle.redirect(target)

    @web.get("/logout")
    def logout_page():
        # Logging out changes state, so only a POST with the CSRF token does it (a link or an
        # image on another site could otherwise sign anyone out).
        if current()[0] is None:
            bottle.redirect("/login")
        return render("logout")

    @web.post("/logout")
    def logout():
        check_csrf()
        sid = request.get_cookie(SESSION_COOKIE)
        if sid:
            app.accounts.end_session(sid)
        response.delete_cookie(SESSION_COOKIE, path="/")
        bottle.redirect("/login")
