"""The JSON API (/api/...): mail, attachments, the admin blocklist. Errors are {"error": ...}."""

import base64
import binascii
import json

import bottle
from bottle import request, response

from ..blocklist import BlocklistError
from ..mailbox import MailError
from ..mime import one_line, safe_content_type
from . import bodies
from .common import current_user, json_error, require_admin, require_user
from .pages import download

MAX_API_ATTACHMENTS = 20


def _json_body(app) -> dict:
    return bodies.read_json(app)


def _out(value, status: int = 200):
    response.status = status
    response.content_type = "application/json"
    return json.dumps(value, ensure_ascii=False)


def install(web, app):
    mailbox = app.mailbox

    def mail_error(exc: MailError):
        json_error(exc.status, str(exc))

    @web.get("/api/mail")
    def list_mail():
        user = require_user()
        folder = request.query.get("folder", "inbox")
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            json_error(400, "limit must be a whole number")
        if limit < 1:
            json_error(400, "limit must be at least 1")
        q = request.query.getunicode("q", "")
        try:
            if q:
                messages = mailbox.search(user["name"], q, limit=limit, with_body=True)
                _, unread = mailbox.list(user["name"], folder, limit=1)
            else:
                messages, unread = mailbox.list(user["name"], folder, limit=limit,
                                                before=request.query.get("before") or None, with_body=True)
        except MailError as exc:
            mail_error(exc)
        return _out({"messages": messages, "unread": unread})

    @web.get("/api/mail/<msg_id>")
    def get_mail(msg_id):
        user = require_user()
        try:
            return _out(mailbox.get(user["name"], msg_id))
        except MailError as exc:
            mail_error(exc)

    @web.get("/api/mail/<msg_id>/raw")
    def get_raw(msg_id):
        user = require_user()
        try:
            data = mailbox.raw(user["name"], msg_id)
        except MailError as exc:
            mail_error(exc)
        return bottle.HTTPResponse(body=data, headers={"Content-Type": "message/rfc822"})

    @web.get("/api/mail/<msg_id>/attachments/<index:int>")
    def get_attachment(msg_id, index):
        user = require_user()
        try:
            return download(*mailbox.attachment(user["name"], msg_id, index))
        except MailError as exc:
            mail_error(exc)

    @web.post("/api/mail")
    def send_mail():
        user = require_user()
        data = _json_body(app)
        to = data.get("to")
        if not isinstance(to, (str, list)) or not to:
            json_error(400, "'to' is required: a username or address, or several separated by commas")
        for key in ("subject", "body", "reply_to"):
            if data.get(key) is not None and not isinstance(data[key], str):
                json_error(400, f"'{key}' must be a string")
        for key in ("to", "reply_to"):
            bodies.check_json_field(app, data, key)
        if not isinstance(data.get("attachments") or [], list):
            json_error(400, "attachments must be [{\"name\", \"type\", \"content\" (base64)}]")
        if len(data.get("attachments") or []) > MAX_API_ATTACHMENTS:
            json_error(400, f"at most {MAX_API_ATTACHMENTS} attachments")
        attachments = []
        for att in data.get("attachments") or []:
            try:
                for key in ("name", "type"):
                    bodies.check_json_field(app, att, key)
                attachments.append((one_line(str(att["name"])) or "attachment", safe_content_type(str(att.get("type") or "")),
                                    base64.b64decode(att["content"], validate=True)))
            except (KeyError, TypeError, AttributeError, binascii.Error):
                json_error(400, "attachments must be [{\"name\", \"type\", \"content\" (base64)}]")
        try:
            msg = mailbox.send(user["name"], to, data.get("subject") or "", data.get("body") or "",
                               reply_to=data.get("reply_to") or None, attachments=attachments)
        except MailError as exc:
            if exc.status == 404:
                json_error(400, "reply_to: no such message")
            mail_error(exc)
        if msg.get("status"):
            app.queue.kick()
        return _out(msg, 201)

    @web.delete("/api/mail/<msg_id>")
    def delete_mail(msg_id):
        user = require_user()
        try:
            mailbox.delete(user["name"], msg_id)
        except MailError as exc:
            mail_error(exc)
        response.status = 204
        return ""

    @web.get("/api/me")
    def me():
        user = require_user()
        return _out({"name": user["name"], "role": user["role"], "credits": user["credits"],
                     "unread": mailbox.unread_count(user["name"]),
                     "address": mailbox.address_of(user["name"]),
                     "cost_email": app.config.credit_cost_email})

    @web.get("/api/users")
    def usernames():
        require_user()
        prefix = (request.query.getunicode("q", "") or "").lower()
        return _out({"users": [u["name"] for u in app.accounts.all()
                               if u["name"].startswith(prefix) and not u.get("disabled")][:50]})

    @web.get("/api/admin/blocklist")
    def blocklist_list():
        require_admin()
        return _out({"entries": app.blocklist.entries()})

    @web.post("/api/admin/blocklist")
    def blocklist_add():
        require_admin()
        data = _json_body(app)
        bodies.check_json_field(app, data, "value")
        try:
            kind, value = app.blocklist.add(str(data.get("value", "")))
        except BlocklistError as exc:
            json_error(400, str(exc))
        return _out({"value": value, "kind": kind}, 201)

    @web.delete("/api/admin/blocklist/<value:path>")
    def blocklist_remove(value):
        require_admin()
        try:
            app.blocklist.remove(value)
        except BlocklistError as exc:
            json_error(404 if str(exc).startswith("not blocked") else 400, str(exc))
        response.status = 204
        return ""

    @web.get("/healthz")
    def healthz():
        with app.store.reading() as state:
            depth = len(state.queue)
            users = len(state.users)
        smtp_ok = app.smtp_server is not None
        response.status = 200 if smtp_ok else 503
        return _out({"ok": smtp_ok, "smtp_port": app.smtp_server.port if smtp_ok else None,
                     "queue_depth": depth, "users": users, "dkim": app.signer.enabled})

    @web.route("/api/<path:path>", method=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def api_not_found(path):
        current_user()
        json_error(404, "no such API endpoint")
