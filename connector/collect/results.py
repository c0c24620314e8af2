"""What a run says about itself: each dataset's result, the run's status and the manifest's body.

Kept apart from the engine so the manifest's shape (a public contract, docs/snapshot-format.md) is
read in one place, whatever the engine does to fill it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from connector import __version__
from connector.catalog.datasets import DATASETS

log = logging.getLogger("m365_connector")

SCHEMA_VERSION = 1


def iso(ts: float) -> str:
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


def entry(res: DatasetResult) -> dict[str, Any]:
    out = asdict(res)
    extra = out.pop("extra")
    out.update(extra)
    return out


def warning(code: str, dataset: str | None, message: str) -> dict[str, str]:
    w = {"code": code, "message": message}
    if dataset:
        w["dataset"] = dataset
    return w


def run_status(results: dict[str, DatasetResult]) -> str:
    """succeeded, partial or failed; a dataset the cloud does not offer is no gap in the snapshot."""
    statuses = [r.status for r in results.values() if not r.unavailableInCloud]
    if statuses and all(s == "succeeded" for s in statuses):
        return "succeeded"
    if any(s == "succeeded" for s in statuses):
        return "partial"
    return "failed"


class RunFacts(Protocol):
    """What the manifest reads of a run (connector.collect.engine.Run has it)."""

    settings: Any
    results: dict[str, DatasetResult]
    tenant_id: str
    run_id: str
    trigger: str
    started: float
    finished: float | None
    status: str
    granted: frozenset[str]
    warnings: list[dict[str, str]]
    error: dict[str, Any] | None
    publication: Any
    insights: dict[str, Any] | None
    estimates: dict[str, Any]


def manifest(run: RunFacts) -> dict[str, Any]:
    s = run.settings
    org_wide = [n for n in run.results if not DATASETS[n].upn_field]
    return {
        "schemaVersion": SCHEMA_VERSION,
        "tenantId": run.tenant_id,
        "runId": run.run_id,
        "trigger": run.trigger,
        "startedAt": iso(run.started),
        "finishedAt": iso(run.finished or time.time()),
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
        "status": run.status,
        "grantedPermissions": sorted(run.granted),
        "warnings": run.warnings,
        "error": run.error,
        "datasets": {name: entry(res) for name, res in run.results.items()},
        "files": list(run.publication.files) if run.publication is not None else [],
        "insights": run.insights,
        # Per-user datasets: pages and expected seconds from the tenant's size and Graph's quotas (docs).
        "estimates": {name: e.as_dict() for name, e in run.estimates.items()},
    }


def log_summary(run: RunFacts) -> None:
    log.info("collection finished", extra={"m365": {
        "event": "collection_finished", "runId": run.run_id, "tenantId": run.tenant_id,
        "trigger": run.trigger, "status": run.status,
        "seconds": round((run.finished or time.time()) - run.started, 3),
        "datasets": {n: {"status": r.status, "records": r.records, "seconds": r.durationSeconds,
                         "requests": r.requests, "retries": r.retries, "throttled": r.throttled}
                     for n, r in run.results.items()},
    }})
