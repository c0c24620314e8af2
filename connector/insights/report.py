"""report.html: insights.json as one self-contained page for a licence or finance manager.

Charts are inline SVG drawn here, styles are inline, there is no script, and a Content-Security-Policy of
`default-src 'none'` keeps the browser from fetching anything: the file opens offline, from a mail
attachment or a blob download alike. Every figure carries `data-*` attributes naming what it shows, so the
browser test can read the page back and compare it with insights.json.
"""

from __future__ import annotations

from html import escape
from typing import Any

SERIES = (  # seats chart: (series, label, colour, classes of assignedByActivity it sums)
    ("active", "active", "#2f7d32", ("active", "new")),
    ("inactive", "inactive or never signed in", "#e0a100", ("inactive", "neverSignedIn")),
    ("disabled", "disabled account", "#c62828", ("disabled",)),
    ("unknown", "activity unknown", "#9e9e9e", ("unknown",)),
    ("unused", "unused seat", "#90a4ae", ()),
)
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.meta{color:#555;margin:0}.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:140px;box-shadow:0 1px 2px #0002}
.card .v{display:block;font-size:22px;font-weight:600}.card .k{color:#555;font-size:12px}
section{background:#fff;border-radius:8px;padding:8px 16px 16px;margin-top:16px;box-shadow:0 1px 2px #0002}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 6px;
border-bottom:1px solid #e5e5e5;vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.sev-high{color:#b71c1c;font-weight:600}.sev-medium{color:#a66900;font-weight:600}.sev-low{color:#455a64}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:4px;border-radius:2px}svg text{font:12px system-ui,sans-serif;fill:#333}
.note{color:#666;font-size:12px}code{font-size:12px}
"""


def _n(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}"


def _money(amounts: dict[str, float] | None) -> str:
    if not amounts:
        return "n/a"
    return " + ".join(f"{v:,.2f} {c}" for c, v in sorted(amounts.items()))


def _label(sku: dict[str, Any]) -> str:
    return sku.get("productName") or sku["skuPartNumber"]


def _cards(doc: dict[str, Any]) -> str:
    t = doc["totals"]
    free = t.get("free") or {}
    cards = [("enabledPaid", "paid seats", _n(t.get("enabledPaid"))),
             ("freeEnabled", "free seats (not money)", _n(free.get("enabled"))),
             ("assigned", "licences assigned", _n(t["assigned"])),
             ("unusedSeats", "unused seats", _n(t["unusedSeats"])), ("wasteSeats", "wasted seats", _n(t["wasteSeats"])),
             ("monthlyWaste", "monthly waste", _money(t["monthlyWaste"])), ("findings", "findings", _n(t["findings"]))]
    return "".join(f'<div class="card" data-total="{k}"><span class="v">{escape(v)}</span><span class="k">'
                   f"{escape(label)}</span></div>" for k, label, v in cards)


def _seat_chart(skus: list[dict[str, Any]]) -> str:
    rows = [s for s in skus if (s["assigned"] or 0) + (s["unusedSeats"] or 0) > 0]
    if not rows:
        return '<p class="note">No seats or assignments.</p>'
    top = max((s["assigned"] or 0) + (s["unusedSeats"] or 0) for s in rows)
    left, width, bar, gap = 230, 620, 18, 8
    height = len(rows) * (bar + gap) + 10
    parts = [f'<svg role="img" aria-label="Seats per SKU" width="{left + width + 80}" height="{height}" '
             f'viewBox="0 0 {left + width + 80} {height}" data-chart="seats">']
    for i, s in enumerate(rows):
        y = 5 + i * (bar + gap)
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{escape(_label(s))}</text>')
        x = float(left)
        total = 0
        for key, label, colour, classes in SERIES:
            value = (s["unusedSeats"] or 0) if key == "unused" else sum(s["assignedByActivity"][c] for c in classes)
            total += value
            w = width * value / top
            parts.append(f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{bar}" fill="{colour}" '
                         f'data-sku="{escape(s["skuId"])}" data-series="{key}" data-value="{value}">'
                         f"<title>{escape(_label(s))}: {value:,} {escape(label)}</title></rect>")
            x += w
        parts.append(f'<text x="{x + 6:.2f}" y="{y + 13}" data-sku="{escape(s["skuId"])}" data-series="total">'
                     f"{total:,}</text>")
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{escape(label)}</span>' for _k, label, c, _ in SERIES)
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _waste_chart(skus: list[dict[str, Any]]) -> str:
    rows = sorted((s for s in skus if s["wasteSeats"]), key=lambda s: (-(s.get("monthlyWaste") or 0),
                                                                       -s["wasteSeats"]))
    if not rows:
        return '<p class="note">No wasted seats.</p>'
    top = max(s["wasteSeats"] for s in rows)
    left, width, bar, gap = 230, 520, 18, 8
    height = len(rows) * (bar + gap) + 10
    parts = [f'<svg role="img" aria-label="Waste by SKU" width="{left + width + 200}" height="{height}" '
             f'viewBox="0 0 {left + width + 200} {height}" data-chart="waste">']
    for i, s in enumerate(rows):
        y = 5 + i * (bar + gap)
        w = width * s["wasteSeats"] / top
        money = (f' · <tspan data-sku="{escape(s["skuId"])}" data-field="monthlyWaste">{s["monthlyWaste"]:,.2f}'
                 f'</tspan> {escape(s["currency"])}/month' if s.get("monthlyWaste") is not None else "")
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{escape(_label(s))}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.2f}" height="{bar}" fill="#c62828" '
                     f'data-sku="{escape(s["skuId"])}" data-series="wasteSeats" data-value="{s["wasteSeats"]}"/>'
                     f'<text x="{left + w + 6:.2f}" y="{y + 13}"><tspan data-sku="{escape(s["skuId"])}" '
                     f'data-field="wasteSeats">{s["wasteSeats"]:,}</tspan> seats{money}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _trend_chart(points: list[dict[str, Any]]) -> str:
    left, width, top_pad, height = 60, 760, 12, 200
    top = max([p["assigned"] or 0 for p in points] + [p["wasteSeats"] or 0 for p in points] + [1])
    step = width / max(len(points) - 1, 1)

    def xy(i: int, v: int) -> tuple[float, float]:
        return left + i * step, top_pad + height - height * v / top

    parts = [f'<svg role="img" aria-label="Trend of the last runs" width="{left + width + 40}" '
             f'height="{height + 50}" viewBox="0 0 {left + width + 40} {height + 50}" data-chart="trend">',
             f'<line x1="{left}" y1="{top_pad + height}" x2="{left + width}" y2="{top_pad + height}" stroke="#999"/>',
             f'<text x="{left - 6}" y="{top_pad + 4}" text-anchor="end">{top:,}</text>',
             f'<text x="{left - 6}" y="{top_pad + height}" text-anchor="end">0</text>']
    for key, colour in (("assigned", "#1565c0"), ("wasteSeats", "#c62828")):
        coords = [xy(i, p[key] or 0) for i, p in enumerate(points)]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), p in zip(coords, points, strict=True):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}" data-run="{escape(p["runId"])}" '
                         f'data-series="{key}" data-value="{p[key]}"><title>{escape(p["runId"])}: '
                         f"{p[key]:,} {key}</title></circle>")
    for i, p in enumerate(points):
        x, _ = xy(i, 0)
        parts.append(f'<text x="{x:.1f}" y="{top_pad + height + 18}" text-anchor="middle">'
                     f"{escape((p['startedAt'] or '')[:10])}</text>")
    parts.append("</svg>")
    legend = ('<div class="legend"><span><i style="background:#1565c0"></i>licences assigned</span>'
              '<span><i style="background:#c62828"></i>wasted seats</span></div>')
    note = ('<p class="note">The trend starts with this run; later runs add their points.</p>'
            if len(points) == 1 else "")
    rows = "".join(
        f'<tr data-run="{escape(p["runId"])}"><td>{escape(p["runId"])}</td><td class="n" data-field="assigned">'
        f'{_n(p["assigned"])}</td><td class="n" data-field="wasteSeats">{_n(p["wasteSeats"])}</td>'
        f'<td class="n" data-field="monthlyWaste">{escape(_money(p["monthlyWaste"]))}</td></tr>' for p in points)
    table = ('<table data-table="trend"><tr><th>run</th><th class="n">assigned</th><th class="n">wasted seats</th>'
             f'<th class="n">monthly waste</th></tr>{rows}</table>')
    return legend + "".join(parts) + note + table


def _findings_table(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return '<p class="note">No findings.</p>'
    rows = []
    for f in findings:
        money = f"{f['monthlySaving']:,.2f} {f['currency']}" if f.get("monthlySaving") is not None else ""
        rows.append(
            f'<tr data-finding="{escape(f["code"])}" data-sku="{escape(f["skuId"])}">'
            f'<td class="sev-{f["severity"]}">{f["severity"]}</td><td><code>{escape(f["code"])}</code></td>'
            f'<td>{escape(f.get("productName") or f["skuPartNumber"])}</td>'
            f'<td class="n" data-field="count">{f["count"]:,}</td><td class="n" data-field="monthlySaving">{money}</td>'
            f'<td>{escape(f["message"])}<br><span class="note">{escape(f["remedy"])}</span></td></tr>')
    return ('<table data-table="findings"><tr><th>severity</th><th>finding</th><th>product</th><th class="n">count'
            '</th><th class="n">saving/month</th><th>what and what to do</th></tr>' + "".join(rows) + "</table>")


def _recommendations(findings: list[dict[str, Any]]) -> str:
    """Findings with money, saving per month and year, by rule and by SKU. Sorting needs no script: the
    table is given twice, by saving and by product (a <details> each), so the page stays script-free."""
    priced = [f for f in findings if f.get("monthlySaving")]
    if not priced:
        return '<p class="note">No priced recommendation (no price sheet, or nothing to save).</p>'

    def table(rows: list[dict[str, Any]], name: str) -> str:
        body = "".join(
            f'<tr data-recommendation="{escape(f["code"])}" data-sku="{escape(f["skuId"])}"><td><code>'
            f'{escape(f["code"])}</code></td><td>{escape(f.get("productName") or f["skuPartNumber"])}</td>'
            f'<td class="n" data-field="count">{f["count"]:,}</td>'
            f'<td class="n" data-field="monthlySaving">{f["monthlySaving"]:,.2f} {escape(f["currency"])}</td>'
            f'<td class="n" data-field="yearlySaving">{f["yearlySaving"]:,.2f} {escape(f["currency"])}</td></tr>'
            for f in rows)
        return (f'<table data-table="{name}"><tr><th>rule</th><th>product</th><th class="n">count</th>'
                f'<th class="n">saving/month</th><th class="n">saving/year</th></tr>{body}</table>')

    by_rule: dict[tuple[str, str], float] = {}
    for f in priced:
        by_rule[(f["code"], f["currency"])] = by_rule.get((f["code"], f["currency"]), 0) + f["monthlySaving"]
    rules = "".join(f'<tr data-rule="{escape(code)}"><td><code>{escape(code)}</code></td><td class="n">{v:,.2f} '
                    f'{escape(cur)}</td><td class="n">{v * 12:,.2f} {escape(cur)}</td></tr>'
                    for (code, cur), v in sorted(by_rule.items(), key=lambda kv: -kv[1]))
    ordered = sorted(priced, key=lambda f: -f["monthlySaving"])
    by_sku = sorted(priced, key=lambda f: (f.get("productName") or f["skuPartNumber"], -f["monthlySaving"]))
    return (f'<table data-table="savings-by-rule"><tr><th>rule</th><th class="n">saving/month</th>'
            f'<th class="n">saving/year</th></tr>{rules}</table>'
            f'<details open><summary>By saving</summary>{table(ordered, "recommendations")}</details>'
            f'<details><summary>By product</summary>{table(by_sku, "recommendations-by-sku")}</details>'
            '<p class="note">A seat may be named by more than one rule (an inactive user holding an overlapping '
            'licence); the rules\' savings do not add up to one total.</p>')


SKU_COLUMNS = (("enabled", "paid"), ("consumed", "consumed"), ("available", "available"), ("assigned", "assigned"),
               ("assignedDisabled", "disabled"), ("assignedInactive", "inactive"),
               ("assignedNeverSignedIn", "never signed in"), ("assignedGuests", "guests"),
               ("directAndGroup", "direct + group"), ("groupErrors", "group errors"), ("wasteSeats", "wasted"))


def _sku_table(skus: list[dict[str, Any]]) -> str:
    head = "".join(f'<th class="n">{escape(label)}</th>' for _k, label in SKU_COLUMNS)
    rows = []
    for s in skus:
        cells = "".join(f'<td class="n" data-sku="{escape(s["skuId"])}" data-field="{k}">{_n(s[k])}</td>'
                        for k, _label in SKU_COLUMNS)
        price = (f"{s['monthlyPrice']:,.2f} {s['currency']}" if s.get("monthlyPrice") is not None else "")
        rows.append(f'<tr><td>{escape(_label(s))}<br><code>{escape(s["skuPartNumber"])}</code></td>'
                    f'<td>{escape(s["capabilityStatus"] or "")}</td>{cells}<td class="n">{escape(price)}</td></tr>')
    return (f'<table data-table="skus"><tr><th>product</th><th>status</th>{head}<th class="n">price/month</th></tr>'
            + "".join(rows) + "</table>")


def _changes(changes: dict[str, Any] | None, why: str) -> str:
    if not changes:
        return f'<p class="note">{escape(why)}</p>'
    facts = (("usersAdded", "users added"), ("usersRemoved", "users removed"),
             ("licencesAssigned", "licences assigned"), ("licencesRemoved", "licences removed"),
             ("seatsBought", "seats bought"), ("seatsDropped", "seats dropped"))
    cards = "".join(f'<div class="card" data-change="{k}"><span class="v">{changes[k]:,}</span><span class="k">'
                    f"{label}</span></div>" for k, label in facts)
    rows = "".join(f'<tr><td>{escape(r["skuPartNumber"])}</td><td class="n">+{r["licencesAssigned"]:,}</td>'
                   f'<td class="n">-{r["licencesRemoved"]:,}</td><td class="n">{r["seatsChange"]:+,}</td></tr>'
                   for r in changes["skus"])
    return (f'<p class="meta">Since run <code>{escape(changes["previousRunId"])}</code>.</p><div class="cards">'
            f'{cards}</div><table><tr><th>SKU</th><th class="n">assigned</th><th class="n">removed</th>'
            f'<th class="n">seats</th></tr>{rows}</table>')


def render(doc: dict[str, Any]) -> bytes:
    b = doc["basis"]
    source = {"signInActivity": "sign-in activity", "usageReports": "usage reports (sign-in activity unavailable)",
              None: "unknown (no sign-in activity and no usage report with visible names)"}[b["activitySource"]]
    fallbacks = "".join(f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in b["fallbacks"].items())
    title = f"Licence insights {b['runId']}"
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body><main>
<h1>Licence insights</h1>
<p class="meta">Tenant <code>{escape(b["tenantId"])}</code>, run <code data-field="runId">{escape(b["runId"])}</code>
started {escape(b["startedAt"])}. Inactive means no successful sign-in for more than
<span data-field="inactiveDays">{b["inactiveDays"]}</span> days (before {escape(b["inactiveBefore"])}); activity from
{escape(source)}.</p>
<div class="cards">{_cards(doc)}</div>
<section><h2>Seats per SKU</h2>{_seat_chart(doc["skus"])}</section>
<section><h2>Waste by SKU</h2>{_waste_chart(doc["skus"])}</section>
<section><h2>Trend of the last runs</h2>{_trend_chart(doc["trend"])}</section>
<section><h2>Recommendations</h2>{_recommendations(doc["findings"])}</section>
<section><h2>Findings</h2>{_findings_table(doc["findings"])}</section>
<section><h2>SKUs</h2>{_sku_table(doc["skus"])}</section>
<section><h2>Changes since the previous run</h2>{_changes(doc["changes"], b["fallbacks"]["changes"])}</section>
<section><h2>What the figures rest on</h2><ul>{fallbacks}</ul>
<p class="note">Definitions: docs/insights.md. Per-user evidence: licence_findings.jsonl.gz beside this file.</p>
</section>
<p class="note">{escape(doc["generatedBy"])}</p>
</main></body></html>
"""
    return html.encode("utf-8")
