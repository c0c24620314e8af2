"""Licensing of the simulated tenant: SKUs and service plans, the licence combinations users hold,
group-based licence assignments (and their failures), seats used, and the licence properties of a
user object and of /subscribedSkus (graph-facts §1, §3).

SKU and service-plan GUIDs are the published ones where known, otherwise merely plausible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, NamedTuple

from .people import KIND_GUEST, KIND_MEMBER
from .seeded import DAY, digest, guid, iso

# Group-based licensing: the first groups of the tenant assign these SKUs to their members. A member
# gets each SKU a group assigns, unless the assignment fails (then the licence is not assigned and the
# user's licenseAssignmentStates records the error); holding it directly as well still takes one seat.
# Source: Entra docs, licensing-groups-resolve-problems.md ("If Microsoft Entra ID can't assign one of the
# products ... it won't assign"; CountViolation = not enough licences) and concept-group-based-licensing.md.
LICENSE_GROUPS = (
    "3b1b1e1a-58f0-4c6c-8b8f-4d1a2c3e4f50",
    "9e0d2c51-7a3b-4f8e-a1d2-6c5b4a392817",
    "c4f7e2a9-1d3b-4e5f-8a7c-2b9d0e1f3a46",
)
LICENSE_GROUP_SKUS = ("E3", "E5", "EMS")  # SKU key each of LICENSE_GROUPS assigns (absent SKUs: nothing)
# Seats of this SKU are all taken, so some of its group-based assignments fail with CountViolation.
SKU_WITHOUT_SPARE_SEATS = "EMS"

# Service plans: key -> (servicePlanName, servicePlanId, assignedPlan.service)
PLANS: dict[str, tuple[str, str, str]] = {
    "EXO": ("EXCHANGE_S_ENTERPRISE", "efb87545-963c-4e0d-99df-69c6916d9eb0", "exchange"),
    "SPO": ("SHAREPOINTENTERPRISE", "5dbe027f-2339-4123-9542-606e4d348a72", "SharePoint"),
    "OFFICE": ("OFFICESUBSCRIPTION", "43de0ff5-c92c-492b-9116-175376d08c38", "MicrosoftOffice"),
    "TEAMS": ("TEAMS1", "57ff2da0-773e-42df-b2af-ffb7a2317929", "TeamspaceAPI"),
    "SFB": ("MCOSTANDARD", "0feaeb32-d00e-4d66-bd5a-43b5b83db82c", "MicrosoftCommunicationsOnline"),
    "MCOEV": ("MCOEV", "4828c8ec-dc2e-4779-b502-87ac9ce28ab7", "MicrosoftCommunicationsOnline"),
    "MCAS": ("ADALLOM_S_O365", "8c098270-9dd4-4350-9b30-ba4703f3b36b", "Adallom"),
    "AADP1": ("AAD_PREMIUM", "41781fb2-bc02-4b7c-bd55-b576c07bb09d", "AADPremiumService"),
    "INTUNE": ("INTUNE_A", "c1ec4a95-1f05-45b3-a911-aa3fa01094f5", "SCO"),
    "RMS": ("RMS_S_PREMIUM", "6c57d4b6-3b23-47a5-9bc9-69f17b4947b3", "RMSOnline"),
    "MFA": ("MFA_PREMIUM", "8a256a2b-b617-496d-b51b-e76466e88db0", "MultiFactorService"),
    "PBI": ("BI_AZURE_P0", "2049e525-b859-401b-b2a0-e0a31c4b1fe4", "PowerBI"),
    "EXOF": ("EXCHANGE_S_FOUNDATION", "113feb6c-3fe4-4440-bddc-54d774bf0318", "exchange"),
    "FLOW": ("FLOW_P2_VIRAL", "50e68c76-46c6-4674-81f9-75456511b170", "ProcessSimple"),
    "CDS": ("DYN365_CDS_VIRAL", "17ab22cb-6e5a-4b8c-8e1c-5d2d9ff5c8a0", "CRM"),
    "CRM": ("CRMSTANDARD", "f9646fb2-e3b2-4309-95de-dc4833737456", "CRM"),
    "VISIO": ("VISIO_CLIENT_SUBSCRIPTION", "663a804f-1c30-4ff0-9915-9db84f0d1cea", "Visio"),
    "STREAM": ("MICROSOFTSTREAM", "acffdce6-c30f-4dc2-81c0-372e33c515ec", "MicrosoftStream"),
    "STORE": ("WINDOWS_STORE", "a420f25f-a7b3-4ff5-a9d0-5d58f73b537d", "WindowsStore"),
    # Microsoft 365 Copilot's plans (Microsoft's product names CSV, SKU Microsoft_365_Copilot).
    "COPILOT_APPS": ("M365_COPILOT_APPS", "a62f8878-de10-42f3-b68f-6149a25ceb97", "M365CopilotApps"),
    "COPILOT_TEAMS": ("M365_COPILOT_TEAMS", "b95945de-b3bd-46db-8437-f2beb6ea2347", "M365CopilotTeams"),
    "COPILOT_CHAT": ("M365_COPILOT_BUSINESS_CHAT", "3f30311c-6b1e-48a4-ab79-725b469da960", "M365CopilotChat"),
}
# Microsoft 365 Copilot (TenantSpec.copilot_share > 0): an add-on some E3 and E5 members hold, assigned directly.


@dataclass(frozen=True)
class Sku:
    """One subscribed SKU; ``key`` is the simulator's short name."""

    key: str
    part_number: str
    sku_id: str
    status: str
    plans: tuple[str, ...]
    applies_to: str = "User"


COPILOT = "COPILOT"


def _skus(premium: bool, copilot: bool = False) -> tuple[Sku, ...]:
    office = ("EXO", "SPO", "OFFICE", "TEAMS", "SFB")
    skus = [
        Sku(
            "E3",
            "SPE_E3",
            "05e9a617-0261-4cee-bb44-138d3ef5d965",
            "Enabled",
            (*office, "AADP1", "INTUNE", "RMS", "MFA"),
        )
        if premium
        else Sku("E3", "ENTERPRISEPACK", "6fd2c87f-b296-42f0-b197-1e91e994b900", "Enabled", office),
        Sku("E5", "ENTERPRISEPREMIUM", "c7df2760-2c81-4ef7-b578-5b5392b571df", "Enabled", (*office, "MCOEV", "MCAS")),
    ]
    if premium:
        skus.append(
            Sku("EMS", "EMS", "efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "Enabled", ("AADP1", "INTUNE", "RMS", "MFA"))
        )
    skus += [
        Sku("PBI", "POWER_BI_STANDARD", "a403ebcc-fae0-4ca2-8c8c-7a907fd6c235", "Enabled", ("PBI", "EXOF")),
        Sku("FLOW", "FLOW_FREE", "f30db892-07e9-47e9-837c-80727f46fd3d", "Enabled", ("FLOW", "CDS", "EXOF")),
        Sku("CRM", "CRMSTANDARD", "d17b27af-3f49-4822-99f9-56a661538792", "Suspended", ("CRM",)),
        Sku("VISIO", "VISIOCLIENT", "c5928f49-12ba-48f7-ada3-0d743a3601d5", "LockedOut", ("VISIO",)),
        Sku("STREAM", "STREAM", "1f2f344a-700d-42c9-9427-5cea1d5d7ba6", "Warning", ("STREAM", "EXOF")),
        Sku("STORE", "WINDOWS_STORE", "6470687e-a428-4b7a-bef2-8a291ad947c9", "Enabled", ("STORE",), "Company"),
    ]
    if copilot:
        skus.append(Sku(COPILOT, "Microsoft_365_Copilot", "639dec6b-bb19-468b-871c-c5c441c4b0cb", "Enabled",
                        ("COPILOT_APPS", "COPILOT_TEAMS", "COPILOT_CHAT")))
    return tuple(skus)



# Licence combinations for members, chosen by one byte of the user's digest (cumulative thresholds of 256).
_COMBOS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (110, ("E3",)),
    (140, ("E3", "EMS")),
    (165, ("E5",)),
    (180, ("E5", "EMS", "PBI")),
    (200, ("E3", "PBI")),
    (214, ("E3", "FLOW")),
    (220, ("E3", "VISIO")),
    (224, ("CRM", "E3")),
    (230, ("E3", "STREAM")),
    (238, ("FLOW",)),
    (256, ()),
)

# Licences some guests hold (assigned directly, as invited collaborators often get Power BI or a suite).
_GUEST_COMBOS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (40, ("PBI",)),
    (58, ("E3",)),
    (64, ("VISIO",)),
    (256, ()),
)


class Grant(NamedTuple):
    """How a user holds one SKU: directly, through a licence group, or both; a group assignment may have failed."""

    sku: str  # simulator SKU key
    direct: bool
    group: int | None  # index into LICENSE_GROUPS
    error: str | None  # group assignment error: the licence is then not assigned (unless also direct)

    @property
    def assigned(self) -> bool:
        return self.direct or self.error is None


class Licences:
    """The tenant's SKUs and who holds which, fixed at start (seed, premium, rounds of licence changes)."""

    def __init__(self, seed: int, premium: bool, licence_changes: int, copilot_share: float = 0.0) -> None:
        self.seed = seed
        self.copilot_share = copilot_share
        self.skus = _skus(premium, copilot_share > 0)
        self.sku_by_key = {s.key: s for s in self.skus}
        self._combos = [
            tuple(k for k in next(c for limit, c in _COMBOS if byte < limit) if k in self.sku_by_key)
            for byte in range(256)
        ]
        self._guest_combos = [
            tuple(k for k in next(c for limit, c in _GUEST_COMBOS if byte < limit) if k in self.sku_by_key)
            for byte in range(256)
        ]
        self.licence_changes = licence_changes
        self.license_group_of = {
            key: g for g, key in enumerate(LICENSE_GROUP_SKUS) if key in self.sku_by_key
        }  # SKU key -> index of the licence group that assigns it

    def combo(self, index: int, kind: int, d: bytes) -> tuple[str, ...]:
        """SKU keys the user holds (members: about 90%; some guests; no service accounts)."""
        if kind == KIND_GUEST:
            return self._guest_combos[d[13]]
        if kind != KIND_MEMBER:
            return ()
        byte = d[7]
        for r in range(1, self.licence_changes + 1):
            c = digest(self.seed, f"licence-change:{r}:{index}")
            if c[0] < 8:
                byte = c[1]
        combo = self._combos[byte]
        if self.copilot_share and ("E3" in combo or "E5" in combo):
            if int.from_bytes(digest(self.seed, f"copilot:{index}")[:4], "big") / 2**32 < self.copilot_share:
                combo = (*combo, COPILOT)
        return combo

    def grants(self, index: int, kind: int, combo: tuple[str, ...]) -> tuple[Grant, ...]:
        """How user ``index`` holds each SKU of its combination. A member gets a SKU that a licence group
        assigns through the group (about half), directly (about 40%) or both (about 5%); when the SKU has no
        spare seats, some group-only assignments fail with CountViolation. Guests hold theirs directly."""
        if not combo:
            return ()
        p = digest(self.seed, f"grants:{index}")
        out = []
        for n, key in enumerate(combo):
            group = self.license_group_of.get(key)
            b = p[2 * n]
            if group is None or kind != KIND_MEMBER or b < 100:
                out.append(Grant(key, True, None, None))
            elif b < 243:
                error = "CountViolation" if key == SKU_WITHOUT_SPARE_SEATS and p[2 * n + 1] < 24 else None
                out.append(Grant(key, False, group, error))
            else:
                out.append(Grant(key, True, group, None))
        return tuple(out)

    def user_licenses(self, index: int, grants: tuple[Grant, ...], created: int) -> dict[str, Any]:
        """A user's assignedLicenses, licenseAssignmentStates, assignedPlans and provisionedPlans."""
        rnd = random.Random(int.from_bytes(digest(self.seed, f"licenses:{index}"), "big"))
        plan_date = iso(created + rnd.randrange(0, 30) * DAY)
        assigned_licenses: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        assigned_plans: list[dict[str, Any]] = []
        seen_plans: set[str] = set()
        for grant in grants:
            sku = self.sku_by_key[grant.sku]
            disabled = [PLANS[sku.plans[-1]][1]] if len(sku.plans) > 3 and rnd.random() < 0.1 else []
            paths = [None] if grant.direct else []
            if grant.group is not None:
                paths.append(LICENSE_GROUPS[grant.group])
            for group_id in paths:
                failed = group_id is not None and grant.error is not None
                states.append(
                    {
                        "assignedByGroup": group_id,
                        "disabledPlans": disabled,
                        "error": grant.error if failed else "None",
                        "lastUpdatedDateTime": plan_date,
                        "skuId": sku.sku_id,
                        "state": "Error" if failed else "Active",
                    }
                )
            if not grant.assigned:
                continue  # a failed group assignment gives the user nothing (and takes no seat)
            assigned_licenses.append({"disabledPlans": disabled, "skuId": sku.sku_id})
            for plan_key in sku.plans:
                _name, plan_id, svc = PLANS[plan_key]
                if plan_id in disabled or plan_id in seen_plans:
                    continue
                seen_plans.add(plan_id)
                assigned_plans.append(
                    {
                        "assignedDateTime": plan_date,
                        "capabilityStatus": sku.status,
                        "service": svc,
                        "servicePlanId": plan_id,
                    }
                )
        return {
            "assignedLicenses": assigned_licenses,
            "licenseAssignmentStates": states,
            "assignedPlans": assigned_plans,
            "provisionedPlans": [
                {"capabilityStatus": "Enabled", "provisioningStatus": "Success", "service": p["service"]}
                for p in assigned_plans
                if p["service"] in ("exchange", "SharePoint", "MicrosoftCommunicationsOnline")
            ],
        }

    def subscribed_skus(self, consumed: dict[str, int], display_name: str, tenant_id: str) -> list[dict[str, Any]]:
        """The /subscribedSkus collection, consistent with the users' assignedLicenses."""
        out = []
        for sku in self.skus:
            used = consumed.get(sku.key, 0)
            # About 10% spare seats; none for the SKU whose group assignments fail with CountViolation.
            seats = used if sku.key == SKU_WITHOUT_SPARE_SEATS else used + max(5, used // 10)
            prepaid = {"enabled": 0, "lockedOut": 0, "suspended": 0, "warning": 0}
            if sku.key == "FLOW":
                prepaid["enabled"] = 10000
            elif sku.status == "Enabled":
                prepaid["enabled"] = seats if sku.key != "STORE" else 1
            else:
                prepaid[{"Suspended": "suspended", "LockedOut": "lockedOut", "Warning": "warning"}[sku.status]] = seats
            plan_status = "Disabled" if sku.status == "Suspended" else "Success"
            out.append(
                {
                    "accountName": display_name.upper().replace(" ", ""),
                    "accountId": tenant_id,
                    "appliesTo": sku.applies_to,
                    "capabilityStatus": sku.status,
                    "consumedUnits": used,
                    "id": f"{tenant_id}_{sku.sku_id}",
                    "prepaidUnits": prepaid,
                    "servicePlans": [
                        {
                            "servicePlanId": PLANS[p][1],
                            "servicePlanName": PLANS[p][0],
                            "provisioningStatus": "PendingProvisioning"
                            if p == "EXOF" and sku.key == "FLOW"
                            else plan_status,
                            "appliesTo": "Company" if p == "MCAS" or sku.applies_to == "Company" else "User",
                        }
                        for p in sku.plans
                    ],
                    "skuId": sku.sku_id,
                    "skuPartNumber": sku.part_number,
                    "subscriptionIds": [guid(digest(self.seed, f"subscription:{sku.key}"))],
                }
            )
        return out


def group_licence_change(licences: Licences, held: dict[str, Any], group_id: str, sku_key: str, joined: bool,
                         when: str) -> dict[str, Any]:
    """A user's assignedLicenses, licenseAssignmentStates and assignedPlans after joining (or leaving) a licence
    group as a direct member: Entra assigns the group's SKU to its direct members and removes it when they leave
    (Entra docs concept-group-based-licensing.md; nested groups are not supported there). The licence is held
    while any assignment path (direct or another group) holds it; a SKU without spare seats fails with
    CountViolation and assigns nothing (licensing-groups-resolve-problems.md)."""
    sku = licences.sku_by_key[sku_key]
    states = [st for st in held.get("licenseAssignmentStates") or []
              if not (st.get("assignedByGroup") == group_id and st.get("skuId") == sku.sku_id)]
    if joined:
        error = "CountViolation" if sku_key == SKU_WITHOUT_SPARE_SEATS else None
        states.append({"assignedByGroup": group_id, "disabledPlans": [], "error": error or "None",
                       "lastUpdatedDateTime": when, "skuId": sku.sku_id, "state": "Error" if error else "Active"})
    holding = {st["skuId"] for st in states if st.get("state") == "Active"}
    licences_now = [lic for lic in held.get("assignedLicenses") or [] if lic.get("skuId") in holding]
    if sku.sku_id in holding and all(lic.get("skuId") != sku.sku_id for lic in licences_now):
        licences_now.append({"disabledPlans": [], "skuId": sku.sku_id})
    plans_of = {s.sku_id: {PLANS[p][1] for p in s.plans} for s in licences.skus}
    kept_plans = set().union(*(plans_of.get(lic["skuId"], set()) for lic in licences_now)) if licences_now else set()
    plans = [p for p in held.get("assignedPlans") or [] if p.get("servicePlanId") in kept_plans]
    present = {p.get("servicePlanId") for p in plans}
    if sku.sku_id in holding:
        for plan_key in sku.plans:
            _name, plan_id, svc = PLANS[plan_key]
            if plan_id not in present:
                present.add(plan_id)
                plans.append({"assignedDateTime": when, "capabilityStatus": sku.status, "service": svc,
                              "servicePlanId": plan_id})
    return {"assignedLicenses": licences_now, "licenseAssignmentStates": states, "assignedPlans": plans}
