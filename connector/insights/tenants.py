"""The cross-tenant summary of a sweep: `tenants/summary.json` (seats, wasted seats, money and findings per tenant
and in total) and `tenants/summary.html`, one self-contained page over it with a tenant selector.

Written after every completed sweep (the CLI's `run` of every registered tenant; on Azure, by the worker that
finishes the last tenant of a scheduled sweep). Each tenant's figures are those of its newest published run's
insights.json (the run `latest.json` names), beside the status of its run in this sweep, so a tenant that
failed this time still shows what was last known and says so. Money is summed per currency, never converted.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from connector.store.contract import Store, read_json

SUMMARY_PATH = "tenants/summary.json"
PAGE_PATH = "tenants/summary.html"
FIGURES = ("seats", "consumed", "unusedSeats", "wastedSeats", "findings", "licensedUsers")
_TOTALS_OF = {"seats": "enabled", "consumed": "consumed", "unusedSeats": "unusedSeats", "wastedSeats": "wasteSeats",
              "findings": "findings", "licensedUsers": "licensedUsers"}


_INT = {"type": ["integer", "null"]}
_MONEY = {"type": ["object", "null"], "additionalProperties": {"type": "number"},
          "description": "amount per ISO 4217 currency code; null without a price sheet"}
_STATUS = {"enum": ["succeeded", "partial", "failed", "never", "queued", "running"]}


def summary_schema() -> dict[str, Any]:
    """JSON Schema of tenants/summary.json (docs/schema/tenants-summary.schema.json)."""
    figures = {name: _INT for name in FIGURES}
    tenant = {"type": "object", "additionalProperties": False,
              "required": ["tenant", "tenantId", "status", "runId", "error", "figuresRunId", "figuresFinishedAt",
                           *FIGURES, "monthlyCost", "monthlyWaste"],
              "properties": {"tenant": {"type": "string", "description": "the registry's tenant id or domain"},
                             "tenantId": {"type": ["string", "null"]}, "status": _STATUS,
                             "runId": {"type": ["string", "null"], "description": "its run in this sweep"},
                             "error": {"type": ["string", "null"]},
                             "figuresRunId": {"type": ["string", "null"],
                                              "description": "the newest published run the figures come from"},
                             "figuresFinishedAt": {"type": ["string", "null"]}, **figures,
                             "monthlyCost": _MONEY, "monthlyWaste": _MONEY}}
    totals = {"type": "object", "additionalProperties": False,
              "required": ["tenants", "succeeded", "partial", "failed", *FIGURES, "monthlyCost", "monthlyWaste"],
              "properties": {**{k: {"type": "integer"} for k in ("tenants", "succeeded", "partial", "failed",
                                                                  *FIGURES)},
                             "monthlyCost": _MONEY, "monthlyWaste": _MONEY}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "tenants/summary.json",
            "description": "Seats, wasted seats, money and findings per tenant and in total, written after every "
                           "completed sweep of the registered tenants.",
            "type": "object", "additionalProperties": False,
            "required": ["version", "generatedAt", "tenants", "totals"],
            "properties": {"version": {"const": 1}, "generatedAt": {"type": "string"},
                           "tenants": {"type": "array", "items": tenant}, "totals": totals}}


def _figures(store: Store, tenant_id: str | None) -> dict[str, Any]:
    """The newest published run's figures of one tenant (all None when it has none, or no insights)."""
    empty: dict[str, Any] = {"figuresRunId": None, "figuresFinishedAt": None, "monthlyCost": None,
                             "monthlyWaste": None, **dict.fromkeys(FIGURES)}
    latest = read_json(store, f"tenants/{tenant_id}/latest.json") if tenant_id else None
    if not latest:
        return empty
    doc = read_json(store, f"tenants/{tenant_id}/runs/{latest['runId']}/insights.json")
    if not doc:
        return {**empty, "figuresRunId": latest["runId"], "figuresFinishedAt": latest.get("finishedAt")}
    totals = doc["totals"]
    return {"figuresRunId": latest["runId"], "figuresFinishedAt": latest.get("finishedAt"),
            **{name: totals.get(key) for name, key in _TOTALS_OF.items()},
            "monthlyCost": totals.get("monthlyCost"), "monthlyWaste": totals.get("monthlyWaste")}


def _add_money(into: dict[str, float], amounts: Mapping[str, float] | None) -> None:
    for currency, amount in (amounts or {}).items():
        into[currency] = round(into.get(currency, 0.0) + amount, 2)


def build_summary(store: Store, rows: Iterable[Mapping[str, Any]], generated_at: str | None = None) -> dict[str, Any]:
    """The summary document from one row per tenant of the sweep: tenant (registry key), tenantId, status, runId
    and error of its run in this sweep."""
    tenants = []
    totals: dict[str, Any] = {"tenants": 0, "succeeded": 0, "partial": 0, "failed": 0,
                              **dict.fromkeys(FIGURES, 0), "monthlyCost": {}, "monthlyWaste": {}}
    for row in rows:
        entry = {"tenant": row["tenant"], "tenantId": row.get("tenantId"), "status": row["status"],
                 "runId": row.get("runId"), "error": row.get("error"), **_figures(store, row.get("tenantId"))}
        tenants.append(entry)
        totals["tenants"] += 1
        if entry["status"] in ("succeeded", "partial", "failed"):
            totals[entry["status"]] += 1
        for name in FIGURES:
            totals[name] += entry[name] or 0
        _add_money(totals["monthlyCost"], entry["monthlyCost"])
        _add_money(totals["monthlyWaste"], entry["monthlyWaste"])
    for name in ("monthlyCost", "monthlyWaste"):
        totals[name] = totals[name] or None
    stamp = generated_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"version": 1, "generatedAt": stamp, "tenants": tenants, "totals": totals}


def write_summary(store: Store, rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Build and write tenants/summary.json, then tenants/summary.html; returns the summary."""
    summary = build_summary(store, rows)
    store.write_bytes(SUMMARY_PATH, orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n", "application/json")
    store.write_bytes(PAGE_PATH, render_page(summary).encode(), "text/html; charset=utf-8")
    return summary


_STYLE = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-top:1em}
td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}td:first-child,th:first-child{text-align:left}
.cards{display:flex;gap:1em;flex-wrap:wrap;margin-top:1em}
.card{border:1px solid #ccc;border-radius:6px;padding:8px 14px}
.card .v{font-size:20px;font-weight:600}.failed{color:#b00020}.partial{color:#a15c00}.note{color:#666}"""

_SCRIPT = """
const data = JSON.parse(document.getElementById('summary-data').textContent);
const num = (v) => v === null || v === undefined ? 'n/a' : Number(v).toLocaleString('en-US');
const money = (m) => !m ? 'n/a' : Object.entries(m).map(([c, a]) => a.toLocaleString('en-US',
  {minimumFractionDigits: 2, maximumFractionDigits: 2}) + ' ' + c).join(' + ');
const select = document.getElementById('tenant');
for (const t of data.tenants) {
  const o = document.createElement('option'); o.value = t.tenant; o.textContent = t.tenant; select.appendChild(o);
}
const body = document.querySelector('table[data-table="tenants"] tbody');
for (const t of data.tenants) {
  const tr = document.createElement('tr'); tr.dataset.tenant = t.tenant;
  const cells = [['tenant', t.tenant], ['status', t.status], ['seats', num(t.seats)],
    ['wastedSeats', num(t.wastedSeats)], ['monthlyWaste', money(t.monthlyWaste)], ['findings', num(t.findings)]];
  for (const [field, text] of cells) {
    const td = document.createElement('td'); td.dataset.field = field; td.textContent = text;
    if (field === 'status') td.className = t.status; tr.appendChild(td);
  }
  body.appendChild(tr);
}
function show(key) {
  const t = key ? data.tenants.find((x) => x.tenant === key) : null;
  const f = t || data.totals;
  const set = (name, text) => { document.querySelector(`[data-total="${name}"] .v`).textContent = text; };
  set('seats', num(f.seats)); set('wastedSeats', num(f.wastedSeats)); set('unusedSeats', num(f.unusedSeats));
  set('findings', num(f.findings)); set('monthlyWaste', money(f.monthlyWaste));
  set('monthlyCost', money(f.monthlyCost));
  set('status', t ? t.status : `${data.totals.succeeded + data.totals.partial} of ${data.totals.tenants} collected`);
  document.querySelector('[data-field="scope"]').textContent = t ? t.tenant : 'all tenants';
  document.querySelector('[data-field="error"]').textContent = t && t.error ? t.error : '';
  document.querySelector('[data-field="figuresRun"]').textContent = t ? (t.figuresRunId
    ? `figures from run ${t.figuresRunId}` : 'no published run yet') : '';
  for (const tr of body.querySelectorAll('tr')) tr.hidden = Boolean(key) && tr.dataset.tenant !== key;
}
select.addEventListener('change', () => show(select.value));
show('');
"""


def render_page(summary: Mapping[str, Any]) -> str:
    """One self-contained HTML page (no network): the summary's JSON embedded, drawn by a small script."""
    data = orjson.dumps(summary).decode().replace("</", "<\\/")
    cards = "".join(f'<div class="card" data-total="{name}"><div>{label}</div><div class="v"></div></div>'
                    for name, label in (("status", "status"), ("seats", "seats"), ("wastedSeats", "wasted seats"),
                                        ("unusedSeats", "unused seats"), ("monthlyWaste", "monthly waste"),
                                        ("monthlyCost", "monthly cost"), ("findings", "findings")))
    heads = "".join(f"<th>{h}</th>" for h in ("tenant", "status", "seats", "wasted seats", "monthly waste",
                                                "findings"))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Licences across tenants"
            f"</title><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src "
            f"'unsafe-inline'; script-src 'unsafe-inline'\"><style>{_STYLE}</style></head><body>"
            f"<h1>Licences across tenants</h1><p class=\"note\">Sweep of {html.escape(summary['generatedAt'])}; "
            f"money per currency from each tenant's price sheet.</p>"
            f"<label>Tenant <select id=\"tenant\"><option value=\"\">All tenants</option></select></label>"
            f"<h2 data-field=\"scope\"></h2><p class=\"failed\" data-field=\"error\"></p>"
            f"<p class=\"note\" data-field=\"figuresRun\"></p><div class=\"cards\">{cards}</div>"
            f"<table data-table=\"tenants\"><thead><tr>{heads}</tr></thead><tbody></tbody></table>"
            f"<script type=\"application/json\" id=\"summary-data\">{data}</script>"
            f"<script>{_SCRIPT}</script></body></html>")
