"""Settings of the Function app on top of the connector's, and the stores it opens with them.

Problems are reported the way connector.config does: the setting and what is wrong, never its
value (a connection string with an AccountKey, or a SAS, must not reach a log or /api/health).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

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

STORAGE_CONNECTION = "AzureWebJobsStorage"

# Settings read by the Function app on top of connector.config.SETTING_NAMES.
FUNCTION_SETTING_NAMES: tuple[str, ...] = (
    "M365_SCHEDULE",
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
