"""Mail pages: any mailbox with its folder list, search, compose/reply/forward and drafts,
conversation view, message actions (archive, junk, delete, star, move) one at a time or
several selected, folder management, show original, sandboxed HTML bodies and attachment
downloads. Every action is a form post with a CSRF token; the page script only improves it."""

import html
import urllib.parse

import bottle
from bottle import request, response

from ..folders import DEFAULT_MAILBOXES
from ..mailbox import EMPTYABLE_FOLDERS, MailError
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


def folder_label(name: str) -> str:
    return "Inbox" if name == "INBOX" else name


def folder_href(name: str, **params) -> str:
    query = ({} if name == "INBOX" else {"folder": name}) | {k: v for k, v in params.items() if v}
    return "/mail" + ("?" + urllib.parse.urlencode(query, safe="/", quote_via=urllib.parse.quote) if query else "")


# What each button of a message view or of the list's toolbar does: (batch action, folder,
# the flash for one message, for several).
ACTIONS = {
    "archive": ("move", "Archive", "Moved to Archive", "{n} moved to Archive"),
    "junk": ("move", "Junk", "Moved to Junk", "{n} moved to Junk"),
    "inbox": ("move", "INBOX", "Moved to Inbox", "{n} moved to Inbox"),
    "move": ("move", None, "Moved to {folder}", "{n} moved to {folder}"),
    "delete": ("trash", None, "Moved to Trash", "{n} moved to Trash"),
    "read": ("read", None, "Marked read", "{n} marked read"),
    "unread": ("unread", None, "Marked unread", "{n} marked unread"),
    "star": ("flag", None, "Starred", "{n} starred"),
    "unstar": ("unflag", None, "Star removed", "Star removed from {n}"),
}


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _redirect(path: str, flash: str = ""):
    if flash:
        path += ("&" if "?" in path else "?") + "flash=" + urllib.parse.quote(flash)
    bottle.redirect(path, 303)


def install(web, app):
    mailbox = app.mailbox

    def folder_list(user) -> list:
        out = []
        for f in mailbox.folders(user["name"]):
            parent, _, leaf = f["name"].rpartition("/")
            # A folder's link is named by its whole name ("Projects/2026"); the parent part is muted.
            out.append(dict(f, label=folder_label(f["name"]), href=folder_href(f["name"]), parent=parent,
                            leaf=leaf if parent else folder_label(f["name"]),
                            parent_html=f'<span class="parent">{html.escape(parent)}/</span>' if parent else ""))
        return out

    def mail_render(template: str, user, **values):
        """A page with the folder list beside it."""
        folders = folder_list(user)
        # Where "Move to" offers to put mail: the user's own folders first (the usual reason
        # to move), then the defaults; never Drafts or Sent, which mu fills itself.
        targets = [f for f in folders if f["name"] != values.get("folder") and f["name"] not in ("Drafts", "Sent")]
        targets.sort(key=lambda f: f["name"] in DEFAULT_MAILBOXES)
        return render(template, folders=folders, move_targets=targets, folder_label=folder_label,
                      folder_href=folder_href, **values)

    def folder_page(folder: str):
        user = require_user()
        query = request.query.getunicode("q", "") or ""
        before = request.query.get("before") or None
        threaded = request.query.get("view") == "conversations" and not query
        try:
            name = mailbox.folder(user["name"], folder)["name"] if folder else None
            if query:
                messages, next_before = mailbox.search(user["name"], query, folder=name), None
            elif threaded:
                messages = mailbox.conversations(user["name"], name, limit=50, before=before)
                next_before = messages[-1]["id"] if len(messages) == 50 else None
            else:
                messages, _ = mailbox.list(user["name"], name, limit=50, before=before)
                next_before = messages[-1]["id"] if len(messages) == 50 else None
        except MailError as exc:
            raise bottle.HTTPError(exc.status, str(exc))
        pending = mailbox.search_pending() if query else 0
        return mail_render("mail", user, folder=name or "", messages=messages, query=query,
                           next_before=next_before, threaded=threaded, pending=pending)

    @web.get("/mail")
    def inbox():
        folder = request.query.getunicode("folder", "") or ""
        if request.query.getunicode("q", ""):   # search: every folder, unless one is named
            return folder_page(folder or None)
        return folder_page(folder or "INBOX")

    @web.get("/mail/sent")
    def sent():
        return folder_page("Sent")

    @web.get("/mail/compose")
    def compose_form():
        user = require_user()
        to, subject, body, reply_to, draft_id, kept = request.query.getunicode("to", "") or "", "", "", "", "", []
        source_id = request.query.get("reply") or request.query.get("forward")
        if request.query.get("draft"):
            try:
                draft = mailbox.get(user["name"], request.query.get("draft"), mark_read=False)
            except MailError:
                raise bottle.HTTPError(404, "Draft not found")
            if not draft["draft"]:
                raise bottle.HTTPError(404, "Draft not found")
            draft_id, to, subject, body = draft["id"], ", ".join(draft["to"]), draft["subject"], draft["body"]
            reply_to = draft.get("reply_to", "")
            if reply_to:   # the message it answers may have gone since
                try:
                    mailbox.get(user["name"], reply_to, mark_read=False)
                except MailError:
                    reply_to = ""
            kept = list(enumerate(draft["attachments"]))
        elif source_id:
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
        return compose_page(user, to=to, subject=subject, body=body, reply_to=reply_to, draft_id=draft_id,
                            kept=kept)

    def compose_page(user, **values):
        values.setdefault("kept", [])
        return mail_render("compose", user, folder="", cost=app.config.credit_cost_email,
                           usernames=_usernames(app), **values)

    @web.post("/mail/compose")
    def compose_send():
        user = require_user()
        check_csrf()
        to = request.forms.getunicode("to", "") or ""
        subject = request.forms.getunicode("subject", "") or ""
        body = request.forms.getunicode("body", "") or ""
        reply_to = request.forms.get("reply_to") or None
        draft_id = request.forms.get("draft_id") or None
        saving = request.forms.get("action") == "draft"
        kept, kept_attachments = [], []
        if draft_id:   # a continued draft keeps the attachments left ticked
            keep = set(request.forms.getall("keep_attachment"))
            try:
                draft = mailbox.get(user["name"], draft_id, mark_read=False)
                kept = [(i, a) for i, a in enumerate(draft["attachments"]) if str(i) in keep]
                kept_attachments = [mailbox.attachment(user["name"], draft_id, i) for i, _a in kept]
            except MailError:
                draft_id, kept = None, []   # sent or discarded meanwhile (another tab): start afresh
        attachments = kept_attachments + read_upload_attachments(app)
        try:
            if saving:
                msg = mailbox.save_draft(user["name"], to, subject, body, attachments, replace=draft_id,
                                         reply_to=reply_to)
            else:
                msg = mailbox.send(user["name"], to, subject, body, reply_to=reply_to,
                                   attachments=attachments, draft_id=draft_id)
        except MailError as exc:
            response.status = exc.status if exc.status != 404 else 400
            return compose_page(user, to=to, subject=subject, body=body, reply_to=reply_to or "",
                                draft_id=draft_id or "", kept=kept, error=str(exc))
        if saving:
            _redirect(f"/mail/compose?draft={msg['id']}", "Draft saved")
        if msg.get("status"):
            app.queue.kick()
        _redirect(f"/mail/{msg['id']}", "Message sent")

    @web.get("/mail/folders")
    def folders_page():
        user = require_user()
        return mail_render("folders", user, folder="")

    def folder_error(exc: MailError, user):
        response.status = exc.status
        return mail_render("folders", user, folder="", error=str(exc))

    @web.post("/mail/folders")
    def folder_create():
        user = require_user()
        check_csrf()
        name = (request.forms.getunicode("name", "") or "").strip()
        try:
            created = mailbox.create_folder(user["name"], name)
        except MailError as exc:
            return folder_error(exc, user)
        _redirect("/mail/folders", f"Folder {created['name']} created")

    @web.post("/mail/folders/rename")
    def folder_rename():
        user = require_user()
        check_csrf()
        old = request.forms.getunicode("folder", "") or ""
        new = (request.forms.getunicode("name", "") or "").strip()
        try:
            mailbox.rename_folder(user["name"], old, new)
        except MailError as exc:
            return folder_error(exc, user)
        _redirect("/mail/folders", f"Folder {old} renamed to {new}")

    @web.post("/mail/folders/delete")
    def folder_delete():
        user = require_user()
        check_csrf()
        name = request.forms.getunicode("folder", "") or ""
        if request.forms.get("confirm") != "1":
            under = mailbox.subfolders(user["name"], name)
            text = f"Delete the folder {name}" + (f" and the {plural(len(under), 'folder')} under it" if under
                                                  else "") + "? Its messages go to Trash."
            return confirm_page(user, text, "Delete folder", "/mail/folders")
        try:
            moved = mailbox.delete_folder(user["name"], name)
        except MailError as exc:
            return folder_error(exc, user)
        _redirect("/mail/folders", f"Folder {name} deleted" + (f"; {plural(moved, 'message')} moved to Trash" if moved else ""))

    @web.post("/mail/folders/empty")
    def folder_empty():
        user = require_user()
        check_csrf()
        name = request.forms.getunicode("folder", "") or ""
        if name not in EMPTYABLE_FOLDERS:
            raise bottle.HTTPError(400, f"Only {' and '.join(EMPTYABLE_FOLDERS)} can be emptied")
        if request.forms.get("confirm") != "1":
            total = mailbox.folder(user["name"], name)["total"]
            return confirm_page(user, f"Delete {'the ' + plural(total, 'message') if total != 1 else 'the message'} in {name} for good?", f"Empty {name}",
                                folder_href(name))
        count = mailbox.empty_folder(user["name"], name)
        _redirect(folder_href(name), f"{name} emptied: {plural(count, 'message')} deleted for good")

    def confirm_page(user, question: str, button: str, cancel: str):
        """The same form again, asking first: what a destructive button does without script
        (with script, the page asks in a dialog and posts `confirm=1` itself)."""
        fields = [(k, v) for k, v in request.forms.decode().allitems() if k not in ("confirm", "csrf")]
        return mail_render("confirm", user, folder="", question=question, button=button, cancel=cancel,
                           action=request.path, fields=fields)

    @web.post("/mail/batch")
    def batch():
        user = require_user()
        check_csrf()
        back_folder = request.forms.getunicode("back", "") or "INBOX"
        back = folder_href(back_folder, q=request.forms.getunicode("q", "") or "")
        ids = request.forms.getall("ids")
        action = request.forms.get("action", "")
        if action not in ACTIONS:
            raise bottle.HTTPError(400, "Unknown action")
        if not ids:
            _redirect(back, "Select messages first")
        kind, folder, _one, several = ACTIONS[action]
        folder = folder or request.forms.getunicode("folder", "") or None
        try:
            done = mailbox.batch(user["name"], ids, kind, folder)
        except MailError as exc:
            raise bottle.HTTPError(exc.status, str(exc))
        if action == "delete" and back_folder == "Trash":
            several = "{n} deleted for good"
        _redirect(back, several.format(n=plural(done, "message"), folder=folder_label(folder or "")))

    @web.get("/mail/<msg_id>")
    def show(msg_id):
        user = require_user()
        try:
            message = mailbox.get(user["name"], msg_id)
            thread = mailbox.thread(user["name"], msg_id)
        except MailError:
            raise bottle.HTTPError(404, "Message not found")
        if message["draft"] and message["folder"] == "Drafts":   # opening a draft continues it
            bottle.redirect(f"/mail/compose?draft={msg_id}", 303)
        return mail_render("message", user, folder=message["folder"], message=message, thread=thread,
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

    @web.post("/mail/<msg_id>/<action>")
    def message_action(msg_id, action):
        """A message view's buttons: archive, junk, inbox, delete, star, unstar, unread, move."""
        user = require_user()
        check_csrf()
        if action not in ACTIONS:
            raise bottle.HTTPError(404, "No such action")
        kind, folder, one, _several = ACTIONS[action]
        folder = folder or request.forms.getunicode("folder", "") or None
        try:
            was_in = mailbox.get(user["name"], msg_id, mark_read=False)["folder"]
            if kind == "trash":
                one = "Moved to Trash" if mailbox.trash(user["name"], msg_id) == "trashed" else "Deleted for good"
            elif kind == "move":
                folder = mailbox.move(user["name"], msg_id, folder or "")["folder"]
            else:
                mailbox.batch(user["name"], [msg_id], kind)
        except MailError as exc:
            raise bottle.HTTPError(exc.status, "Message not found" if exc.status == 404 and not folder else str(exc))
        flash = one.format(folder=folder_label(folder or ""))
        if kind in ("flag", "unflag"):
            _redirect(f"/mail/{msg_id}", flash)
        _redirect(folder_href(was_in), flash)


def _usernames(app) -> list:
    return [u["name"] for u in app.accounts.all() if not u.get("disabled")]
