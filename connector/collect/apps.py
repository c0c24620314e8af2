"""App registrations and service principals (strategy "app_credentials"), and the credential expiry finding.

Both lists are paged like any other (999 per page) and written as Graph returns them, with two
properties removed on the way: `passwordCredentials[].secretText` (Graph returns it only when a
secret is created, but a snapshot must never be able to carry one) and `keyCredentials[].key` (the
public certificate, returned because keyCredentials is in $select). Hints, key ids, thumbprints and
dates stay: they are what an access review needs.

Expired and expiring credentials are the classic cause of broken integrations, the connector's own
included, so while the records stream the strategy notes every secret or certificate that expired or
expires within EXPIRY_DAYS, and puts the finding in the dataset's manifest entry (`credentialExpiry`)
and in warnings the run summary prints. Managed identities are left out: Azure rotates their
certificates itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.catalog.datasets import Dataset
from connector.collect.paging import sequential
from connector.collect.strategy import Context, register

EXPIRY_DAYS = 30
LISTED = 500  # credentials listed in the manifest entry (all are counted); the soonest and the own app's first
_KINDS = {"applications": "application", "service_principals": "servicePrincipal"}


def scrub(record: dict[str, Any]) -> dict[str, Any]:
    """Remove secret values and key material, whatever Graph sent."""
    for cred in record.get("passwordCredentials") or ():
        if isinstance(cred, dict):
            cred.pop("secretText", None)
    for cred in record.get("keyCredentials") or ():
        if isinstance(cred, dict):
            cred.pop("key", None)
    return record


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class ExpiryFinding:
    """Secrets and certificates of one dataset that expired or expire within EXPIRY_DAYS."""

    def __init__(self, kind: str, own_app_id: str, now: datetime | None = None):
        self.kind, self.own_app_id = kind, own_app_id.lower()
        self.now = now or datetime.now(UTC)
        self.horizon = self.now + timedelta(days=EXPIRY_DAYS)
        self.items: list[dict[str, Any]] = []
        self.expired = self.expiring = self.objects = 0

    def add(self, record: dict[str, Any]) -> None:
        if record.get("servicePrincipalType") == "ManagedIdentity":
            return
        creds = [("secret", c) for c in record.get("passwordCredentials") or () if isinstance(c, dict)]
        creds += [("certificate", c) for c in record.get("keyCredentials") or () if isinstance(c, dict)]
        ends = [(kind, c, _when(c.get("endDateTime"))) for kind, c in creds]
        flagged = [(kind, c, end) for kind, c, end in ends if end is not None and end <= self.horizon]
        if not flagged:
            return
        self.objects += 1
        still_valid = any(end is not None and end > self.horizon for _k, _c, end in ends)
        own = (record.get("appId") or "").lower() == self.own_app_id
        for kind, cred, end in flagged:
            assert end is not None
            expired = end <= self.now
            self.expired += expired
            self.expiring += not expired
            item = {"objectType": self.kind, "objectId": record.get("id"), "appId": record.get("appId"),
                    "displayName": record.get("displayName"), "credentialType": kind, "keyId": cred.get("keyId"),
                    "credentialName": cred.get("displayName"), "endDateTime": cred.get("endDateTime"),
                    "daysLeft": (end - self.now).days, "status": "expired" if expired else "expiring",
                    "connectorOwnApp": own, "otherValidCredential": still_valid}
            if kind == "secret":
                item["hint"] = cred.get("hint")
            self.items.append(item)

    def facts(self) -> dict[str, Any]:
        # the connector's own app first, then what breaks soonest, then the most recently expired
        ranked = sorted(self.items, key=lambda i: (not i["connectorOwnApp"], i["status"] == "expired",
                                                   abs(i["daysLeft"])))
        return {"withinDays": EXPIRY_DAYS, "objects": self.objects, "expired": self.expired,
                "expiring": self.expiring, "credentials": ranked[:LISTED], "listed": min(LISTED, len(ranked))}

    def warn(self, ctx: Context, ds: Dataset) -> None:
        for item in self.items:
            if item["connectorOwnApp"]:
                what = "client secret" if item["credentialType"] == "secret" else "certificate"
                when = (f"expired on {item['endDateTime']}" if item["status"] == "expired" else
                        f"expires on {item['endDateTime']} (in {item['daysLeft']} days)")
                other = ("it has another credential valid for longer; make sure the connector uses that one" if
                         item["otherValidCredential"] else "it has no other credential valid for longer")
                code = "own_credential_expired" if item["status"] == "expired" else "own_credential_expiring"
                ctx.warn(code, ds.name,
                         f"{ds.name}: the connector's own app registration (appId {item['appId']}) has a {what} "
                         f"(key id {item['keyId']}) that {when}; {other}. In the Entra admin center open App "
                         "registrations, the app, Certificates & secrets: add a new one, store it in Key Vault, "
                         "then remove the old one.")
        others = [i for i in self.items if not i["connectorOwnApp"]]
        if others:
            objects = len({i["objectId"] for i in others})
            broken = len({i["objectId"] for i in others if not i["otherValidCredential"]})
            noun = {"application": "app registration", "servicePrincipal": "service principal"}.get(self.kind,
                                                                                                   self.kind)
            ctx.warn("credentials_expiring", ds.name,
                     f"{ds.name}: {objects} {noun}{'s' if objects != 1 else ''} with secrets or certificates that "
                     f"expired or expire within {EXPIRY_DAYS} days ({sum(i['status'] == 'expired' for i in others)} "
                     f"expired, {sum(i['status'] == 'expiring' for i in others)} expiring); {broken} with no other "
                     "credential valid for longer. Each is listed under credentialExpiry in the manifest.")


@register("app_credentials")
async def app_credentials(ctx: Context, ds: Dataset) -> AsyncIterator[list[dict[str, Any]]]:
    """Pages of applications or service principals, scrubbed, with the expiry finding on the side."""
    finding = ExpiryFinding(_KINDS.get(ds.name, ds.name), ctx.settings.client_id)
    async for records in sequential(ctx.graph, ds):
        for record in records:
            finding.add(scrub(record))
        yield records
    ctx.extra["credentialExpiry"] = finding.facts()
    finding.warn(ctx, ds)
