"""Moving mail in and out: `mu.py import` (mbox, Maildir, a folder of .eml files) and
`mu.py export` (a Maildir tree that Dovecot, mutt and mbsync read).

Import streams its source, stores messages in batches (one commit, one fsync each, so the
running server keeps receiving between them) and is idempotent: a message whose bytes are
already in the target mailbox is skipped, so a second run imports nothing. A message that
cannot be imported is counted and named, never fatal.

Formats:
- mbox (mboxrd and mboxo, RFC 4155): messages start at a `From ` line at the start of the
  file or after an empty line; `>From `, `>>From ` … lose one `>`; `Status:`/`X-Status:`
  give \\Seen, \\Answered, \\Flagged, \\Deleted; the `From ` line's date is the internal date.
- Maildir (with Maildir++ folders `.Sub`, `.Sub.Deeper`): `cur/` and `new/`, flags from the
  file name's `:2,` suffix (D F P R S T, and Dovecot's keyword letters), the internal date
  from the file's mtime.
- A folder of `*.eml` files: one message each.

Messages are stored with CRLF line ends; a bare LF becomes CRLF, so exporting and importing
again gives the same bytes.
"""

import calendar
import email.utils
import os
import re
import sys
import time

from . import records as recordmod
from .folders import DELIMITER
from .log import log
from .mailstore import MailboxExists, MailStoreError
from .state import content_hash

BATCH_MESSAGES = 500
BATCH_BYTES = 16 * 1024 * 1024
_FROM_LINE = re.compile(rb"^From \S+.*\d")
_QUOTED_FROM = re.compile(rb"^>+From ")
_MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered", "S": "\\Seen",
                  "T": "\\Deleted"}
_FLAG_LETTERS = {v: k for k, v in _MAILDIR_FLAGS.items()}
_BARE_LF = re.compile(rb"(?<!\r)\n")


class TransferError(Exception):
    """A problem with the whole import or export (the path, the user): nothing was written."""


def crlf(raw: bytes) -> bytes:
    return _BARE_LF.sub(b"\r\n", raw)


# ---------------------------------------------------------------- reading sources

class Source:
    """One message read from a source: where it came from (for error messages), its bytes,
    its flags, its internal date, the mailbox it goes to (None: the import's folder)."""
    __slots__ = ("label", "raw", "flags", "date", "folder")

    def __init__(self, label, raw, flags, date, folder=None):
        self.label, self.raw, self.flags, self.date, self.folder = label, raw, flags, date, folder


def detect(path: str) -> str:
    if os.path.isfile(path):
        return "mbox"
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "cur")) or os.path.isdir(os.path.join(path, "new")):
            return "maildir"
        return "eml"
    raise TransferError(f"{path}: no such file or folder")


def _date_from_header(raw: bytes):
    end = raw.find(b"\n\n") if raw.find(b"\r\n\r\n") < 0 else raw.find(b"\r\n\r\n")
    for line in raw[:end if end > 0 else 8192].split(b"\n"):
        if line[:5].lower() == b"date:":
            try:
                parsed = email.utils.parsedate_tz(line[5:].decode("ascii", "replace").strip())
                if parsed:
                    return int(email.utils.mktime_tz(parsed))
            except (ValueError, OverflowError, TypeError):
                return None
    return None


def _mbox_date(from_line: bytes):
    """The asctime date at the end of an mbox `From ` line (RFC 4155), or None."""
    words = from_line.decode("ascii", "replace").split()
    for take in (5, 6):   # "Mon Jan  1 10:00:00 2024" (and a zone some writers add)
        try:
            return calendar.timegm(time.strptime(" ".join(words[2:2 + take][:5]), "%a %b %d %H:%M:%S %Y"))
        except (ValueError, IndexError):
            continue
    return None


def _status_flags(raw: bytes) -> list:
    flags = []
    end = raw.find(b"\r\n\r\n")
    for line in raw[:end if end >= 0 else 0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"status":
            if b"R" in value:
                flags.append("\\Seen")
        elif name == b"x-status":
            for letter, flag in ((b"A", "\\Answered"), (b"F", "\\Flagged"), (b"D", "\\Deleted"), (b"T", "\\Draft")):
                if letter in value:
                    flags.append(flag)
    return flags


def read_mbox(path: str, progress=None):
    with open(path, "rb") as f:
        lines, from_line, number, start, offset, previous_blank = [], None, 0, 0, 0, True

        def finish():
            body = lines[:-1] if lines and lines[-1] in (b"", b"\r") else lines   # the separator
            raw = b"\r\n".join(line.rstrip(b"\r") for line in body) + b"\r\n"
            date = _mbox_date(from_line) or _date_from_header(raw)
            return Source(f"{path}: message {number} (byte {start})", raw, _status_flags(raw), date)

        for line in f:
            size = len(line)
            line = line.rstrip(b"\n")
            if line.startswith(b"From ") and previous_blank and _FROM_LINE.match(line):
                if from_line is not None:
                    yield finish()
                    if progress:
                        progress(offset)
                from_line, lines, number, start = line, [], number + 1, offset
            elif from_line is not None:
                lines.append(line[1:] if _QUOTED_FROM.match(line) else line)
            previous_blank = line in (b"", b"\r")
            offset += size
        if from_line is not None:
            yield finish()


def _maildir_folder_name(entry: str) -> str:
    """`.Sub.Deeper` -> `Sub/Deeper` (Maildir++), undoing export's escapes."""
    return DELIMITER.join(part.replace("%2E", ".").replace("%25", "%") for part in entry[1:].split("."))


def _dovecot_keywords(folder: str) -> dict:
    keywords = {}
    try:
        with open(os.path.join(folder, "dovecot-keywords"), encoding="utf-8", errors="replace") as f:
            for line in f:
                number, _, name = line.strip().partition(" ")
                if number.isdigit() and name and int(number) < 26:
                    keywords[chr(ord("a") + int(number))] = name
    except OSError:
        pass
    return keywords


def maildir_folders(path: str) -> list:
    """[(mailbox name or None for the root, folder path)] of a Maildir tree."""
    out = [(None, path)]
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if entry.startswith(".") and entry not in (".", "..") and os.path.isdir(full) and \
                (os.path.isdir(os.path.join(full, "cur")) or os.path.isdir(os.path.join(full, "new"))):
            out.append((_maildir_folder_name(entry), full))
    return out


def read_maildir(path: str, progress=None):
    count = 0
    for name, folder in maildir_folders(path):
        keywords = _dovecot_keywords(folder)
        for sub in ("cur", "new"):
            directory = os.path.join(folder, sub)
            if not os.path.isdir(directory):
                continue
            for filename in sorted(os.listdir(directory)):
                full = os.path.join(directory, filename)
                if filename.startswith(".") or not os.path.isfile(full):
                    continue
                flags = []
                if sub == "cur" and ":2," in filename:
                    for letter in filename.rsplit(":2,", 1)[1]:
                        flag = _MAILDIR_FLAGS.get(letter) or keywords.get(letter)
                        if flag:
                            flags.append(flag)
                try:
                    with open(full, "rb") as f:
                        raw = f.read()
                    date = int(os.stat(full).st_mtime)
                except OSError as exc:
                    yield Source(full, None, [], None, name), exc
                    continue
                count += 1
                if progress:
                    progress(count)
                yield Source(full, crlf(raw), flags, date, name), None


def read_eml_folder(path: str, progress=None):
    count = 0
    for filename in sorted(os.listdir(path)):
        full = os.path.join(path, filename)
        if not filename.lower().endswith(".eml") or not os.path.isfile(full):
            continue
        try:
            with open(full, "rb") as f:
                raw = crlf(f.read())
        except OSError as exc:
            yield Source(full, None, [], None), exc
            continue
        count += 1
        if progress:
            progress(count)
        yield Source(full, raw, [], _date_from_header(raw) or int(os.stat(full).st_mtime)), None


# ---------------------------------------------------------------- importing

class Progress:
    """A one-line progress display on a terminal: messages, MB, rate, ETA."""

    def __init__(self, total: float, unit: str, stream=None):
        self.total, self.unit = total, unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self.done = 0.0
        self._last = 0.0

    def update(self, done: float) -> None:
        self.done = done

    def show(self, messages: int, megabytes: float, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = messages / elapsed
        eta = ""
        if self.total and self.done:
            left = elapsed * (self.total - self.done) / self.done
            eta = f", ETA {int(left) // 60}:{int(left) % 60:02d}"
        self.stream.write(f"\r{messages} messages, {megabytes:.1f} MB, {rate:.0f}/s{eta}   ")
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class Importer:
    def __init__(self, mailstore, user: str, folder: str = None, errors=None):
        self.mailstore = mailstore
        self.store = mailstore.store
        self.user = user
        self.folder = folder
        self.errors = errors or sys.stderr
        self.imported = self.skipped = self.failed = 0
        self.bytes = 0
        self._present = {}      # mailbox name -> content hashes already in it
        self._mailboxes = {}    # mailbox name as the source gives it -> as stored
        self._batch, self._batch_bytes = [], 0

    def _mailbox_for(self, source: Source) -> str:
        return source.folder or self.folder or "INBOX"

    def _ensure_mailbox(self, name: str) -> str:
        """The mailbox (created, with its parents, when missing); its stored name."""
        if name not in self._mailboxes:
            self._mailboxes[name] = self._find_or_create(name)
        return self._mailboxes[name]

    def _find_or_create(self, name: str) -> str:
        try:
            return self.mailstore.mailbox(self.user, name).name
        except MailStoreError:
            pass
        parts = name.split(DELIMITER)
        for depth in range(1, len(parts) + 1):
            try:
                self.mailstore.create_mailbox(self.user, DELIMITER.join(parts[:depth]))
            except MailboxExists:
                pass
        return self.mailstore.mailbox(self.user, name).name

    def _hashes_in(self, name: str) -> set:
        present = self._present.get(name)
        if present is None:
            with self.store.reading() as state:
                box = state.mailbox(self.user, name)
                hashes = state.messages.content_hash
                present = self._present[name] = {hashes[n] for n in box.msgs} if box is not None else set()
        return present

    def add(self, source: Source, error: Exception = None) -> None:
        if error is not None or source.raw is None:
            self._fail(source, error or "unreadable")
            return
        if len(source.raw) > self.mailstore.config.max_message_bytes:
            self._fail(source, f"larger than MAIL_MAX_SIZE ({self.mailstore.config.max_message_bytes} bytes)")
            return
        try:
            name = self._ensure_mailbox(self._mailbox_for(source))
        except MailStoreError as exc:
            self._fail(source, exc.text)
            return
        digest = content_hash(source.raw)
        present = self._hashes_in(name)
        if digest in present:
            self.skipped += 1
            return
        date = int(source.date) if source.date else int(time.time())
        try:
            new = recordmod.from_raw(source.raw, "imported", [self.user], date, limits=self.mailstore.config)
        except Exception as exc:   # the parser is lenient; this is a last resort
            self._fail(source, f"cannot be read: {exc}")
            return
        present.add(digest)
        self._batch.append((source, new, [(self.user, name, source.flags, date, 0)]))
        self._batch_bytes += len(source.raw)
        if len(self._batch) >= BATCH_MESSAGES or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        try:
            self.mailstore.store_messages([(new, entries) for _s, new, entries in batch])
        except Exception as exc:
            for source, _new, entries in batch:
                self._present.get(entries[0][1], set()).discard(content_hash(source.raw))
                self._fail(source, f"not stored: {exc}")
            return
        self.imported += len(batch)
        self.bytes += sum(len(s.raw) for s, _n, _e in batch)
        # Fold the journal as it grows, as the server would: a large import must not leave
        # the next start-up replaying every record it wrote.
        self.store.maybe_compact()

    def _fail(self, source: Source, reason) -> None:
        self.failed += 1
        self.errors.write(f"mu: failed: {source.label}: {reason}\n")

    def summary(self) -> str:
        return f"imported {self.imported}, skipped {self.skipped}, failed {self.failed}"


def import_mail(mailstore, user: str, path: str, folder: str = None, errors=None, progress_stream=None) -> Importer:
    kind = detect(path)
    importer = Importer(mailstore, user, folder, errors)
    if kind == "mbox":
        progress = Progress(os.path.getsize(path), "bytes", progress_stream)
        sources = ((s, None) for s in read_mbox(path, progress.update))
    else:
        total = sum(len(os.listdir(os.path.join(f, sub))) for _n, f in (maildir_folders(path) if kind == "maildir"
                    else [(None, path)]) for sub in (("cur", "new") if kind == "maildir" else (".",))
                    if os.path.isdir(os.path.join(f, sub)))
        progress = Progress(total, "messages", progress_stream)
        sources = read_maildir(path, progress.update) if kind == "maildir" else read_eml_folder(path, progress.update)
    for source, error in sources:
        importer.add(source, error)
        progress.show(importer.imported + len(importer._batch), (importer.bytes + importer._batch_bytes) / 1e6)
    importer.flush()
    progress.show(importer.imported, importer.bytes / 1e6, force=True)
    progress.end()
    if importer.imported:
        log("store", f"imported {importer.imported} messages for {user} from {path}")
    return importer


# ---------------------------------------------------------------- exporting

def _maildir_entry_name(name: str) -> str:
    """`Sub/Deeper` -> `.Sub.Deeper` (Maildir++); a "." inside a level is escaped."""
    return "." + ".".join(part.replace("%", "%25").replace(".", "%2E") for part in name.split(DELIMITER))


def _make_maildir(folder: str) -> None:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(folder, sub), mode=0o700, exist_ok=True)


def export_mail(mailstore, user: str, dest: str) -> dict:
    """Write every mailbox of `user` under `dest` as a Maildir++ tree; {mailbox: count}."""
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise TransferError(f"{dest}: exists and is not an empty folder")
    os.makedirs(dest, mode=0o700, exist_ok=True)
    counts = {}
    for info in mailstore.mailboxes(user):
        folder = dest if info.name == "INBOX" else os.path.join(dest, _maildir_entry_name(info.name))
        _make_maildir(folder)
        if info.name != "INBOX":
            open(os.path.join(folder, "maildirfolder"), "wb").close()   # Maildir++ marks subfolders
        view = mailstore.view(user, info.name)
        letters = {kw: chr(ord("a") + i) for i, kw in enumerate(view.keywords[:26])}
        if letters:
            with open(os.path.join(folder, "dovecot-keywords"), "w", encoding="utf-8") as f:
                for kw, letter in letters.items():
                    f.write(f"{ord(letter) - ord('a')} {kw}\n")
        for i, uid in enumerate(view.uids):
            raw = mailstore.raw(user, info.name, uid)
            if raw is None:
                continue   # expunged meanwhile
            flags = view.flags(i)
            suffix = "".join(sorted(_FLAG_LETTERS[f] for f in flags if f in _FLAG_LETTERS))
            suffix += "".join(sorted(letters[f] for f in flags if f in letters))
            date = view.internal_date(i)
            filename = f"{date}.M{view.msgs[i]}U{uid}.mu,S={len(raw)}:2,{suffix}"
            path = os.path.join(folder, "cur", filename)
            with open(path, "wb") as f:
                f.write(raw)
            os.utime(path, (date, date))
        counts[info.name] = len(view.uids)
    return counts
