"""The store: in-memory state made durable by a snapshot plus an append-only journal.

On disk, under MU_HOME:

    mail.json      snapshot: {"format": "mu-store-2", "seq": N, "state": {...}}; the
                   message and mailbox columns in it are base64 arrays (mu/columns.py)
    mail.journal   JSON lines, one record each: {"seq": N, "op": "...", ...}
    blobs/*.jsonl  segments (mu/segments.py): JSON lines, each either one message's record
                   (a JSON object) or one blob (raw message, long body, HTML, attachment: a
                   JSON string of its base64)
    .lock          flock(2) target shared by the server and the CLI (holds "{}")

A commit appends its blobs and message records to the newest segment (fdatasync), then its
records to the journal (fdatasync), so a record never points at bytes that are not on disk.
Loading reads the snapshot and replays journal records with a higher seq; a torn last line
(a crash mid-append) was never acknowledged and is dropped. Compaction writes a new
snapshot atomically and then replaces the journal; a crash between the two steps is
harmless because replay skips records the snapshot already holds (by seq). A store in an
older format is upgraded in place when it is opened (mu/upgrade.py).

Concurrency: threads of one process share one in-memory state guarded by `_mu`;
commits are batched (group commit: one leader writes and fsyncs for every thread
waiting), and processes exclude each other with flock on `.lock`. Lock order is
always flock, then `_mu`. Before reading, a process notices a journal grown or
replaced by another process (a stat) and catches up, so CLI changes reach the
running server without a restart.
"""

import contextlib
import copy
import fcntl
import json
import os
import re
import threading
import time
from collections import OrderedDict

from . import safeio
from .log import log
from .segments import Base64Lines, JSONLines, Segments, SegmentView, unpack_position
from .state import FORMAT, State

COMPACT_MIN_JOURNAL_BYTES = 32 * 1024 * 1024
# A segment is rewritten when at least half of it, and at least this much, belongs to
# deleted messages; the scan that finds out runs at most this often.
RECLAIM_MIN_DEAD_BYTES = 8 * 1024 * 1024
RECLAIM_INTERVAL_SECONDS = 3600.0
META_CACHE_ENTRIES = 4096
_SNAPSHOT_HEAD = re.compile(rb'\{"format":"[^"]*","seq":(\d+),"moves":(\d+),')


class StoreError(Exception):
    """The store could not make a write durable; nothing was acknowledged."""


class Written:
    """Where a commit's blobs and message records went: [(position, length)] each, in the
    order they were given."""
    __slots__ = ("blobs", "metas")

    def __init__(self, blobs, metas):
        self.blobs, self.metas = blobs, metas


class _Ticket:
    __slots__ = ("build", "blobs", "metas", "done", "result", "error")

    def __init__(self, build, blobs, metas):
        self.build, self.blobs, self.metas = build, blobs, metas
        self.done, self.result, self.error = False, None, None


class Store:
    def __init__(self, home: str):
        self.home = safeio.ensure_dir(home)
        self.snapshot_path = os.path.join(home, "mail.json")
        self.journal_path = os.path.join(home, "mail.journal")
        self.lock_path = os.path.join(home, ".lock")
        self.segments = Segments(os.path.join(home, "blobs"))
        self.blobs = SegmentView(self.segments, Base64Lines())
        self.meta = SegmentView(self.segments, JSONLines())
        self._mu = threading.RLock()
        self._cv = threading.Condition(threading.Lock())
        self._queue = []
        self._leader_active = False
        self.state = State()
        self._seq = 0
        self._moves = 0          # reclamation passes that moved lines, as the snapshot says
        self._journal_ino = None
        self._journal_offset = 0
        self._journal_fd = None
        self._journal_fd_ino = None
        self._last_reclaim_check = time.monotonic()
        self._last_write = 0.0   # monotonic time of this process's last commit
        self._meta_cache = OrderedDict()
        self._meta_cache_lock = threading.Lock()
        self.listeners = []   # callables(set of users) run after each change (IMAP IDLE)
        self._writer_lock_fd = safeio.open_lock_file(self.lock_path)
        with safeio.flocked(self.lock_path, exclusive=True):
            if not os.path.exists(self.snapshot_path):
                safeio.write_json_atomic(self.snapshot_path, {"format": FORMAT, "seq": 0, "moves": 0,
                                                              "state": State().dump()})
            else:
                from .upgrade import upgrade_if_needed
                upgrade_if_needed(self)
        # Parse the snapshot without holding the lock (it is only ever replaced whole, by
        # rename), so a CLI command never stalls the server's writes while it loads.
        loaded = self._read_snapshot()
        with safeio.flocked(self.lock_path, exclusive=False):
            if os.stat(self.snapshot_path).st_ino != loaded[0]:
                loaded = self._read_snapshot()   # compacted meanwhile: read the new one
            with self._mu:
                self._load_all(truncate_torn=False, snapshot=loaded)

    def close(self) -> None:
        """Close the store's descriptors (a command or test done with it; the server never does)."""
        self.segments.close()
        for attr in ("_journal_fd", "_writer_lock_fd"):
            fd = getattr(self, attr, None)
            if fd is not None:
                setattr(self, attr, None)
                os.close(fd)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---------------------------------------------------------------- loading

    def _read_snapshot(self) -> tuple:
        """(inode, seq, moves, State) of mail.json."""
        with open(self.snapshot_path, "rb") as f:
            ino = os.fstat(f.fileno()).st_ino
            snapshot = json.load(f)
        if snapshot.get("format") != FORMAT:
            raise StoreError(f"{self.snapshot_path}: unknown format {snapshot.get('format')!r}")
        return ino, snapshot["seq"], snapshot.get("moves", 0), State.from_dump(snapshot["state"])

    def _load_all(self, truncate_torn: bool, snapshot: tuple = None) -> None:
        """Snapshot plus journal (caller holds flock and _mu)."""
        # A new snapshot may come with a reclamation pass that made new segments: append
        # there from now on, so the old ones can empty and go.
        self.segments.forget_current()
        before = {user: um.generation for user, um in self.state.mail.items()}
        _ino, self._seq, self._moves, self.state = snapshot or self._read_snapshot()
        for user, um in self.state.mail.items():   # IDLE waits on these: they never go back
            um.generation = max(um.generation, before.get(user, 0) + 1)
        self._journal_ino, self._journal_offset = None, 0
        if not os.path.exists(self.journal_path):
            # Only before the first write: created empty, which any process may do.
            os.close(safeio.open_append(self.journal_path))
            safeio.fsync_dir(self.home)
        self._journal_ino = os.stat(self.journal_path).st_ino
        self._read_journal_tail(truncate_torn)
        self._notify(set(self.state.mail))

    def _read_journal_tail(self, truncate_torn: bool) -> None:
        with open(self.journal_path, "rb") as f:
            f.seek(self._journal_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data) and truncate_torn:
            # A crash mid-append left a partial line; it was never acknowledged.
            os.truncate(self.journal_path, self._journal_offset + end)
        touched = set()
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                log("store", f"skipping unreadable journal line at offset {self._journal_offset}")
                continue
            if record.get("seq", 0) > self._seq:
                self.state.apply(record)
                self._seq = record["seq"]
                if "user" in record:
                    touched.add(record["user"])
        self._journal_offset += end
        if touched:
            self._notify(touched)

    def _catch_up(self, truncate_torn: bool) -> None:
        """Apply what other processes appended (caller holds flock and _mu)."""
        try:
            st = os.stat(self.journal_path)
        except FileNotFoundError:
            st = None
        if st is not None and st.st_ino != self._journal_ino and self._folded_what_we_hold():
            # Another process folded the journal we had read to its end into a snapshot that
            # moved nothing: our state is that snapshot, so only the new journal is news (a
            # million-message state is not parsed again for every compaction).
            self._journal_ino, self._journal_offset = st.st_ino, 0
            self._read_journal_tail(truncate_torn)
        elif st is None or st.st_ino != self._journal_ino or st.st_size < self._journal_offset:
            self._load_all(truncate_torn)
        elif st.st_size > self._journal_offset:
            self._read_journal_tail(truncate_torn)

    def _folded_what_we_hold(self) -> bool:
        """Whether mail.json is a snapshot at our seq with the positions we hold: its first
        bytes say its seq and how many reclamation passes moved lines (`moves`)."""
        try:
            with open(self.snapshot_path, "rb") as f:
                head = f.read(128)
        except OSError:
            return False
        match = _SNAPSHOT_HEAD.match(head)
        return bool(match) and int(match.group(1)) == self._seq and int(match.group(2)) == self._moves

    def changed_on_disk(self) -> bool:
        try:
            st = os.stat(self.journal_path)
        except FileNotFoundError:
            return True
        return st.st_ino != self._journal_ino or st.st_size != self._journal_offset

    def catch_up(self) -> None:
        """Pick up what other processes wrote (IMAP IDLE calls this to see CLI imports)."""
        if self.changed_on_disk() and not self._leader_active:
            with safeio.flocked(self.lock_path, exclusive=False):
                with self._mu:
                    self._catch_up(truncate_torn=False)

    @contextlib.contextmanager
    def reading(self):
        """Hold the in-memory state, fresh with every other process's writes."""
        self.catch_up()
        with self._mu:
            yield self.state

    # ---------------------------------------------------------------- bytes on disk

    def blob(self, number: int) -> bytes:
        """The bytes of blob `number`, read outside the lock (blobs never change)."""
        with self._mu:
            pos, length = self.state.blobs.pos[number], self.state.blobs.len[number]
        return self.blobs.read(pos, length)

    def meta_record(self, n: int) -> dict:
        """Message n's record, with the fields changed since it was written (a shared,
        cached dict when nothing changed: callers must not change it)."""
        with self._mu:
            pos, length = self.state.messages.meta_pos[n], self.state.messages.meta_len[n]
            overlay = self.state.overlay.get(n)
            overlay = dict(overlay) if overlay else None
        record = self.meta_at(pos, length)
        return dict(record, **overlay) if overlay else record

    def fold_overlays(self, done) -> int:
        """Write a new version of each record whose overlay `done(fields)` says is final,
        and drop the overlay; return how many. (The store chores thread calls this.)"""
        with self.reading() as state:
            todo = [(n, dict(fields), state.messages.meta_pos[n]) for n, fields in state.overlay.items()
                    if done(fields)]
        folded = 0
        for n, fields, pos in todo:
            record = dict(self.meta_at(pos, self.state.messages.meta_len[n], cache=False), **fields)
            meta = safeio.json_bytes(record)

            def build(state, written, n=n, fields=fields, pos=pos):
                if state.messages.meta_pos[n] != pos or state.overlay.get(n) != fields:
                    return [], 0   # changed meanwhile: the next pass folds it
                return [{"op": "msg.meta", "n": n, "meta": list(written.metas[0]), "folded": True}], 1

            folded += self.commit(build, metas=[meta])
        return folded

    def meta_at(self, pos: int, length: int, cache: bool = True) -> dict:
        if not cache:
            with self._meta_cache_lock:
                record = self._meta_cache.get(pos)
            return record if record is not None else self.meta.read(pos, length)
        with self._meta_cache_lock:
            record = self._meta_cache.get(pos)
            if record is not None:
                self._meta_cache.move_to_end(pos)
                return record
        record = self.meta.read(pos, length)
        with self._meta_cache_lock:
            self._meta_cache[pos] = record
            if len(self._meta_cache) > META_CACHE_ENTRIES:
                self._meta_cache.popitem(last=False)
        return record

    # ---------------------------------------------------------------- writing

    def commit(self, build, blobs=(), metas=()):
        """Durably apply what `build(state, written) -> (records, result)` returns.

        `blobs` are bytes for the blob packs, `metas` serialised JSON objects for the meta
        segments; both are on disk before `build` runs, and `written` (a `Written`) says
        where. `build` runs with the state current across processes and must not mutate
        it; raising from it aborts this commit only. Returns `result` once the records are
        fsynced; raises StoreError if they could not be.
        """
        ticket = _Ticket(build, list(blobs), list(metas))
        with self._cv:
            self._queue.append(ticket)
            while not ticket.done:
                if self._leader_active:
                    self._cv.wait()
                    continue
                self._leader_active = True
                batch, self._queue = self._queue, []
                self._cv.release()
                try:
                    self._write_batch(batch)
                finally:
                    self._cv.acquire()
                    self._leader_active = False
                    for t in batch:
                        t.done = True
                    self._cv.notify_all()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    @contextlib.contextmanager
    def _writer_lock(self):
        """flock(LOCK_EX) on a descriptor only the commit leader uses (one leader at a time)."""
        fcntl.flock(self._writer_lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._writer_lock_fd, fcntl.LOCK_UN)

    def _write_batch(self, batch) -> None:
        touched = set()
        try:
            with self._writer_lock():
                with self._mu:
                    self._catch_up(truncate_torn=True)
                blob_lines = [self.blobs.encode(b) for t in batch for b in t.blobs]
                meta_lines = [self.meta.encode(m) for t in batch for m in t.metas]
                written = self.segments.append_lines(blob_lines + meta_lines)   # one fdatasync
                blob_pos, meta_pos = written[:len(blob_lines)], written[len(blob_lines):]
                lines = []
                with self._mu:
                    for t in batch:
                        mine_b, blob_pos = blob_pos[:len(t.blobs)], blob_pos[len(t.blobs):]
                        mine_m, meta_pos = meta_pos[:len(t.metas)], meta_pos[len(t.metas):]
                        try:
                            records, t.result = t.build(self.state, Written(mine_b, mine_m))
                        except Exception as exc:  # validation failure: this ticket only
                            t.error = exc
                            continue
                        for record in records:
                            self._seq += 1
                            record["seq"] = self._seq
                            lines.append(safeio.json_bytes(record))
                            # Applied now so later tickets in the batch see it; undone by
                            # a reload below if the write fails.
                            self.state.apply(record)
                            if "user" in record:
                                touched.add(record["user"])
                if lines:
                    self._append_lines(lines)
        except Exception as exc:
            error = exc if isinstance(exc, StoreError) else StoreError(f"store write failed: {exc}")
            log("store", str(error))
            for t in batch:
                if t.error is None:
                    t.error = error
            with safeio.flocked(self.lock_path, exclusive=True):
                with self._mu:
                    self._load_all(truncate_torn=True)
            return
        self._last_write = time.monotonic()
        if touched:
            self._notify(touched)

    def seconds_since_write(self) -> float:
        """How long since this process last committed (background work yields to writes)."""
        return time.monotonic() - self._last_write

    def _append_lines(self, lines) -> None:
        """Append to the journal (caller holds the writer flock and has just caught up,
        so `_journal_ino` is the journal's current inode)."""
        data = b"\n".join(lines) + b"\n"
        fd = self._journal_fd
        if fd is None or self._journal_fd_ino != self._journal_ino:
            if fd is not None:
                os.close(fd)
                self._journal_fd = None
            fd = safeio.open_append(self.journal_path)
            self._journal_fd, self._journal_fd_ino = fd, os.fstat(fd).st_ino
            if self._journal_fd_ino != self._journal_ino:
                raise StoreError("journal replaced during a write")
        try:
            safeio.write_all(fd, data)
            safeio.sync_appended(fd)
        except OSError:
            os.ftruncate(fd, self._journal_offset)
            raise
        with self._mu:
            self._journal_offset += len(data)

    def _notify(self, users: set) -> None:
        for listener in self.listeners:
            try:
                listener(users)
            except Exception as exc:   # a listener's bug must not fail a commit
                log("store", f"change listener failed: {exc!r}")

    # ---------------------------------------------------------------- compaction

    def journal_bytes(self) -> int:
        return self._journal_offset

    def compact(self) -> None:
        """Fold the journal into a fresh snapshot.

        The state is captured under the locks, but the snapshot is encoded and written
        without them: at a million messages that is over a second that deliveries would
        otherwise wait for. Records committed meanwhile stay in the journal, which is cut
        to them when the snapshot is put in place; a crash between the two steps leaves a
        snapshot at seq S and a journal whose records up to S are skipped on replay."""
        with safeio.flocked(self.lock_path, exclusive=True):
            with self._mu:
                self._catch_up(truncate_torn=True)
                seq, moves, ino, offset = self._seq, self._moves, self._journal_ino, self._journal_offset
                # Columns dump to new strings; the small tables are copied, as commits go on.
                snapshot = copy.deepcopy({"format": FORMAT, "seq": seq, "moves": moves, "state": self.state.dump()})
        fresh = f"{self.snapshot_path}.compact.{os.getpid()}"
        try:
            self._write_fresh_snapshot(fresh, snapshot)
            del snapshot
            with safeio.flocked(self.lock_path, exclusive=True):
                with self._mu:
                    self._catch_up(truncate_torn=True)
                    if self._journal_ino != ino or self._moves != moves or self._journal_offset < offset:
                        return   # another process compacted or moved lines meanwhile: nothing to do now
                    os.replace(fresh, self.snapshot_path)
                    safeio.fsync_dir(self.home)
                    self._keep_journal_after(offset)
        finally:
            if os.path.exists(fresh):
                os.unlink(fresh)

    def _write_fresh_snapshot(self, path: str, snapshot: dict) -> None:
        """Encode and sync a snapshot not yet in place (no lock held: commits go on)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, safeio.FILE_MODE)
        try:
            safeio.write_all(fd, safeio.json_bytes(snapshot))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _keep_journal_after(self, offset: int) -> None:
        """Replace the journal with its records from `offset` on, durably (caller holds the
        exclusive flock and _mu, and the snapshot holds everything before `offset`)."""
        with open(self.journal_path, "rb") as f:
            f.seek(offset)
            tail = f.read(self._journal_offset - offset)
        fresh = self.journal_path + ".new"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, safeio.FILE_MODE)
        try:
            safeio.write_all(fd, tail)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(fresh, self.journal_path)
        safeio.fsync_dir(self.home)
        self._journal_ino = os.stat(self.journal_path).st_ino
        self._journal_offset = len(tail)

    def _snapshot_and_reset_journal(self) -> None:
        """(Caller holds the exclusive flock and _mu, and has caught up.)"""
        snapshot = {"format": FORMAT, "seq": self._seq, "moves": self._moves, "state": self.state.dump()}
        safeio.write_json_atomic(self.snapshot_path, snapshot)
        safeio.replace_with_empty(self.journal_path)
        self._journal_ino = os.stat(self.journal_path).st_ino
        self._journal_offset = 0

    def maybe_compact(self) -> bool:
        try:
            snapshot_bytes = os.path.getsize(self.snapshot_path)
        except OSError:
            snapshot_bytes = 0
        # Half the snapshot's size: replaying a journal costs more per byte than loading the
        # snapshot, and start-up time is bounded by both.
        if self._journal_offset > max(COMPACT_MIN_JOURNAL_BYTES, snapshot_bytes // 2):
            self.compact()
            return True
        return False

    # ---------------------------------------------------------------- reclamation

    def _usage(self) -> tuple:
        """(segment -> size, segment -> live bytes, segment -> [(pos, length)] of its live
        lines: records and blobs of messages a mailbox or the queue still holds). Caller
        holds _mu."""
        state = self.state
        sizes = self.segments.sizes()
        live_bytes = dict.fromkeys(sizes, 0)
        lines = {}

        def note(pos, length):
            seg = unpack_position(pos)[0]
            live_bytes[seg] = live_bytes.get(seg, 0) + length
            lines.setdefault(seg, []).append((pos, length))

        msgs = state.messages
        for n in state.live_messages():
            note(msgs.meta_pos[n], msgs.meta_len[n])
            for b in state.blob_numbers(n):
                note(state.blobs.pos[b], state.blobs.len[b])
        return sizes, live_bytes, lines

    @staticmethod
    def _reclaimable(sizes: dict, live: dict, min_dead_bytes: int) -> tuple:
        """(segments nothing points at, other than the newest; segments mostly dead, the
        newest included: rewriting it, even with nothing to copy, starts a new newest one)."""
        newest = max(sizes) if sizes else None
        unused = [s for s in sizes if not live.get(s) and s != newest]
        mostly_dead = [s for s in sizes if s not in unused and sizes[s] > live.get(s, 0)
                       and sizes[s] - live.get(s, 0) >= max(min_dead_bytes, sizes[s] / 2)]
        return unused, mostly_dead

    def reclaim(self, min_dead_bytes: int = RECLAIM_MIN_DEAD_BYTES, always_compact: bool = False,
                max_segments: int = None) -> dict:
        """Give back the disk space of deleted messages' records, raw copies, bodies and
        attachments.

        A segment mostly (≥ half, ≥ `min_dead_bytes`) made of dead lines has its live lines
        copied to a new segment; the positions are rewritten and made durable by a fresh
        snapshot. The emptied segment is removed only by the next pass, so a reader in this
        or another process still holding an old position can read it meanwhile; a segment
        nothing points at when a pass starts is removed then. The newest segment, where
        appends go, is never removed. Writes wait while live lines are copied, so a pass can
        be held to the `max_segments` deadest segments.
        """
        from .backup import removal_allowed
        with safeio.flocked(self.lock_path, exclusive=True):
            may_remove = removal_allowed(self.home)   # not while a backup copies segments
            with self._mu:
                self._catch_up(truncate_torn=True)
                sizes, live, lines = self._usage()
                unused, mostly_dead = self._reclaimable(sizes, live, min_dead_bytes)
                unused = unused if may_remove else []
                mostly_dead = sorted(mostly_dead, key=lambda s: live.get(s, 0) - sizes[s])[:max_segments]
                if mostly_dead:
                    moved = self.segments.copy_to_new(sorted(p for s in mostly_dead for p in lines.get(s, ())))
                    self._move_positions(moved)
                    self._moves += 1   # other processes must load the new snapshot, not skip it
                for seg in unused:
                    self.segments.remove(seg)
                if mostly_dead or always_compact:
                    self._snapshot_and_reset_journal()
        freed = sum(sizes[s] for s in unused)
        rewritten, removed = [f"{s:06d}" for s in mostly_dead], [f"{s:06d}" for s in unused]
        if rewritten or removed:
            log("store", f"segments: {len(rewritten)} rewritten, {len(removed)} removed ({freed} bytes freed)")
        return {"rewritten": rewritten, "removed": removed, "bytes_freed": freed}

    def _move_positions(self, moved: dict) -> None:
        for column in (self.state.blobs.pos, self.state.messages.meta_pos):
            for i, pos in enumerate(column):
                new = moved.get(pos)
                if new is not None:
                    column[i] = new
        with self._meta_cache_lock:
            self._meta_cache.clear()

    def maybe_reclaim(self) -> bool:
        """The hourly look at the segments: reclaim when there is something to."""
        now = time.monotonic()
        if now - self._last_reclaim_check < RECLAIM_INTERVAL_SECONDS:
            return False
        self._last_reclaim_check = now
        with self.reading():
            sizes, live, _lines = self._usage()
        if any(self._reclaimable(sizes, live, RECLAIM_MIN_DEAD_BYTES)):
            self.reclaim(max_segments=1)
            return True
        return False

    # Kept for the callers of the previous name.
    def reclaim_blobs(self, min_dead_bytes: int = RECLAIM_MIN_DEAD_BYTES, always_compact: bool = False,
                      max_packs: int = None) -> dict:
        return self.reclaim(min_dead_bytes, always_compact, max_packs)
