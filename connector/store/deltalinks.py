"""Where a dataset's delta link is kept between runs: one small JSON file per tenant and dataset in the
snapshot destination, `tenants/<tenantId>/delta/<dataset>.json`, naming the run whose snapshot the link
continues from. It is written only after that run is published, so a run that fails leaves the previous
link (and the snapshot it belongs to) in place. The tenant id is part of the path, so several tenants
share a destination without sharing state.
"""

from __future__ import annotations

from typing import Any

from connector.store.contract import Store, read_json, write_json
from connector.store.status import now_iso

SCHEMA = 1


def link_path(tenant_id: str, dataset: str) -> str:
    return f"tenants/{tenant_id}/delta/{dataset}.json"


def read_link(store: Store, tenant_id: str, dataset: str) -> dict[str, Any] | None | str:
    """The stored state, None when there is none, or "corrupt" when the file is not a state this connector wrote."""
    try:
        state = read_json(store, link_path(tenant_id, dataset))
    except ValueError:
        return "corrupt"
    if state is None:
        return None
    fields = {"schemaVersion": int, "tenantId": str, "dataset": str, "runId": str, "deltaLink": str,
              "obtainedAt": str, "query": str}
    if not isinstance(state, dict) or any(not isinstance(state.get(k), t) for k, t in fields.items()):
        return "corrupt"
    return state


def write_link(store: Store, tenant_id: str, dataset: str, run_id: str, link: str, obtained_at: str,
               query: str, full_at: str, extra: dict[str, Any] | None = None) -> None:
    """`runId`: the published run whose file the link continues; `query`: what the records depend on (a link made
    for another query or domain filter is not used); `fullAt`: when the dataset was last read in full. `extra`:
    what a dataset of several rounds keeps besides (connector/collect/memberships.py: `links` of its other
    rounds by path, `hidden` groups)."""
    write_json(store, link_path(tenant_id, dataset), {
        "schemaVersion": SCHEMA, "tenantId": tenant_id, "dataset": dataset, "runId": run_id, "deltaLink": link,
        "obtainedAt": obtained_at, "query": query, "fullAt": full_at, **(extra or {}), "writtenAt": now_iso()})


def drop_link(store: Store, tenant_id: str, dataset: str) -> None:
    store.delete(link_path(tenant_id, dataset))
