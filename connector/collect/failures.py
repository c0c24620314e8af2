"""Why a dataset was not collected, said so that a person can act on it.

Each failure becomes a status (skipped for what the tenant or the app lacks, failed for the rest), a
named warning and, where there is one, the fix: the permission to grant, the licence needed, the
setting to check.
"""

from __future__ import annotations

import logging
from typing import Any

from connector.catalog.datasets import Dataset, is_licence_error
from connector.collect.results import DatasetResult, warning
from connector.config import Settings
from connector.graph.auth import TokenFailure
from connector.graph.client import GraphError
from connector.graph.unreachable import Unreachable, graph_failure
from connector.store.contract import Store

log = logging.getLogger("m365_connector")

# Graph error codes whose remedy is a permission other than the dataset's own (graph-facts §11).
ERROR_REMEDIES: dict[str, tuple[str, str]] = {
    # userRegistrationDetails: the premium-licence check behind the report needs directory read access
    # [ISSUE microsoft-graph-docs #9269, #12911].
    "Authentication_ApplicationHasNoDirectoryReadAccess": (
        "Directory.Read.All", "Graph could not check the tenant's premium licence without directory read access"),
}
PORTAL_STEP = ("In the Entra admin center open App registrations, the app, API permissions: add Microsoft Graph "
               "application permission {perm}, then select 'Grant admin consent'.")


def is_storage_error(exc: BaseException) -> bool:
    from azure.core.exceptions import AzureError

    return isinstance(exc, (OSError, AzureError)) and not isinstance(exc, (GraphError, TokenFailure))


def skip_before_start(ds: Dataset, res: DatasetResult, settings: Settings, granted: frozenset[str]) -> bool:
    """A dataset the cloud does not offer, or whose permission the token lacks, is skipped before any request."""
    if settings.cloud not in ds.clouds:
        res.status, res.unavailableInCloud = "skipped", settings.cloud
        res.warnings.append(warning(
            "not_in_cloud", ds.name,
            f"{ds.name} skipped: Graph does not offer {ds.path} in the {settings.cloud} cloud "
            f"(M365_CLOUD), only in {', '.join(sorted(ds.clouds))}. Not a failure; nothing to do."))
        return True
    missing = ds.missing_roles(granted)
    if missing:
        res.status = "skipped"
        res.missingPermissions = missing
        perms = " and ".join(missing)
        res.warnings.append(warning(
            "missing_permission", ds.name,
            f"{ds.name} skipped: the app lacks {perms}. " + PORTAL_STEP.format(perm=perms)))
        return True
    return False


def retry_facts(ds: Dataset, res: DatasetResult, stats: Any) -> None:
    """Throttling and broken answers are said in the manifest even when the data came in whole."""
    if stats.waited:
        res.extra["retryWaitSeconds"] = round(stats.waited, 1)
    if stats.broken:
        res.extra["brokenResponsesRetried"] = stats.broken
    if stats.paced >= 0.1:
        res.extra["quotaWaitSeconds"] = round(stats.paced, 1)
    if stats.throttled and res.status == "succeeded":
        res.warnings.append(warning(
            "throttled", ds.name,
            f"{ds.name}: Graph throttled {stats.throttled} request(s) (429); the connector waited "
            f"{stats.waited:.0f} s in all and the dataset is complete, only slower."))

def refused_anyway(ds: Dataset) -> list[str]:
    """What to grant when Graph refuses a token although it holds a listed role: the first (least privileged,
    or best supported) role of each requirement. role_assignment_schedules with RoleAssignmentSchedule.Read.Directory
    only: RoleManagement.Read.Directory, listed first for this reason (ASSIGNMENT_SCHEDULE_READ)."""
    return [group[0] for group in ds.requires]


def classify(ds: Dataset, res: DatasetResult, exc: Exception, settings: Settings, store: Store,
             granted: frozenset[str]) -> Unreachable | None:
    """Fill the dataset's result from the exception that ended it; an unreachable Graph is returned, so the
    run can tell whether every dataset failed the same way."""
    res.records = 0
    cause = exc.__cause__ if isinstance(exc, GraphError) and exc.status == 0 else exc  # retried transport errors
    unreachable = None if isinstance(cause, (GraphError, TokenFailure)) or cause is None else \
        graph_failure(cause, settings.graph_endpoint)
    if unreachable is not None:  # one line naming the setting; the traceback only with -v
        res.status = "failed"
        res.error = {"code": unreachable.code, "message": unreachable.line()}
        res.warnings.append(warning(unreachable.code, ds.name, unreachable.line()))
        log.info("dataset %s failed: %s", ds.name, unreachable.line(), exc_info=exc)
        return unreachable
    if is_storage_error(exc):  # the destination refused a write (disk full, storage down): one line
        problem = store.explain(exc)
        res.status = "failed"
        res.error = {"code": "destination_failed", "message": str(problem)}
        res.warnings.append(warning("destination_failed", ds.name, f"{ds.name} could not be written: {problem}"))
        log.warning("dataset %s could not be written: %s", ds.name, problem)
        log.info("dataset %s: details", ds.name, exc_info=exc)
        return None
    if isinstance(exc, GraphError) and is_licence_error(ds.licence, exc.code, exc.status, exc.message):
        res.status = "skipped"
        res.missingLicence = ds.licence or "a premium licence"
        msg = (f"{ds.name} needs {res.missingLicence} in the tenant; Graph answered {exc.code}. The other "
               "datasets were collected.")
        res.warnings.append(warning("missing_licence", ds.name, msg))
    elif isinstance(exc, GraphError) and exc.code in ERROR_REMEDIES:
        perm, why = ERROR_REMEDIES[exc.code]
        res.status = "skipped"
        res.missingPermissions = [perm]
        msg = (f"{ds.name}: {why} (Graph answered {exc.code}). Grant {perm}. " + PORTAL_STEP.format(perm=perm))
        res.warnings.append(warning("missing_permission", ds.name, msg))
        res.error = exc.as_dict()
    elif isinstance(exc, GraphError) and exc.status == 429:
        res.status = "failed"
        res.error = exc.as_dict()
        res.warnings.append(warning("throttled_gave_up", ds.name, f"{ds.name} failed: Graph kept throttling it. "
                                                                     f"{exc}"))
    elif isinstance(exc, GraphError) and exc.status == 403:  # 401 is a token problem, not a permission
        res.status = "skipped"
        res.missingPermissions = ds.missing_roles(granted) or refused_anyway(ds)
        perms = " and ".join(res.missingPermissions)
        held = sorted({r for group in ds.requires for r in group} & granted)
        despite = f" although the app holds {', '.join(held)}" if held and not ds.missing_roles(granted) else ""
        msg = (f"{ds.name}: Graph refused access{despite} ({exc.code}: {exc.message}). Grant {perms}. "
               + PORTAL_STEP.format(perm=perms))
        res.warnings.append(warning("missing_permission", ds.name, msg))
        res.error = exc.as_dict()
    elif isinstance(exc, GraphError):
        res.status = "failed"
        res.error = exc.as_dict()
        res.warnings.append(warning("dataset_failed", ds.name, f"{ds.name} failed: {exc}"))
    elif isinstance(exc, TokenFailure):
        res.status = "failed"
        res.error = exc.as_dict()
        res.warnings.append(warning("token_failed", ds.name, f"{ds.name} failed: {exc}"))
    else:
        res.status = "failed"
        res.error = {"code": type(exc).__name__, "message": str(exc)[:500]}
        res.warnings.append(warning("dataset_failed", ds.name, f"{ds.name} failed: {type(exc).__name__}: "
                                                                 f"{str(exc)[:300]}"))
        log.error("dataset %s failed", ds.name, exc_info=exc)
    return None
