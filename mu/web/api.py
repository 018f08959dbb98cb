"""The JSON API (/api/...): mail, folders, drafts, attachments, the admin blocklist.
Errors are {"error": ...}."""

import base64
import binascii
import json

import bottle
from bottle import request, response

from ..blocklist import BlocklistError
from ..mailbox import BATCH_ACTIONS, MailError
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
        folder = request.query.getunicode("folder", "inbox") or "inbox"
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            json_error(400, "limit must be a whole number")
        if limit < 1:
            json_error(400, "limit must be at least 1")
        q = request.query.getunicode("q", "")
        try:
            if q:   # every folder, unless one is named
                messages = mailbox.search(user["name"], q, limit=limit, with_body=True,
                                          folder=folder if "folder" in request.query else None)
                _, unread = mailbox.list(user["name"], folder, limit=1)
            else:
                messages, unread = mailbox.list(user["name"], folder, limit=limit,
                                                before=request.query.get("before") or None, with_body=True)
        except MailError as exc:
            mail_error(exc)
        out = {"messages": messages, "unread": unread}
        if q:
            pending = mailbox.search_pending()
            if pending:   # after a large import: the answer holds what is indexed so far
                out["indexing"] = pending
        return _out(out)

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

    def attachments_of(data) -> list:
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
        if len(attachments) > MAX_API_ATTACHMENTS:
            json_error(400, f"at most {MAX_API_ATTACHMENTS} attachments")
        return attachments

    def draft_to_send(name: str, data: dict) -> dict:
        """The request with what it leaves out taken from the draft it names (attachments
        as (name, type, bytes), as `attachments_of` gives them)."""
        try:
            draft = mailbox.get(name, data["draft_id"], mark_read=False)
        except MailError:
            draft = None
        if draft is None or not draft["draft"]:
            json_error(400, "draft_id: no such draft")
        out = dict(data)
        out.setdefault("to", draft["to"])
        out.setdefault("subject", draft["subject"])
        out.setdefault("body", draft["body"])
        if draft.get("reply_to"):
            out.setdefault("reply_to", draft["reply_to"])
        if "attachments" in data:
            out["attachments"] = attachments_of(data)
        else:
            try:
                out["attachments"] = [mailbox.attachment(name, draft["id"], i)
                                      for i in range(len(draft["attachments"]))]
            except MailError:
                json_error(400, "draft_id: no such draft")
        return out

    @web.post("/api/mail")
    def send_mail():
        user = require_user()
        data = _json_body(app)
        for key in ("subject", "body", "reply_to", "replace", "draft_id"):
            if data.get(key) is not None and not isinstance(data[key], str):
                json_error(400, f"'{key}' must be a string")
        if not isinstance(data.get("draft", False), bool):
            json_error(400, "'draft' must be true or false")
        if data.get("to") is not None and not isinstance(data["to"], (str, list)):
            json_error(400, "'to' must be a username or address, or a list of them")
        for key in ("to", "reply_to", "replace", "draft_id"):
            bodies.check_json_field(app, data, key)
        if data.get("draft"):
            if data.get("draft_id"):
                json_error(400, "'draft_id' sends a draft; to save a newer version, give 'replace'")
            try:
                msg = mailbox.save_draft(user["name"], data.get("to") or "", data.get("subject") or "",
                                         data.get("body") or "", attachments_of(data),
                                         replace=data.get("replace") or None, reply_to=data.get("reply_to") or None)
            except MailError as exc:
                mail_error(exc)
            return _out(msg, 201)
        if data.get("replace"):
            json_error(400, "'replace' is for saving a draft (with \"draft\": true)")
        if data.get("draft_id"):
            data = draft_to_send(user["name"], data)
            attachments = data["attachments"]
        else:
            attachments = attachments_of(data)
        to = data.get("to")
        if not isinstance(to, (str, list)) or not to:
            json_error(400, "'to' is required: a username or address, or several separated by commas")
        try:
            msg = mailbox.send(user["name"], to, data.get("subject") or "", data.get("body") or "",
                               reply_to=data.get("reply_to") or None, attachments=attachments,
                               draft_id=data.get("draft_id") or None)
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

    @web.patch("/api/mail/<msg_id>")
    def change_mail(msg_id):
        user = require_user()
        data = _json_body(app)
        unknown = sorted(set(data) - {"read", "flagged"})
        if unknown or not data:
            json_error(400, "give 'read' and/or 'flagged' (true or false)"
                       + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
        if any(not isinstance(v, bool) for v in data.values()):
            json_error(400, "'read' and 'flagged' are true or false")
        try:
            mailbox.get(user["name"], msg_id, mark_read=False)
            if "read" in data:
                mailbox.set_read(user["name"], msg_id, data["read"])
            if "flagged" in data:
                mailbox.set_flagged(user["name"], msg_id, data["flagged"])
            return _out(mailbox.get(user["name"], msg_id, mark_read=False))
        except MailError as exc:
            mail_error(exc)

    def folder_field(data, key: str = "folder") -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            json_error(400, f"'{key}' is required: a folder name")
        return value

    @web.post("/api/mail/<msg_id>/move")
    def move_mail(msg_id):
        user = require_user()
        folder = folder_field(_json_body(app))
        try:
            return _out(mailbox.move(user["name"], msg_id, folder))
        except MailError as exc:
            mail_error(exc)

    @web.post("/api/mail/batch")
    def batch_mail():
        user = require_user()
        data = _json_body(app)
        ids, action = data.get("ids"), data.get("action")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            json_error(400, "'ids' is required: a list of message ids")
        if not isinstance(action, str):
            json_error(400, f"'action' is required: one of {', '.join(BATCH_ACTIONS)}")
        folder = folder_field(data) if action == "move" else None
        try:
            return _out({"done": mailbox.batch(user["name"], ids, action, folder)})
        except MailError as exc:
            mail_error(exc)

    # ------------------------------------------------------------ folders

    @web.get("/api/folders")
    def list_folders():
        user = require_user()
        return _out({"folders": mailbox.folders(user["name"])})

    @web.post("/api/folders")
    def create_folder():
        user = require_user()
        name = folder_field(_json_body(app), "name")
        try:
            return _out(mailbox.create_folder(user["name"], name), 201)
        except MailError as exc:
            mail_error(exc)

    @web.post("/api/folders/<name:path>/empty")
    def empty_folder(name):
        user = require_user()
        try:
            mailbox.empty_folder(user["name"], name)
        except MailError as exc:
            mail_error(exc)
        response.status = 204
        return ""

    @web.patch("/api/folders/<name:path>")
    def rename_folder(name):
        user = require_user()
        new = folder_field(_json_body(app), "name")
        try:
            return _out(mailbox.rename_folder(user["name"], name, new))
        except MailError as exc:
            mail_error(exc)

    @web.delete("/api/folders/<name:path>")
    def delete_folder(name):
        user = require_user()
        try:
            mailbox.delete_folder(user["name"], name)
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
                     "submission_ports": [server.port for server in app.submission_servers],
                     "queue_depth": depth, "users": users, "dkim": app.signer.enabled})

    @web.route("/api/<path:path>", method=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def api_not_found(path):
        current_user()
        json_error(404, "no such API endpoint")
