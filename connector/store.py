"""Snapshot storage: one layout in a local folder or in Blob Storage, written as a stream.

Data files are gzip-compressed JSON Lines written while pages arrive; compressed bytes leave
in blocks (Blob: stage_block / commit_block_list; local: a `.partial` file renamed at commit),
so memory stays flat however large the tenant is. A file becomes visible only when committed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from .config import Settings

BLOCK_SIZE = 4 * 1024 * 1024
GZIP_LEVEL = 6


@dataclass
class FileInfo:
    path: str  # relative to the store root
    records: int
    bytes: int
    sha256: str


class Sink(Protocol):
    def put(self, block: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class Lease(Protocol):
    def renew(self) -> None: ...
    def release(self) -> None: ...


class Store(Protocol):
    """Where snapshots go. Besides files, the Function app needs three primitives that Blob Storage
    offers natively (create-if-absent, delete-if-unchanged, leases) and a local folder emulates."""

    location: str

    def prepare(self) -> None: ...
    def create(self, relpath: str, data: bytes) -> bool: ...
    def read_tagged(self, relpath: str) -> tuple[bytes, str] | None: ...
    def delete_if_unchanged(self, relpath: str, tag: str) -> None: ...
    def lease(self, relpath: str, seconds: int) -> Lease | None: ...
    def sink(self, relpath: str) -> Sink: ...
    def write_bytes(self, relpath: str, data: bytes, content_type: str) -> None: ...
    def read_bytes(self, relpath: str) -> bytes | None: ...
    def read_chunks(self, relpath: str) -> Iterator[bytes]: ...
    def list(self, prefix: str) -> list[str]: ...
    def url(self, relpath: str) -> str: ...


def write_json(store: Store, relpath: str, obj: Any) -> None:
    store.write_bytes(relpath, orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n", "application/json")


def read_json(store: Store, relpath: str) -> Any | None:
    data = store.read_bytes(relpath)
    return None if data is None else orjson.loads(data)


class JsonlGzWriter:
    """Streams records to a sink as gzip'd JSON Lines, hashing and counting as it goes."""

    def __init__(self, sink: Sink, relpath: str):
        self._sink = sink
        self._relpath = relpath
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: gzip container
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_len = 0
        self.records = 0
        self.bytes = 0

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

    async def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        dumps = orjson.dumps
        data = b"\n".join(map(dumps, records)) + b"\n"
        self.records += len(records)
        block = self._emit(self._zip.compress(data))
        if block is not None:
            await asyncio.to_thread(self._sink.put, self._account(block))

    async def close(self) -> FileInfo:
        self._emit(self._zip.flush())
        block = b"".join(self._pending)
        self._pending = []
        if block:
            await asyncio.to_thread(self._sink.put, self._account(block))
        await asyncio.to_thread(self._sink.commit)
        return FileInfo(self._relpath, self.records, self.bytes, self._hash.hexdigest())

    async def abort(self) -> None:
        await asyncio.to_thread(self._sink.abort)


class _LocalSink:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._final = path
        self._tmp = path.with_name(path.name + ".partial")
        self._fh = open(self._tmp, "wb")

    def put(self, block: bytes) -> None:
        self._fh.write(block)

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self._final)

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


class LocalStore:
    """SNAPSHOT_DIR: the same layout as Blob Storage, in a folder."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.location = str(self.root)

    def _path(self, relpath: str) -> Path:
        path = (self.root / relpath).resolve()
        if self.root not in path.parents:
            raise ValueError(f"path escapes the snapshot folder: {relpath}")
        return path

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def sink(self, relpath: str) -> Sink:
        return _LocalSink(self._path(relpath))

    def write_bytes(self, relpath: str, data: bytes, content_type: str = "") -> None:
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: readers see the old or the new file, never half of one

    def read_bytes(self, relpath: str) -> bytes | None:
        try:
            return self._path(relpath).read_bytes()
        except FileNotFoundError:
            return None

    def read_chunks(self, relpath: str) -> Iterator[bytes]:
        """The file as a stream of blocks (reading back large files without holding them); FileNotFoundError."""
        with open(self._path(relpath), "rb") as fh:
            while block := fh.read(BLOCK_SIZE):
                yield block

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()
                      and not p.name.endswith(".partial"))

    def url(self, relpath: str) -> str:
        return str(self._path(relpath))

    def create(self, relpath: str, data: bytes) -> bool:
        """Write only if absent (exclusive create); False when the file exists."""
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        return True

    def read_tagged(self, relpath: str) -> tuple[bytes, str] | None:
        """Content and a tag that changes with it (the content itself: files have no ETag)."""
        data = self.read_bytes(relpath)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())

    def delete_if_unchanged(self, relpath: str, tag: str) -> None:
        current = self.read_tagged(relpath)
        if current is not None and current[1] == tag:
            self._path(relpath).unlink(missing_ok=True)

    def lease(self, relpath: str, seconds: int) -> Lease | None:
        """An exclusive lock on a file (flock); the OS releases it if the process dies."""
        import fcntl

        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+b")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
        return _FileLease(fh)


class _FileLease:
    def __init__(self, fh: Any):
        self._fh = fh

    def renew(self) -> None:
        """A file lock does not expire."""

    def release(self) -> None:
        self._fh.close()


class _BlobSink:
    def __init__(self, blob: Any):
        self._blob = blob
        self._ids: list[str] = []

    def put(self, block: bytes) -> None:
        block_id = base64.b64encode(f"{len(self._ids):08d}".encode()).decode()
        self._blob.stage_block(block_id, block, length=len(block))
        self._ids.append(block_id)

    def commit(self) -> None:
        from azure.storage.blob import BlobBlock, ContentSettings

        self._blob.commit_block_list([BlobBlock(block_id=i) for i in self._ids],
                                     content_settings=ContentSettings(content_type="application/gzip"))

    def abort(self) -> None:
        # Staged blocks that are never committed are discarded by the service after 7 days,
        # and a blob that was never committed does not exist for readers.
        self._ids.clear()


class BlobStore:
    """Blob Storage: account URL with managed identity in Azure, or a connection string (Azurite)."""

    def __init__(self, container: str, *, account_url: str | None = None, connection_string: str | None = None):
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        # Storage's default retry waits 15 s, then 45 s, ...; a run should say within seconds that its
        # destination is unusable, and Blob answers quickly when it is up.
        retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3)
        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string, retry_policy=retry)
        else:
            from azure.identity import DefaultAzureCredential

            service = BlobServiceClient(account_url or "", credential=DefaultAzureCredential(), retry_policy=retry)
        self.service = service
        self.container = service.get_container_client(container)
        self.location = f"{service.url.rstrip('/')}/{container}"
        self._ensured = False

    def prepare(self) -> None:
        """Create the container if needed: a destination that cannot be written fails the run before
        any Graph request is spent."""
        self._ensure()

    def _ensure(self) -> None:
        if self._ensured:
            return
        from azure.core.exceptions import ResourceExistsError

        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        self._ensured = True

    def sink(self, relpath: str) -> Sink:
        self._ensure()
        return _BlobSink(self.container.get_blob_client(relpath))

    def write_bytes(self, relpath: str, data: bytes, content_type: str = "application/json") -> None:
        from azure.storage.blob import ContentSettings

        self._ensure()
        self.container.upload_blob(relpath, data, overwrite=True,
                                   content_settings=ContentSettings(content_type=content_type))

    def read_bytes(self, relpath: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.container.download_blob(relpath).readall()
        except ResourceNotFoundError:
            return None

    def read_chunks(self, relpath: str) -> Iterator[bytes]:
        """The blob as a stream of chunks (reading back large files without holding them); FileNotFoundError."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self.container.download_blob(relpath)
        except ResourceNotFoundError:
            raise FileNotFoundError(relpath) from None
        yield from downloader.chunks()

    def list(self, prefix: str) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return sorted(b.name for b in self.container.list_blobs(name_starts_with=prefix))
        except ResourceNotFoundError:
            return []

    def url(self, relpath: str) -> str:
        return f"{self.location}/{relpath}"

    def create(self, relpath: str, data: bytes) -> bool:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        self._ensure()
        try:
            self.container.upload_blob(relpath, data, overwrite=False,
                                       content_settings=ContentSettings(content_type="application/json"))
        except ResourceExistsError:
            return False
        return True

    def read_tagged(self, relpath: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self.container.download_blob(relpath)
            return downloader.readall(), downloader.properties.etag
        except ResourceNotFoundError:
            return None

    def delete_if_unchanged(self, relpath: str, tag: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            self.container.delete_blob(relpath, etag=tag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass

    def lease(self, relpath: str, seconds: int) -> Lease | None:
        """A Blob lease (15-60 s, renewable); one that is not renewed expires, so a crashed holder
        does not block the next one for long."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError
        from azure.storage.blob import BlobLeaseClient

        self._ensure()
        blob = self.container.get_blob_client(relpath)
        try:
            blob.upload_blob(b"", overwrite=False)
        except (ResourceExistsError, HttpResponseError):
            pass  # exists (perhaps leased by another run)
        lease = BlobLeaseClient(blob)
        try:
            lease.acquire(lease_duration=seconds)
        except HttpResponseError as exc:
            if exc.status_code == 409:
                return None
            raise
        return lease


def open_store(settings: Settings) -> Store:
    if settings.snapshot_dir:
        return LocalStore(settings.snapshot_dir)
    return BlobStore(settings.snapshot_container, account_url=settings.snapshot_account_url,
                     connection_string=settings.snapshot_connection_string)
