"""Snapshot storage: one layout in a local folder or in Blob Storage, written as a stream.

Data files are gzip-compressed JSON Lines written while pages arrive; compressed bytes leave
in blocks (Blob: stage_block / commit_block_list; local: a `.partial` file renamed at commit),
so memory stays flat however large the tenant is. A file becomes visible only when committed,
and the engine commits a run's files together, after every dataset has finished.

Failures to reach or write the destination surface as DestinationError, which names the setting
and shows at most the scheme and host of an endpoint (a SAS or key in a setting never shows).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from isal import isal_zlib

from connector.rawjson import RawRecord, full

BLOCK_SIZE = 4 * 1024 * 1024
# JSON Lines go to the compressor in pieces of exactly this size (the last one shorter), so a file's
# bytes depend only on its records, not on how they arrived in pages: a resumed listing replays its
# spool and writes the same file, byte for byte, as a run that was never interrupted.
COMPRESS_PIECE = 1024 * 1024
# ISA-L's level 2 (python-isal): the gzip files are about 20% larger than zlib's level 6 but cost a
# tenth of its CPU (1.8 against 25 us per user record, measured; see docs/performance.md). The files
# are plain gzip, read by any gzip reader.
GZIP_LEVEL = 2
PROBE_NAME = ".m365-connector-write-test"


def gzip_compressor() -> Any:
    """A streaming gzip compressor (zlib's compressobj interface; wbits 31: the gzip container)."""
    return isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)


def gzip_inflater() -> Any:
    """A streaming gzip decompressor (zlib's decompressobj interface), ISA-L's being about twice as fast."""
    return isal_zlib.decompressobj(31)


class DestinationError(Exception):
    """The snapshot destination cannot be reached or written: names the setting and the fix."""

    def __init__(self, setting: str, message: str):
        self.setting = setting
        self.message = message
        super().__init__(f"{setting}: {message}")


def origin(url: str) -> str:
    """Scheme and host of a URL, nothing else (no path, query, user info: a SAS never shows)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}" if parts.scheme else host


@dataclass
class FileInfo:
    path: str  # relative to the store root
    records: int
    bytes: int
    sha256: str


class Sink(Protocol):
    def put(self, block: bytes) -> None: ...
    def finish(self) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class StagedCopy(Protocol):
    """A copy written but invisible under its name until commit(); abort() drops it."""

    def commit(self) -> None: ...
    def abort(self) -> None: ...


class Lease(Protocol):
    def renew(self) -> None: ...
    def release(self) -> None: ...


class Store(Protocol):
    """Where snapshots go. Besides files, the Function app needs primitives that Blob Storage offers
    natively (create-if-absent, replace/delete-if-unchanged, leases with a readable holder) and a local
    folder emulates. `requests` counts the storage operations made (Blob: HTTP requests)."""

    location: str
    requests: int

    def prepare(self) -> None: ...
    def explain(self, exc: BaseException) -> DestinationError: ...
    def create(self, relpath: str, data: bytes) -> bool: ...
    def read_tagged(self, relpath: str) -> tuple[bytes, str] | None: ...
    def replace_if_unchanged(self, relpath: str, data: bytes, tag: str | None) -> bool: ...
    def delete_if_unchanged(self, relpath: str, tag: str) -> None: ...
    def delete(self, relpath: str) -> None: ...
    def discard(self, relpath: str) -> None: ...
    def lease(self, relpath: str, seconds: int, holder: Mapping[str, str] | None = None) -> Lease | None: ...
    def lease_holder(self, relpath: str) -> dict[str, str] | None: ...
    def sink(self, relpath: str) -> Sink: ...
    def stage_copy(self, src: str, dst: str) -> StagedCopy: ...
    def clear_temporaries(self, prefix: str) -> None: ...
    def discard_folder(self, prefix: str) -> None: ...
    def write_bytes(self, relpath: str, data: bytes, content_type: str) -> None: ...
    def read_bytes(self, relpath: str) -> bytes | None: ...
    def read_chunks(self, relpath: str) -> Iterator[bytes]: ...
    def list(self, prefix: str) -> list[str]: ...
    def list_first(self, prefix: str, limit: int) -> list[str]: ...
    def url(self, relpath: str) -> str: ...


def write_json(store: Store, relpath: str, obj: Any) -> None:
    store.write_bytes(relpath, orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n", "application/json")


def read_json(store: Store, relpath: str) -> Any | None:
    data = store.read_bytes(relpath)
    return None if data is None else orjson.loads(data)


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    dumps = orjson.dumps
    return b"\n".join([r.raw if type(r) is RawRecord else dumps(r) for r in records]) + b"\n"


class JsonlGzWriter:
    """Streams records to a sink as gzip'd JSON Lines, hashing and counting as it goes.

    `normalise` (connector.catalog.schema) fixes records in place and says how many values it changed; it runs
    only on a batch whose JSON holds an empty string at all (one scan of the serialised bytes tells),
    and the batch is serialised again only when it changed something."""

    def __init__(self, sink: Sink, relpath: str, normalise: Callable[[list[dict[str, Any]]], int] | None = None):
        self._sink = sink
        self._normalise = normalise
        self._relpath = relpath
        self._zip = gzip_compressor()
        self._raw = bytearray()  # JSON Lines not yet compressed (less than COMPRESS_PIECE)
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_len = 0
        self.records = 0
        self.bytes = 0
        self.info: FileInfo | None = None
        # Called with every piece of JSON Lines the file gets, replayed checkpoints included (the changes file
        # compares a full read with the previous snapshot as it is written: connector/collect/changes.py).
        self.taps: list[Callable[[bytes], Awaitable[None]]] = []

    def _emit(self, data: bytes) -> bytes | None:
        if data:
            self._pending.append(data)
            self._pending_len += len(data)
        if self._pending_len < BLOCK_SIZE:
            return None
        block = b"".join(self._pending)
        self._pending, self._pending_len = [], 0
        return block

    def _account(self, block: bytes) -> bytes:
        self._hash.update(block)
        self.bytes += len(block)
        return block

    async def write(self, records: list[dict[str, Any]]) -> bytes:
        """Add records; returns the JSON Lines written (a checkpoint spools them), b"" for none."""
        if not records:
            return b""
        # A RawRecord (connector/rawjson.py) is written as the JSON Graph sent; a batch with an empty
        # string in it has those records parsed for the normaliser.
        data = _jsonl(records)
        if self._normalise is not None and b'":""' in data:
            records = [full(r) if type(r) is RawRecord and b'":""' in r.raw else r for r in records]
            if self._normalise(records):
                data = _jsonl(records)
        await self.write_lines(data, len(records))
        return data

    async def write_lines(self, data: bytes, records: int) -> None:
        """Add JSON Lines already serialised (and normalised): `records` lines of them."""
        for tap in self.taps:
            await tap(data)
        self.records += records
        self._raw += data
        if len(self._raw) < COMPRESS_PIECE:
            return
        whole = len(self._raw) - len(self._raw) % COMPRESS_PIECE
        view = memoryview(self._raw)
        out = [self._zip.compress(view[i:i + COMPRESS_PIECE]) for i in range(0, whole, COMPRESS_PIECE)]
        view.release()
        del self._raw[:whole]
        block = self._emit(b"".join(out))
        if block is not None:
            await asyncio.to_thread(self._sink.put, self._account(block))

    async def finish(self) -> FileInfo:
        """Write the last bytes; the file stays invisible until commit()."""
        # Everything still pending goes in one last block (_emit would hand back, and so lose here, a block that
        # the tail made reach BLOCK_SIZE).
        tail = [self._zip.compress(bytes(self._raw))] if self._raw else []
        self._raw.clear()
        tail.append(self._zip.flush())
        block = b"".join(self._pending) + b"".join(tail)
        self._pending, self._pending_len = [], 0
        if block:
            await asyncio.to_thread(self._sink.put, self._account(block))
        await asyncio.to_thread(self._sink.finish)
        self.info = FileInfo(self._relpath, self.records, self.bytes, self._hash.hexdigest())
        return self.info

    def commit(self) -> None:
        self._sink.commit()

    async def close(self) -> FileInfo:
        """finish() and commit() at once, for a file that needs no company."""
        info = await self.finish()
        await asyncio.to_thread(self._sink.commit)
        return info

    async def abort(self) -> None:
        await asyncio.to_thread(self._sink.abort)

    def abort_now(self) -> None:
        self._sink.abort()
