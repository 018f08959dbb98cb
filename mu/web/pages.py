"""Mail pages: inbox, sent, search, compose/reply/forward, conversation view, show original,
sandboxed HTML bodies and attachment downloads."""

import urllib.parse

import bottle
from bottle import request, response

from ..mailbox import MailError
from ..mime import safe_content_type
from . import bodies
from .common import check_csrf, render, require_user

# Received HTML runs nothing and loads nothing remote (unless asked): no script at all,
# inline styles and embedded images only. `sandbox` repeats the iframe's own sandbox.
HTML_BODY_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data: cid:; font-src data:; sandbox; frame-ancestors 'self'"
HTML_BODY_CSP_REMOTE_IMAGES = HTML_BODY_CSP.replace("img-src data: cid:", "img-src data: cid: https: http:")


def download(name: str, ctype: str, data: bytes):
    """An attachment response: never rendered inline, whatever its type says."""
    quoted = urllib.parse.quote(name or "attachment")
    ascii_name = "".join(c for c in (name or "attachment") if c.isascii() and c.isprintable() and c not in '"\\;')
    return bottle.HTTPResponse(body=data, headers={
        "Content-Type": safe_content_type(ctype),
        "Content-Disposition": f"attachment; filename=\"{ascii_name or 'attachment'}\"; filename*=UTF-8''{quoted}",
        "Content-Length": str(len(data)),
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })


def read_upload_attachments(app) -> list:
    return bodies.read_uploads(app)


def install(web, app):
    mailbox = app.mailbox

    def folder_page(folder: str):
        user = require_user()
        query = request.query.getunicode("q", "") or ""
        before = request.query.get("before") or None
        threaded = request.query.get("view") == "conversations"
        if query:
            messages, next_before = mailbox.search(user["name"], query), None
        elif threaded:
            messages = mailbox.conversations(user["name"], folder, limit=50, before=before)
            next_before = messages[-1]["id"] if len(messages) == 50 else None
        else:
            messages, _ = mailbox.list(user["name"], folder, limit=50, before=before)
            next_before = messages[-1]["id"] if len(messages) == 50 else None
        return render("mail", folder=folder, messages=messages, query=query, next_before=next_before,
                      threaded=threaded)

    @web.get("/mail")
    def inbox():
        folder = request.query.get("folder", "inbox")
        return folder_page(folder if folder in ("inbox", "sent") else "inbox")

    @web.get("/mail/sent")
    def sent():
        return folder_page("sent")

    @web.get("/mail/compose")
    def compose_form():
        user = require_user()
        to, subject, body, reply_to = request.query.getunicode("to", "") or "", "", "", ""
        source_id = request.query.get("reply") or request.query.get("forward")
        if source_id:
            try:
                source = mailbox.get(user["name"], source_id, mark_read=False)
            except MailError:
                raise bottle.HTTPError(404, "Message not found")
            quoted = "\n".join("> " + line for line in source["body"].split("\n"))   # not at U+2028
            if request.query.get("reply"):
                reply_to = source["id"]
                sender = source["from"]
                recipients = [sender]
                if request.query.get("all"):
                    recipients += [t for t in source["to"] if t != user["name"] and t not in recipients]
                to = ", ".join(recipients)
                subject = source["subject"] if source["subject"].lower().startswith("re:") else "Re: " + source["subject"]
                body = f"\n\nOn {source['created_at']}, {source['from_name']} wrote:\n{quoted}\n"
            else:
                subject = source["subject"] if source["subject"].lower().startswith("fwd:") else "Fwd: " + source["subject"]
                body = (f"\n\n---------- Forwarded message ----------\nFrom: {source['from_name']} <{source['from_addr']}>\n"
                        f"Date: {source['created_at']}\nSubject: {source['subject']}\n\n{source['body']}\n")
        return render("compose", to=to, subject=subject, body=body, reply_to=reply_to,
                      cost=app.config.credit_cost_email, usernames=_usernames(app))

    @web.post("/mail/compose")
    def compose_send():
        user = require_user()
        check_csrf()
        to = request.forms.getunicode("to", "") or ""
        subject = request.forms.getunicode("subject", "") or ""
        body = request.forms.getunicode("body", "") or ""
        reply_to = request.forms.get("reply_to") or None
        try:
            msg = mailbox.send(user["name"], to, subject, body, reply_to=reply_to,
                               attachments=read_upload_attachments(app))
        except MailError as exc:
            response.status = exc.status if exc.status != 404 else 400
            return render("compose", to=to, subject=subject, body=body, reply_to=reply_to or "",
                          cost=app.config.credit_cost_email, usernames=_usernames(app),
                          error=str(exc))
        if msg.get("status"):
            app.queue.kick()
        bottle.redirect(f"/mail/{msg['id']}?flash=Message+sent")

    @web.get("/mail/<msg_id>")
    def show(msg_id):
        user = require_user()
        try:
            message = mailbox.get(user["name"], msg_id)
            thread = mailbox.thread(user["name"], msg_id)
        except MailError:
            raise bottle.HTTPError(404, "Message not found")
        return render("message", message=message, thread=thread,
                      images=request.query.get("images") == "1")

    @web.get("/mail/<msg_id>/html")
    def html_body(msg_id):
        user = require_user()
        try:
            html = mailbox.html(user["name"], msg_id)
        except MailError:
            raise bottle.HTTPError(404, "Message not found")
        csp = HTML_BODY_CSP_REMOTE_IMAGES if request.query.get("images") == "1" else HTML_BODY_CSP
        return bottle.HTTPResponse(body=html, headers={
            "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": csp,
            "X-Frame-Options": "SAMEORIGIN", "Cache-Control": "private, no-store"})

    @web.get("/mail/<msg_id>/raw")
    def raw(msg_id):
        user = require_user()
        try:
            data = mailbox.raw(user["name"], msg_id)
        except MailError:
            raise bottle.HTTPError(404, "Message not found")
        return bottle.HTTPResponse(body=data, headers={"Content-Type": "text/plain; charset=utf-8",
                                                       "Content-Security-Policy": "default-src 'none'; sandbox"})

    @web.get("/mail/<msg_id>/attachments/<index:int>")
    def attachment(msg_id, index):
        user = require_user()
        try:
            return download(*mailbox.attachment(user["name"], msg_id, index))
        except MailError:
            raise bottle.HTTPError(404, "Attachment not found")

    @web.post("/mail/<msg_id>/delete")
    def delete(msg_id):
        user = require_user()
        check_csrf()
        try:
            mailbox.delete(user["name"], msg_id)
        except MailError:
            raise bottle.HTTPError(404, "Message not found")
        bottle.redirect("/mail?flash=Message+deleted")

    @web.post("/mail/<msg_id>/unread")
    def mark_unread(msg_id):
        user = require_user()
        check_csrf()
        try:
            mailbox.set_read(user["name"], msg_id, False)
        except MailError:
            raise bottle.HTTPError(404, "Message not found")
        bottle.redirect("/mail")


def _usernames(app) -> list:
    return [u["name"] for u in app.accounts.all() if not u.get("disabled")]
