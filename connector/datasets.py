"""The dataset registry: each dataset is declared once, and one engine collects them all.

A declaration says what to ask Graph for, which application permissions satisfy it (any one
role of each group, least privileged first), which licence it needs and what a record holds.
Adding a dataset is adding a declaration here; nothing else should need to change.
"""

from __future__ import annotations

from dataclasses import dataclass

# Roles that let an app read every user (least privileged first).
USER_READ = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
ORG_READ = ("Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All", "Directory.ReadWrite.All")
AUDIT_READ = ("AuditLog.Read.All",)

ENTRA_PREMIUM = "Microsoft Entra ID P1 or P2"
# Graph error codes meaning "the tenant lacks the licence", as opposed to a missing permission.
LICENCE_ERROR_CODES = frozenset({"Authentication_RequestFromNonPremiumTenantOrB2CTenant"})


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    path: str  # Graph path under /v1.0
    builder: str  # attribute chain on GraphServiceClient giving this path's request builder
    requires: tuple[tuple[str, ...], ...]  # every group is needed; any one role of a group suffices
    select: tuple[str, ...] = ()
    top: int | None = None
    licence: str | None = None
    upn_field: str | None = None  # the domain filter applies to this field; None = organisation-wide
    partition: str | None = None  # "upn_prefix": may be collected as concurrent startswith() partitions
    strategy: str = "pages"  # how records are fetched: a key of connector.collect.STRATEGIES
    record: str = ""  # what one output record is, for the documentation

    @property
    def file(self) -> str:
        return f"{self.name}.jsonl.gz"

    def query(self) -> str:
        parts = []
        if self.select:
            parts.append("$select=" + ",".join(self.select))
        if self.top:
            parts.append(f"$top={self.top}")
        return "&".join(parts)

    def missing_roles(self, granted: set[str] | frozenset[str]) -> list[str]:
        """The least-privileged role of every requirement group that no granted role satisfies."""
        return [group[0] for group in self.requires if not granted.intersection(group)]


USER_FIELDS = (
    "id", "userPrincipalName", "displayName", "mail", "accountEnabled", "userType", "createdDateTime",
    "department", "jobTitle", "companyName", "officeLocation", "city", "country", "usageLocation",
    "employeeId", "employeeType", "onPremisesSyncEnabled", "assignedLicenses", "licenseAssignmentStates",
    "assignedPlans",
)

_DECLARATIONS = (
    Dataset(
        name="organization",
        description="The tenant: id, display name, verified domains, country.",
        path="/organization",
        builder="organization",
        requires=(ORG_READ,),
        select=("id", "displayName", "verifiedDomains", "countryLetterCode", "country", "city", "tenantType",
                "createdDateTime", "preferredLanguage"),
        record="one organization object (Graph `organization` resource, selected properties)",
    ),
    Dataset(
        name="subscribed_skus",
        description="Every licence SKU the tenant has, with seats (prepaid and consumed) and service plans.",
        path="/subscribedSkus",
        builder="subscribed_skus",
        requires=(ORG_READ,),
        select=("id", "skuId", "skuPartNumber", "appliesTo", "capabilityStatus", "consumedUnits", "prepaidUnits",
                "servicePlans", "subscriptionIds", "accountId", "accountName"),
        record="one subscribedSku (seat counts are organisation-wide even with a domain filter)",
    ),
    Dataset(
        name="users",
        description="Every user with licence assignments (direct and group-inherited) and organisational details.",
        path="/users",
        builder="users",
        requires=(USER_READ,),
        select=USER_FIELDS,
        top=999,
        upn_field="userPrincipalName",
        partition="upn_prefix",
        record="one user (Graph `user` resource, selected properties)",
    ),
    Dataset(
        name="user_sign_in_activity",
        description="Last interactive, non-interactive and successful sign-in per user, keyed by user id.",
        path="/users",
        builder="users",
        requires=(USER_READ, AUDIT_READ),
        select=("id", "userPrincipalName", "signInActivity"),
        top=120,  # Graph's cap when signInActivity is selected (older docs: a larger $top fails)
        licence=ENTRA_PREMIUM,
        upn_field="userPrincipalName",
        partition="upn_prefix",
        record="{id, userPrincipalName, signInActivity}; join to users on id",
    ),
)

DATASETS: dict[str, Dataset] = {d.name: d for d in _DECLARATIONS}
