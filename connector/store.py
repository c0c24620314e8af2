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
import base64
import errno
import hashlib
import itertools
import os
import socket
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from .config import Settings

BLOCK_SIZE = 4 * 1024 * 1024
GZIP_LEVEL = 6
PROBE_NAME = ".m365-connector-write-test"


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
    def copy(self, src: str, dst: str) -> None: ...
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


class JsonlGzWriter:
    """Streams records to a sink as gzip'd JSON Lines, hashing and counting as it goes.

    `normalise` (connector.schema) fixes records in place and says how many values it changed; it runs
    only on a batch whose JSON holds an empty string at all (one scan of the serialised bytes tells),
    and the batch is serialised again only when it changed something."""

    def __init__(self, sink: Sink, relpath: str, normalise: Callable[[list[dict[str, Any]]], int] | None = None):
        self._sink = sink
        self._normalise = normalise
        self._relpath = relpath
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: gzip container
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_len = 0
        self.records = 0
        self.bytes = 0
        self.info: FileInfo | None = None

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
        if self._normalise is not None and b'":""' in data and self._normalise(records):
            data = b"\n".join(map(dumps, records)) + b"\n"
        self.records += len(records)
        block = self._emit(self._zip.compress(data))
        if block is not None:
            await asyncio.to_thread(self._sink.put, self._account(block))

    async def finish(self) -> FileInfo:
        """Write the last bytes; the file stays invisible until commit()."""
        self._emit(self._zip.flush())
        block = b"".join(self._pending)
        self._pending = []
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


class _LocalSink:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._final = path
        self._tmp = path.with_name(path.name + ".partial")
        self._fh = open(self._tmp, "wb")

    def put(self, block: bytes) -> None:
        self._fh.write(block)

    def finish(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def commit(self) -> None:
        if not self._fh.closed:
            self.finish()
        os.replace(self._tmp, self._final)

    def abort(self) -> None:
        try:
            self._fh.close()  # may raise again on a full disk: the file goes all the same
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


class LocalStore:
    """SNAPSHOT_DIR: the same layout as Blob Storage, in a folder."""

    setting = "SNAPSHOT_DIR"

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.location = str(self.root)
        self.requests = 0

    def _path(self, relpath: str) -> Path:
        path = (self.root / relpath).resolve()
        if self.root not in path.parents:
            raise ValueError(f"path escapes the snapshot folder: {relpath}")
        return path

    def prepare(self) -> None:
        """Create the folder and prove it can be written, before any Graph request is spent."""
        probe = self.root / f"{PROBE_NAME}-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as fh:
                fh.write(b"probe")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            hint = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                    errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full",
                    errno.ENOTDIR: "a part of the path is a file"}.get(exc.errno or 0, reason.lower())
            raise DestinationError(self.setting, f"cannot write to {self.root} ({hint}). Point SNAPSHOT_DIR "
                                                 "(or --out) at a folder this process may write.") from exc
        finally:
            probe.unlink(missing_ok=True)

    def explain(self, exc: BaseException) -> DestinationError:
        """A failure of this folder as one line naming the setting."""
        if isinstance(exc, DestinationError):
            return exc
        reason = os.strerror(exc.errno).lower() if isinstance(exc, OSError) and exc.errno else type(exc).__name__
        return DestinationError(self.setting, f"writing to {self.root} failed ({reason}).")

    def sink(self, relpath: str) -> Sink:
        self.requests += 1
        return _LocalSink(self._path(relpath))

    def write_bytes(self, relpath: str, data: bytes, content_type: str = "") -> None:
        self.requests += 1
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)  # atomic: readers see the old or the new file, never half of one
        finally:
            tmp.unlink(missing_ok=True)  # a full disk must not leave the .partial behind

    def read_bytes(self, relpath: str) -> bytes | None:
        self.requests += 1
        try:
            return self._path(relpath).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_chunks(self, relpath: str) -> Iterator[bytes]:
        """The file as a stream of blocks (reading back large files without holding them); FileNotFoundError."""
        with open(self._path(relpath), "rb") as fh:
            while block := fh.read(BLOCK_SIZE):
                yield block

    def list(self, prefix: str) -> list[str]:
        self.requests += 1
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()
                      and not p.name.endswith(".partial") and not p.name.startswith("."))

    def list_first(self, prefix: str, limit: int) -> list[str]:
        """The first `limit` file names directly in the folder `prefix`, in name order."""
        self.requests += 1
        base = self._path(prefix)
        try:
            names = sorted(e.name for e in os.scandir(base)
                           if e.is_file() and not e.name.endswith(".partial") and not e.name.startswith("."))
        except FileNotFoundError:
            return []
        return [f"{prefix.rstrip('/')}/{n}" for n in names[:limit]]

    def url(self, relpath: str) -> str:
        return str(self._path(relpath))

    def create(self, relpath: str, data: bytes) -> bool:
        """Write only if absent (exclusive create); False when the file exists."""
        self.requests += 1
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

    def _guard(self, relpath: str) -> Any:
        """An flock beside a file, so compare-and-replace is atomic among processes on this machine."""
        import fcntl

        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path.with_name(f".{path.name}.guard"), "a+b")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        return fh

    def replace_if_unchanged(self, relpath: str, data: bytes, tag: str | None) -> bool:
        """Write only if the file still has `tag` (None: only if it does not exist)."""
        with self._guard(relpath):
            current = self.read_tagged(relpath)
            if (current[1] if current else None) != tag:
                return False
            self.write_bytes(relpath, data)
            return True

    def delete_if_unchanged(self, relpath: str, tag: str) -> None:
        with self._guard(relpath):
            current = self.read_tagged(relpath)
            if current is not None and current[1] == tag:
                self._path(relpath).unlink(missing_ok=True)

    def delete(self, relpath: str) -> None:
        self.requests += 1
        self._path(relpath).unlink(missing_ok=True)

    def discard(self, relpath: str) -> None:
        """Remove a file and whatever a writer left of it (its .partial)."""
        path = self._path(relpath)
        self.requests += 1
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".partial").unlink(missing_ok=True)

    def copy(self, src: str, dst: str) -> None:
        """A copy that appears whole (written beside, then renamed)."""
        import shutil

        self.requests += 1
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        try:
            shutil.copyfile(self._path(src), tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def lease(self, relpath: str, seconds: int, holder: Mapping[str, str] | None = None) -> Lease | None:
        """An exclusive lock on a file (flock); the OS releases it if the process dies. The holder is
        written into the file, so others can tell who holds it."""
        import fcntl

        self.requests += 1
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+b")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
        fh.seek(0)
        fh.truncate()
        fh.write(orjson.dumps(dict(holder or {})))
        fh.flush()
        return _FileLease(fh)

    def lease_holder(self, relpath: str) -> dict[str, str] | None:
        """Who holds the lock on `relpath`, or None when nobody does."""
        import fcntl

        self.requests += 1
        try:
            fh = open(self._path(relpath), "rb")
        except FileNotFoundError:
            return None
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = orjson.loads(fh.read() or b"{}")
                except ValueError:
                    holder = {}
                return holder if isinstance(holder, dict) else {}
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return None


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

    def finish(self) -> None:
        """Staged blocks are invisible to readers until the block list is committed."""

    def commit(self) -> None:
        from azure.storage.blob import BlobBlock, ContentSettings

        self._blob.commit_block_list([BlobBlock(block_id=i) for i in self._ids],
                                     content_settings=ContentSettings(content_type="application/gzip"))

    def abort(self) -> None:
        """Drop the staged blocks now (an empty block list discards them, then the empty blob goes). If that
        fails, they stay invisible and the service discards uncommitted blocks after 7 days."""
        if not self._ids:
            return
        self._ids.clear()
        try:
            self._blob.commit_block_list([])
            self._blob.delete_blob()
        except Exception:
            pass


def _holder_metadata(holder: Mapping[str, str]) -> dict[str, str]:
    """Blob metadata names are C# identifiers and values ASCII."""
    return {k.lower(): str(v).encode("ascii", "replace").decode()[:256] for k, v in holder.items()
            if k.isidentifier()}


class BlobStore:
    """Blob Storage: account URL with managed identity in Azure, or a connection string (Azurite).

    `interactive` stores (the HTTP API) give up within a few seconds when Storage cannot be reached, so a
    caller gets a 503 instead of waiting; the collector retries longer.
    """

    def __init__(self, container: str, *, account_url: str | None = None, connection_string: str | None = None,
                 interactive: bool = False):
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        # Storage's default retry waits 15 s, then 45 s, ...; a run should say within seconds that its
        # destination is unusable, and Blob answers quickly when it is up.
        if interactive:
            retry = ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=1, random_jitter_range=0.25)
            timeouts = {"connection_timeout": 3, "read_timeout": 15}
        else:
            retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1)
            timeouts = {"connection_timeout": 10, "read_timeout": 120}
        counter = itertools.count(1)
        self._counter = counter
        self._requests = 0

        def count(_request: Any) -> None:
            self._requests = next(counter)

        options: dict[str, Any] = {"retry_policy": retry, "raw_request_hook": count, **timeouts}
        self.setting = "SNAPSHOT_CONNECTION_STRING" if connection_string else "SNAPSHOT_ACCOUNT_URL"
        try:
            if connection_string:
                service = BlobServiceClient.from_connection_string(connection_string, **options)
            else:
                from azure.identity import DefaultAzureCredential

                service = BlobServiceClient(account_url or "", credential=DefaultAzureCredential(), **options)
        except ValueError as exc:  # the SDK's message may quote the value: say what, not that
            raise DestinationError(self.setting, "is not a usable storage connection string or account URL "
                                                 "(expected AccountName=...;AccountKey=...;BlobEndpoint=... or "
                                                 "https://<account>.blob.core.windows.net).") from exc
        self.service = service
        self.container_name = container
        self.container = service.get_container_client(container)
        endpoint = urlsplit(service.url)  # no query: a SAS in a connection string must not reach any output
        self.location = f"{endpoint.scheme}://{endpoint.netloc}{endpoint.path.rstrip('/')}/{container}"
        self._ensured = False

    @property
    def requests(self) -> int:
        return self._requests

    def prepare(self) -> None:
        """Create the container if needed and prove a blob can be written there: a destination that cannot
        be written fails the run before any Graph request is spent."""
        try:
            self._ensure()
            self.container.upload_blob(PROBE_NAME, b"probe", overwrite=True)
            self.container.delete_blob(PROBE_NAME)
        except Exception as exc:
            raise self.explain(exc) from exc

    def explain(self, exc: BaseException) -> DestinationError:
        """A Storage failure as one line naming the setting and the fix (no SAS, key or path in it)."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

        where = f"container {self.container_name} at {origin(self.location)}"
        if isinstance(exc, DestinationError):
            return exc
        if isinstance(exc, ServiceRequestError) or _is_network(exc):
            return DestinationError(self.setting, f"Blob Storage cannot be reached ({where}): check the endpoint, "
                                                  "DNS, firewall and that the account exists.")
        if isinstance(exc, ClientAuthenticationError):
            return DestinationError(self.setting, f"no identity could sign in to Blob Storage ({where}): enable "
                                                  "the managed identity (locally: az login) or use a connection "
                                                  "string.")
        if isinstance(exc, HttpResponseError) and exc.status_code in (401, 403):
            return DestinationError(self.setting, f"Blob Storage refused to let this identity write to {where} "
                                                  f"(HTTP {exc.status_code}): grant it 'Storage Blob Data "
                                                  "Contributor' on the account or container.")
        if isinstance(exc, HttpResponseError):
            code = getattr(exc, "error_code", None) or exc.status_code
            return DestinationError(self.setting, f"Blob Storage answered {code} for {where}.")
        return DestinationError(self.setting, f"writing to {where} failed ({type(exc).__name__}).")

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

    def list_first(self, prefix: str, limit: int) -> list[str]:
        """The first `limit` blob names under `prefix`, in name order: one List Blobs request."""
        from azure.core.exceptions import ResourceNotFoundError

        folder = prefix.rstrip("/") + "/"
        try:
            pages = self.container.list_blobs(name_starts_with=folder, results_per_page=limit).by_page()
            first = next(pages, [])
            return [b.name for b in first][:limit]
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

    def replace_if_unchanged(self, relpath: str, data: bytes, tag: str | None) -> bool:
        """Upload only if the blob still has ETag `tag` (None: only if it does not exist)."""
        if tag is None:
            return self.create(relpath, data)
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        try:
            self.container.upload_blob(relpath, data, overwrite=True, etag=tag,
                                       match_condition=MatchConditions.IfNotModified,
                                       content_settings=ContentSettings(content_type="application/json"))
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def delete_if_unchanged(self, relpath: str, tag: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            self.container.delete_blob(relpath, etag=tag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass

    def delete(self, relpath: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.container.delete_blob(relpath)
        except ResourceNotFoundError:
            pass

    def discard(self, relpath: str) -> None:
        """Remove a blob and its uncommitted blocks: committing an empty block list drops every staged
        block not in the list (Put Block List), then the empty blob is deleted."""
        from azure.core.exceptions import HttpResponseError

        try:
            self.container.get_blob_client(relpath).commit_block_list([])
        except HttpResponseError:
            pass
        self.delete(relpath)

    def copy(self, src: str, dst: str) -> None:
        """Stream a blob to another name in blocks (memory stays flat); the copy appears when committed.
        A server-side copy would need the source authorised separately for managed identities."""
        from azure.storage.blob import BlobBlock, ContentSettings

        source = self.container.download_blob(src)
        target = self.container.get_blob_client(dst)
        ids: list[str] = []
        pending = b""
        for chunk in source.chunks():
            pending += chunk
            if len(pending) >= BLOCK_SIZE:
                ids.append(base64.b64encode(f"{len(ids):08d}".encode()).decode())
                target.stage_block(ids[-1], pending, length=len(pending))
                pending = b""
        if pending or not ids:
            ids.append(base64.b64encode(f"{len(ids):08d}".encode()).decode())
            target.stage_block(ids[-1], pending, length=len(pending))
        content_type = source.properties.content_settings.content_type or "application/octet-stream"
        target.commit_block_list([BlobBlock(block_id=i) for i in ids],
                                 content_settings=ContentSettings(content_type=content_type))

    def lease(self, relpath: str, seconds: int, holder: Mapping[str, str] | None = None) -> Lease | None:
        """A Blob lease (15-60 s, renewable); one that is not renewed expires, so a crashed holder
        does not block the next one for long. The holder is written to the blob's metadata."""
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
        if holder:
            try:
                blob.set_blob_metadata(_holder_metadata(holder), lease=lease)
            except BaseException:
                lease.release()
                raise
        return lease

    def lease_holder(self, relpath: str) -> dict[str, str] | None:
        """Who holds the lease on `relpath` (its metadata), or None when the lease is not held."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self.container.get_blob_client(relpath).get_blob_properties()
        except ResourceNotFoundError:
            return None
        if props.lease.state != "leased":
            return None
        return dict(props.metadata or {})


def _is_network(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ConnectionError, socket.gaierror, TimeoutError)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def open_store(settings: Settings, *, interactive: bool = False) -> Store:
    if settings.snapshot_dir:
        return LocalStore(settings.snapshot_dir)
    return BlobStore(settings.snapshot_container, account_url=settings.snapshot_account_url,
                     connection_string=settings.snapshot_connection_string, interactive=interactive)
