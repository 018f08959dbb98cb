"""Append-only segment files of JSON lines, holding the blobs and the message records:

    blobs/NNNNNN.jsonl   a line is either a JSON string (one blob: raw message, long body,
                         HTML, attachment, in base64) or a JSON object (one message's
                         record: headers, snippet, body or where it is, attachments,
                         authentication results); the store knows which from where it points

One family of files for both, so a commit syncs one file before its journal records.

A line is found by its position, two numbers kept in the store's index: `seg << 40 |
offset` and the line's length. Lines are only ever appended (under the store's exclusive
flock, so the descriptor of the newest segment is cached); a segment mostly holding dead
lines is rewritten by copying its live lines into a new segment (`copy_to_new`), and removed
once nothing points into it.
"""

import base64
import json
import os
import threading

from . import safeio

SUFFIX = ".jsonl"
ROTATE_BYTES = 256 * 1024 * 1024
OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
READ_GAP_BYTES = 64 * 1024
READ_SPAN_BYTES = 1024 * 1024


def pack_position(seg: int, offset: int) -> int:
    return seg << OFFSET_BITS | offset


def unpack_position(pos: int) -> tuple:
    return pos >> OFFSET_BITS, pos & OFFSET_MASK


def parse_legacy_ref(ref: str) -> tuple:
    """`pack:offset:length` (the refs of store format 1) -> (position, length)."""
    seg, offset, length = ref.split(":")
    return pack_position(int(seg), int(offset)), int(length)


class Codec:
    """How one family's items become lines and back."""

    def encode(self, item: bytes) -> bytes:
        raise NotImplementedError

    def decode(self, line: bytes):
        raise NotImplementedError


class Base64Lines(Codec):
    """Each line a JSON string holding the item in base64 (binary data in a JSON-lines file)."""

    def encode(self, item: bytes) -> bytes:
        return b'"' + base64.b64encode(item) + b'"\n'

    def decode(self, line: bytes) -> bytes:
        return base64.b64decode(line.strip()[1:-1])


class JSONLines(Codec):
    """Each line one JSON object; items are given already serialised (compact, no newline)."""

    def encode(self, item: bytes) -> bytes:
        return item + b"\n"

    def decode(self, line: bytes):
        return json.loads(line)


class Segments:
    def __init__(self, folder: str, rotate_bytes: int = ROTATE_BYTES):
        self.folder = safeio.ensure_dir(folder)
        self.rotate_bytes = rotate_bytes
        self._seg = None        # number of the segment appends go to
        self._fd = None         # its cached append descriptor
        self._readers = {}      # segment number -> read descriptor
        self._readers_lock = threading.Lock()

    # ------------------------------------------------------------ names

    def _path(self, seg: int) -> str:
        return os.path.join(self.folder, f"{seg:06d}{SUFFIX}")

    def numbers(self) -> list:
        return sorted(int(n[:-len(SUFFIX)]) for n in os.listdir(self.folder)
                      if n.endswith(SUFFIX) and n[:-len(SUFFIX)].isdigit())

    def sizes(self) -> dict:
        """Segment number -> size in bytes."""
        out = {}
        for seg in self.numbers():
            try:
                out[seg] = os.path.getsize(self._path(seg))
            except FileNotFoundError:
                pass
        return out

    # ------------------------------------------------------------ appending

    def _open_current(self) -> tuple:
        """(descriptor, size) of the segment to append to (caller holds the store's flock)."""
        if self._fd is not None:
            st = os.fstat(self._fd)
            # A segment removed by reclamation has no links left: never append there.
            if st.st_size < self.rotate_bytes and st.st_nlink:
                return self._fd, st.st_size
            self.forget_current()
        numbers = self.numbers()
        newest = numbers[-1] if numbers else None
        if newest is not None and os.path.getsize(self._path(newest)) < self.rotate_bytes:
            seg = newest
        else:
            seg = (newest or 0) + 1
        fd = safeio.open_append(self._path(seg))
        if seg != newest:
            safeio.fsync_dir(self.folder)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # A crash mid-append left a partial line no record points at: cut it off. (Only
            # an opening can find one: this process always appends whole lines.)
            with open(self._path(seg), "rb") as f:
                size = f.read().rfind(b"\n") + 1
            os.ftruncate(fd, size)
        self._fd, self._seg = fd, seg
        return fd, size

    def append_lines(self, lines) -> list:
        """Write every line (each ending in a newline) durably; [(position, length)] of each."""
        if not lines:
            return []
        fd, offset = self._open_current()
        out = []
        for line in lines:
            out.append((pack_position(self._seg, offset), len(line)))
            offset += len(line)
        try:
            safeio.write_all(fd, b"".join(lines))
            safeio.sync_appended(fd)
        except OSError:
            self.forget_current()
            raise
        return out

    def forget_current(self) -> None:
        """Close the cached append descriptor; the next append opens the newest segment."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------ reading

    def _reader(self, seg: int) -> int:
        with self._readers_lock:
            fd = self._readers.get(seg)
            if fd is None:
                fd = self._readers[seg] = os.open(self._path(seg), os.O_RDONLY)
            return fd

    def read_line(self, pos: int, length: int) -> bytes:
        seg, offset = unpack_position(pos)
        line = os.pread(self._reader(seg), length, offset)
        if len(line) != length or not line.endswith(b"\n"):
            raise OSError(f"{self._path(seg)}: line at {offset} is cut short")
        return line

    def read_lines(self, spans) -> list:
        """The lines at [(position, length)], sorted by position, in that order. Neighbours
        less than READ_GAP_BYTES apart are read with one pread, up to READ_SPAN_BYTES: a
        FETCH of a whole mailbox reads thousands of records lying close together."""
        out = []
        i, count = 0, len(spans)
        while i < count:
            seg, start = unpack_position(spans[i][0])
            end = start + spans[i][1]
            j = i + 1
            while j < count:
                seg2, offset2 = unpack_position(spans[j][0])
                if seg2 != seg or offset2 - end > READ_GAP_BYTES or offset2 + spans[j][1] - start > READ_SPAN_BYTES:
                    break
                end = max(end, offset2 + spans[j][1])
                j += 1
            data = os.pread(self._reader(seg), end - start, start)
            for pos, length in spans[i:j]:
                at = (pos & OFFSET_MASK) - start
                line = data[at:at + length]
                if len(line) != length or not line.endswith(b"\n"):
                    raise OSError(f"{self._path(seg)}: line at {at + start} is cut short")
                out.append(line)
            i = j
        return out

    def close_readers(self) -> None:
        with self._readers_lock:
            for fd in self._readers.values():
                os.close(fd)
            self._readers.clear()

    def close(self) -> None:
        """Close every descriptor this object holds (it reopens what it needs if used again)."""
        self.forget_current()
        self.close_readers()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------ reclaiming

    def copy_to_new(self, positions) -> dict:
        """Copy the lines at `positions` [(pos, length)] into a segment of their own
        (fsynced); return old pos -> new pos. Appends go on in the newest segment, which
        this new one now is."""
        numbers = self.numbers()
        seg = (numbers[-1] if numbers else 0) + 1
        fd = safeio.open_append(self._path(seg))
        moved, offset = {}, 0
        try:
            for pos, length in positions:
                safeio.write_all(fd, self.read_line(pos, length))
                moved[pos] = pack_position(seg, offset)
                offset += length
            os.fsync(fd)
        finally:
            os.close(fd)
        safeio.fsync_dir(self.folder)
        self.forget_current()
        return moved

    def remove(self, seg: int) -> None:
        with self._readers_lock:
            fd = self._readers.pop(seg, None)
            if fd is not None:
                os.close(fd)
        os.unlink(self._path(seg))
        safeio.fsync_dir(self.folder)

    def newest(self):
        numbers = self.numbers()
        return numbers[-1] if numbers else None


class SegmentView:
    """One kind of line in the segments (blobs or records), with its codec."""

    def __init__(self, segments: Segments, codec: Codec):
        self.segments, self.codec = segments, codec

    def append(self, items) -> list:
        return self.segments.append_lines([self.codec.encode(item) for item in items])

    def encode(self, item) -> bytes:
        return self.codec.encode(item)

    def read_line(self, pos: int, length: int) -> bytes:
        return self.segments.read_line(pos, length)

    def read_lines(self, spans) -> list:
        return self.segments.read_lines(spans)

    def read(self, pos: int, length: int):
        return self.codec.decode(self.segments.read_line(pos, length))
