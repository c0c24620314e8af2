"""Reading snapshots back the way a downstream user would, to check what the connector wrote."""

from __future__ import annotations

import gzip
import hashlib
import uuid
from typing import Any

import orjson

from connector.collect.engine import collect_sync
from connector.config import load_settings
from connector.store.contract import Store, read_json
from connector.store.destination import open_store


def settings_for(env: dict[str, str], **extra: str):
    merged = dict(env)
    merged.update(extra)
    return load_settings(merged)


def blob_env(azurite: Any) -> dict[str, str]:
    return {"SNAPSHOT_CONNECTION_STRING": azurite.connection_string,
            "SNAPSHOT_CONTAINER": f"t{uuid.uuid4().hex[:12]}"}


def run(env: dict[str, str], **extra: str) -> tuple[dict[str, Any], Store]:
    settings = settings_for(env, **extra)
    store = open_store(settings)
    manifest = collect_sync(settings, store, trigger="test")
    return manifest, store


def read_dataset(store: Store, manifest: dict[str, Any], name: str, verify: bool = True) -> list[dict[str, Any]]:
    """Records of one dataset; checks the manifest's bytes, sha256 and record count against the file."""
    entry = manifest["datasets"][name]
    prefix = f"tenants/{manifest['tenantId']}/runs/{manifest['runId']}"
    data = store.read_bytes(f"{prefix}/{entry['file']}")
    assert data is not None, f"{name}: file {entry['file']} missing"
    records = [orjson.loads(line) for line in gzip.decompress(data).splitlines()]
    if verify:
        assert len(data) == entry["bytes"], name
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert len(records) == entry["records"], name
    return records


def latest(store: Store, tenant_id: str) -> dict[str, Any] | None:
    return read_json(store, f"tenants/{tenant_id}/latest.json")


def as_written(value: Any) -> Any:
    """A Graph value as the snapshot holds it: "" in a date-time or identifier property (the sign-ins' request
    ids) becomes null (the format's one normalisation), written out here independently of
    connector.catalog.schema so the two can disagree."""
    if isinstance(value, dict):
        return {k: None if v == "" and k.endswith(("DateTime", "Date", "RequestId")) else as_written(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [as_written(v) for v in value]
    return value
