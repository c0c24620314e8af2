"""The collection engine: runs every selected dataset declaration concurrently into one snapshot.

A run publishes a complete, verifiable snapshot or says exactly what is partial and why:
data files are committed first, then the manifest (counts, sizes, sha256), then `latest.json`,
and `latest.json` only for runs that succeeded or are partial. Missing permissions or licences
skip a dataset with a named warning; they never stop the others.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import __version__
from .auth import GraphCredential, TokenFailure, read_client_secret, secret_expiry_warning, token_failure_from
from .config import Settings
from .datasets import DATASETS, LICENCE_ERROR_CODES, Dataset
from .graph import GraphError
from .store import JsonlGzWriter, Store, write_json
from .strategy import RESTART, Context, strategy_for

log = logging.getLogger("m365_connector")

SCHEMA_VERSION = 1
# Graph error codes whose remedy is a permission other than the dataset's own (graph-facts §11).
ERROR_REMEDIES: dict[str, tuple[str, str]] = {
    # userRegistrationDetails: the premium-licence check behind the report needs directory read access
    # [ISSUE microsoft-graph-docs #9269, #12911].
    "Authentication_ApplicationHasNoDirectoryReadAccess": (
        "Directory.Read.All", "Graph could not check the tenant's premium licence without directory read access"),
}
PORTAL_STEP = ("In the Entra admin center open App registrations, the app, API permissions: add Microsoft Graph "
               "application permission {perm}, then select 'Grant admin consent'.")


def new_run_id(now: datetime | None = None) -> str:
    """Sorts by time: 20261122T020000Z-3f9a1c."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_prefix(tenant_id: str, run_id: str) -> str:
    return f"tenants/{tenant_id}/runs/{run_id}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class DatasetResult:
    status: str = "pending"  # pending, running, succeeded, skipped, failed
    records: int = 0
    file: str | None = None
    bytes: int = 0
    sha256: str | None = None
    durationSeconds: float = 0.0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)
    missingPermissions: list[str] = field(default_factory=list)
    missingLicence: str | None = None
    unavailableInCloud: str | None = None  # skipped before any request: Graph has no such API in this cloud
    domainFilter: str = "organisation-wide"
    excludedByDomainFilter: int = 0
    error: dict[str, Any] | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # strategy-specific facts, merged into the entry


def _entry(res: DatasetResult) -> dict[str, Any]:
    entry = asdict(res)
    extra = entry.pop("extra")
    entry.update(extra)
    return entry


def _warning(code: str, dataset: str | None, message: str) -> dict[str, str]:
    w = {"code": code, "message": message}
    if dataset:
        w["dataset"] = dataset
    return w


class Run:
    """One collection: owns the Graph session, the results and the manifest."""

    def __init__(self, settings: Settings, store: Store, *, trigger: str = "cli", run_id: str | None = None,
                 progress: Callable[[Run], None] | None = None):
        self.settings = settings
        self.store = store
        self.trigger = trigger
        self.run_id = run_id or new_run_id()
        self.progress = progress
        self.tenant_id = settings.tenant_id
        self.results: dict[str, DatasetResult] = {n: DatasetResult() for n in settings.selected_datasets}
        self.warnings: list[dict[str, str]] = []
        self.error: dict[str, Any] | None = None
        self.granted: frozenset[str] = frozenset()
        self.started = time.time()
        self.finished: float | None = None
        self.status = "running"
        self.graph = None

    # -- helpers ---------------------------------------------------------------------------
    def _notify(self) -> None:
        if self.progress:
            try:
                self.progress(self)
            except Exception:  # progress reporting must never break a collection
                log.exception("progress callback failed")

    def _accepts(self, ds: Dataset) -> Callable[[dict[str, Any]], bool] | None:
        if not ds.upn_field or self.settings.domains is None:
            return None
        suffixes = tuple("@" + d for d in self.settings.domains)
        key = ds.upn_field
        return lambda rec: (rec.get(key) or "").lower().endswith(suffixes)

    # -- one dataset ---------------------------------------------------------------------------
    async def _write(self, ds: Dataset, ctx: Context, res: DatasetResult) -> None:
        """Stream the dataset's strategy into its file; the file is discarded unless complete, and
        started again when the strategy yields RESTART."""
        relpath = f"{run_prefix(self.tenant_id, self.run_id)}/{ds.file}"
        writer = JsonlGzWriter(self.store.sink(relpath), relpath)
        accept = self._accepts(ds)
        res.records = res.excludedByDomainFilter = 0
        try:
            async for records in strategy_for(ds)(ctx, ds):
                if records is RESTART:
                    await writer.abort()
                    writer = JsonlGzWriter(self.store.sink(relpath), relpath)
                    res.records = res.excludedByDomainFilter = 0
                    continue
                if accept is not None and not ctx.domain_filter:
                    accept = None  # the strategy found no user names to filter on (concealed reports)
                    res.domainFilter = "not applied"
                if accept is not None:
                    kept = [r for r in records if accept(r)]
                    res.excludedByDomainFilter += len(records) - len(kept)
                    records = kept
                await writer.write(records)
                res.records = writer.records
            info = await writer.close()
        except BaseException:
            await writer.abort()
            raise
        res.file, res.bytes, res.sha256 = ds.file, info.bytes, info.sha256

    async def _collect(self, ds: Dataset) -> None:
        res = self.results[ds.name]
        res.status = "running"
        if ds.upn_field:
            res.domainFilter = "all users" if self.settings.domains is None else "applied"
        self._notify()
        t0 = time.perf_counter()
        ctx = Context(self.settings, self.graph, self.granted)
        try:
            # The run's time limit bounds every dataset: one still paging when it passes fails with a
            # named warning, and the others are published in time.
            await asyncio.wait_for(self._write(ds, ctx, res), max(0.0, self.graph.deadline.remaining()))
            res.status = "succeeded"
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            res.status, res.records = "failed", 0
            res.error = {"code": "RunTimeLimit", "message": "the run's time limit passed while collecting"}
            res.warnings.append(_warning(
                "run_time_limit", ds.name,
                f"{ds.name} was still being collected when the run's time limit passed (M365_RUN_TIME_LIMIT="
                f"{self.settings.run_time_limit} minutes); it is left out of this snapshot. Raise the limit (and "
                "functionTimeout in host.json) or collect it in a run of its own."))
        except Exception as exc:
            self._classify_failure(ds, res, exc)
        finally:
            res.plan.update(ctx.plan)
            res.extra.update(ctx.extra)
            res.warnings.extend(ctx.warnings)
            res.durationSeconds = round(time.perf_counter() - t0, 3)
            stats = self.graph.stats.get(ds.name)
            if stats:
                res.requests, res.retries, res.throttled = stats.requests, stats.retries, stats.throttled
                self._retry_facts(ds, res, stats)
            self._notify()

    def _retry_facts(self, ds: Dataset, res: DatasetResult, stats: Any) -> None:
        """Throttling and broken answers are said in the manifest even when the data came in whole."""
        if stats.waited:
            res.extra["retryWaitSeconds"] = round(stats.waited, 1)
        if stats.broken:
            res.extra["brokenResponsesRetried"] = stats.broken
        if stats.throttled and res.status == "succeeded":
            res.warnings.append(_warning(
                "throttled", ds.name,
                f"{ds.name}: Graph throttled {stats.throttled} request(s) (429); the connector waited "
                f"{stats.waited:.0f} s in all and the dataset is complete, only slower."))

    def _classify_failure(self, ds: Dataset, res: DatasetResult, exc: Exception) -> None:
        res.records = 0
        if isinstance(exc, GraphError) and exc.code in LICENCE_ERROR_CODES:
            res.status = "skipped"
            res.missingLicence = ds.licence or "a premium licence"
            msg = (f"{ds.name} needs {res.missingLicence} in the tenant; Graph answered {exc.code}. The other "
                   "datasets were collected.")
            res.warnings.append(_warning("missing_licence", ds.name, msg))
        elif isinstance(exc, GraphError) and exc.code in ERROR_REMEDIES:
            perm, why = ERROR_REMEDIES[exc.code]
            res.status = "skipped"
            res.missingPermissions = [perm]
            msg = (f"{ds.name}: {why} (Graph answered {exc.code}). Grant {perm}. " + PORTAL_STEP.format(perm=perm))
            res.warnings.append(_warning("missing_permission", ds.name, msg))
            res.error = exc.as_dict()
        elif isinstance(exc, GraphError) and exc.status == 429:
            res.status = "failed"
            res.error = exc.as_dict()
            res.warnings.append(_warning("throttled_gave_up", ds.name, f"{ds.name} failed: Graph kept throttling it. "
                                                                         f"{exc}"))
        elif isinstance(exc, GraphError) and exc.status == 403:  # 401 is a token problem, not a permission
            res.status = "skipped"
            res.missingPermissions = ds.missing_roles(self.granted) or [group[0] for group in ds.requires]
            perms = " and ".join(res.missingPermissions)
            msg = (f"{ds.name}: Graph refused access ({exc.code}: {exc.message}). Grant {perms}. "
                   + PORTAL_STEP.format(perm=perms))
            res.warnings.append(_warning("missing_permission", ds.name, msg))
            res.error = exc.as_dict()
        elif isinstance(exc, GraphError):
            res.status = "failed"
            res.error = exc.as_dict()
            res.warnings.append(_warning("dataset_failed", ds.name, f"{ds.name} failed: {exc}"))
        elif isinstance(exc, TokenFailure):
            res.status = "failed"
            res.error = exc.as_dict()
            res.warnings.append(_warning("token_failed", ds.name, f"{ds.name} failed: {exc}"))
        else:
            res.status = "failed"
            res.error = {"code": type(exc).__name__, "message": str(exc)[:500]}
            res.warnings.append(_warning("dataset_failed", ds.name, f"{ds.name} failed: {type(exc).__name__}: "
                                                                     f"{str(exc)[:300]}"))
            log.error("dataset %s failed", ds.name, exc_info=exc)

    # -- the run ---------------------------------------------------------------------------
    async def execute(self) -> dict[str, Any]:
        await asyncio.to_thread(self.store.prepare)  # an unusable destination fails before any Graph request
        credential = None
        try:
            try:
                secret = await asyncio.to_thread(read_client_secret, self.settings)
                credential = GraphCredential(self.settings, secret)
                self.granted, claims = await asyncio.to_thread(credential.roles)
            except Exception as exc:
                failure = token_failure_from(exc)
                self.error = {"stage": "token", **failure.as_dict()}
                self.warnings.append(_warning("token_failed", None, str(failure)))
                for res in self.results.values():
                    res.status = "failed"
                return self._finish()
            self.tenant_id = claims.get("tid") or self.settings.tenant_id
            expiry = secret_expiry_warning(secret)
            if expiry:
                self.warnings.append(_warning("secret_expiring", None, expiry))
                log.warning(expiry)

            from .graph import Graph

            self.graph = Graph(self.settings, credential)
            try:
                tasks = []
                for name in self.settings.selected_datasets:
                    ds = DATASETS[name]
                    if self.settings.cloud not in ds.clouds:
                        res = self.results[name]
                        res.status, res.unavailableInCloud = "skipped", self.settings.cloud
                        res.warnings.append(_warning(
                            "not_in_cloud", name,
                            f"{name} skipped: Graph does not offer {ds.path} in the {self.settings.cloud} cloud "
                            f"(M365_CLOUD), only in {', '.join(sorted(ds.clouds))}. Not a failure; nothing to do."))
                        continue
                    missing = ds.missing_roles(self.granted)
                    if missing:
                        res = self.results[name]
                        res.status = "skipped"
                        res.missingPermissions = missing
                        perms = " and ".join(missing)
                        res.warnings.append(_warning(
                            "missing_permission", name,
                            f"{name} skipped: the app lacks {perms}. " + PORTAL_STEP.format(perm=perms)))
                        continue
                    tasks.append(self._collect(ds))
                self._notify()
                await asyncio.gather(*tasks)
            finally:
                await self.graph.aclose()
            return self._finish()
        finally:
            if credential is not None:
                credential.close()

    def _finish(self) -> dict[str, Any]:
        # A dataset the cloud does not offer is no gap in the snapshot: it does not make the run partial.
        statuses = [r.status for r in self.results.values() if not r.unavailableInCloud]
        if statuses and all(s == "succeeded" for s in statuses):
            self.status = "succeeded"
        elif any(s == "succeeded" for s in statuses):
            self.status = "partial"
        else:
            self.status = "failed"
        for res in self.results.values():
            self.warnings.extend(w for w in res.warnings if w not in self.warnings)
        self.finished = time.time()
        manifest = self.manifest()
        prefix = run_prefix(self.tenant_id, self.run_id)
        write_json(self.store, f"{prefix}/manifest.json", manifest)
        if self.status in ("succeeded", "partial"):
            write_json(self.store, f"tenants/{self.tenant_id}/latest.json", {
                "runId": self.run_id,
                "manifest": f"{prefix}/manifest.json",
                "status": self.status,
                "finishedAt": manifest["finishedAt"],
            })
        self._log_summary()
        self._notify()
        return manifest

    def manifest(self) -> dict[str, Any]:
        s = self.settings
        org_wide = [n for n in self.results if not DATASETS[n].upn_field]
        return {
            "schemaVersion": SCHEMA_VERSION,
            "tenantId": self.tenant_id,
            "runId": self.run_id,
            "trigger": self.trigger,
            "startedAt": _iso(self.started),
            "finishedAt": _iso(self.finished or time.time()),
            "connectorVersion": __version__,
            "cloud": s.cloud,
            "graphEndpoint": s.graph_endpoint,
            "domainFilter": {
                "domains": list(s.domains) if s.domains is not None else "*",
                "organisationWide": org_wide,
                "note": ("Users and per-user datasets are kept only when userPrincipalName ends in @ and one of the "
                         "domains; organisation-wide datasets (seat counts) are not filtered, so their totals can "
                         "differ from the filtered user counts.") if s.domains is not None else
                        "No filter: every user is collected.",
            },
            "status": self.status,
            "grantedPermissions": sorted(self.granted),
            "warnings": self.warnings,
            "error": self.error,
            "datasets": {name: _entry(res) for name, res in self.results.items()},
        }

    def _log_summary(self) -> None:
        log.info("collection finished", extra={"m365": {
            "event": "collection_finished", "runId": self.run_id, "tenantId": self.tenant_id,
            "trigger": self.trigger, "status": self.status,
            "seconds": round((self.finished or time.time()) - self.started, 3),
            "datasets": {n: {"status": r.status, "records": r.records, "seconds": r.durationSeconds}
                         for n, r in self.results.items()},
        }})


async def collect(settings: Settings, store: Store, *, trigger: str = "cli", run_id: str | None = None,
                  progress: Callable[[Run], None] | None = None) -> dict[str, Any]:
    """Run one collection and return its manifest (already written to the store)."""
    return await Run(settings, store, trigger=trigger, run_id=run_id, progress=progress).execute()


def collect_sync(settings: Settings, store: Store, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(collect(settings, store, **kwargs))
