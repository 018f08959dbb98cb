"""The signed-in user's own settings: password change, app passwords for mail clients (make,
list, revoke) and their API tokens (list, revoke)."""

import datetime

import bottle
from bottle import request, response

from ..accounts import MAX_LABEL_CHARS, AccountError, check_password
from .common import SESSION_COOKIE, check_csrf, render, require_user


def when(ts) -> str:
    if not ts:
        return "never"
    return datetime.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")


def install(web, app):
    def page(status: int = 200, **values):
        user = require_user()
        response.status = status
        return render("settings", tokens=app.accounts.tokens(user["name"]),
                      app_passwords=app.accounts.app_passwords(user["name"]), client_settings=client_settings(),
                      when=when, **values)

    def client_settings() -> dict:
        """What a mail app is told to use for sending (shown beside app passwords)."""
        config = app.config
        ports = []
        if config.submission_port:
            ports.append(f"port {config.submission_port} with STARTTLS" if config.tls_enabled else
                         f"port {config.submission_port} (this server has no TLS certificate: from its own machine only)")
        if config.submissions_port and config.tls_enabled:
            ports.append(f"port {config.submissions_port} with SSL/TLS")
        return {"host": config.domain, "ports": ports}

    @web.get("/settings")
    def settings():
        return page()

    @web.post("/settings/password")
    def change_password():
        user = require_user()
        check_csrf()
        current = request.forms.getunicode("current", "") or ""
        new = request.forms.getunicode("new", "") or ""
        if not check_password(current, app.accounts.get(user["name"])["pw"]):
            return page(400, error="Your current password is not right.")
        if new != (request.forms.getunicode("repeat", "") or ""):
            return page(400, error="The new passwords do not match.")
        try:
            app.accounts.set_password(user["name"], new, keep_session=request.get_cookie(SESSION_COOKIE))
        except AccountError as exc:
            return page(400, error=str(exc))
        bottle.redirect("/settings?flash=Password+changed")

    @web.post("/settings/tokens/<token_id>/revoke")
    def revoke(token_id):
        user = require_user()
        check_csrf()
        try:
            app.accounts.revoke_token(user["name"], token_id)
        except AccountError as exc:
            return page(404, error=str(exc))
        bottle.redirect("/settings?flash=Token+revoked")

    @web.post("/settings/app-passwords")
    def create_app_password():
        user = require_user()
        check_csrf()
        label = (request.forms.getunicode("label", "") or "")[:MAX_LABEL_CHARS + 1]
        try:
            label, password = app.accounts.create_app_password(user["name"], label)
        except AccountError as exc:
            return page(400, error=str(exc), label=label)
        # Shown on this page only, never put in a redirect's URL: it is not stored anywhere.
        response.set_header("Cache-Control", "no-store")
        return page(201, new_app_password=(label, password))

    @web.post("/settings/app-passwords/revoke")
    def revoke_app_password():
        user = require_user()
        check_csrf()
        try:
            app.accounts.revoke_app_password(user["name"], request.forms.getunicode("label", "") or "")
        except AccountError as exc:
            return page(404, error=str(exc))
        bottle.redirect("/settings?flash=App+password+revoked")
