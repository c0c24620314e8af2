"""One measured collection in a process of its own (the benchmark's child).

`collect`: the connector's run into a temporary folder; `model`: the straightforward msgraph-sdk
way (model objects, following odata_next_link) for comparison. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time

import orjson


def _usage() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024  # seconds, MiB (Linux reports KiB)


def collect(env: dict[str, str]) -> dict:
    from connector.collect.engine import collect as run_collect
    from connector.config import load_settings
    from connector.store.local import LocalStore

    with tempfile.TemporaryDirectory() as out:
        settings = load_settings(env)
        cpu0, _ = _usage()
        t0 = time.perf_counter()
        manifest = asyncio.run(run_collect(settings, LocalStore(out), trigger="bench"))
        wall = time.perf_counter() - t0
        cpu1, rss = _usage()
    return {"mode": "collect", "status": manifest["status"], "wall": wall, "cpu": cpu1 - cpu0, "maxrssMiB": rss,
            "datasets": {n: {k: d.get(k) for k in ("status", "records", "requests", "retries", "throttled",
                                                      "durationSeconds", "plan", "bytes", "groups",
                                                      "retryWaitSeconds")}
                         for n, d in manifest["datasets"].items()},
            "warnings": manifest["warnings"]}


def model(env: dict[str, str], limit: int) -> dict:
    """What a user would write by hand: GraphServiceClient, users.get(), odata_next_link."""
    from azure.identity import ClientSecretCredential
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph import GraphServiceClient
    from msgraph.generated.users.users_request_builder import UsersRequestBuilder

    from connector.catalog.datasets import DATASETS

    credential = ClientSecretCredential(env["M365_TENANT_ID"], env["M365_CLIENT_ID"], env["M365_CLIENT_SECRET"],
                                        authority=env["M365_AUTHORITY_HOST"], disable_instance_discovery=True)
    client = GraphServiceClient(credential, scopes=["https://graph.microsoft.com/.default"])
    client.request_adapter.base_url = env["M365_GRAPH_ENDPOINT"] + "/v1.0"
    from urllib.parse import urlsplit

    client.request_adapter._authentication_provider.access_token_provider._allowed_hosts_validator.\
        set_allowed_hosts([urlsplit(env["M365_GRAPH_ENDPOINT"]).hostname])

    async def run() -> int:
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            select=list(DATASETS["users"].select), top=999)
        page = await client.users.get(RequestConfiguration(query_parameters=query))
        seen = 0
        while page is not None:
            seen += len(page.value or [])
            if seen >= limit or not page.odata_next_link:
                break
            page = await client.users.with_url(page.odata_next_link).get()
        return seen

    cpu0, _ = _usage()
    t0 = time.perf_counter()
    users = asyncio.run(run())
    wall = time.perf_counter() - t0
    cpu1, rss = _usage()
    return {"mode": "model", "users": users, "wall": wall, "cpu": cpu1 - cpu0, "maxrssMiB": rss}


def coldstart(env: dict[str, str], started: float) -> dict:
    """A fresh process as the Functions host has it: import function_app, then run a collection as
    the queue worker does; how long until the first Graph request leaves?"""
    import function_app  # noqa: F401 - the import is what is measured

    imported = time.perf_counter()
    from connector.collect.engine import Run
    from connector.config import load_settings
    from connector.store.local import LocalStore

    with tempfile.TemporaryDirectory() as out:
        run = Run(load_settings(env), LocalStore(out), trigger="bench")
        asyncio.run(run.execute())
    return {"mode": "coldstart", "importSeconds": imported - started,
            "firstRequestSeconds": (run.graph.first_request_at or float("nan")) - imported,
            "status": run.status}


if __name__ == "__main__":
    started = time.perf_counter()
    env = orjson.loads(sys.stdin.buffer.read())
    os.environ.update(env)  # CA bundle variables are read from the process environment
    mode = sys.argv[1]
    if mode == "coldstart":
        result = coldstart(env, started)
    else:
        result = collect(env) if mode == "collect" else model(env, int(sys.argv[2]))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
