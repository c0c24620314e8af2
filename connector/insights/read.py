"""Reading a run's committed files back from the store as streams, and writing derived files the same way.

Insights run after every data file is committed and read them back exactly as a downstream reader would,
one block at a time, so memory does not grow with the size of the files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec
import orjson

from connector.store.contract import Store, gzip_compressor, gzip_inflater

PIECE = 1 << 20  # derived files are compressed in pieces of about this much JSON
# Derived files are written in blocks of about this much (a Blob block each, a few dozen a file at most): smaller
# than the data files' 4 MiB, so that the insights' buffers stay small beside the collection's.
DERIVED_BLOCK = 1 << 20
T = TypeVar("T")
SLICE = 64 << 10  # compressed bytes inflated at a time: a 4 MiB block of JSON can be 50 MiB unpacked


def lines(store: Store, relpath: str) -> Iterator[bytes]:
    """Lines of a gzip JSON Lines file in the store, streamed."""
    inflate = gzip_inflater()
    rest = b""
    for block in store.read_chunks(relpath):
        view = memoryview(block)
        for start in range(0, len(view), SLICE):
            parts = inflate.decompress(view[start:start + SLICE]).split(b"\n")
            parts[0] = rest + parts[0]  # the line begun in the previous slice (not the whole slice copied behind it)
            rest = parts.pop()
            yield from parts
    parts = (rest + inflate.flush()).split(b"\n")
    yield from parts


def records(store: Store, relpath: str, skip: bytes | None = None) -> Iterator[dict[str, Any]]:
    """Records of a gzip JSON Lines file in the store, streamed. `skip` names an array of flat objects
    (`b'"assignedPlans":['`) that is left out, empty, before parsing: the bulk of a user record that the
    insights do not read. The snapshot writer's compact JSON makes the first `]` after it its end; a line
    that does not parse that way is parsed whole."""
    loads = orjson.loads
    if skip is None:
        for line in lines(store, relpath):
            if line:
                yield loads(line)
        return
    width = len(skip)
    for line in lines(store, relpath):
        if not line:
            continue
        start = line.find(skip)
        if start < 0:
            yield loads(line)
            continue
        try:
            yield loads(line[:start + width] + line[line.index(b"]", start):])
        except (ValueError, orjson.JSONDecodeError):
            yield loads(line)


def batches(store: Store, relpath: str, kind: type[T]) -> Iterator[list[T]]:
    """Records of a gzip JSON Lines file in the store as msgspec Structs of `kind`, streamed a few hundred at a
    time: only the fields `kind` declares are built (msgspec skips the others without making objects of them),
    and the lines are decoded where they were inflated, without a bytes object each."""
    decode = msgspec.json.Decoder(kind).decode_lines
    inflate = gzip_inflater()
    rest = b""
    for block in store.read_chunks(relpath):
        view = memoryview(block)
        for start in range(0, len(view), SLICE):
            data = inflate.decompress(view[start:start + SLICE])
            end = data.rfind(b"\n") + 1
            if end:  # the line begun in the previous slice, then this slice's whole lines, decoded in place
                first = data.find(b"\n") + 1 if rest else 0
                batch = decode(rest + data[:first]) if rest else []
                batch += decode(memoryview(data)[first:end])
                yield batch
                rest = data[end:]
            else:
                rest += data
    yield decode(rest + inflate.flush())


class GzLines:
    """Writes records to the store as gzip JSON Lines in blocks; counts, sizes and hashes as it goes."""

    def __init__(self, store: Store, relpath: str):
        self.relpath = relpath
        self._sink = store.sink(relpath)
        self._zip = gzip_compressor()
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._size = 0
        self._lines: list[bytes] = []
        self._lines_size = 0
        self.records = 0
        self.bytes = 0

    def _put(self, data: bytes, force: bool = False) -> None:
        if data:
            self._pending.append(data)
            self._size += len(data)
        if self._size >= DERIVED_BLOCK or (force and self._pending):
            block = b"".join(self._pending)
            self._pending, self._size = [], 0
            self._hash.update(block)
            self.bytes += len(block)
            self._sink.put(block)

    def write(self, record: dict[str, Any]) -> None:
        self.write_line(orjson.dumps(record))

    def write_line(self, line: bytes) -> None:
        """One record already serialised as a line of compact JSON (no newline)."""
        self.records += 1
        self._lines.append(line)
        self._lines_size += len(line) + 1
        if self._lines_size >= PIECE:
            self._deflate()

    def write_lines(self, lines: list[bytes]) -> None:
        """Records already serialised as lines of compact JSON (no newline), in one call; compressed in the same
        pieces as line by line (the compressor's output depends on them)."""
        self.records += len(lines)
        pending, size = self._lines, self._lines_size
        for line in lines:
            pending.append(line)
            size += len(line) + 1
            if size >= PIECE:
                self._lines_size = size
                self._deflate()
                pending, size = self._lines, 0
        self._lines_size = size

    def _deflate(self) -> None:
        if self._lines:
            self._put(self._zip.compress(b"\n".join(self._lines) + b"\n"))
            self._lines, self._lines_size = [], 0

    def finish(self) -> dict[str, Any]:
        """Write what is left; the file stays invisible until commit()."""
        self._deflate()
        self._put(self._zip.flush(), force=True)
        return {"bytes": self.bytes, "sha256": self._hash.hexdigest(), "records": self.records}

    def commit(self) -> None:
        self._sink.commit()

    def close(self) -> dict[str, Any]:
        info = self.finish()
        self.commit()
        return info

    def abort(self) -> None:
        self._sink.abort()


def put(store: Store, relpath: str, data: bytes, content_type: str) -> dict[str, Any]:
    store.write_bytes(relpath, data, content_type)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
