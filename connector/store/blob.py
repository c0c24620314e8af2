"""The snapshot store in Azure Blob Storage: staged blocks committed as a list, a blob lease as the tenant lease."""

from __future__ import annotations

import base64
import itertools
import socket
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from connector.store.contract import BLOCK_SIZE, PROBE_NAME, DestinationError, Lease, Sink, origin


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


class _StagedCopy(_BlobSink):
    """Blocks staged under the copy's name; committed with the source's content type."""

    def __init__(self, blob: Any, content_type: str):
        super().__init__(blob)
        self._content_type = content_type

    @property
    def ids(self) -> list[str]:
        return self._ids

    def commit(self) -> None:
        from azure.storage.blob import BlobBlock, ContentSettings

        self._blob.commit_block_list([BlobBlock(block_id=i) for i in self._ids],
                                     content_settings=ContentSettings(content_type=self._content_type))

    def abort(self) -> None:
        """Drop the staged blocks without touching a blob readers see: only where no blob exists is an empty
        block list committed (If-None-Match: *) and the empty blob deleted. Blocks staged on an existing blob
        stay invisible until its next commit drops them (or the service does, after 7 days)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        if not self._ids:
            return
        self._ids.clear()
        try:
            self._blob.commit_block_list([], match_condition=MatchConditions.IfMissing)
            self._blob.delete_blob()
        except HttpResponseError:
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
        # A name of its own: Function instances started together prepare at once, and one's delete must not
        # take away the other's probe (BlobNotFound would fail a run whose destination is fine).
        probe = f"{PROBE_NAME}-{uuid.uuid4().hex}"
        try:
            self._ensure()
            self.container.upload_blob(probe, b"probe", overwrite=True)
            self.container.delete_blob(probe)
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

    def discard_folder(self, prefix: str) -> None:
        """Remove every blob under `prefix` (blobs written whole: nothing staged to drop), a few at a time. Blob
        batches (one request for 256 deletions) are not used: Azurite, which the tests run against, refuses
        them (Azure/Azurite#2509)."""
        names = self.list(prefix.rstrip("/") + "/")
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
            list(pool.map(self.delete, names))

    def clear_temporaries(self, prefix: str) -> None:
        """Nothing to do: what a killed writer staged is uncommitted blocks, invisible to readers, dropped by the
        blob's next commit or by the service after 7 days."""

    def stage_copy(self, src: str, dst: str) -> _StagedCopy:
        """Stream a blob to another name as staged blocks (memory stays flat), invisible until commit() (abort()
        drops them): copies staged first and committed together change a folder at once for a reader, or not
        at all. A server-side copy would need the source authorised separately for managed identities."""
        source = self.container.download_blob(src)
        staged = _StagedCopy(self.container.get_blob_client(dst),
                             source.properties.content_settings.content_type or "application/octet-stream")
        try:
            pending = b""
            for chunk in source.chunks():
                pending += chunk
                if len(pending) >= BLOCK_SIZE:
                    staged.put(pending)
                    pending = b""
            if pending or not staged.ids:
                staged.put(pending)
        except BaseException:
            staged.abort()
            raise
        return staged

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
