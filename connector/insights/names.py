"""Friendly product names for SKUs, from Microsoft's "Product names and service plan identifiers for
licensing" CSV.

Graph names a SKU only by its part number (`SPE_E3`); people know it as "Microsoft 365 E3". Microsoft
publishes the mapping as a CSV. The package ships a copy (connector/insights/data, with its provenance), and a run
refreshes it from the published location when it can: at most once every REFRESH_DAYS, cached in the
snapshot store under `reference/`, so a Function without outbound access, or a download that fails, costs
one quick attempt a day and never a run.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from connector.config import keep_secrets_out_of_library_logs, public_url, scrub_urls
from connector.store.contract import Store, read_json, write_json

log = logging.getLogger("m365_connector")

DATA = Path(__file__).resolve().parent / "data"
SHIPPED = DATA / "product-names.csv.gz"
SHIPPED_SOURCE = DATA / "product-names.source.json"
CACHE_CSV = "reference/product-names.csv"
CACHE_META = "reference/product-names.json"
REFRESH_DAYS = 7  # download again when the cached copy is older
RETRY_HOURS = 24  # after a failed download, wait this long before the next attempt
COLUMNS = ("Product_Display_Name", "String_Id", "GUID")
MIN_SKUS = 100  # a real file has hundreds; fewer means we downloaded something else (a proxy's error page)


@dataclass
class ProductNames:
    """skuId (lower case) -> (String_Id, Product_Display_Name), and where the table came from."""

    names: dict[str, tuple[str, str]]
    basis: dict[str, Any] = field(default_factory=dict)

    def name(self, sku_id: str) -> str | None:
        entry = self.names.get((sku_id or "").lower())
        return entry[1] if entry else None


def parse(data: bytes) -> dict[str, tuple[str, str]]:
    """The CSV's SKU columns; raises ValueError when the file is not Microsoft's CSV."""
    text = data.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not set(COLUMNS) <= set(reader.fieldnames):
        raise ValueError(f"not the product names CSV: columns {reader.fieldnames[:6] if reader.fieldnames else []}")
    names: dict[str, tuple[str, str]] = {}
    for row in reader:
        guid = (row.get("GUID") or "").strip().lower()
        if guid and guid not in names:
            names[guid] = ((row.get("String_Id") or "").strip(), (row.get("Product_Display_Name") or "").strip())
    if len(names) < MIN_SKUS:
        raise ValueError(f"only {len(names)} SKUs in the product names CSV (expected hundreds)")
    return names


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _age_hours(stamp: str | None, now: float) -> float:
    if not stamp:
        return float("inf")
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")
    return (now - then) / 3600


def shipped() -> ProductNames:
    source = orjson.loads(SHIPPED_SOURCE.read_bytes())
    data = gzip.decompress(SHIPPED.read_bytes())
    return ProductNames(parse(data), {
        "source": "package", "url": source["publishedAt"], "sha256": hashlib.sha256(data).hexdigest(),
        "copiedFrom": source.get("copiedFrom", {}).get("repository"),
    })


def _download(url: str) -> bytes:
    import httpx

    keep_secrets_out_of_library_logs()  # httpx logs the whole URL of every request at INFO

    # trust_env: SSL_CERT_FILE (custom CAs) and HTTPS_PROXY apply, as for Graph requests.
    with httpx.Client(timeout=httpx.Timeout(20.0, connect=5.0), follow_redirects=True, trust_env=True) as client:
        response = client.get(url)
        response.raise_for_status()
        return response.content


def load(store: Store | None, url: str | None, *, now: float | None = None) -> ProductNames:
    """The freshest table available: downloaded now, cached in the store, or shipped; never raises.
    `url` None: the shipped copy only."""
    now = time.time() if now is None else now
    # What is written (the cache's metadata, insights.json) and logged names the URL without its query: a SAS
    # in M365_PRODUCT_NAMES_URL must never leave the setting (issue 22). The cache is matched on that form too.
    shown = public_url(url) if url is not None else None
    if url is None:
        result = shipped()
        result.basis["note"] = "M365_PRODUCT_NAMES_URL is none: the copy shipped in the package is used"
        return result
    meta: dict[str, Any] = {}
    cached: ProductNames | None = None
    if store is not None:
        try:
            meta = read_json(store, CACHE_META) or {}
            data = store.read_bytes(CACHE_CSV) if meta.get("sha256") else None
            if data is not None and hashlib.sha256(data).hexdigest() == meta["sha256"]:
                cached = ProductNames(parse(data), {"source": "cache", "url": public_url(str(meta.get("url"))),
                                                    "retrievedAt": meta.get("retrievedAt"), "sha256": meta["sha256"]})
        except Exception as exc:  # a damaged cache is replaced, never fatal
            log.warning("product names cache unusable (%s); using the shipped copy or a new download",
                        type(exc).__name__)
            cached = None
    fresh = cached is not None and cached.basis.get("url") == shown and \
        _age_hours(meta.get("retrievedAt"), now) < REFRESH_DAYS * 24
    recently_failed = meta.get("lastFailureUrl") == shown and _age_hours(meta.get("lastFailureAt"), now) < RETRY_HOURS
    if not fresh and not recently_failed:
        try:
            data = _download(url)
            table = parse(data)
        except Exception as exc:
            reason = failure_reason(exc)
            log.info("product names not refreshed from %s (%s); using the %s copy", shown, reason,
                     "cached" if cached else "shipped")
            meta.update(lastFailureAt=_iso(now), lastFailureUrl=shown, lastFailure=reason)
            _save_meta(store, meta)
        else:
            digest = hashlib.sha256(data).hexdigest()
            if store is not None:
                try:
                    store.write_bytes(CACHE_CSV, data, "text/csv")
                    _save_meta(store, {"url": shown, "retrievedAt": _iso(now), "sha256": digest, "bytes": len(data),
                                       "skus": len(table)})
                except Exception as exc:
                    log.warning("product names could not be cached (%s)", type(exc).__name__)
            return ProductNames(table, {"source": "download", "url": shown, "retrievedAt": _iso(now),
                                        "sha256": digest})
    result = cached or shipped()
    if meta.get("lastFailureUrl") == shown:
        result.basis["lastRefreshFailure"] = {"at": meta.get("lastFailureAt"), "reason": meta.get("lastFailure")}
    return result


def failure_reason(exc: BaseException) -> str:
    """Why a download failed, without the URL's query: an HTTP error names its status only, any other error has
    every URL in its message cut (httpx quotes the URL it failed on, SAS and all)."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {scrub_urls(str(exc))[:200]}"


def _save_meta(store: Store | None, meta: dict[str, Any]) -> None:
    if store is None:
        return
    for key in ("url", "lastFailureUrl"):  # a cache written by an earlier version may hold a whole URL
        if isinstance(meta.get(key), str):
            meta[key] = public_url(meta[key])
    try:
        write_json(store, CACHE_META, meta)
    except Exception as exc:
        log.warning("product names cache metadata could not be written (%s)", type(exc).__name__)
