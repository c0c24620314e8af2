"""JSON batching (§10): up to 20 requests in one POST /$batch, each answered as if sent alone, the
answers in a scrambled but deterministic order."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ..tokens import new_guid
from ..web import Request, Response
from .protocol import GraphError, graph_date, ok

BATCH_LIMIT = 20  # §10
Handler = Callable[[Request], Response]


def batch(req: Request, handle: Handler) -> Response:
    """POST /$batch: every item through ``handle`` (the Graph service without its latency and faults)."""
    try:
        body = orjson.loads(req.body or b"null")
        items = body["requests"]
        if not isinstance(items, list):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise GraphError(400, "BadRequest", "Invalid batch payload format.") from None
    if not items:
        raise GraphError(400, "BadRequest", "Batch request must contain at least one request.")
    if len(items) > BATCH_LIMIT:
        raise GraphError(400, "BadRequest", f"Number of batch requests exceeds the maximum of {BATCH_LIMIT}.")
    ids = [str(i.get("id", "")).lower() if isinstance(i, dict) else "" for i in items]
    if "" in ids or len(set(ids)) != len(ids):
        raise GraphError(400, "BadRequest", "Batch request ids must be present and unique.")
    responses = []
    for item in items:
        responses.append(_batch_item(req, item, handle))
    # "Responses may be in any order": answer in a scrambled but deterministic order.
    responses.sort(key=lambda r: hashlib.sha256(str(r["id"]).encode()).digest())
    return ok({"responses": responses})


def _batch_item(outer: Request, item: dict[str, Any], handle: Handler) -> dict[str, Any]:
    method = str(item.get("method", "")).upper()
    url = str(item.get("url", ""))
    if not url or "://" in url or url.lstrip("/").lower().startswith("$batch"):
        return {"id": item["id"], "status": 400, "headers": {"Content-Type": "application/json"},
                "body": {"error": {"code": "BadRequest", "message": "Invalid request URL.",
                                   "innerError": {"date": graph_date(), "request-id": new_guid(),
                                                  "client-request-id": new_guid()}}}}
    parts = urlsplit("/" + url.lstrip("/"))
    headers = {"authorization": outer.headers.get("authorization", "")}
    headers.update({str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()})
    inner = Request(method=method, path="/v1.0" + parts.path, raw_query=parts.query,
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)), headers=headers, body=b"")
    response = handle(inner)
    kept = {k: v for k, v in response.headers.items()
            if k.lower() in ("content-type", "retry-after", "cache-control", "x-ms-resource-unit",
                             "odata-version", "location")}
    ctype = response.headers.get("Content-Type", "")
    payload: Any = orjson.loads(response.body) if "json" in ctype and response.body else \
        response.body.decode("utf-8", "replace")
    return {"id": item["id"], "status": response.status, "headers": kept, "body": payload}
