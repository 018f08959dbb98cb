"""Full-text search: one text file per user, scanned at the speed of `bytes.find`.

    search/<user>.jsonl     one line per message the user was given: [n, "summary",
                            "body", "headers"], case-folded, each on one line: the summary is
                            what the web searches besides the body (subject, from, to); the
                            headers are every header field's decoded value (IMAP TEXT)
    search/progress.json    {"format": 2, "next": N}: messages below N are in the files

An indexer (a background thread in the server, and any search that finds it behind) reads
each new message's record and appends its line to the file of every user it was stored
for. The files are derived data: nothing is fsynced, and a crash at worst re-appends some
lines (searches skip a message they have already found). A search reads the user's file
from its end in large chunks and looks for the case-folded needle with one `find` per hit,
so 100,000 messages answer in well under a second and the newest hits come first.
"""

import json
import os
import threading
import time

from . import safeio
from .log import log

CHUNK_BYTES = 4 * 1024 * 1024
MAX_TEXT_CHARS = 256 * 1024
INDEX_BATCH = 2000
INDEX_INTERVAL_SECONDS = 1.0
WEB_INDEX_SECONDS = 2.0
MAX_INDEX_DELAY_SECONDS = 10.0
PROGRESS_SECONDS = 5.0
FORMAT = 2
# Where a search looks: the web's search, IMAP SEARCH TEXT and BODY (RFC 9051 §6.4.4).
FIELDS = {"text": (1, 2), "imap-text": (2, 3), "body": (2,)}


def _fold(text: str) -> str:
    """Case-folded, runs of white space made one space, and UTF-8 (bytes that were not UTF-8,
    kept as lone surrogates, become "?")."""
    folded = " ".join(str(text or "").casefold().split())
    return folded if folded.isascii() else folded.encode("utf-8", "replace").decode("utf-8")


def _encoded(needle: str) -> bytes:
    """The needle as it appears inside a JSON string in the files."""
    return json.dumps(_fold(needle), ensure_ascii=False)[1:-1].encode("utf-8")


class SearchIndex:
    def __init__(self, mailstore):
        self.mailstore = mailstore
        self.store = mailstore.store
        self.folder = os.path.join(self.store.home, "search")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    # ------------------------------------------------------------ indexing

    def _progress_path(self) -> str:
        return os.path.join(self.folder, "progress.json")

    def _read_progress(self) -> int:
        """Messages below this are indexed; a folder written in another format is emptied."""
        try:
            with open(self._progress_path(), "rb") as f:
                progress = json.load(f)
            if progress.get("format") == FORMAT:
                return int(progress.get("next", 0))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError):
            log("store", f"search: {self._progress_path()} unreadable; indexing again")
        for name in os.listdir(self.folder):
            if name.endswith(".jsonl"):
                os.unlink(os.path.join(self.folder, name))
        return 0

    def _user_path(self, user: str) -> str:
        return os.path.join(self.folder, f"{user}.jsonl")

    def catch_up(self, limit: int = None, seconds: float = None) -> int:
        """Index the messages stored since the last call (at most `limit`, for at most about
        `seconds`); return how many."""
        total = 0
        deadline = None if seconds is None else time.monotonic() + seconds
        while limit is None or total < limit:
            done = self._index_batch(INDEX_BATCH if limit is None else min(INDEX_BATCH, limit - total))
            total += done
            if not done or (deadline is not None and time.monotonic() >= deadline):
                break
        return total

    def behind(self) -> int:
        """How many stored messages are not in the files yet (a search does not see them)."""
        try:
            with open(self._progress_path(), "rb") as f:
                progress = json.load(f)
            done = int(progress.get("next", 0)) if progress.get("format") == FORMAT else 0
        except (OSError, ValueError, AttributeError):
            done = 0
        with self.store.reading() as state:
            return max(0, len(state.messages) - done)

    def _index_batch(self, limit: int) -> int:
        with self._lock:
            safeio.ensure_dir(self.folder)
            with safeio.flocked(os.path.join(self.folder, ".lock")):
                start = self._read_progress()
                with self.store.reading() as state:
                    end = min(len(state.messages), start + limit)
                    positions = [(state.messages.meta_pos[n], state.messages.meta_len[n])
                                 for n in range(start, end)]
                if not positions:
                    return 0
                lines = {}
                for n, (pos, length) in zip(range(start, end), positions):
                    try:
                        line = self._line(n, self.store.meta_at(pos, length, cache=False))
                    except Exception as exc:   # one unreadable message must not stop indexing
                        log("store", f"search: cannot index message {n}: {exc!r}")
                        continue
                    for user in line[0]:
                        lines.setdefault(user, []).append(line[1])
                for user, chunk in lines.items():
                    if "/" in user or user.startswith("."):
                        continue
                    fd = safeio.open_append(self._user_path(user))
                    try:
                        safeio.write_all(fd, b"".join(chunk))
                    finally:
                        os.close(fd)
                # Derived data: replaced whole (never torn) but not synced, so indexing never
                # waits on the disk that deliveries are flushing to.
                safeio.write_atomic(self._progress_path(), json.dumps({"format": FORMAT, "next": end}).encode(),
                                    durable=False)
                return end - start

    def _line(self, n: int, record: dict) -> tuple:
        from . import mimeinfo
        summary = " ".join([record.get("subject", ""), record.get("from", ""), record.get("from_name", ""),
                            record.get("from_addr", "") or "", " ".join(record.get("to", []))])
        raw = self.mailstore.raw_of(n)
        root = mimeinfo.parse(raw)
        data = json.dumps([n, _fold(summary)[:MAX_TEXT_CHARS], _fold(mimeinfo.body_text(raw, root))[:MAX_TEXT_CHARS],
                           _fold(mimeinfo.header_text(root))[:MAX_TEXT_CHARS]],
                          ensure_ascii=False, separators=(",", ":"))
        return record.get("owners", []), data.encode("utf-8") + b"\n"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="search-indexer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        """Index in the background, a batch at a time, yielding to mail coming in: while the
        store is being written to, indexing waits until the backlog is a batch or
        MAX_INDEX_DELAY_SECONDS old (a web search indexes a small backlog itself), so a burst
        of deliveries is not slowed by indexing that can as well come a second later."""
        last_run = time.monotonic()
        while not self._stop.wait(INDEX_INTERVAL_SECONDS):
            try:
                busy = self.store.seconds_since_write() < INDEX_INTERVAL_SECONDS
                if busy and time.monotonic() - last_run < MAX_INDEX_DELAY_SECONDS and self.behind() < INDEX_BATCH:
                    continue
                last_run = time.monotonic()
                while self._index_batch(INDEX_BATCH) and not self._stop.is_set():
                    if self.store.seconds_since_write() < INDEX_INTERVAL_SECONDS:
                        break
            except Exception as exc:
                log("store", f"search indexer: {exc!r}")

    # ------------------------------------------------------------ searching

    def scan(self, user: str, needle: str, where: str = "text", index_seconds: float = None):
        """Message numbers whose text holds `needle` (case-insensitively), newest first, each
        once. `where`: "text" (the web's: subject, from, to and body), "imap-text" (every
        header field and the body) or "body". Messages not indexed yet are indexed first:
        all of them when `index_seconds` is None, so the answer is complete; otherwise a
        backlog of one batch (mail that just arrived) for at most `index_seconds`, and a
        larger one (an import) is left to the background indexer: indexing in the threads
        that serve requests would also leave every one of them holding heap it used once."""
        fields = FIELDS[where]
        if index_seconds is None:
            self.catch_up()
        elif self.behind() <= INDEX_BATCH:
            self.catch_up(seconds=index_seconds)
        pattern = _encoded(needle)
        folded = _fold(needle)
        if not pattern:
            return
        try:
            fd = os.open(self._user_path(user), os.O_RDONLY)
        except FileNotFoundError:
            return
        seen = set()
        try:
            end = os.fstat(fd).st_size
            while end > 0:
                # Each read ends where the previous one's first whole line began, so no
                # line is cut and no chunk is copied to glue a carried piece on.
                chunk = CHUNK_BYTES
                while True:
                    start = max(0, end - chunk)
                    data = os.pread(fd, end - start, start)
                    first = data.find(b"\n") + 1 if start > 0 else 0
                    if start == 0 or 0 < first < len(data):
                        break
                    chunk *= 2   # no whole line in the chunk: read further back
                hits = []
                i = data.find(pattern, first)
                while i >= 0:
                    line_start = data.rfind(b"\n", 0, i) + 1
                    line_end = data.find(b"\n", i)
                    line_end = len(data) if line_end < 0 else line_end
                    try:
                        line = json.loads(data[line_start:line_end])
                        n = line[0]
                    except (ValueError, IndexError):
                        line, n = None, None
                    if n is not None and n not in seen and any(folded in line[f] for f in fields if f < len(line)):
                        hits.append(n)
                        seen.add(n)
                    i = data.find(pattern, line_end)
                yield from reversed(hits)
                end = start + first
                del data
        finally:
            os.close(fd)


def _index(mailstore) -> SearchIndex:
    index = getattr(mailstore, "search_index", None)
    if index is None:
        index = mailstore.search_index = SearchIndex(mailstore)
    return index


def search_user(mailstore, user: str, needle: str):
    """Message numbers of the user's messages matching `needle`, newest first. A web search
    indexes a small backlog itself, for at most WEB_INDEX_SECONDS: after a large import the
    index takes a while to catch up, and until then the answer holds what is indexed (see
    `behind`)."""
    return _index(mailstore).scan(user, needle, index_seconds=WEB_INDEX_SECONDS)


def index_fully(mailstore, progress=None, every_seconds: float = None) -> None:
    """Index every message not yet indexed, calling `progress(done, goal)` every
    `every_seconds` (PROGRESS_SECONDS) while there is more to do."""
    index = _index(mailstore)
    goal = index.behind()
    done = 0
    while goal:
        step = index.catch_up(seconds=PROGRESS_SECONDS if every_seconds is None else every_seconds)
        done += step
        if not step or not index.behind():
            return
        if progress is not None:
            progress(min(done, goal), goal)


def not_indexed(mailstore) -> int:
    """Messages a web search cannot see yet."""
    return _index(mailstore).behind()


def text_matches(mailstore, user: str, needle: str, candidates: set, where: str = "imap-text") -> set:
    """Which of `candidates` (message numbers) match."""
    return {n for n in _index(mailstore).scan(user, needle, where) if n in candidates}
