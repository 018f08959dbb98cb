"""Reading request bodies within fixed bounds, in time linear in their size: JSON for
the API, and the sizes of form fields and uploads for the pages.

The bounds are settings: the whole body (from MAIL_MAX_SIZE), JSON nesting
(MU_JSON_MAX_DEPTH), and one field (MU_FIELD_MAX_BYTES, except a message body or an
attachment, which may be as large as a message). Errors answer 400 or 413, as JSON for
the API.
"""

import json
import re

import bottle
from bottle import request

from ..mime import one_line, parse_params, safe_content_type
from .common import json_error

# A JSON string: the classes stop at the quote or backslash, each backslash takes what
# follows (or nothing, at the very end), and an unclosed string runs to the end. So every
# attempt succeeds once started and nothing is scanned twice.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.?[^"\\]*)*(?:"|\Z)', re.S)
_ONE_BRACKET_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_A_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")


def json_nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` levels, found without parsing
    (json.loads would recurse, and answer RecursionError): strings removed, only the
    brackets kept, then one level of innermost pairs removed per pass. At most `limit`
    passes over a string no longer than the input."""
    shape = _JSON_STRING.sub(b"", raw).translate(_ONE_BRACKET_KIND, _NOT_A_BRACKET)
    for _ in range(limit):
        if not shape:
            return False
        shape = shape.replace(b"[]", b"")
    return bool(shape)


def read_json(app) -> dict:
    """The request's JSON object; a JSON error (400, 413) for anything else."""
    ctype = (request.content_type or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        json_error(400, "expected Content-Type: application/json")
    limit = app.config.max_message_bytes * 2 + 65536
    if request.content_length > limit:
        json_error(413, f"request body larger than {app.config.max_message_bytes} bytes")
    raw = request.body.read(limit + 1)
    if len(raw) > limit:
        json_error(413, f"request body larger than {app.config.max_message_bytes} bytes")
    depth = app.config.json_max_depth
    if json_nesting_exceeds(raw, depth):
        json_error(400, f"JSON nested more than {depth} levels deep")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        json_error(400, "invalid JSON")
    if not isinstance(data, dict):
        json_error(400, "expected a JSON object")
    return data


def field_too_long(app, value) -> bool:
    """Whether a short field (an address list, a name, an id) is over MU_FIELD_MAX_BYTES."""
    if isinstance(value, list):
        return sum(len(str(v).encode("utf-8", "replace")) + 1 for v in value) > app.config.field_max_bytes
    return len(str(value).encode("utf-8", "replace")) > app.config.field_max_bytes


def check_json_field(app, data: dict, key: str) -> None:
    if data.get(key) is not None and field_too_long(app, data[key]):
        json_error(413, f"'{key}' longer than {app.config.field_max_bytes} bytes")


#: Form fields that hold a message's text, and so may be as large as a message.
LONG_FORM_FIELDS = frozenset({"body"})
#: The header lines of one part of a multipart/form-data body, bytes (a browser sends
#: two short lines: Content-Disposition and Content-Type).
MAX_FORM_PART_HEADER_BYTES = 8192
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def form_parts_problem(body: bytes, boundary: bytes):
    """Why bottle should not read this multipart/form-data body, or None.

    Bottle joins a folded part header by copying it once per line, which is quadratic in
    the header's length; browsers never fold (RFC 7578 parts carry two short fields), so a
    folded line, or a part header section over MAX_FORM_PART_HEADER_BYTES, is refused.
    Each search starts where the last one stopped: one pass over the body."""
    delimiter = b"--" + boundary
    pos = body.find(delimiter)
    while pos >= 0:
        head_start = body.find(b"\r\n", pos)
        if head_start < 0:
            return None
        head_start += 2
        nxt = body.find(b"\r\n" + delimiter, head_start)
        part_end = len(body) if nxt < 0 else nxt
        head_end = body.find(b"\r\n\r\n", head_start - 2, min(part_end, head_start + MAX_FORM_PART_HEADER_BYTES))
        if head_end < 0 and part_end - head_start > MAX_FORM_PART_HEADER_BYTES:
            return f"a form part's header is longer than {MAX_FORM_PART_HEADER_BYTES} bytes"
        head = body[head_start - 2:part_end if head_end < 0 else head_end]
        if b"\r\n " in head or b"\r\n\t" in head:
            return "a form part's header is folded"
        pos = -1 if nxt < 0 else nxt + 2
    return None


def check_form_fields(app) -> None:
    """413 when a form field is over its bound: the message text (LONG_FORM_FIELDS) may be
    as large as a message, every other field MU_FIELD_MAX_BYTES, an upload a message."""
    ctype = (request.content_type or "").split(";")[0].strip().lower()
    if request.method != "POST" or ctype not in _FORM_TYPES:
        return
    if ctype == "multipart/form-data":
        # request.content_type is lower-cased, and a boundary is not (RFC 2046 §5.1.1).
        boundary = parse_params(request.environ.get("CONTENT_TYPE", ""))[1].get("boundary", "")
        problem = form_parts_problem(request.body.read(), boundary.encode("latin-1", "replace")) if boundary else None
        if problem:
            raise bottle.HTTPError(400, f"Malformed form: {problem}.")
    # Bottle keeps urlencoded values as latin-1 text (one character per byte, recoded when
    # read) and multipart ones as decoded text.
    recoded = request.forms.recode_unicode
    for name, value in request.POST.allitems():
        if isinstance(value, bottle.FileUpload):
            if value.raw_filename or name not in LONG_FORM_FIELDS:
                continue
            # Bottle hands a large text field over as a file: read it back as text rather
            # than let the message go out without it.
            data = value.file.read(app.config.max_message_bytes + 1)
            text = data.decode("utf-8", "replace")
            request.forms[name] = text.encode("utf-8").decode("latin-1") if recoded else text
            size = len(data)
        else:
            size = len(value) if recoded else len(value.encode("utf-8", "replace"))
        bound = app.config.max_message_bytes if name in LONG_FORM_FIELDS else app.config.field_max_bytes
        if size > bound:
            raise bottle.HTTPError(413, f"The field '{name[:40]}' is longer than {bound} bytes.")


def install(web, app) -> None:
    """Every form post is checked against the field bounds before its route runs."""
    web.add_hook("before_request", lambda: check_form_fields(app))


def read_uploads(app) -> list:
    """The uploaded attachments of a form as (name, type, bytes), each at most a message's
    size; the type as sent when it is a valid `type/subtype`, else application/octet-stream."""
    out = []
    for upload in request.files.getall("attachments"):
        if not upload or not upload.raw_filename:
            continue
        data = upload.file.read(app.config.max_message_bytes + 1)
        if len(data) > app.config.max_message_bytes:
            raise bottle.HTTPError(413, f"An attachment is larger than {app.config.max_message_bytes} bytes.")
        out.append((one_line(upload.raw_filename) or "attachment", safe_content_type(upload.content_type), data))
    return out
