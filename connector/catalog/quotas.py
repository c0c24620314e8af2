"""Graph's documented quotas, declared once with their sources, and which of them a request draws on.

Plain declarations like the datasets: connector/graph/pacer.py keeps a run's requests under them, the
settings (M365_GRAPH_QUOTAS, M365_GRAPH_QUOTA_SCALE) override them, and `check` and the run's start
estimate each dataset's duration from them (connector/collect/estimate.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class Quota:
    """One of Graph's documented limits: at most `limit` units per `window` seconds."""

    name: str
    limit: float
    window: float
    unit: str  # "requests" or "resource units"
    counted: str  # who Graph counts together, for people
    source: str
    scope: str = "tenant"  # "tenant": per app and tenant, paced in-process; "app": per app across all tenants


    @property
    def per_minute(self) -> float:
        return self.limit * 60 / self.window


# Identity and access (users, groups, subscribedSkus, devices, roles, applications, ...): a token bucket of
# resource units per app and tenant, by the tenant's size. concepts/throttling-limits.md, "Identity and
# access service limits" (graph-facts §6).
IDENTITY_BY_SIZE = ((50, 3500.0), (500, 5000.0), (math.inf, 8000.0))  # (fewer users than, units per 10 s)
SOURCE_IDENTITY = "concepts/throttling-limits.md, identity and access service limits (resource units)"
SOURCE_GLOBAL = "concepts/throttling-limits.md, global limits (per app across all tenants)"
SOURCE_REPORTS = ("concepts/throttling-limits.md, include throttling-entra-logs-reports.md "
                  "(microsoft-graph-docs-contrib PR #9591, July 2025)")

DEFAULTS: dict[str, Quota] = {q.name: q for q in (
    Quota("identity", 3500.0, 10.0, "resource units", "per app and tenant (3,500 / 5,000 / 8,000 for tenants "
          "under 50, 50-500 and over 500 users)", SOURCE_IDENTITY),
    Quota("identity_reports", 5.0, 10.0, "requests", "per app and tenant: auditLogs, signIns, "
          "authenticationMethods (userRegistrationDetails), signInActivity", SOURCE_REPORTS),
    Quota("sign_in_activity", 10.0, 60.0, "requests", "per app and tenant, and per app across all tenants: "
          "users listed or read with signInActivity", SOURCE_REPORTS),
    Quota("intune", 2000.0, 20.0, "requests", "per app and tenant: device management (managedDevices, "
          "detectedApps)", "includes/throttling-intune-devices.md"),
    Quota("usage_report", 14.0, 600.0, "requests", "per app and tenant, each report API on its own",
          "concepts/throttling-limits.md, Microsoft 365 usage reports (CSV)"),
    Quota("usage_reports_tenant", 40.0, 600.0, "requests", "per tenant for all apps, all report APIs",
          "concepts/throttling-limits.md, Microsoft 365 usage reports (CSV)"),
    # Per app across ALL tenants: one budget for every tenant a deployment collects, whichever process sends
    # the request (connector/graph/ledger.py shares them; the in-process pacer keeps the per-tenant ones).
    Quota("app_any", 130000.0, 10.0, "requests", "per app across all tenants: any request", SOURCE_GLOBAL, "app"),
    Quota("app_identity", 150000.0, 20.0, "resource units", "per app across all tenants: identity and access "
          "(the \"application\" row of the resource unit quota)", SOURCE_IDENTITY, "app"),
    Quota("app_identity_reports", 122.0, 10.0, "requests", "per app across all tenants: identity and access "
          "reports", SOURCE_REPORTS, "app"),
    Quota("app_sign_in_activity", 10.0, 60.0, "requests", "per app across all tenants: users listed or read "
          "with signInActivity", SOURCE_REPORTS, "app"),
)}

# Which app-wide quota each per-tenant quota also draws on (besides app_any, which every request draws on).
APP_WIDE = {"identity": "app_identity", "identity_reports": "app_identity_reports",
            "sign_in_activity": "app_sign_in_activity"}

# Base costs in resource units of identity GETs (concepts/throttling-limits.md); any other identity GET costs 1.
_BASE_COST = (("/users", 2), ("/subscribedskus", 3), ("/members", 3), ("/transitivemembers", 5),
              ("/applications", 2), ("/memberof", 2), ("/transitivememberof", 2), ("/licensedetails", 2),
              ("/directoryobjects/getbyids", 3))


class QuotaError(ValueError):
    """M365_GRAPH_QUOTAS or M365_GRAPH_QUOTA_SCALE is malformed; the message names the setting and the fix."""


def parse_overrides(text: str) -> dict[str, tuple[float, float]]:
    """`name=limit/seconds, ...` (M365_GRAPH_QUOTAS) into {name: (limit, window)}."""
    out: dict[str, tuple[float, float]] = {}
    items = [part.strip() for part in text.replace(";", ",").split(",")]
    for position, item in enumerate(filter(None, items), 1):
        name, _, rate = item.partition("=")
        name = name.strip()
        if name not in DEFAULTS:  # the value is not echoed: a setting may hold something pasted by mistake
            raise QuotaError(f"M365_GRAPH_QUOTAS: entry {position} does not name a quota; the quotas are "
                             f"{', '.join(DEFAULTS)} (for example sign_in_activity=10/60).")
        limit, _, window = rate.partition("/")
        try:
            pair = (float(limit), float(window))
        except ValueError:
            pair = (0.0, 0.0)
        if not all(math.isfinite(v) and v > 0 for v in pair):
            raise QuotaError(f"M365_GRAPH_QUOTAS: {name} must be a positive number of units per a positive "
                             f"number of seconds, such as {name}={DEFAULTS[name].limit:g}/{DEFAULTS[name].window:g}.")
        out[name] = pair
    return out


def parse_scale(text: str) -> float:
    """M365_GRAPH_QUOTA_SCALE: windows are divided by it (tests and benchmarks only; 1 for Graph)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        raise QuotaError("M365_GRAPH_QUOTA_SCALE must be a positive number (1 = Graph's documented quotas; "
                         "larger only against the simulator, scaled by the same factor).")
    return value


def quotas(overrides: Mapping[str, tuple[float, float]] | None = None, scale: float = 1.0) -> dict[str, Quota]:
    """The documented quotas with the settings' overrides, windows divided by `scale`."""
    out = {}
    for name, quota in DEFAULTS.items():
        limit, window = (overrides or {}).get(name, (quota.limit, quota.window))
        out[name] = replace(quota, limit=limit, window=window / scale)
    return out


# -- classification -----------------------------------------------------------------------------------------
def _cost(path: str, query: dict[str, list[str]]) -> int:
    """Resource units of an identity GET: the base cost, `$select` -1, `$expand` +1, `$top` under 20 -1, at least 1."""
    base = next((cost for suffix, cost in _BASE_COST if path.endswith(suffix)), 1)
    if "$select" in query:
        base -= 1
    if "$expand" in query:
        base += 1
    top = query.get("$top", [""])[0]
    if top.isdigit() and int(top) < 20:
        base -= 1
    return max(1, base)


def classify(method: str, url: str) -> list[tuple[str, str, float]]:
    """The buckets one request draws on: [(quota name, key within the quota, units)]."""
    parts = urlsplit(url)
    path = unquote(parts.path).lower()
    if "/v1.0/" in path:
        path = path[path.index("/v1.0/") + 5:]
    elif "/beta/" in path:
        path = path[path.index("/beta/") + 5:]
    if not path.startswith("/"):
        path = "/" + path
    query = {k.lower(): v for k, v in parse_qs(parts.query).items()}
    if path.startswith("/devicemanagement/"):
        return [("intune", "", 1)]
    if path.startswith(("/reports/get", "/copilot/reports/get")):
        # The Copilot usage report (beta) is taken to share the usage reports' limits [UNVERIFIED: its page
        # does not say]; counting it there is the cautious reading.
        report = path.split("/reports/", 1)[1].split("(")[0]
        return [("usage_report", report, 1), ("usage_reports_tenant", "", 1)]
    if path.startswith(("/reports/authenticationmethods/", "/auditlogs/")):
        return [("identity_reports", "", 1)]
    buckets: list[tuple[str, str, float]] = []
    wanted = " ".join(query.get("$select", []) + query.get("$filter", [])).lower()
    if path.startswith("/users") and "signinactivity" in wanted:
        buckets += [("sign_in_activity", "", 1), ("identity_reports", "", 1)]
    if method.upper() == "GET":
        buckets.append(("identity", "", _cost(path, query)))
    return buckets


def app_buckets(buckets: list[tuple[str, str, float]], requests: int = 1) -> list[tuple[str, str, float]]:
    """The app-wide buckets of one attempt from its per-tenant buckets: `requests` of app_any (a `$batch`
    counts each item, as Graph evaluates them), plus the app-wide twin of each per-tenant quota."""
    out: dict[str, float] = {}
    for name, _, units in buckets:
        if name in APP_WIDE:
            out[APP_WIDE[name]] = out.get(APP_WIDE[name], 0.0) + units
    out["app_any"] = float(max(1, requests))
    return [(name, "", units) for name, units in out.items()]
