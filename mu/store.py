"""The store: in-memory state made durable by a snapshot plus an append-only journal.

On disk, under MU_HOME:

    mail.json      snapshot: {"format": "mu-store-1", "seq": N, "state": {...}}
    mail.journal   JSON lines, one record each: {"seq": N, "op": "...", ...}
    blobs/*.jsonl  packs of message bodies, raw messages and attachments: JSON lines,
                   each one JSON string holding one blob in base64; appended to, and
                   rewritten without deleted messages' blobs (`reclaim_blobs`)
    .lock          flock(2) target shared by the server and the CLI (holds "{}")

A commit appends its blobs to the current pack (fdatasync), then its records to the
journal (fdatasync), so a record never points at bytes that are not on disk. Loading
reads the snapshot and replays journal records with a higher seq; a torn last line
(a crash mid-append) was never acknowledged and is dropped. Compaction writes a new
snapshot atomically and then replaces the journal; a crash between the two steps is
harmless because replay skips records the snapshot already holds (by seq).

Concurrency: threads of one process share one in-memory state guarded by `_mu`;
commits are batched (group commit: one leader writes and fsyncs for every thread
waiting), and processes exclude each other with flock on `.lock`. Lock order is
always flock, then `_mu`. Before reading, a process notices a journal grown or
replaced by another process (a stat) and catches up, so CLI changes reach the
running server without a restart.
"""

import base64
import contextlib
import fcntl
import json
import os
import threading
import time

from . import safeio
from .log import log
from .state import State

SNAPSHOT_FORMAT = "mu-store-1"
PACK_ROTATE_BYTES = 256 * 1024 * 1024
PACK_SUFFIX = ".jsonl"
COMPACT_MIN_JOURNAL_BYTES = 32 * 1024 * 1024
# A pack is rewritten when at least half of it, and at least this much, belongs to
# deleted messages; the scan that finds out runs at most this often.
RECLAIM_MIN_DEAD_BYTES = 8 * 1024 * 1024
RECLAIM_INTERVAL_SECONDS = 3600.0


class StoreError(Exception):
    """The store could not make a write durable; nothing was acknowledged."""


class BlobPacks:
    """Append-only pack files; a blob is named by `pack:offset:length` of its line.

    Each line is a JSON string of the blob in base64, so a pack is a JSON-lines file
    like the journal; the 4/3 size costs less than an fsync per blob file would.

    Appends happen only under the store's exclusive flock, so the open descriptor of
    the current pack is cached until the pack is full.
    """

    def __init__(self, folder: str):
        self.folder = safeio.ensure_dir(folder)
        self._name = None
        self._fd = None

    def _open_current(self) -> tuple:
        """(descriptor, size) of the pack to append to."""
        if self._fd is not None:
            # Packs rotate only when full, so below the limit the cached one is still current.
            st = os.fstat(self._fd)
            # (A pack emptied and removed by reclamation has no links left: never append there.)
            if st.st_size < PACK_ROTATE_BYTES and st.st_nlink:
                return self._fd, st.st_size
            os.close(self._fd)
            self._fd = None
        newest = self._newest()
        if newest and os.path.getsize(os.path.join(self.folder, newest)) < PACK_ROTATE_BYTES:
            name = newest
        else:
            name = self._name_after(newest)
        fd = safeio.open_append(os.path.join(self.folder, name))
        if not newest or name != newest:
            safeio.fsync_dir(self.folder)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A crash mid-append left a partial line no record points at: cut it off.
            # (Only an opening can find one: this process always appends whole lines.)
            with open(os.path.join(self.folder, name), "rb") as f:
                size = f.read().rfind(b"\n") + 1
            os.ftruncate(fd, size)
        self._fd, self._name = fd, name
        return fd, size

    def _newest(self):
        packs = sorted(n for n in os.listdir(self.folder) if n.endswith(PACK_SUFFIX))
        return packs[-1] if packs else None

    @staticmethod
    def _name_after(newest) -> str:
        return f"{(int(newest.split('.')[0]) + 1) if newest else 1:06d}{PACK_SUFFIX}"

    def append(self, blobs) -> list:
        """Write every blob durably (caller holds the store's flock); return their refs."""
        if not blobs:
            return []
        fd, offset = self._open_current()
        refs = []
        try:
            lines = [b'"' + base64.b64encode(blob) + b'"\n' for blob in blobs]
            for line in lines:
                refs.append(f"{self._name[:6]}:{offset}:{len(line)}")
                offset += len(line)
            safeio.write_all(fd, b"".join(lines))
            safeio.sync_appended(fd)
        except OSError:
            os.close(fd)
            self._fd = None
            raise
        return refs

    def sizes(self) -> dict:
        """Pack number (as in refs) -> size in bytes, for every pack."""
        return {name[:6]: os.path.getsize(os.path.join(self.folder, name))
                for name in os.listdir(self.folder) if name.endswith(PACK_SUFFIX)}

    def copy_to_new_pack(self, refs) -> dict:
        """Copy the blobs `refs` name, line for line, into a pack of their own (fsynced);
        return old ref -> new ref. Appends then go on in the newest pack, as ever."""
        name = self._name_after(self._newest())
        fd = safeio.open_append(os.path.join(self.folder, name))
        sources = {}   # pack -> descriptor, each opened once
        moved, offset = {}, 0
        try:
            for ref in refs:
                pack, start, length = ref.split(":")
                if pack not in sources:
                    sources[pack] = os.open(os.path.join(self.folder, pack + PACK_SUFFIX), os.O_RDONLY)
                line = os.pread(sources[pack], int(length), int(start))
                safeio.write_all(fd, line)
                moved[ref] = f"{name[:6]}:{offset}:{len(line)}"
                offset += len(line)
            os.fsync(fd)
        finally:
            for source in sources.values():
                os.close(source)
            os.close(fd)
        safeio.fsync_dir(self.folder)
        self.forget_current()   # the cached pack is no longer the newest
        return moved

    def forget_current(self) -> None:
        """Close the cached pack; the next append opens the newest one."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self, pack: str) -> None:
        os.unlink(os.path.join(self.folder, pack + PACK_SUFFIX))
        safeio.fsync_dir(self.folder)

    def read(self, ref: str) -> bytes:
        pack, offset, length = ref.split(":")
        if not pack.isdigit():
            raise KeyError(ref)
        fd = os.open(os.path.join(self.folder, pack + PACK_SUFFIX), os.O_RDONLY)
        try:
            line = os.pread(fd, int(length), int(offset))
        finally:
            os.close(fd)
        return base64.b64decode(line.strip()[1:-1])


def _reclaimable(sizes: dict, live: dict, min_dead_bytes: int) -> tuple:
    """(packs nothing points at, other than the newest; packs mostly dead, the newest
    included: rewriting it, even with nothing left to copy, starts a new newest pack)."""
    newest = max(sizes) if sizes else None
    unused = [p for p in sizes if not live.get(p) and p != newest]
    mostly_dead = [p for p in sizes if p not in unused and sizes[p] > live.get(p, 0)
                   and sizes[p] - live.get(p, 0) >= max(min_dead_bytes, sizes[p] / 2)]
    return unused, mostly_dead


class _Ticket:
    __slots__ = ("build", "blobs", "done", "result", "error")

    def __init__(self, build, blobs):
        self.build, self.blobs = build, blobs
        self.done, self.result, self.error = False, None, None


class Store:
    def __init__(self, home: str):
        self.home = safeio.ensure_dir(home)
        self.snapshot_path = os.path.join(home, "mail.json")
        self.journal_path = os.path.join(home, "mail.journal")
        self.lock_path = os.path.join(home, ".lock")
        self.blobs = BlobPacks(os.path.join(home, "blobs"))
        self._mu = threading.RLock()
        self._cv = threading.Condition(threading.Lock())
        self._queue = []
        self._leader_active = False
        self.state = State()
        self._seq = 0
        self._journal_ino = None
        self._journal_offset = 0
        self._journal_fd = None
        self._journal_fd_ino = None
        self._last_reclaim_check = time.monotonic()
        self._writer_lock_fd = safeio.open_lock_file(self.lock_path)
        if not os.path.exists(self.snapshot_path):
            with safeio.flocked(self.lock_path, exclusive=True):
                if not os.path.exists(self.snapshot_path):
                    safeio.write_json_atomic(self.snapshot_path,
                                             {"format": SNAPSHOT_FORMAT, "seq": 0, "state": State().dump()})
        # Parse the snapshot without holding the lock (it is only ever replaced whole, by
        # rename), so a CLI command never stalls the server's writes while it loads.
        loaded = self._read_snapshot()
        with safeio.flocked(self.lock_path, exclusive=False):
            if os.stat(self.snapshot_path).st_ino != loaded[0]:
                loaded = self._read_snapshot()   # compacted meanwhile: read the new one
            with self._mu:
                self._load_all(truncate_torn=False, snapshot=loaded)

    # ---------------------------------------------------------------- loading

    def _read_snapshot(self) -> tuple:
        """(inode, seq, State) of mail.json."""
        with open(self.snapshot_path, "rb") as f:
            ino = os.fstat(f.fileno()).st_ino
            snapshot = json.load(f)
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise StoreError(f"{self.snapshot_path}: unknown format {snapshot.get('format')!r}")
        return ino, snapshot["seq"], State.from_dump(snapshot["state"])

    def _load_all(self, truncate_torn: bool, snapshot: tuple = None) -> None:
        """Snapshot plus journal (caller holds flock and _mu)."""
        # A new snapshot may come with a reclamation pass that made a new newest pack:
        # append there from now on, so the old pack can empty and go.
        self.blobs.forget_current()
        _ino, self._seq, self.state = snapshot or self._read_snapshot()
        self._journal_ino, self._journal_offset = None, 0
        if not os.path.exists(self.journal_path):
            # Only before the first write: created empty, which any process may do.
            os.close(safeio.open_append(self.journal_path))
            safeio.fsync_dir(self.home)
        self._journal_ino = os.stat(self.journal_path).st_ino
        self._read_journal_tail(truncate_torn)

    def _read_journal_tail(self, truncate_torn: bool) -> None:
        with open(self.journal_path, "rb") as f:
            f.seek(self._journal_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data) and truncate_torn:
            # A crash mid-append left a partial line; it was never acknowledged.
            os.truncate(self.journal_path, self._journal_offset + end)
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
        self._journal_offset += end

    def _catch_up(self, truncate_torn: bool) -> None:
        """Apply what other processes appended (caller holds flock and _mu)."""
        try:
            st = os.stat(self.journal_path)
        except FileNotFoundError:
            st = None
        if st is None or st.st_ino != self._journal_ino or st.st_size < self._journal_offset:
            self._load_all(truncate_torn)
        elif st.st_size > self._journal_offset:
            self._read_journal_tail(truncate_torn)

    def _changed_on_disk(self) -> bool:
        try:
            st = os.stat(self.journal_path)
        except FileNotFoundError:
            return True
        return st.st_ino != self._journal_ino or st.st_size != self._journal_offset

    @contextlib.contextmanager
    def reading(self):
        """Hold the in-memory state, fresh with every other process's writes."""
        if self._changed_on_disk() and not self._leader_active:
            with safeio.flocked(self.lock_path, exclusive=False):
                with self._mu:
                    self._catch_up(truncate_torn=False)
        with self._mu:
            yield self.state

    def read_blob(self, ref: str) -> bytes:
        return self.blobs.read(ref)

    # ---------------------------------------------------------------- writing

    def commit(self, build, blobs=()):
        """Durably apply what `build(state, blob_refs) -> (records, result)` returns.

        `build` runs with the state current across processes and must not mutate it;
        raising from it aborts this commit only. Returns `result` once the records
        are fsynced; raises StoreError if they could not be.
        """
        ticket = _Ticket(build, list(blobs))
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
        try:
            with self._writer_lock():
                with self._mu:
                    self._catch_up(truncate_torn=True)
                refs = self.blobs.append([b for t in batch for b in t.blobs])
                lines = []
                with self._mu:
                    for t in batch:
                        mine, refs = refs[:len(t.blobs)], refs[len(t.blobs):]
                        try:
                            records, t.result = t.build(self.state, mine)
                        except Exception as exc:  # validation failure: this ticket only
                            t.error = exc
                            continue
                        for record in records:
                            self._seq += 1
                            record["seq"] = self._seq
                            lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
                            # Applied now so later tickets in the batch see it; undone by
                            # a reload below if the write fails.
                            self.state.apply(record)
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

    def _append_lines(self, lines) -> None:
        """Append to the journal (caller holds the writer flock and has just caught up,
        so `_journal_ino` is the journal's current inode)."""
        data = ("\n".join(lines) + "\n").encode("utf-8")
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

    # ---------------------------------------------------------------- compaction

    def journal_bytes(self) -> int:
        return self._journal_offset

    def compact(self) -> None:
        """Fold the journal into a fresh snapshot."""
        with safeio.flocked(self.lock_path, exclusive=True):
            with self._mu:
                self._catch_up(truncate_torn=True)
                self._snapshot_and_reset_journal()

    def _snapshot_and_reset_journal(self) -> None:
        """(Caller holds the exclusive flock and _mu, and has caught up.)"""
        snapshot = {"format": SNAPSHOT_FORMAT, "seq": self._seq, "state": self.state.dump()}
        safeio.write_json_atomic(self.snapshot_path, snapshot)
        fresh = self.journal_path + ".new"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, safeio.FILE_MODE)
        os.fsync(fd)
        os.close(fd)
        os.replace(fresh, self.journal_path)
        safeio.fsync_dir(self.home)
        self._journal_ino = os.stat(self.journal_path).st_ino
        self._journal_offset = 0

    # ---------------------------------------------------------------- blob reclamation

    def _pack_usage(self) -> tuple:
        """(pack -> size, pack -> live bytes, pack -> live refs) (caller holds _mu)."""
        sizes = self.blobs.sizes()
        live = dict.fromkeys(sizes, 0)
        refs = {}
        for holder, key in self.state.blob_holders():
            ref = holder[key]
            pack, _offset, length = ref.split(":")
            live[pack] = live.get(pack, 0) + int(length)
            refs.setdefault(pack, set()).add(ref)
        return sizes, live, refs

    def reclaim_blobs(self, min_dead_bytes: int = RECLAIM_MIN_DEAD_BYTES, always_compact: bool = False,
                      max_packs: int = None) -> dict:
        """Give back the disk space of deleted messages' bodies, raw copies and attachments.

        A pack mostly (≥ half, ≥ `min_dead_bytes`) made of dead blobs has its live blobs
        copied to a new pack; the refs are rewritten and made durable by a fresh snapshot.
        The emptied pack is removed only by the next pass, so a reader in this or another
        process still holding an old ref can read it meanwhile; a pack that nothing points
        at when a pass starts (emptied by the last pass, or orphaned by a crash during
        one) is removed then. The newest pack, where appends go, is never removed.
        Writes wait while live blobs are copied, so a pass can be held to the `max_packs`
        deadest packs (each under half a pack, some 128 MiB, to copy).
        """
        with safeio.flocked(self.lock_path, exclusive=True):
            with self._mu:
                self._catch_up(truncate_torn=True)
                sizes, live, refs = self._pack_usage()
                unused, mostly_dead = _reclaimable(sizes, live, min_dead_bytes)
                mostly_dead = sorted(mostly_dead, key=lambda p: live.get(p, 0) - sizes[p])[:max_packs]
                if mostly_dead:
                    moved = self.blobs.copy_to_new_pack(sorted(r for p in mostly_dead for r in refs.get(p, ())))
                    for holder, key in self.state.blob_holders():
                        holder[key] = moved.get(holder[key], holder[key])
                if mostly_dead or always_compact:
                    self._snapshot_and_reset_journal()
                for pack in unused:
                    self.blobs.remove(pack)
        freed = sum(sizes[p] for p in unused)
        if unused or mostly_dead:
            log("store", f"blob packs: {len(mostly_dead)} rewritten, {len(unused)} removed ({freed} bytes freed)")
        return {"rewritten": mostly_dead, "removed": unused, "bytes_freed": freed}

    def maybe_reclaim(self) -> bool:
        """The sweeper's hourly look at the packs: reclaim when there is something to."""
        now = time.monotonic()
        if now - self._last_reclaim_check < RECLAIM_INTERVAL_SECONDS:
            return False
        self._last_reclaim_check = now
        with self.reading():
            sizes, live, _refs = self._pack_usage()
        if any(_reclaimable(sizes, live, RECLAIM_MIN_DEAD_BYTES)):
            self.reclaim_blobs(max_packs=1)
            return True
        return False

    def maybe_compact(self) -> bool:
        try:
            snapshot_bytes = os.path.getsize(self.snapshot_path)
        except OSError:
            snapshot_bytes = 0
        if self._journal_offset > max(COMPACT_MIN_JOURNAL_BYTES, snapshot_bytes):
            self.compact()
            return True
        return False
