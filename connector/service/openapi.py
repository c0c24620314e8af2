"""The OpenAPI 3.1 description of the Function app's HTTP API.

Built from the code's own constants (dataset names, limits, run-id pattern), served keyed at
`GET /api/openapi.json` and written to docs/openapi.json by `m365-connector docs`.
tests/test_openapi.py keeps it true: its paths, methods and keys against the function index, and
the API's replies (fuzzed from this description with schemathesis) against its schemas.
"""

from __future__ import annotations

from typing import Any

from connector import __version__
from connector.catalog.datasets import DATASETS

RUN_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$"
RUN_STATUSES = ["queued", "running", "succeeded", "partial", "failed"]
DATASET_STATUSES = ["pending", "running", "succeeded", "skipped", "failed"]


def _nullable(type_name: str, **more: Any) -> dict[str, Any]:
    return {"type": [type_name, "null"], **more}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before asking for the status again.",
                                "schema": {"type": "string", "pattern": r"^\d+$"}}}
_NO_KEY = {"description": "No or a wrong function key (the Functions host answers; no body)."}
_STORAGE = _error("storage_unavailable: the snapshot storage cannot be reached or refuses the identity "
                  "(`setting` names what to check); Retry-After says when to try again.")
_CONFIG = _error("`configuration`: the Function app's settings are invalid; `problems` names each setting.")


_TENANT_PARAM = {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "The registered tenant (id or domain); may be left out with one tenant."}
_UNKNOWN_TENANT = _error("unknown_tenant: the tenant is not registered in this deployment (refused, logged, "
                         "never collected).")


def _run_status() -> dict[str, Any]:
    dataset_progress = {
        "type": "object", "required": ["status", "records"],
        "properties": {"status": {"enum": DATASET_STATUSES}, "records": {"type": "integer", "minimum": 0},
                       "seconds": _nullable("number"),
                       "secondsLeft": _nullable("number", description="Expected, from the tenant's size and Graph's "
                                                                       "quotas (per-user datasets only).")},
    }
    run_status = {
        "type": "object",
        "description": "A run's status record (tenants/<tenant>/runs/<runId>/status.json).",
        "required": ["runId", "status", "trigger", "requestedAt", "datasets", "warnings"],
        "properties": {
            "schemaVersion": {"type": "integer"},
            "runId": {"type": "string", "pattern": RUN_ID_PATTERN},
            "tenant": {"type": "string", "description": "The registered tenant (M365_TENANT_ID) in lower case."},
            "tenantId": _nullable("string", description="The tenant GUID, once known."),
            "status": {"enum": RUN_STATUSES},
            "trigger": {"type": "string", "description": "timer, http, ..."},
            "requestedAt": {"type": "string", "format": "date-time"},
            "notBefore": {"type": "string", "format": "date-time", "description": "A scheduled run of one of "
                                                                                  "several tenants: its slot, when "
                                                                                  "its message is delivered."},
            "startedAt": _nullable("string", format="date-time"),
            "finishedAt": _nullable("string", format="date-time"),
            "updatedAt": {"type": "string", "format": "date-time"},
            "attempts": {"type": "integer", "minimum": 0},
            "expectedSecondsLeft": _nullable("number", description="The run's expected time left (its slowest "
                                                                   "dataset's), from Graph's quotas."),
            "resumes": {"type": "integer", "minimum": 0, "description": "Times the run was queued again to resume "
                                                                        "(M365_INVOCATION_BUDGET spent)."},
            "paused": {"type": ["object", "null"], "description": "The last pause: at, reason."},
            "datasets": {"type": "object", "additionalProperties": dataset_progress},
            "full": {"type": "boolean", "description": "true: the request asked for a full read (no delta)."},
            "warnings": {"type": "array", "items": _ref("Warning")},
            "manifest": _nullable("string", description="The manifest's path in the snapshot container."),
            "manifestUrl": _nullable("string", description="The manifest's URL."),
            "error": {"type": ["object", "null"], "description": "On failure: message and remedy.",
                      "properties": {"message": {"type": "string"}, "remedy": _nullable("string"),
                                     "code": _nullable("string"),
                                     "consentUrl": {"type": "string", "description": "The app is not consented in "
                                                                                     "the tenant: its admin-consent "
                                                                                     "URL."}}},
            "statusUrl": {"type": "string", "description": "In lists: the record's own URL."},
            "worker": {"type": ["object", "null"], "description": "The lease holder while running: runId, host, "
                                                                  "pid, since."},
            "stale": {"type": "boolean", "description": "true: recorded as running but no live worker holds the "
                                                        "tenant's lease; shown as queued, collected again on the "
                                                        "next delivery."},
        },
    }
    return run_status


def _tenant_list() -> dict[str, Any]:
    last_run = {"type": ["object", "null"], "description": "The tenant's newest run (fields of its status record)."}
    tenant = {
        "type": "object", "required": ["tenant", "auth", "slot", "status", "lastRun", "nextRun", "consent"],
        "properties": {
            "tenant": {"type": "string", "description": "The registry's tenant id or domain, lower case."},
            "tenantId": _nullable("string", description="The tenant GUID, once a run knew it."),
            "auth": {"enum": ["app", "secret", "certificate"],
                     "description": "app: the deployment's multi-tenant app; else its own app's credential."},
            "slot": {"type": "integer", "minimum": 0, "description": "Minutes after each scheduled tick."},
            "status": {"enum": [*RUN_STATUSES, "never", "misconfigured"]},
            "lastRun": last_run,
            "nextRun": _nullable("string", format="date-time"),
            "consent": {"enum": ["granted", "missing", "unknown"],
                        "description": "missing: Entra said the app is not consented there (AADSTS700016)."},
            "consentUrl": {"type": "string", "description": "The tenant's v2.0 admin-consent URL."},
            "problems": {"type": "array", "items": _ref("Problem")},
        },
    }
    return {"type": "object", "required": ["registry", "schedule", "tenants"],
            "properties": {"registry": {"enum": ["stored", "M365_TENANT_ID"]}, "schedule": {"type": "string"},
                           "tenants": {"type": "array", "items": tenant}}}


def _error_schema(names: list[str]) -> dict[str, Any]:
    return {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable, for programs: malformed_json, wrong_type, "
                                                          "unknown_field, empty_datasets, unknown_dataset, "
                                                          "body_too_large, malformed_run_id, unknown_run, "
                                                          "bad_limit, configuration, queue_unavailable, "
                                                          "storage_unavailable, unknown_tenant, tenant_required."},
                "message": {"type": "string", "description": "For people: what is wrong and the fix."},
                "validDatasets": {"type": "array", "items": {"enum": names}},
                "problems": {"type": "array", "items": _ref("Problem")},
                "setting": {"type": "string", "description": "storage_unavailable: the setting to check."},
            },
        }},
    }


def _run_schemas(names: list[str]) -> dict[str, Any]:
    return {
        "RunRequest": {
            "type": "object", "additionalProperties": False,
            "properties": {"datasets": {
                "type": ["array", "null"], "minItems": 1, "items": {"enum": names},
                "description": "Datasets to collect (selected by M365_DATASETS); omitted or null: all of them.",
            }, "full": {
                "type": "boolean", "default": False,
                "description": "true: read every dataset in full, as `run --full` does, instead of only the changes "
                               "since the last run where Graph tracks them (delta queries); the manifest says "
                               "`full_requested` for those datasets.",
            }, "tenant": {
                "type": ["string", "null"], "minLength": 1, "maxLength": 253,
                "description": "The registered tenant (id or domain) to collect; may be left out when the "
                               "deployment collects one tenant.",
            }},
        },
        "RunAccepted": {
            "type": "object", "required": ["runId", "status", "statusUrl"],
            "properties": {
                "runId": {"type": "string", "pattern": RUN_ID_PATTERN},
                "status": {"enum": RUN_STATUSES},
                "statusUrl": {"type": "string"},
                "existing": {"type": "boolean", "description": "true: the tenant's run already queued or running."},
                "message": {"type": "string"},
            },
        },
        "RunStatus": _run_status(),
        "TenantList": _tenant_list(),
        "RunList": {
            "type": "object", "required": ["tenant", "runs"],
            "properties": {"tenant": {"type": "string"}, "runs": {"type": "array", "items": _ref("RunStatus")}},
        },
    }


def _permission_report() -> dict[str, Any]:
    return {
        "type": "object", "required": ["ok", "token", "grantedPermissions", "datasets"],
        "description": "The same report as `m365-connector check --json`.",
        "properties": {
            "ok": {"type": "boolean"},
            "tenantId": {"type": "string"},
            "clientId": {"type": "string"},
            "cloud": {"type": "string"},
            "token": {"type": "object", "required": ["ok"],
                      "properties": {"ok": {"type": "boolean"}, "tenantId": _nullable("string"),
                                     "appId": _nullable("string"),
                                     "error": {"type": "object", "description": "code, reason, remedy, detail"}}},
            "grantedPermissions": {"type": "array", "items": {"type": "string"}},
            "graph": {"type": ["object", "null"], "description": "ok, endpoint, and error (code, setting, reason, "
                                                                 "remedy) when Graph could not be reached"},
            "error": {"type": "object", "required": ["code", "message"],
                      "description": "Only in a 503: authority_unreachable or graph_unreachable / graph_tls, "
                                     "with the setting to check.",
                      "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                     "setting": {"type": "string"}}},
            "secret": {"type": ["object", "null"]},
            "warnings": {"type": "array", "items": _ref("Warning")},
            "datasets": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["status"],
                "properties": {"status": {"enum": ["ok", "missing_permission", "missing_licence", "error"]},
                               "missing": {"type": "array", "items": {"type": "string"}},
                               "remedy": {"type": "string"}}}},
        },
    }


def _health() -> dict[str, Any]:
    return {
        "type": "object", "required": ["status", "version", "configuration"],
        "properties": {
            "status": {"enum": ["ok", "misconfigured"]},
            "version": {"type": "string"},
            "configuration": {"type": "object", "required": ["valid", "settings"],
                              "properties": {"valid": {"type": "boolean"},
                                             "settings": {"type": "array", "items": {"type": "string"},
                                                          "description": "Settings that are missing or invalid "
                                                                         "(what is wrong is in the log)."}}},
        },
    }


def _schemas(names: list[str]) -> dict[str, Any]:
    warning = {"type": "object", "required": ["code", "message"],
               "properties": {"code": {"type": "string"}, "dataset": {"type": "string"}, "message": {"type": "string"}}}
    problem = {"type": "object", "required": ["setting", "message"],
               "properties": {"setting": {"type": "string"}, "message": {"type": "string"}}}
    return {"Error": _error_schema(names), "Problem": problem, "Warning": warning, **_run_schemas(names),
            "PermissionReport": _permission_report(), "Health": _health()}


def _runs_paths() -> dict[str, Any]:
    run_id = {"name": "runId", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": RUN_ID_PATTERN},
              "description": "Such as 20261122T020000Z-3f9a1c."}
    return {
        "/runs": {
            "post": {
                "operationId": "requestRun",
                "summary": "Queue a collection now, or get the tenant's run already queued or running.",
                "requestBody": {"required": False,
                                "content": {"application/json": {"schema": _ref("RunRequest")}}},
                "responses": {
                    "202": _json(_ref("RunAccepted"), "Queued (or the active run, `existing: true`).",
                                 {"Location": {"description": "The status URL.", "schema": {"type": "string"}},
                                  **_RETRY_AFTER}),
                    "400": _error("malformed_json, wrong_type, unknown_field, empty_datasets or unknown_dataset; "
                                  "`validDatasets` lists the names. tenant_required: several tenants are "
                                  "registered and the body names none."),
                    "401": _NO_KEY,
                    "404": _UNKNOWN_TENANT,
                    "413": _error("body_too_large: the body is over 64 KB."),
                    "500": _CONFIG,
                    "503": _error("queue_unavailable: the run could not be queued (it is recorded as failed); "
                                  "storage_unavailable: the snapshot storage cannot be reached (`setting`)."),
                },
            },
            "get": {
                "operationId": "listRuns",
                "summary": "Recent runs of the tenant, newest first.",
                "parameters": [{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                               _TENANT_PARAM],
                "responses": {"200": _json(_ref("RunList"), "Status records, newest first."),
                              "400": _error("bad_limit: limit is not a whole number from 1 to 100; "
                                            "tenant_required."),
                              "401": _NO_KEY,
                              "404": _UNKNOWN_TENANT,
                              "500": _CONFIG,
                              "503": _STORAGE},
            },
        },
        "/runs/{runId}": {
            "get": {
                "operationId": "getRun",
                "summary": "One run's status record.",
                "parameters": [run_id, _TENANT_PARAM],
                "responses": {"200": _json(_ref("RunStatus"), "The status record; Retry-After while it is not "
                                                              "finished.", _RETRY_AFTER),
                              "400": _error("malformed_run_id; tenant_required."),
                              "401": _NO_KEY,
                              "404": _error("unknown_run: no such run for this tenant; unknown_tenant: the tenant "
                                            "is not registered."),
                              "500": _CONFIG,
                              "503": _STORAGE},
            },
        },
    }


def _other_paths() -> dict[str, Any]:
    return {
        "/tenants": {
            "get": {
                "operationId": "listTenants",
                "summary": "Every registered tenant: last run, status, next run, consent state.",
                "responses": {"200": _json(_ref("TenantList"), "The registry's tenants, in its order."),
                              "401": _NO_KEY,
                              "500": _CONFIG,
                              "503": _STORAGE},
            },
        },
        "/permissions": {
            "get": {
                "operationId": "getPermissions",
                "summary": "Can the app get a token, and may it collect each dataset?",
                "responses": {"200": _json(_ref("PermissionReport"), "A token was had; `ok` says whether every "
                                                                     "dataset can be collected."),
                              "401": _NO_KEY,
                              "500": _CONFIG,
                              "502": _json(_ref("PermissionReport"), "No token: `token.error` has the remedy."),
                              "503": _json(_ref("PermissionReport"), "The authority (Entra ID) or Graph cannot be "
                                                                     "reached: `error` names the setting to check; "
                                                                     "answered within seconds.", _RETRY_AFTER)},
            },
        },
        "/health": {
            "get": {
                "operationId": "getHealth",
                "summary": "Version and whether the configuration is valid (no key needed).",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "Configured."),
                              "503": _json(_ref("Health"), "Misconfigured: the settings to fix.")},
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This description.",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document."), "401": _NO_KEY},
            },
        },
    }


def document(datasets: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI document (a dict, ready for JSON). A deployment serves it with the datasets its
    M365_DATASETS selects (the only names POST /runs accepts there); the generic one lists all."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Microsoft 365 inventory connector",
            "version": __version__,
            "description": "Run collections of Microsoft 365 tenants on request, follow them, and check the app's "
                           "Graph permissions. Runs are asynchronous: POST /runs answers 202 with a status URL. "
                           "Every operation but /health needs a function key (header x-functions-key, or ?code=).",
        },
        "servers": [{"url": "/api", "description": "The Function app: https://<app>.azurewebsites.net/api"}],
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "paths": {
            **_runs_paths(),
            **_other_paths(),
        },
        "components": {
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                "description": "A function or host key (az functionapp keys list)."},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code",
                                     "description": "The same key in the query string (ends up in proxy logs)."},
            },
            "schemas": _schemas(list(datasets) if datasets else list(DATASETS)),
        },
    }
