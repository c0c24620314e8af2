"""Azure Functions entry point (Python v2 programming model): triggers and routes only.

Every decision lives in connector.service: api (HTTP), runs (requests) and worker (the queue
worker), with queue, status records, locks and schedule in their own modules.
Importing this module does no network I/O and imports no Graph or Azure SDK client modules, so
cold starts stay short; those are imported when a function first runs.
"""

from __future__ import annotations

import azure.functions as func

from connector.service import api, runs, telemetry

telemetry.install()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _response(reply: api.Reply) -> func.HttpResponse:
    return func.HttpResponse(reply.json(), status_code=reply.status, headers=reply.headers,
                             mimetype="application/json")


@app.function_name(name="runs_request")
@app.route(route="runs", methods=["POST"])
def runs_request(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/runs: queue a run now (202) or return the tenant's active run."""
    telemetry.configure()
    return _response(api.post_run(req.get_body() or b"", req.url))


@app.function_name(name="runs_list")
@app.route(route="runs", methods=["GET"])
def runs_list(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/runs?limit=N&tenant=X: a tenant's recent runs, newest first."""
    telemetry.configure()
    return _response(api.list_runs(req.params.get("limit"), req.url, tenant=req.params.get("tenant")))


@app.function_name(name="runs_get")
@app.route(route="runs/{runId}", methods=["GET"])
def runs_get(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/runs/{runId}?tenant=X: one run's status record."""
    telemetry.configure()
    return _response(api.get_run(req.route_params.get("runId", ""), req.url, tenant=req.params.get("tenant")))


@app.function_name(name="tenants_list")
@app.route(route="tenants", methods=["GET"])
def tenants_list(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/tenants: each registered tenant's last run, status, next run and consent state."""
    telemetry.configure()
    return _response(api.list_tenants())


@app.function_name(name="permissions")
@app.route(route="permissions", methods=["GET"])
def permissions(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/permissions: the permission report (502 when no token can be had)."""
    telemetry.configure()
    return _response(api.permissions())


@app.function_name(name="openapi")
@app.route(route="openapi.json", methods=["GET"])
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/openapi.json: the OpenAPI 3.1 description of this API (keyed like the others)."""
    return _response(api.openapi())


@app.function_name(name="health")
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/health: version and configuration validity, without a key."""
    return _response(api.health())


@app.function_name(name="scheduled_run")
@app.timer_trigger(arg_name="timer", schedule=runs.timer_schedule(), run_on_startup=False, use_monitor=True)
def scheduled_run(timer: func.TimerRequest) -> None:
    """The schedule (M365_SCHEDULE, UTC) requests a run exactly as POST /api/runs does: one per registered tenant,
    each delivered at its slot after the tick."""
    telemetry.configure()
    runs.timer_fired(past_due=timer.past_due)


@app.function_name(name="run_worker")
@app.queue_trigger(arg_name="msg", queue_name=runs.RUNS_QUEUE, connection=runs.STORAGE_CONNECTION)
def run_worker(msg: func.QueueMessage) -> None:
    """Collects one queued run of one tenant; raising makes the queue deliver it again (then to the poison queue)."""
    telemetry.configure()
    runs.process_message(msg.get_body(), msg.dequeue_count or 1)


@app.function_name(name="run_poison")
@app.queue_trigger(arg_name="msg", queue_name=runs.POISON_QUEUE, connection=runs.STORAGE_CONNECTION)
def run_poison(msg: func.QueueMessage) -> None:
    """A run whose message failed every attempt is marked failed."""
    telemetry.configure()
    runs.process_poison(msg.get_body())
