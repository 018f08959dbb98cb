"""Sign-up, login (throttled) and logout pages, and the session cookie."""

import threading
import time

import bottle
from bottle import request, response

from ..accounts import AccountError
from ..log import log
from .common import PRESESSION_CSRF_COOKIE, SESSION_COOKIE, check_csrf, current, render

MAX_LOGIN_FAILURES = 10           # consecutive failures for one account before it is locked
LOGIN_LOCK_SECONDS = 15 * 60


class LoginThrottle:
    """Counts consecutive failed logins per account name; refuses while locked."""

    def __init__(self):
        self._failures = {}
        self._lock = threading.Lock()

    def locked(self, name: str) -> bool:
        with self._lock:
            count, until = self._failures.get(name, (0, 0))
            if until and until < time.time():
                self._failures.pop(name, None)
                return False
            return count >= MAX_LOGIN_FAILURES

    def failed(self, name: str) -> None:
        with self._lock:
            count, _ = self._failures.get(name, (0, 0))
            count += 1
            self._failures[name] = (count, time.time() + LOGIN_LOCK_SECONDS if count >= MAX_LOGIN_FAILURES else 0)
            if len(self._failures) > 100000:
                self._failures.clear()

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


def _safe_next(target: str) -> str:
    # Only same-site paths: never an open redirect.
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/mail"


def start_session(app, name: str) -> None:
    old = request.get_cookie(SESSION_COOKIE)
    if old:
        app.accounts.end_session(old)
    sid, _csrf = app.accounts.new_session(name)   # a fresh id at every login (no fixation)
    secure = request.urlparts.scheme == "https"
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="lax", path="/", secure=secure,
                        max_age=30 * 24 * 3600)
    response.delete_cookie(PRESESSION_CSRF_COOKIE, path="/")


def install(web, app):
    throttle = LoginThrottle()
    web.config["mu.login_throttle"] = throttle

    @web.get("/")
    def home():
        bottle.redirect("/mail" if current()[0] else "/login")

    @web.get("/signup")
    def signup_form():
        return render("signup", name="")

    @web.post("/signup")
    def signup():
        check_csrf()
        name = request.forms.getunicode("username", "") or ""
        password = request.forms.getunicode("password", "") or ""
        try:
            user = app.accounts.create(name, password, admin_if_first=True)
        except AccountError as exc:
            response.status = 400
            return render("signup", name=name, error=str(exc))
        log("web", f"new account {user['name']} ({user['role']})")
        start_session(app, user["name"])
        bottle.redirect("/mail")

    @web.get("/login")
    def login_form():
        return render("login", name="", next=_safe_next(request.query.get("next", "/mail")))

    @web.post("/login")
    def login():
        check_csrf()
        name = (request.forms.getunicode("username", "") or "").strip().lower()
        password = request.forms.getunicode("password", "") or ""
        target = _safe_next(request.forms.get("next", "/mail"))
        if throttle.locked(name):
            response.status = 429
            return render("login", name=name, next=target,
                          error="Too many failed attempts for this account. Try again in 15 minutes.")
        user = app.accounts.authenticate(name, password)
        if user is None:
            throttle.failed(name)
            response.status = 401
            return render("login", name=name, next=target, error="Wrong username or password.")
        throttle.succeeded(name)
        start_session(app, user["name"])
        bottle.redirect(target)

    def logout():
        sid = request.get_cookie(SESSION_COOKIE)
        if sid:
            app.accounts.end_session(sid)
        response.delete_cookie(SESSION_COOKIE, path="/")
        bottle.redirect("/login")

    web.get("/logout", callback=logout)

    @web.post("/logout")
    def logout_post():
        check_csrf()
        logout()
