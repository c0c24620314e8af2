"""Settings of the Function app on top of the connector's, and the stores it opens with them.

Problems are reported the way connector.config does: the setting and what is wrong, never its
value (a connection string with an AccountKey, or a SAS, must not reach a log or /api/health).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from connector.config import (
    ConfigError,
    Problem,
    Settings,
    connection_string_problem,
    load_settings,
    require_destination,
)
from connector.service.schedule import schedule_problem
from connector.store.contract import Store
from connector.store.registry import Registry, RegistryError, entry_settings

STORAGE_CONNECTION = "AzureWebJobsStorage"
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"
BUDGET_SHARE = 0.75  # M365_INVOCATION_BUDGET's default: this share of functionTimeout
UNBOUNDED_BUDGET_MINUTES = 45.0  # ... when functionTimeout is unbounded: under the 60-minute scale-in grace

# Settings read by the Function app on top of connector.config.SETTING_NAMES.
FUNCTION_SETTING_NAMES: tuple[str, ...] = (
    "M365_SCHEDULE",
    "M365_CONSENT_REDIRECT_URI",
    "M365_INVOCATION_BUDGET",
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
)


def function_settings(env: Mapping[str, str] | None = None, *, destination: bool = True) -> Settings:
    """Connector settings for the Function app; raises ConfigError naming every problem."""
    env = os.environ if env is None else env
    settings = load_settings(env)
    if destination:
        require_destination(settings)
    return settings


def function_problems(env: Mapping[str, str] | None = None) -> list[Problem]:
    """Every configuration problem the Function app would hit, for /api/health and the logs."""
    env = os.environ if env is None else env
    problems: list[Problem] = []
    try:
        function_settings(env)
    except ConfigError as exc:
        problems.extend(exc.problems)
    problem = budget_problem(env)
    if problem:
        problems.append(Problem("M365_INVOCATION_BUDGET", problem))
    schedule = (env.get("M365_SCHEDULE") or "").strip()
    problem = schedule_problem(schedule) if schedule else None
    if problem:
        problems.append(Problem("M365_SCHEDULE", problem))
    conn = (env.get(STORAGE_CONNECTION) or "").strip()
    if conn:
        problem = connection_string_problem(conn, "queue")
        if problem:
            problems.append(Problem(STORAGE_CONNECTION, problem))
    elif not queue_endpoint(env):
        problems.append(queue_problem())
    return problems


def function_timeout_minutes(host_json: Path = HOST_JSON) -> float | None:
    """host.json's functionTimeout in minutes; None when unbounded ("-1"), unset or unreadable."""
    try:
        value = json.loads(host_json.read_text()).get("functionTimeout")
        h, m, s = (float(x) for x in str(value).split(":"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return h * 60 + m + s / 60


def budget_problem(env: Mapping[str, str]) -> str | None:
    raw = (env.get("M365_INVOCATION_BUDGET") or "").strip()
    if not raw:
        return None
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    timeout = function_timeout_minutes()
    if not 1 <= minutes < (timeout or 10_000):
        below = f"below functionTimeout in host.json ({timeout:g} minutes)" if timeout else "1440 or less"
        return (f"must be a number of minutes from 1, {below}: the queue worker stops collecting after it, saves "
                "the run's checkpoints and queues the run again. Unset, it is "
                f"{BUDGET_SHARE:.0%} of functionTimeout.")
    return None


def invocation_budget(env: Mapping[str, str]) -> float:
    """Seconds one queue invocation may collect before it checkpoints and re-queues the run
    (M365_INVOCATION_BUDGET, minutes; default BUDGET_SHARE of host.json's functionTimeout)."""
    problem = budget_problem(env)
    if problem:
        raise ConfigError([Problem("M365_INVOCATION_BUDGET", problem)])
    raw = (env.get("M365_INVOCATION_BUDGET") or "").strip()
    if raw:
        return float(raw) * 60
    timeout = function_timeout_minutes()
    return (timeout * BUDGET_SHARE if timeout else UNBOUNDED_BUDGET_MINUTES) * 60


def queue_problem() -> Problem:
    return Problem(STORAGE_CONNECTION, "is not set, so runs cannot be queued. Locally set it to an Azurite "
                                       "connection string or UseDevelopmentStorage=true; in Azure set "
                                       "AzureWebJobsStorage__queueServiceUri (or __accountName) with "
                                       "__credential=managedidentity and __clientId.")


def queue_endpoint(env: Mapping[str, str]) -> str | None:
    if (env.get("AzureWebJobsStorage") or "").strip():
        return "connection-string"
    if (env.get("AzureWebJobsStorage__queueServiceUri") or "").strip():
        return env["AzureWebJobsStorage__queueServiceUri"].strip()
    account = (env.get("AzureWebJobsStorage__accountName") or "").strip()
    if account:
        return f"https://{account}.queue.core.windows.net"
    return None


class TenantRequired(LookupError):
    """A request that names no tenant, to a deployment that collects several."""


def deployment_registry(env: Mapping[str, str], *, interactive: bool = False) -> Registry:
    """The deployment's tenant registry (in its snapshot store; the one tenant of M365_TENANT_ID without it)."""
    return Registry(store_for(function_settings(env), interactive=interactive), env)


def registered_settings(env: Mapping[str, str], tenant: str | None = None, *, interactive: bool = False) -> Settings:
    """The settings of a registered tenant, or of the deployment's only tenant when `tenant` is None.

    Raises NotRegistered for a tenant the registry does not list (never collected), TenantRequired when none
    is named and several are registered, ConfigError for bad settings or a malformed registry (naming the entry
    and the field)."""
    registry = deployment_registry(env, interactive=interactive)
    try:
        if tenant is None:
            entries = registry.entries()
            if len(entries) != 1:
                raise TenantRequired(f"{len(entries)} tenants are registered")
            position, entry = 1, entries[0]
        else:
            position, entry = registry.find(tenant)
    except RegistryError as exc:
        raise ConfigError([Problem("tenant registry", str(exc))]) from None
    settings = entry_settings(entry, env, position)
    require_destination(settings)
    return settings


def tenant_key(settings: Settings) -> str:
    """The configured tenant, lower case: the folder of status records and of the tenant's lock."""
    return settings.tenant_id.strip().lower()


_stores: dict[tuple[Settings, bool], Store] = {}
_stores_lock = threading.Lock()


def store_for(settings: Settings, *, interactive: bool = False) -> Store:
    """One store per settings per process: keeps the credential's token cache across invocations.
    `interactive` stores (HTTP API) give up within seconds when Storage is unreachable."""
    from connector.store.destination import open_store

    with _stores_lock:
        store = _stores.get((settings, interactive))
        if store is None:
            store = _stores[(settings, interactive)] = open_store(settings, interactive=interactive)
        return store
