"""The permission report: can the app get a token, and may it read each dataset?

Granted application permissions come from the token's `roles` claim; licence-dependent
datasets are probed with one small request, since no claim says what the tenant has bought.
"""

from __future__ import annotations

import asyncio
from typing import Any

from connector.catalog.datasets import DATASETS, is_licence_error
from connector.collect.failures import ERROR_REMEDIES, PORTAL_STEP, refused_anyway
from connector.config import Settings
from connector.graph.auth import GraphCredential, read_client_secret, secret_expiry_warning, token_failure_from


async def _probe(graph: Any, name: str) -> tuple[str, str | None]:
    """One $top=1 request: tells a missing licence apart from a granted permission."""
    from connector.collect.strategy import first_url
    from connector.graph.client import GraphError, error_from

    ds = DATASETS[name]
    url = first_url(graph, ds).replace(f"$top={ds.top}", "$top=1") if ds.top else first_url(graph, ds)
    parents = next((leg for leg in ds.fan_out.legs if leg.parents), None) if ds.fan_out else None
    if parents is not None:  # a fan-out's path has {id} in it: probe the parent list instead
        url = f"{graph.base}{parents.parents}" + ("?$top=1" if parents.parent_top else "")
    response = await graph.get(ds.builder, url, f"probe:{name}")
    if response.status_code == 200:
        return "ok", None
    err: GraphError = error_from(response.status_code, response.headers, response.content, ds.path)
    if is_licence_error(ds.licence, err.code, err.status, err.message):
        return "missing_licence", f"The tenant needs {ds.licence} ({err.code})."
    if err.code in ERROR_REMEDIES:
        perm, why = ERROR_REMEDIES[err.code]
        return "missing_permission", f"{why} ({err.code}). Grant {perm}. " + PORTAL_STEP.format(perm=perm)
    if err.status == 403:
        fix = " and ".join(refused_anyway(ds))
        return "missing_permission", (f"Graph refused access: {err.code}: {err.message}. Grant {fix}. "
                                      + PORTAL_STEP.format(perm=fix))
    return "error", str(err)


REACH_SECONDS = 5.0  # the reachability probe is sent once and given this long: a caller is waiting


async def _reach(graph: Any, settings: Settings) -> dict[str, Any]:
    """One small request, sent once: any HTTP answer proves Graph is reachable and its certificate trusted; no
    answer within REACH_SECONDS, or no connection, is said at once (retries with backoff took half a minute)."""
    from connector.config import shown_url
    from connector.graph.client import GraphError
    from connector.graph.unreachable import graph_failure, graph_timeout

    endpoint = shown_url(settings.graph_endpoint)
    try:
        await asyncio.wait_for(graph.get("organization", f"{graph.base}/organization?$select=id", "probe:graph",
                                         max_retries=0), REACH_SECONDS)
    except TimeoutError:
        return {"ok": False, "endpoint": endpoint, "error": graph_timeout(settings.graph_endpoint,
                                                                          REACH_SECONDS).as_dict()}
    except Exception as exc:
        unreachable = graph_failure(exc, settings.graph_endpoint)
        if unreachable is not None:
            return {"ok": False, "endpoint": endpoint, "error": unreachable.as_dict()}
        if not (isinstance(exc, GraphError) and exc.status):  # an HTTP answer, even an error, is Graph reached
            raise
    return {"ok": True, "endpoint": endpoint}


async def permission_report(settings: Settings, probe: bool = True) -> dict[str, Any]:
    report: dict[str, Any] = {
        "ok": False,
        "tenantId": settings.tenant_id,
        "clientId": settings.client_id,
        "cloud": settings.cloud,
        "token": {"ok": False},
        "graph": None,
        "grantedPermissions": [],
        "secret": None,
        "warnings": [],
        "datasets": {},
    }
    credential = None
    try:
        secret = await asyncio.to_thread(read_client_secret, settings)
        report["secret"] = {"source": secret.source,
                            "expiresOn": secret.expires_on.isoformat() if secret.expires_on else None}
        warning = secret_expiry_warning(secret)
        if warning:
            report["warnings"].append({"code": "secret_expiring", "message": warning})
        credential = GraphCredential(settings, secret, quick=True)
        granted, claims = await asyncio.to_thread(credential.roles)
    except Exception as exc:
        failure = token_failure_from(exc, settings.authority_host)
        report["token"] = {"ok": False, "error": failure.as_dict()}
        if credential:
            credential.close()
        return report
    report["token"] = {"ok": True, "tenantId": claims.get("tid"), "appId": claims.get("appid")}
    report["grantedPermissions"] = sorted(granted)

    graph = None
    try:
        if probe:
            from connector.graph.client import Graph

            graph = Graph(settings, credential)
            report["graph"] = await _reach(graph, settings)
            if not report["graph"]["ok"]:
                return report
        for name in settings.selected_datasets:
            ds = DATASETS[name]
            missing = ds.missing_roles(granted)
            entry: dict[str, Any] = {"status": "ok", "requires": [list(g) for g in ds.requires],
                                     "licence": ds.licence}
            if ds.optional:  # used when granted; without them the dataset is collected minus `adds`
                entry["optional"] = [{"roles": list(o.roles), "adds": o.adds,
                                      "granted": bool(granted.intersection(o.roles))} for o in ds.optional]
            if settings.cloud not in ds.clouds:
                entry.update(status="not_in_cloud", remedy=f"Graph does not offer {ds.path} in the {settings.cloud} "
                                                           "cloud; the dataset is skipped, not a failure.")
            elif missing:
                perms = " and ".join(missing)
                entry.update(status="missing_permission", missing=missing,
                             remedy=f"Grant {perms}. " + PORTAL_STEP.format(perm=perms))
            elif ds.licence and probe:
                if graph is None:
                    from connector.graph.client import Graph

                    graph = Graph(settings, credential)
                status, detail = await _probe(graph, name)
                entry["status"] = status
                if detail:
                    entry["remedy"] = detail
            report["datasets"][name] = entry
        if graph is not None and probe:
            report["estimates"] = await _estimates(graph, settings, report["datasets"])
    finally:
        if graph is not None:
            await graph.aclose()
        credential.close()
    report["ok"] = all(e["status"] in ("ok", "not_in_cloud") for e in report["datasets"].values())
    return report


async def _estimates(graph: Any, settings: Settings, datasets: dict[str, Any]) -> dict[str, Any]:
    """Each collectable per-user dataset's expected duration from /users/$count and Graph's quotas."""
    from connector.collect.estimate import PER_USER, estimates
    from connector.collect.paging import tenant_user_count

    names = [n for n, e in datasets.items() if n in PER_USER and e["status"] == "ok"]
    if not names:
        return {}
    try:
        users = await tenant_user_count(graph)
    except Exception:  # estimates are a courtesy: the datasets' own probes say what is wrong
        return {}
    if users is None:
        return {}
    return {n: {**e.as_dict(), "text": e.text()} for n, e in estimates(names, users, graph.pacer.limits).items()}
