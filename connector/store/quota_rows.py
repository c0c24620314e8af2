"""Where the app-wide quota ledger's rows live (connector/graph/ledger.py): Azure Table rows with ETags in
the deployment's storage account, or, for runs into a local snapshot folder, JSON files with a lock.

Both offer the one primitive the ledger needs, compare-and-swap on a row: a Table entity is replaced only
if its ETag is unchanged (If-Match), a file only under an flock after checking its content is unchanged.
Nothing else is kept: a row that goes missing is rebuilt empty, which
at worst lets one window's leases be granted again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from connector.config import Settings
from connector.store.contract import DestinationError

log = logging.getLogger("m365_connector")

TABLE = "m365quotaledger"


class FileRows:
    """Ledger rows as JSON files in one folder of this machine, each read and replaced under an flock.

    The folder is the user's cache (XDG_CACHE_HOME or ~/.cache), not the snapshot folder: Graph counts per
    app whichever folder a run writes to, and a snapshot folder holds snapshots only (a cancelled run leaves
    nothing in it)."""

    def __init__(self, folder: str | None = None):
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        self.folder = Path(folder or os.path.join(cache, "m365-connector", "quota-ledger"))
        self.requests = 0

    def _path(self, key: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".json")

    @contextmanager
    def _locked(self, key: str) -> Iterator[Path]:
        import fcntl

        path = self._path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fh = open(path.with_suffix(".lock"), "a+b")
        except OSError as exc:
            raise DestinationError("SNAPSHOT_DIR", f"the local quota ledger's folder {self.folder} cannot be "
                                                   f"written ({exc.strerror}): it is in the user's cache folder "
                                                   "(XDG_CACHE_HOME, else ~/.cache).") from None
        with fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            yield path

    def read(self, key: str) -> tuple[dict[str, Any] | None, Any]:
        self.requests += 1
        with self._locked(key) as path:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None, None
        try:
            row = orjson.loads(data)
        except orjson.JSONDecodeError:
            row = {"v": "not JSON"}  # the ledger refuses it, naming the file
        return (row if isinstance(row, dict) else {"v": "not an object"}), hashlib.sha256(data).hexdigest()

    def write(self, key: str, row: dict[str, Any], version: Any) -> bool:
        self.requests += 1
        with self._locked(key) as path:
            try:
                current: str | None = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                current = None
            if current != version:
                return False
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(orjson.dumps(row))
            os.replace(tmp, path)  # readers take the lock too; the rename keeps a crash from leaving half a row
            return True

    def describe(self, key: str) -> str:
        return f"quota ledger file {self._path(key)}"


class TableRows:
    """Ledger rows as entities of an Azure Table (PartitionKey: the app, RowKey: the quota), replaced with
    If-Match on their ETag. Reached with SNAPSHOT_CONNECTION_STRING's TableEndpoint, or the table endpoint of
    SNAPSHOT_ACCOUNT_URL's account with the managed identity (role Storage Table Data Contributor)."""

    def __init__(self, *, connection_string: str | None = None, account_url: str | None = None,
                 table: str = TABLE, credential: Any = None):
        from azure.core.pipeline.policies import RetryPolicy
        from azure.data.tables import TableServiceClient

        self.setting = "SNAPSHOT_CONNECTION_STRING" if connection_string else "SNAPSHOT_ACCOUNT_URL"
        options: dict[str, Any] = {"retry_policy": RetryPolicy(retry_total=2, retry_backoff_factor=0.2),
                                   "connection_timeout": 5, "read_timeout": 15}
        try:
            if connection_string:
                service = TableServiceClient.from_connection_string(connection_string, **options)
            else:
                if credential is None:
                    from azure.identity import DefaultAzureCredential

                    credential = DefaultAzureCredential()
                service = TableServiceClient(endpoint=table_endpoint(account_url or ""), credential=credential,
                                             **options)
        except ValueError as exc:  # the SDK's message may quote the value: say what, not that
            raise DestinationError(self.setting, "is not a usable storage connection string or account URL for "
                                                 "the quota ledger's table (expected ...;TableEndpoint=... or "
                                                 "https://<account>.blob.core.windows.net).") from exc
        endpoint = urlsplit(service.url)
        self.location = f"{endpoint.scheme}://{endpoint.netloc}{endpoint.path.rstrip('/')}/{table}"
        self.table = service.get_table_client(table)
        self._service = service
        self._table_name = table
        self._ensured = False
        self.requests = 0
        # Seconds a read or write keeps trying through transient failures (_patiently); the engine sets it once its
        # preflight read has shown the table reachable, so a wrong setting still fails at once.
        self.patience = 0.0

    def _patiently(self, call: Any) -> Any:
        """`call()`, again after a transient failure (timeout, broken connection, 408/429/5xx) for up to `patience`
        seconds: a run waiting for a lease must not fail because the Table hiccuped (one timed out under load in
        bench/tenants.py and failed a 100,000-user tenant's sign-in listing). 0 (the preflight): at once."""
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        began, pause = time.monotonic(), 0.5
        while True:
            try:
                return call()
            except (ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
                status = getattr(exc, "status_code", None)
                transient = not isinstance(exc, HttpResponseError) or status in (408, 429, 500, 502, 503, 504)
                if not transient or time.monotonic() - began + pause > self.patience:
                    raise
                log.warning("the quota ledger's table did not answer (%s); trying again in %.1f s",
                            type(exc).__name__, pause)
                time.sleep(pause)
                pause = min(15.0, pause * 2)

    def _unreachable(self, exc: Exception) -> DestinationError:
        return DestinationError(self.setting, f"the quota ledger's table {self.location} cannot be used "
                                              f"({type(exc).__name__}): check that {self.setting} names this "
                                              "deployment's storage account and that it is reachable; with a managed "
                                              "identity, grant it Storage Table Data Contributor on the account.")

    def _ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        if self._ensured:
            return
        try:
            self.requests += 1
            self._service.create_table(self._table_name)
        except ResourceExistsError:
            pass
        self._ensured = True

    def read(self, key: str) -> tuple[dict[str, Any] | None, Any]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        app, _, quota = key.rpartition("/")
        try:
            self._ensure()
            self.requests += 1
            entity = self._patiently(lambda: self.table.get_entity(_safe(app), _safe(quota)))
        except ResourceNotFoundError:
            return None, None
        except AzureError as exc:
            raise self._unreachable(exc) from None
        return dict(entity), entity.metadata["etag"]

    def write(self, key: str, row: dict[str, Any], version: Any) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError
        from azure.data.tables import UpdateMode

        app, _, quota = key.rpartition("/")
        entity = {"PartitionKey": _safe(app), "RowKey": _safe(quota), "v": row["v"],
                  "leases": orjson.dumps(row["leases"]).decode(), "waiting": orjson.dumps(row["waiting"]).decode()}
        try:
            self.requests += 1
            if version is None:
                self._patiently(lambda: self.table.create_entity(entity))
            else:
                self._patiently(lambda: self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=version,
                                                                 match_condition=MatchConditions.IfNotModified))
        except (ResourceExistsError, ResourceModifiedError):
            return False  # another process wrote first: the ledger reads again
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                return False
            raise self._unreachable(exc) from None
        return True

    def describe(self, key: str) -> str:
        app, _, quota = key.rpartition("/")
        return f"quota ledger row {self.location} (PartitionKey {_safe(app)}, RowKey {_safe(quota)})"


def _safe(key: str) -> str:
    """A Table key: no '/', '\\', '#', '?' or control characters (Table service data model)."""
    return re.sub(r"[/\\#?\x00-\x1f\x7f]", "_", key)[:255]


def table_endpoint(account_url: str) -> str:
    """https://<account>.blob.core.windows.net (any cloud's suffix) -> https://<account>.table.core.windows.net."""
    parts = urlsplit(account_url)
    host = re.sub(r"^([^.]+)\.blob\.", r"\1.table.", parts.netloc)
    return f"{parts.scheme}://{host}"


def _reaches_tables(connection_string: str) -> bool:
    keys = {part.split("=", 1)[0].strip().lower() for part in connection_string.split(";") if "=" in part}
    return bool(keys & {"tableendpoint", "usedevelopmentstorage"}) or {"accountname", "accountkey"} <= keys


def ledger_place(settings: Settings) -> str:
    """Which ledger the settings give, for telling them apart in one process (a digest: no secret in it)."""
    where = "" if settings.snapshot_dir else settings.snapshot_account_url or settings.snapshot_connection_string
    return hashlib.sha256((where or "").encode()).hexdigest()[:16]


def quota_rows(settings: Settings) -> Any:
    """The ledger rows of this deployment: a Table beside a Blob destination; with a local snapshot folder,
    files shared by every process of this machine; None when the settings reach Blob Storage alone (a
    container SAS, an account URL that is not <account>.blob.<suffix>): the caller counts in its process, as
    a single-tenant deployment may."""
    if settings.snapshot_dir:
        return FileRows()
    if settings.snapshot_connection_string and not _reaches_tables(settings.snapshot_connection_string):
        return None
    if not settings.snapshot_connection_string and ".blob." not in urlsplit(settings.snapshot_account_url or "").netloc:
        return None  # not <account>.blob.<suffix> (a proxy): no table endpoint to derive
    return TableRows(connection_string=settings.snapshot_connection_string, account_url=settings.snapshot_account_url)
