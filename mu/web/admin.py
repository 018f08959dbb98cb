"""Admin pages: the blocklist, users (role, credits, disable) and the mail log."""

import urllib.parse

import bottle
from bottle import request, response

from ..accounts import AccountError
from ..blocklist import BlocklistError
from .common import check_csrf, render, require_admin
from .settings import when


def install(web, app):
    @web.get("/admin")
    def admin_home():
        require_admin()
        bottle.redirect("/admin/mail")

    @web.get("/admin/blocklist")
    def blocklist_page():
        require_admin()
        return render("admin_blocklist", entries=app.blocklist.entries())

    @web.post("/admin/blocklist")
    def blocklist_change():
        require_admin()
        check_csrf()
        action = request.forms.get("action", "")
        value = (request.forms.getunicode("value", "") or "").strip()
        if not value:
            value = (request.forms.getunicode("email", "") or request.forms.getunicode("ip", "") or "").strip()
        try:
            if action == "unblock":
                app.blocklist.remove(value)
                flash = f"Unblocked {value}"
            else:
                # Either form takes either kind: the value says what it is.
                kind, canonical = app.blocklist.add(value)
                flash = f"Blocked {canonical}"
        except BlocklistError as exc:
            response.status = 400
            return render("admin_blocklist", entries=app.blocklist.entries(), error=str(exc))
        bottle.redirect("/admin/blocklist?flash=" + urllib.parse.quote(flash))

    def users_view(status: int = 200, **values):
        response.status = status
        return render("admin_users", users=app.accounts.all(), invites=app.accounts.invites(),
                      signup=app.config.signup, when=when, **values)

    @web.get("/admin/users")
    def users_page():
        require_admin()
        return users_view()

    @web.post("/admin/invites")
    def invite_create():
        me = require_admin()
        check_csrf()
        code = app.accounts.create_invite(me["name"])
        scheme, host = request.urlparts.scheme, request.urlparts.netloc
        link = f"{scheme}://{host}/signup?invite={urllib.parse.quote(code)}"
        return users_view(new_invite=link, flash="Invitation made: send this link to the person (it works once)")

    @web.post("/admin/invites/<invite_id>/revoke")
    def invite_revoke(invite_id):
        require_admin()
        check_csrf()
        try:
            app.accounts.revoke_invite(invite_id)
        except AccountError as exc:
            return users_view(404, error=str(exc))
        bottle.redirect("/admin/users?flash=Invitation+revoked")

    @web.post("/admin/users/<name>")
    def users_change(name):
        me = require_admin()
        check_csrf()
        action = request.forms.get("action", "")
        try:
            if action == "make_admin":
                app.accounts.update(name, role="admin")
            elif action == "remove_admin":
                if name == me["name"]:
                    raise AccountError("you cannot remove your own admin role")
                app.accounts.update(name, role="user")
            elif action == "add_credits":
                amount = int(request.forms.get("amount", "0"))
                app.accounts.add_credits(name, amount)
            elif action == "disable":
                if name == me["name"]:
                    raise AccountError("you cannot disable your own account")
                app.accounts.update(name, disabled=True)
            elif action == "enable":
                app.accounts.update(name, disabled=False)
            else:
                raise AccountError("unknown action")
        except (AccountError, ValueError) as exc:
            return users_view(400, error=str(exc))
        bottle.redirect("/admin/users")

    @web.get("/admin/mail")
    def mail_log():
        require_admin()
        with app.store.reading() as state:
            queue = sorted((dict(e, id=q) for q, e in state.queue.items()), key=lambda e: e["next_try"])
            numbers = {e["msg"]: state.messages.number_of(e["msg"]) for e in queue}
        subjects = {msg_id: app.store.meta_record(n).get("subject", "") if n is not None else ""
                    for msg_id, n in numbers.items()}
        return render("admin_mail", events=app.events.recent()[:200], queue=queue, subjects=subjects,
                      dkim=app.signer.status_text())

    @web.get("/admin/dns")
    def dns_report():
        require_admin()
        from ..doctor import checks
        return render("admin_dns", results=checks(app.config, app.resolver))

    @web.post("/admin/mail/retry")
    def retry():
        require_admin()
        check_csrf()
        app.queue.retry_now()
        bottle.redirect("/admin/mail")
