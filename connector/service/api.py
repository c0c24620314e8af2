"""The Function app's HTTP API as plain functions: request bytes and parameters in, a Reply out.

function_app.py only turns a Reply into an HttpResponse, so every status code and message is decided
(and tested) here. Error bodies are `{"error": {"code", "message", ...}}` and never carry secrets or
setting values. Storage that cannot be reached is a 503 within seconds, not a 500 after a minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from connector import __version__
from connector.catalog.datasets import DATASETS, DEFAULT_DATASETS
from connector.config import ConfigError, Problem, Settings
from connector.service.appconfig import TenantRequired, registered_settings
from connector.service.runs import (
    TERMINAL,
    QueueUnavailable,
    current_view,
    function_problems,
    function_settings,
    list_statuses,
    read_status,
    request_run,
    store_for,
    tenant_key,
    valid_run_id,
)
from connector.store.registry import NotRegistered

log = logging.getLogger("m365_connector")

MAX_BODY = 64 * 1024
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
RETRY_AFTER = "30"


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> bytes:
        return orjson.dumps(self.body, option=orjson.OPT_INDENT_2)


def _error(status: int, code: str, message: str, **more: Any) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message, **more}})


def _config_error(exc: ConfigError) -> Reply:
    return _error(500, "configuration", "The Function app's settings are invalid; fix them in the app settings.",
                  problems=[{"setting": p.setting, "message": p.message} for p in exc.problems])


def _with_storage(store: Any, work: Callable[[], Reply]) -> Reply:
    """Run `work`; Storage that cannot be reached or refuses the identity becomes a 503 naming the setting."""
    from azure.core.exceptions import AzureError

    from connector.store.contract import DestinationError

    try:
        return work()
    except (AzureError, OSError, DestinationError) as exc:
        return _storage_reply(store, exc)


def _storage_reply(store: Any, exc: BaseException) -> Reply:
    problem = store.explain(exc)
    log.error("the HTTP API could not use the snapshot storage: %s", problem)
    reply = _error(503, "storage_unavailable", f"The run store cannot be used right now: {problem}",
                   setting=problem.setting)
    reply.headers["Retry-After"] = RETRY_AFTER
    return reply


def runs_url(request_url: str, run_id: str | None = None) -> str:
    """The runs URL on the caller's host, without the query string (it may hold the function key)."""
    parts = urlsplit(request_url)
    path = parts.path
    marker = path.find("/runs")
    base = path[:marker] if marker >= 0 else path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    return f"{origin}{base}/runs" + (f"/{run_id}" if run_id else "")


def _parse_body(body: bytes, valid: list[str]) -> tuple[list[str] | None, bool] | Reply:
    """Requested datasets and whether to read them in full, from an optional JSON body, or the error Reply."""
    if not body.strip():
        return None, False
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(400, "malformed_json", f"The body is not valid JSON ({exc}). Send {{\"datasets\": [...]}} "
                                             "or no body.", validDatasets=valid)
    if not isinstance(data, dict):
        return _error(400, "wrong_type", f"The body must be a JSON object such as {{\"datasets\": [\"users\"]}}, "
                                         f"not {type(data).__name__}.", validDatasets=valid)
    unknown = sorted(set(data) - {"datasets", "full", "tenant"})
    if unknown:
        return _error(400, "unknown_field", f"Unknown field(s) {', '.join(unknown)}; the fields are \"datasets\", "
                                            "\"full\" and \"tenant\".", validDatasets=valid)
    full = data.get("full", False)
    if not isinstance(full, bool):
        return _error(400, "wrong_type", "\"full\" must be true (read every dataset in full, no delta) or false.",
                      validDatasets=valid)
    datasets = data.get("datasets")
    if datasets is None:
        return None, full
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        return _error(400, "wrong_type", "\"datasets\" must be a list of dataset names (strings).",
                      validDatasets=valid)
    if not datasets:
        return _error(400, "empty_datasets", "\"datasets\" is empty; omit it to collect every dataset.",
                      validDatasets=valid)
    bad = [d for d in datasets if d not in valid]
    if bad:
        extra = ""
        outside = [d for d in bad if d in DATASETS]
        if outside:
            extra = f" ({', '.join(outside)} exist but are not selected by M365_DATASETS)"
        return _error(400, "unknown_dataset", f"Unknown dataset name(s): {', '.join(bad)}{extra}. Valid names: "
                                              f"{', '.join(valid)}.", validDatasets=valid)
    return list(dict.fromkeys(datasets)), full


def _body_tenant(body: bytes) -> str | None | Reply:
    """The optional "tenant" of a run request's body (checked fully, with the datasets, by _parse_body)."""
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return None  # _parse_body answers it
    tenant = data.get("tenant") if isinstance(data, dict) else None
    if tenant is not None and not (isinstance(tenant, str) and 0 < len(tenant) <= 253):
        return _error(400, "wrong_type", "\"tenant\" must be a registered tenant's id or domain (a string).")
    return tenant


def _tenant_settings(env: Mapping[str, str], tenant: str | None) -> Settings | Reply:
    """A registered tenant's settings (the only one when `tenant` is None), or the error Reply: 404 for a tenant
    the registry does not list (refused, logged, never collected), 400 when several are registered and none is
    named, 500 for invalid settings or a malformed registry entry."""
    from azure.core.exceptions import AzureError

    from connector.store.contract import DestinationError

    try:
        return registered_settings(env, tenant, interactive=True)
    except (AzureError, OSError, DestinationError) as exc:  # the registry's store
        return _storage_reply(store_for(function_settings(env), interactive=True), exc)
    except NotRegistered:
        log.warning("refused a request for a tenant this deployment does not collect (not in its tenant registry)",
                    extra={"event": "tenant_refused"})
        return _error(404, "unknown_tenant", "This deployment does not collect that tenant: it is not in the tenant "
                                             "registry (GET /api/tenants lists them; `m365-connector tenants add` "
                                             "registers one).")
    except TenantRequired:
        return _error(400, "tenant_required", "This deployment collects several tenants: name one (\"tenant\" in "
                                              "the body, ?tenant= in the query); GET /api/tenants lists them.")
    except ConfigError as exc:
        return _config_error(exc)


def _run_reply(status: int, record: dict[str, Any], url: str, *, existing: bool = False) -> Reply:
    status_url = runs_url(url, record["runId"])
    body = {"runId": record["runId"], "status": record["status"], "statusUrl": status_url}
    if existing:
        body["existing"] = True
        body["message"] = "A run of this tenant is already queued or running; no new run was started."
    return Reply(status, body, {"Location": status_url, "Retry-After": RETRY_AFTER})


def post_run(body: bytes, url: str, env: Mapping[str, str] | None = None) -> Reply:
    """POST /api/runs: queue a run (202), or answer with the tenant's active run."""
    env = os.environ if env is None else env
    if len(body) > MAX_BODY:  # before anything else: the body is not even looked at
        return _error(413, "body_too_large", f"The request body is {len(body)} bytes; the limit is {MAX_BODY}.",
                      validDatasets=list(DEFAULT_DATASETS))  # what M365_DATASETS='*' allows
    tenant = _body_tenant(body)
    if isinstance(tenant, Reply):
        return tenant
    settings = _tenant_settings(env, tenant)
    if isinstance(settings, Reply):
        return settings
    valid = list(settings.selected_datasets)
    parsed = _parse_body(body, valid)
    if isinstance(parsed, Reply):
        return parsed
    datasets, full = parsed
    store = store_for(settings, interactive=True)

    def work() -> Reply:
        try:
            result = request_run(settings, "http", datasets, env, store=store, full=full)
        except ConfigError as exc:
            return _config_error(exc)
        except QueueUnavailable as exc:
            reply = _error(503, "queue_unavailable", f"The run could not be queued. {exc}")
            reply.headers["Retry-After"] = RETRY_AFTER
            return reply
        return _run_reply(202, result.record, url, existing=not result.created)

    return _with_storage(store, work)


def get_run(run_id: str, url: str, env: Mapping[str, str] | None = None, tenant: str | None = None) -> Reply:
    """GET /api/runs/{runId}?tenant=X: the status record (`tenant` may be left out with one tenant)."""
    env = os.environ if env is None else env
    if not valid_run_id(run_id):
        return _error(400, "malformed_run_id", "The path does not end in a run id; run ids look like "
                                               "20261122T020000Z-3f9a1c.")
    settings = _tenant_settings(env, tenant or None)
    if isinstance(settings, Reply):
        return settings
    store, key = store_for(settings, interactive=True), tenant_key(settings)

    def work() -> Reply:
        record = read_status(store, key, run_id)
        if record is None:
            return _error(404, "unknown_run", f"No run {run_id} for tenant {key}.")
        record = current_view(store, key, record)
        headers = {} if record["status"] in TERMINAL else {"Retry-After": RETRY_AFTER}
        return Reply(200, record, headers)

    return _with_storage(store, work)


def list_runs(limit: str | None, url: str, env: Mapping[str, str] | None = None, tenant: str | None = None) -> Reply:
    """GET /api/runs?limit=N&tenant=X: recent runs of a tenant, newest first."""
    env = os.environ if env is None else env
    if limit in (None, ""):
        n = DEFAULT_LIMIT
    else:
        # ASCII digits only, whole string: int() would take "٣", " 5", "5\n" or "1_0".
        n = int(limit) if re.fullmatch(r"[0-9]{1,3}", limit) else 0
        if not 1 <= n <= MAX_LIMIT:
            return _error(400, "bad_limit", f"limit must be a whole number from 1 to {MAX_LIMIT} (ASCII digits).")
    settings = _tenant_settings(env, tenant or None)
    if isinstance(settings, Reply):
        return settings
    store, key = store_for(settings, interactive=True), tenant_key(settings)

    def work() -> Reply:
        records = [current_view(store, key, r) for r in list_statuses(store, key, n)]
        for record in records:
            record["statusUrl"] = runs_url(url, record["runId"])
        return Reply(200, {"tenant": key, "runs": records})

    return _with_storage(store, work)


def list_tenants(env: Mapping[str, str] | None = None) -> Reply:
    """GET /api/tenants: each registered tenant's last run, status, next run and consent state."""
    from azure.core.exceptions import AzureError

    from connector.service.tenants_view import tenants_view
    from connector.store.contract import DestinationError
    from connector.store.registry import RegistryError

    env = os.environ if env is None else env
    try:
        store = store_for(function_settings(env), interactive=True)
    except ConfigError as exc:
        return _config_error(exc)
    try:
        return Reply(200, tenants_view(env))
    except RegistryError as exc:
        return _config_error(ConfigError([Problem("tenant registry", str(exc))]))
    except (AzureError, OSError, DestinationError) as exc:
        return _storage_reply(store, exc)


UNREACHABLE_TOKEN_CODES = frozenset({"authority_unreachable", "authority_tls", "network"})


def permissions(env: Mapping[str, str] | None = None) -> Reply:
    """GET /api/permissions: 200 (ok true/false) when Graph answered; 503 within seconds when the authority or
    Graph cannot be reached (naming the setting to check); 502 when the authority refused a token."""
    from connector.collect.permissions import permission_report

    env = os.environ if env is None else env
    try:
        settings = function_settings(env, destination=False)
    except ConfigError as exc:
        return _config_error(exc)
    report = asyncio.run(permission_report(settings))
    unreachable = _unreachable(report)
    if unreachable is not None:
        reply = Reply(503, {**report, "error": unreachable}, {"Retry-After": RETRY_AFTER})
        return reply
    return Reply(200 if report["token"]["ok"] else 502, report)


def _unreachable(report: dict[str, Any]) -> dict[str, Any] | None:
    """The answer's error when the report could not reach the authority or Graph, else None."""
    token_error = report["token"].get("error") or {}
    if not report["token"]["ok"] and token_error.get("code") in UNREACHABLE_TOKEN_CODES:
        return {"code": "authority_unreachable", "message": f"The authority (Entra ID) cannot be reached: "
                                                           f"{token_error.get('remedy')}"}
    graph = report.get("graph") or {}
    if graph and not graph.get("ok"):
        err = graph["error"]
        return {"code": err["code"], "setting": err["setting"],
                "message": f"Microsoft Graph cannot be reached: {err['reason']}. {err['setting']}: {err['remedy']}"}
    return None


def openapi(env: Mapping[str, str] | None = None) -> Reply:
    """GET /api/openapi.json: the OpenAPI description of this API (connector/service/openapi.py), with the
    dataset names this deployment accepts (all of them when its settings cannot be read)."""
    from connector.service.openapi import document

    env = os.environ if env is None else env
    try:
        datasets: list[str] | None = list(function_settings(env).selected_datasets)
    except ConfigError:
        datasets = None
    return Reply(200, document(datasets))


def health(env: Mapping[str, str] | None = None) -> Reply:
    """GET /api/health (anonymous): whether the configuration is valid and which settings are not, nothing more.
    What is wrong with each is in the log (and in the 500 answer of the keyed endpoints)."""
    env = os.environ if env is None else env
    problems = function_problems(env)
    if problems:
        log.warning("configuration problems: %s", "; ".join(map(str, problems)))
    body = {
        "status": "ok" if not problems else "misconfigured",
        "version": __version__,
        "configuration": {"valid": not problems, "settings": sorted({p.setting for p in problems})},
    }
    return Reply(200 if not problems else 503, body)
