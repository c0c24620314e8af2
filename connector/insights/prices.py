"""The optional price sheet (M365_PRICE_SHEET): what each SKU costs per seat and month, to put money on waste.

A CSV with the header `skuPartNumber,monthlyPrice,currency` (extra columns are ignored), from a local path or
a blob URL. It is read when a run starts, before any Graph request: a malformed sheet is a configuration
error naming the setting, the line and the fix; a SKU the tenant does not have is only a warning.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote, urlsplit

from connector.config import ConfigError, Problem, Settings, public_url

SETTING = "M365_PRICE_SHEET"
COLUMNS = ("skuPartNumber", "monthlyPrice", "currency")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_EXAMPLE = "skuPartNumber,monthlyPrice,currency / SPE_E3,36.00,USD"


@dataclass
class PriceSheet:
    prices: dict[str, tuple[Decimal, str]]  # upper-case skuPartNumber -> (monthly price per seat, currency)
    source: str
    unknown: list[str] = field(default_factory=list)  # filled by the insights: sheet SKUs the tenant lacks

    def price(self, part_number: str) -> tuple[Decimal, str] | None:
        return self.prices.get((part_number or "").upper())

    def basis(self) -> dict[str, Any]:
        return {"source": self.source, "skus": len(self.prices),
                "currencies": sorted({c for _p, c in self.prices.values()})}


def _problem(message: str) -> ConfigError:
    return ConfigError([Problem(SETTING, message)])


def parse(data: bytes, source: str) -> PriceSheet:
    """Validate and read the sheet; raise ConfigError listing the first problems with line numbers."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _problem(f"{source} is not UTF-8 text. Save it as a CSV (UTF-8) with the header {_EXAMPLE}.") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    names = [h.strip() for h in header] if header else []
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise _problem(f"{source}: the first line must name the columns {', '.join(COLUMNS)} (missing "
                       f"{', '.join(missing)}; found {', '.join(names) or 'nothing'}). Example: {_EXAMPLE}.")
    col = {c: names.index(c) for c in COLUMNS}
    prices: dict[str, tuple[Decimal, str]] = {}
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = {c: (row[i].strip() if i < len(row) else "") for c, i in col.items()}
        sku, raw_price, currency = cells["skuPartNumber"], cells["monthlyPrice"], cells["currency"].upper()
        try:
            price = Decimal(raw_price)
            if not price.is_finite() or price < 0:
                raise InvalidOperation
        except InvalidOperation:
            problems.append(f"line {line}: monthlyPrice {raw_price!r} is not a number of at least 0 (use a dot "
                            "for decimals, no currency sign: 36.00)")
            continue
        if not sku:
            problems.append(f"line {line}: skuPartNumber is empty (use the part number Graph reports, e.g. SPE_E3)")
        elif not _CURRENCY.match(currency):
            problems.append(f"line {line}: currency {cells['currency']!r} is not a three-letter ISO 4217 code "
                            "such as USD or EUR")
        elif sku.upper() in prices:
            problems.append(f"line {line}: {sku} is priced twice")
        else:
            prices[sku.upper()] = (price, currency)
        if len(problems) >= 5:
            break
    if problems:
        raise ConfigError([Problem(SETTING, f"{source}: {p}") for p in problems])
    if not prices:
        raise _problem(f"{source} has a header but no prices. Add one line per SKU: {_EXAMPLE}.")
    return PriceSheet(prices, source)


def _read_blob(url: str, store: Any) -> bytes:
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.storage.blob import BlobClient

    parts = urlsplit(url)
    plain = public_url(url)  # what messages may show: no SAS, no user info
    try:
        service = getattr(store, "service", None)  # the snapshot account: its credential reads the sheet too
        base = service.url.rstrip("/") + "/" if service is not None else None
        full = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if base and full.startswith(base) and not parts.query:
            container, _, name = unquote(full[len(base):]).partition("/")
            blob = service.get_blob_client(container, name)
        elif "sig=" in parts.query:
            blob = BlobClient.from_blob_url(url)  # a SAS URL carries its own authorisation
        else:
            from azure.identity import DefaultAzureCredential

            blob = BlobClient.from_blob_url(url, credential=DefaultAzureCredential())
        return blob.download_blob().readall()
    except ResourceNotFoundError:
        raise _problem(f"{plain}: no such blob. Upload the price sheet there or correct the URL.") from None
    except AzureError as exc:
        raise _problem(f"{plain} cannot be read ({type(exc).__name__}). Give the Function's managed identity the "
                       "Storage Blob Data Reader role on that container, or use a SAS URL.") from None


def load(settings: Settings, store: Any = None) -> PriceSheet | None:
    """The configured price sheet, or None when M365_PRICE_SHEET is unset."""
    location = settings.price_sheet
    if not location:
        return None
    parts = urlsplit(location)
    if parts.scheme in ("http", "https"):
        return parse(_read_blob(location, store), public_url(location))  # never the SAS token
    try:
        with open(location, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise _problem(f"{location} cannot be read ({exc.strerror}).") from None
    return parse(data, location)
