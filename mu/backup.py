"""`mu.py backup DEST`: a consistent copy of MU_HOME taken while the server runs, and
`mu.py check`: what is wrong with a store, if anything.

A backup holds the store's lock only long enough to note what "now" is: the snapshot file
(opened, so a compaction that replaces it does not matter), the journal's length and the
length of every segment. Everything below those lengths never changes (the journal and the
segments are only appended to), so the copy is made without the lock while the server goes
on writing; a reclamation pass meanwhile may rewrite segments but does not remove any until
the backup is done (`.backup.lock`). A server started on the copy has everything that was
acknowledged before the backup began.
"""

import base64
import binascii
import fcntl
import json
import os
import shutil

from . import safeio
from .segments import SUFFIX, unpack_position

BACKUP_LOCK = ".backup.lock"
_COPY_CHUNK = 4 * 1024 * 1024


class BackupError(Exception):
    pass


def _copy_prefix(src_fd: int, dest_path: str, length: int) -> None:
    fd = os.open(dest_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, safeio.FILE_MODE)
    try:
        offset = 0
        while offset < length:
            chunk = os.pread(src_fd, min(_COPY_CHUNK, length - offset), offset)
            if not chunk:
                raise BackupError(f"{dest_path}: source ended at {offset} of {length} bytes")
            safeio.write_all(fd, chunk)
            offset += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(store, dest: str) -> dict:
    """Copy `store` to `dest` (which must not exist, or be an empty folder)."""
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise BackupError(f"{dest}: exists and is not an empty folder")
    if dest == store.home or dest.startswith(store.home + os.sep):
        raise BackupError(f"{dest}: inside MU_HOME")
    guard = safeio.open_lock_file(os.path.join(store.home, BACKUP_LOCK))
    fcntl.flock(guard, fcntl.LOCK_SH)   # no segment is removed while this is held
    opened = {}
    try:
        with safeio.flocked(store.lock_path, exclusive=True):
            opened["mail.json"] = (os.open(store.snapshot_path, os.O_RDONLY), None)
            journal = os.open(store.journal_path, os.O_RDONLY)
            opened["mail.journal"] = (journal, os.fstat(journal).st_size)
            for family in ("blobs",):
                folder = os.path.join(store.home, family)
                for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                    if name.endswith(SUFFIX):
                        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                        opened[os.path.join(family, name)] = (fd, os.fstat(fd).st_size)
        safeio.ensure_dir(dest)
        safeio.ensure_dir(os.path.join(dest, "blobs"))
        copied = 0
        for name, (fd, length) in opened.items():
            length = os.fstat(fd).st_size if length is None else length
            _copy_prefix(fd, os.path.join(dest, name), length)
            copied += length
        for name in ("blocklist.json",):
            src = os.path.join(store.home, name)
            if os.path.exists(src):
                with safeio.flocked(os.path.join(store.home, ".blocklist.lock")):
                    with open(src, "rb") as f:
                        safeio.write_atomic(os.path.join(dest, name), f.read())
        keys = os.path.join(store.home, "keys")
        if os.path.isdir(keys):
            safeio.ensure_dir(os.path.join(dest, "keys"))
            for name in os.listdir(keys):
                target = os.path.join(dest, "keys", name)
                shutil.copyfile(os.path.join(keys, name), target)
                os.chmod(target, safeio.FILE_MODE)
        for folder in (dest, os.path.join(dest, "blobs"), os.path.join(dest, "keys")):
            if os.path.isdir(folder):
                safeio.fsync_dir(folder)
        return {"files": len(opened), "bytes": copied}
    finally:
        for fd, _length in opened.values():
            os.close(fd)
        os.close(guard)


def removal_allowed(home: str) -> bool:
    """Whether segments may be removed now (no backup is copying them)."""
    fd = safeio.open_lock_file(os.path.join(home, BACKUP_LOCK))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# ---------------------------------------------------------------- check

def check(store) -> tuple:
    """(problems, facts): lines saying what is wrong, and what was checked."""
    problems, facts = [], []
    with open(store.snapshot_path, "rb") as f:
        try:
            snapshot = json.load(f)
            facts.append(f"snapshot {store.snapshot_path}: format {snapshot.get('format')}, seq {snapshot.get('seq')}")
        except ValueError as exc:
            problems.append(f"snapshot {store.snapshot_path} does not parse: {exc}")
    with open(store.journal_path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            if number == len(lines):
                facts.append("journal: the last line is cut short (a write that was never acknowledged; dropped on start)")
            else:
                problems.append(f"journal line {number} does not parse")
    facts.append(f"journal: {sum(1 for l in lines if l.strip())} records")
    with store.reading() as state:
        live = sorted(state.live_messages())
        table = state.messages
        for user, um in state.mail.items():
            for box in um.boxes.values():
                if any(a >= b for a, b in zip(box.uids, box.uids[1:])):
                    problems.append(f"{user}/{box.name}: UIDs out of order")
                if len(box) and box.uidnext <= box.uids[-1]:
                    problems.append(f"{user}/{box.name}: UIDNEXT {box.uidnext} not above UID {box.uids[-1]}")
                if any(n >= len(table) for n in box.msgs):
                    problems.append(f"{user}/{box.name}: an entry names a message that does not exist")
        for qid, entry in state.queue.items():
            if table.number_of(entry.get("msg", "")) is None:
                problems.append(f"queue entry {qid}: its message {entry.get('msg')} does not exist")
    blob_count = 0
    for start in range(0, len(live), 5000):
        with store.reading() as state:
            table, blobs = state.messages, state.blobs
            work = [(n, table.meta_pos[n], table.meta_len[n],
                     [(blobs.pos[b], blobs.len[b]) for b in state.blob_numbers(n)]) for n in live[start:start + 5000]]
        for n, pos, length, blob_positions in work:
            try:
                record = json.loads(store.meta.read_line(pos, length))
            except (OSError, ValueError) as exc:
                problems.append(f"message {n}: record at {_where('blobs', pos)} unreadable: {exc}")
                continue
            for field in ("raw_blob", "body_blob", "html_blob"):
                index = record.get(field)
                if isinstance(index, int) and not 0 <= index < len(blob_positions):
                    problems.append(f"message {n}: {field} {index} is not one of its {len(blob_positions)} blobs")
            for bpos, blen in blob_positions:
                blob_count += 1
                try:
                    line = store.blobs.read_line(bpos, blen)
                    if not (line.startswith(b'"') and line.endswith(b'"\n')):
                        raise ValueError("not a JSON string")
                    base64.b64decode(line[1:-2], validate=True)
                except (OSError, ValueError, binascii.Error) as exc:
                    problems.append(f"message {n}: blob at {_where('blobs', bpos)} unreadable: {exc}")
    facts.append(f"{len(live)} messages and {blob_count} blobs: every record and blob read back")
    return problems, facts


def _where(family: str, pos: int) -> str:
    seg, offset = unpack_position(pos)
    return f"{family}/{seg:06d}{SUFFIX}:{offset}"
