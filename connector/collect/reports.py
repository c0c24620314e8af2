"""Microsoft 365 usage reports: CSV downloads turned into typed JSON records.

`GET /reports/getXxx(period='D30')` answers 302 with a short-lived, pre-authenticated URL on
another host. The SDK's redirect handler follows it and drops the Authorization header because
the origin changes, so the bearer token never reaches the download host. The CSV (UTF-8 with BOM,
quoted fields) is read in chunks as it arrives and parsed by header name, never by position:
Microsoft adds columns, and unknown ones come through named by the same rule.

Names: the header in lowerCamelCase, the words being its runs of letters and digits; `(Byte)`
becomes `InBytes` and a parenthesised platform is appended (`Outlook (Windows)` ->
`outlookWindows`), which gives Graph's JSON report names (`storageUsedInBytes`,
`exchangeLastActivityDate`, `windows10Mobile`, `ios`).
Values: headers ending in `Date` are ISO dates (`YYYY-MM-DD`) or null; `Assigned Products` is a
list; name, id, URL, type and duration columns stay text; any other value is an integer if it is
one, a boolean if it is True/False/Yes/No, null if empty, else the text as given.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson

from connector.catalog.datasets import REPORT_SETTINGS_READ, Dataset
from connector.collect.strategy import Context, register
from connector.graph.client import GraphError, _origin, error_from

log = logging.getLogger("m365_connector")

PERIODS = ("D7", "D30", "D90", "D180")
# Attempts per report request and run: 1 + retries. Graph allows 14 CSV requests per 10 minutes per app,
# tenant and report API (connector/catalog/quotas.py): three runs back to back stay within it even if every
# attempt is throttled; the process-wide pacer refuses anything beyond that.
REPORT_RETRIES = 2
ROWS_PER_BATCH = 2000
CONCEALED_RE = re.compile(r"^[0-9A-Fa-f]{32}$")
CONCEALED_FIX = ("To get user names: Microsoft 365 admin center, Settings, Org settings, Reports: untick "
                 "'Display concealed user, group, and site names in all reports' (needs a Global Administrator; "
                 "reports change within minutes).")

_SPECIAL_WORDS = {"iOS": "ios"}
_TEXT_TAIL = re.compile(r"(Name|Names|Id|URL|Type|Duration)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INT = re.compile(r"^-?\d+$")
_BOOLS = {"True": True, "False": False, "Yes": True, "No": False}
# '+' between products, but not the ' + ' inside a name such as 'ENTERPRISE MOBILITY + SECURITY E3'.
_PRODUCT_SPLIT = re.compile(r"(?<! )\+(?! )")


def field_name(header: str) -> str:
    """`Storage Used (Byte)` -> `storageUsedInBytes`, `Outlook (Windows)` -> `outlookWindows`."""
    if header in _SPECIAL_WORDS:
        return _SPECIAL_WORDS[header]
    words = re.findall(r"[A-Za-z0-9]+", header.replace("(Byte)", "In Bytes"))
    if not words:
        return header
    out = []
    for i, word in enumerate(words):
        if word.isupper() and len(word) > 1:
            word = word.capitalize()  # URL -> Url
        out.append(word[0].lower() + word[1:] if i == 0 else word[0].upper() + word[1:])
    return "".join(out)


def _date(value: str) -> str | None:
    return value if value else None  # kept as given when not YYYY-MM-DD: never invent


def _products(value: str) -> list[str]:
    return [p.strip() for p in _PRODUCT_SPLIT.split(value) if p.strip()]


def _text(value: str) -> str | None:
    return value if value != "" else None


def _auto(value: str) -> Any:
    if value == "":
        return None
    if _INT.match(value):
        return int(value)
    if value in _BOOLS:
        return _BOOLS[value]
    return value


def converter(header: str) -> Callable[[str], Any]:
    """How one column's values are typed, chosen by its header."""
    stripped = header.strip()
    if stripped == "Assigned Products":
        return _products
    if stripped.endswith("Date"):
        return _date
    if _TEXT_TAIL.search(stripped) and not stripped.endswith("In Seconds"):
        return _text
    return _auto


class CsvStream:
    """Incremental CSV reader: feed byte chunks, get typed records back.

    Only complete records are parsed; a record whose quoted field spans lines (or a chunk
    boundary) waits until its closing quote arrives. Memory holds one chunk plus one record.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._tail = ""
        self._pending: list[str] = []
        self._quotes = 0
        self._names: list[str] | None = None
        self._convert: list[Callable[[str], Any]] = []
        self.rows = 0

    @property
    def fields(self) -> list[str]:
        return list(self._names or [])

    def _records(self, text: str, final: bool) -> Iterator[str]:
        text = self._tail + text
        lines = text.split("\n")
        self._tail = "" if final else lines.pop()
        for line in lines if not final else [ln for ln in lines if ln != ""]:
            self._pending.append(line + "\n")
            self._quotes += line.count('"')
            if self._quotes % 2 == 0:
                yield "".join(self._pending)
                self._pending, self._quotes = [], 0
        if final and self._pending:
            raise ValueError("the report file ends inside a quoted field (truncated download?)")

    def feed(self, chunk: bytes, final: bool = False) -> list[dict[str, Any]]:
        text = self._decoder.decode(chunk, final)
        out: list[dict[str, Any]] = []
        for row in csv.reader(self._records(text, final)):
            if not row or row == [""]:
                continue
            if self._names is None:
                self._names = [field_name(h) for h in row]
                self._convert = [converter(h) for h in row]
                continue
            if len(row) != len(self._names):
                raise ValueError(f"report row {self.rows + 1} has {len(row)} fields; the header has "
                                 f"{len(self._names)}")
            out.append({n: c(v) for n, c, v in zip(self._names, self._convert, row, strict=True)})
            self.rows += 1
        return out


async def report_settings(ctx: Context) -> bool | None:
    """displayConcealedNames from /admin/reportSettings, once per run; None when not granted or unreadable."""
    if not ctx.granted.intersection(REPORT_SETTINGS_READ):
        return None
    graph = ctx.graph
    future = graph.shared.get("reportSettings")
    if future is None:
        future = graph.shared["reportSettings"] = asyncio.ensure_future(_read_report_settings(ctx))
    return await future


async def _read_report_settings(ctx: Context) -> bool | None:
    graph = ctx.graph
    url = f"{graph.base}/admin/reportSettings"
    try:
        response = await graph.get("admin.report_settings", url, "admin_report_settings")
    except Exception as exc:  # a confirmation only: never fail a report for it
        log.warning("reading /admin/reportSettings failed: %s", exc)
        return None
    if response.status_code != 200:
        log.warning("reading /admin/reportSettings: %s", error_from(response.status_code, response.headers,
                                                                      response.content, "/admin/reportSettings"))
        return None
    body = orjson.loads(response.content)
    if isinstance(body.get("value"), dict):  # the v1.0 doc sample wraps the entity in "value"
        body = body["value"]
    value = body.get("displayConcealedNames")
    return value if isinstance(value, bool) else None


def _request(ctx: Context, ds: Dataset) -> Any:
    reports = ctx.graph.client.reports
    builder = getattr(reports, ds.builder.split(".")[-1])
    if ds.report_period:
        builder = builder(ctx.settings.report_period)
    return builder.to_get_request_information()


@register("report")
async def report(ctx: Context, ds: Dataset) -> AsyncIterator[list[dict[str, Any]]]:
    """One usage report, streamed from its download into typed records."""
    graph, settings = ctx.graph, ctx.settings
    period = settings.report_period if ds.report_period else None
    if period:
        ctx.extra["period"] = period
    confirmed = await report_settings(ctx)
    if confirmed is not None:
        ctx.extra["reportSettings"] = {"displayConcealedNames": confirmed}
    parser = CsvStream()
    first = True
    async with graph.stream(lambda: _request(ctx, ds), ds.name,
                            max_retries=min(REPORT_RETRIES, settings.max_retries)) as response:
        if response.status_code != 200:
            content = await response.aread()
            if _origin(str(response.url)) == _origin(graph.base):
                raise error_from(response.status_code, response.headers, content, ds.path)
            raise GraphError(502, "ReportDownloadFailed",
                             f"the report's download host answered HTTP {response.status_code}: "
                             f"{content[:200].decode('utf-8', 'replace')}", path=ds.path)
        ctx.extra["downloadHost"] = response.url.host
        buffered: list[dict[str, Any]] = []
        async for chunk in response.aiter_bytes():
            buffered.extend(parser.feed(chunk))
            if first and (buffered and len(buffered) >= 50):
                conceal_check(ctx, ds, buffered, confirmed)
                first = False
            if len(buffered) >= ROWS_PER_BATCH:
                yield buffered
                buffered = []
        buffered.extend(parser.feed(b"", final=True))
        if first:
            conceal_check(ctx, ds, buffered, confirmed)
        if buffered:
            yield buffered
    ctx.extra["columns"] = parser.fields


def conceal_check(ctx: Context, ds: Dataset, rows: list[dict[str, Any]], confirmed: bool | None) -> None:
    """Concealed names are 32-hex hashes: the report cannot be joined to users, nor domain-filtered."""
    key = ds.upn_field or "userPrincipalName"
    names = [r.get(key) for r in rows if r.get(key)]
    concealed = all(isinstance(n, str) and CONCEALED_RE.match(n) for n in names) if names else confirmed
    ctx.extra["concealed"] = concealed
    if not concealed:
        return
    ctx.domain_filter = False
    source = ("confirmed by /admin/reportSettings (displayConcealedNames: true)" if confirmed else
              "/admin/reportSettings says names are shown, so the setting changed recently; the next report "
              "should have names" if confirmed is False else
              "grant ReportSettings.Read.All to have /admin/reportSettings confirm it")
    filtered = " The domain filter was not applied to it." if ctx.settings.domains is not None else ""
    ctx.warn("concealed_names", ds.name,
             f"{ds.name}: user names in this report are concealed (32-character hashes; {source}), so it cannot be "
             f"joined to users.{filtered} {CONCEALED_FIX}")
