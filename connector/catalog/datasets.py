"""The dataset registry: each dataset is declared once, and one engine collects them all.

A declaration says what to ask Graph for, which application permissions satisfy it (any one
role of each group, least privileged first), which licence it needs and what a record holds.
Adding a dataset is adding a declaration here; nothing else should need to change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote

from connector.catalog import beta_shapes, shapes
from connector.catalog.shapes import Field

# Roles that let an app read every user (least privileged first).
USER_READ = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
ORG_READ = ("Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All", "Directory.ReadWrite.All")
# GET /subscribedSkus: the published permissions table (learn.microsoft.com/graph/api/subscribedsku-list, v1.0)
# names LicenseAssignment.Read.All as the least privileged application permission, with Directory.Read.All,
# Directory.ReadWrite.All, Organization.Read.All and Organization.ReadWrite.All higher; older copies of
# includes/permissions/subscribedsku-list-permissions.md named Organization.Read.All. Both are accepted.
SKU_READ = ("LicenseAssignment.Read.All", "Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All",
            "Directory.ReadWrite.All")
AUDIT_READ = ("AuditLog.Read.All",)
# /directory/subscriptions: newer permission tables list LicenseAssignment.Read.All too (not verified).
SUBSCRIPTION_READ = ("Organization.Read.All", "LicenseAssignment.Read.All", "Directory.Read.All",
                     "Organization.ReadWrite.All", "Directory.ReadWrite.All")
REPORTS_READ = ("Reports.Read.All",)
GROUP_READ = ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All", "GroupMember.ReadWrite.All",
              "Group.ReadWrite.All", "Directory.ReadWrite.All")
ROLE_READ = ("RoleManagement.Read.Directory", "RoleManagement.Read.All", "Directory.Read.All",
             "RoleManagement.ReadWrite.Directory", "Directory.ReadWrite.All")
DEVICE_READ = ("Device.Read.All", "Directory.Read.All", "Device.ReadWrite.All", "Directory.ReadWrite.All")
INTUNE_READ = ("DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All")
# Optional: lets report datasets confirm concealed names from /admin/reportSettings.
REPORT_SETTINGS_READ = ("ReportSettings.Read.All", "ReportSettings.ReadWrite.All")
# Application.ReadWrite.OwnedBy also lists every application and service principal (api/application-list.md,
# include permissions-applicationreadwriteownedby-disclaimer.md) but is a write permission and the owner and
# assignment tables do not promise all objects with it: not accepted here.
# Sources: includes/permissions/application-list, application-list-owners, serviceprincipal-list,
# serviceprincipal-list-owners, serviceprincipal-list-approleassignedto; learn serviceprincipal-list-memberof.
APP_READ = ("Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All")
# /oauth2PermissionGrants [CONFLICT]: the list API's table (learn, 2026-05) names Directory.Read.All as least
# privileged, DelegatedPermissionGrant.ReadWrite.All and Directory.ReadWrite.All higher; the narrower
# application permission DelegatedPermissionGrant.Read.All ("read all delegated permission grants", app role
# 81b4724a-58aa-41c1-8a55-84ef97466587) is what tools use for this list. It is listed first, Directory.Read.All
# is accepted as well.
GRANT_READ = ("DelegatedPermissionGrant.Read.All", "Directory.Read.All", "DelegatedPermissionGrant.ReadWrite.All",
              "Directory.ReadWrite.All")
# api/rbacapplication-list-roleeligibilityschedules.md (application row, least first).
ELIGIBILITY_READ = ("RoleEligibilitySchedule.Read.Directory", "RoleManagement.Read.Directory",
                    "RoleManagement.Read.All", "RoleEligibilitySchedule.ReadWrite.Directory",
                    "RoleManagement.ReadWrite.Directory")
# GET /roleManagement/directory/roleAssignmentSchedules [CONFLICT]. includes/permissions/rbacapplication-list-
# roleassignmentschedules-permissions.md (the generated table in microsoft-graph-docs-contrib) names, for
# application permissions, RoleManagement.Read.All, RoleManagement.Read.Directory and
# RoleManagement.ReadWrite.Directory only; RoleAssignmentSchedule.Read.Directory appears as an application
# permission in a rendering of the learn page and in a docs pull request (microsoft-graph-docs PR #20913) not
# known to be merged. RoleManagement.Read.Directory is listed first: every version of the table has it, and it is
# the application permission reported to work for the PIM schedule lists (microsoft-graph-docs #17653: "the
# RoleManagement.Read.Directory is the minimum one that seems to work"). RoleAssignmentSchedule.Read.Directory is
# accepted too; when Graph refuses a token holding only it, the 403 names RoleManagement.Read.Directory (the
# first role of the group not granted: connector/collect/failures.py).
ASSIGNMENT_SCHEDULE_READ = ("RoleManagement.Read.Directory", "RoleAssignmentSchedule.Read.Directory",
                            "RoleManagement.Read.All", "RoleAssignmentSchedule.ReadWrite.Directory",
                            "RoleManagement.ReadWrite.Directory")
# "To list the members of a hidden membership group, the Member.Read.Hidden permission is also required."
# (api/group-list-members.md)
MEMBER_READ_HIDDEN = ("Member.Read.Hidden",)

# Where Graph offers each API: the "national cloud deployments" table on its v1.0 page (M365_CLOUD names).
# Read for this declaration: user-list (users, signInActivity), directory-list-subscriptions,
# rbacapplication-list-roleassignments, group-list-members, userregistrationdetails-get and the Intune
# device pages: all four clouds. The Microsoft 365 usage reports (reportroot-get*UserDetail) and
# adminreportsettings-get: global service only (include global-only.md; resources/report.md "Cloud
# deployments"). organization, subscribedSkus, groups, devices, roleDefinitions, managedDevices and
# detectedApps are taken as all four like their families (their tables were not legible in the copies read).
ALL_CLOUDS = frozenset({"global", "usgov", "usgovdod", "china"})
GLOBAL_ONLY = frozenset({"global"})

ENTRA_PREMIUM = "Microsoft Entra ID P1 or P2"
# Privileged Identity Management (eligible and time-bound role assignments) needs P2 or ID Governance.
ENTRA_P2 = "Microsoft Entra ID P2 (or Microsoft Entra ID Governance)"
INTUNE = "Microsoft Intune"
# Graph error codes meaning "the tenant lacks the licence", as opposed to a missing permission.
# AadPremiumLicenseRequired: PIM APIs on a tenant without P2 [observed in third-party reports, e.g.
# Galvnyz/M365-Assess#117; the status code is not documented].
LICENCE_ERROR_CODES = frozenset({"Authentication_RequestFromNonPremiumTenantOrB2CTenant", "AadPremiumLicenseRequired"})
# Errors that name no code of their own but mean "the tenant lacks the licence", per licence. Intune: the docs
# only say the Intune API "requires an active Intune license for the tenant" (api/intune-devices-manageddevice-
# list.md); the one reported answer of an Intune-backed API on an unlicensed tenant is 400 BadRequest "Request not
# applicable to target tenant." (msgraph-beta-sdk-go #198) [the exact answer of /deviceManagement/* UNVERIFIED].
LICENCE_ERROR_MESSAGES: dict[str, tuple[tuple[int, str], ...]] = {
    INTUNE: ((400, "request not applicable to target tenant"),),
}


def is_licence_error(licence: str | None, code: str, status: int, message: str) -> bool:
    """True when Graph's error means the tenant lacks the licence (a skip, not a failure)."""
    if code in LICENCE_ERROR_CODES:
        return True
    text = (message or "").lower()
    return any(status == s and m in text for s, m in LICENCE_ERROR_MESSAGES.get(licence or "", ()))


@dataclass(frozen=True)
class OptionalPermission:
    """A permission a dataset does not need but uses when granted: without it the dataset is still
    collected, minus `adds`, and the run says so in a warning."""

    roles: tuple[str, ...]  # any one suffices, least privileged first
    adds: str  # what it adds, e.g. "members of groups with hidden membership"


@dataclass(frozen=True)
class Leg:
    """One $batch fan-out: a GET per parent object (or per seed URL), 20 per $batch, every extra page
    (@odata.nextLink) batched the same way. Rows are built from `row`, (output name, source) pairs;
    a source is `parent.<property>`, `parent.kind`, `child.<property>` (dotted for nested objects),
    `child.@type` or `child.<nested>.@type` (the last part of @odata.type, e.g. `user`), `child.*`
    (every property of the child, in Graph's names) or `=<literal>`."""

    name: str  # names the leg in the manifest, e.g. "servicePrincipalMemberships"
    child: str  # relative URL per parent, `{id}` = the parent's id; for seeds, unused
    row: tuple[tuple[str, str], ...]
    parents: str = ""  # collection listing the parents, e.g. "/groups"
    parent_builder: str = ""  # GraphServiceClient attribute chain for the parent list
    parent_kind: str = ""  # what a parent is, e.g. "group" (for parent.kind and messages)
    parent_top: int | None = 999  # page size of the parent list (None: the service's default)
    keep: tuple[str, ...] = ()  # parent properties carried into the rows (besides id)
    seeds: tuple[str, ...] = ()  # item URLs with no parent: concurrent paged chains
    fine_seeds: tuple[str, ...] = ()  # finer chains for large collections (see FanOut.fine_from)
    child_types: tuple[str, ...] = ()  # keep only children of these types (child.@type)
    provides: str = ""  # this leg is the source of children of this type: other legs drop them
    when: str = ""  # emit a row only when this source is set, e.g. "child.manager"
    requires: tuple[tuple[str, ...], ...] = ()  # an optional leg: skipped with a warning unless granted
    adds: str = ""  # what the leg adds (warnings)
    forbidden_if: tuple[str, str] = ()  # (parent property, value): a 403 on such a parent skips it with a warning
    forbidden_hint: str = ""  # ... naming this permission
    forbidden_code: str = ""  # the warning's code
    count_as: str = ""  # manifest field for the number of parents, e.g. "groups"


@dataclass(frozen=True)
class FanOut:
    """A dataset collected by one or more $batch fan-out legs (strategy "fan_out")."""

    legs: tuple[Leg, ...]
    derive: str = ""  # "transitive": add memberships reached through nested groups (spooled to disk)
    count: str = ""  # check the children seen against GET {count}/$count, e.g. "/users"
    fine_from: int = 0  # with `count`: from this many objects on, the legs run their fine_seeds


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    path: str  # Graph path under /v1.0
    builder: str  # attribute chain on GraphServiceClient giving this path's request builder
    requires: tuple[tuple[str, ...], ...]  # every group is needed; any one role of a group suffices
    select: tuple[str, ...] = ()
    top: int | None = None
    expand: tuple[str, ...] = ()
    licence: str | None = None
    upn_field: str | None = None  # the domain filter applies to this field; None = organisation-wide
    partition: str | None = None  # "upn_prefix": may be collected as concurrent startswith() partitions
    strategy: str = "pages"  # how records are fetched: a strategy registered in connector.collect.strategy
    # Quota-paced (pages come at most 10 a minute): its chain is checkpointed after every page, not only
    # every 30 s (connector/collect/checkpoint.py).
    paced: bool = False
    # A smaller page size to ask for once if Graph refuses `top` with an older cap (sign-in activity: 120).
    fallback_top: int | None = None
    # `top` is asked for although the API page documents no $top: a 400 on the first page pages again, once,
    # at Graph's default page size (connector/collect/paging.py `chain`).
    top_undocumented: bool = False
    # A documented count to compare the listing with: (path, property), e.g. the managedDeviceOverview's
    # enrolledDeviceCount. Fewer records than it is a `listing_shortfall` warning (connector/collect/paging.py).
    documented_count: tuple[str, str] = ()
    record: str = ""  # what one output record is, for the documentation
    report: str | None = None  # usage-report function (strategy "report"), e.g. getMailboxUsageDetail
    report_period: bool = True  # the report function takes (period='D30'); getOffice365ActivationsUserDetail not
    fields: tuple[Field, ...] = ()  # the record's properties (names, types, descriptions)
    optional: tuple[OptionalPermission, ...] = ()  # used when granted, never required
    fan_out: FanOut | None = None  # strategy "fan_out": the $batch legs
    clouds: frozenset[str] = ALL_CLOUDS  # M365_CLOUD values where Graph offers the API; elsewhere skipped
    api: str = "v1.0"  # Graph version the path is under; "beta" only for an opt-in dataset
    opt_in: bool = False  # collected only when M365_DATASETS names it (not in the default '*')
    # Change feeds (connector/collect/delta.py). `key`: the properties that identify a record, so each run lists
    # what was added, changed and removed since the previous one (changes/<dataset>.jsonl.gz). `delta`: the
    # collection's Graph delta function (e.g. "/groups/delta"), so a run may read only the changes; `untracked`:
    # selected properties whose changes delta does not report, which keep the dataset a full read every run
    # unless `delta_merge` reads them another way.
    key: tuple[str, ...] = ()
    delta: str = ""
    untracked: tuple[str, ...] = ()
    # How a delta round becomes records when they are not the delta objects alone: "memberships" (group
    # memberships from `members@delta`, connector/collect/memberships.py), "licences" (users, with those whose
    # untracked licence properties may have changed read again, connector/collect/licences.py).
    delta_merge: str = ""

    @property
    def file(self) -> str:
        return f"{self.name}.jsonl.gz"

    def query(self) -> str:
        parts = []
        if self.select:
            parts.append("$select=" + ",".join(self.select))
        if self.top:
            parts.append(f"$top={self.top}")
        if self.expand:
            parts.append("$expand=" + ",".join(self.expand))
        return "&".join(parts)

    def missing_roles(self, granted: set[str] | frozenset[str]) -> list[str]:
        """The least-privileged role of every requirement group that no granted role satisfies."""
        return [group[0] for group in self.requires if not granted.intersection(group)]


def _report(name: str, function: str, builder: str, description: str, fields: tuple[Field, ...], *,
            upn_field: str = "userPrincipalName", period: bool = True, note: str = "") -> Dataset:
    """A Microsoft 365 usage report (CSV through a pre-authenticated download), declared in one call."""
    return Dataset(name=name, description=description, path=f"/reports/{function}", builder=builder,
                   requires=(REPORTS_READ,), upn_field=upn_field, strategy="report", report=function,
                   report_period=period, fields=fields, clouds=GLOBAL_ONLY,
                   optional=(OptionalPermission(REPORT_SETTINGS_READ, "confirmation from /admin/reportSettings that "
                                                "user names are concealed"),),
                   record=f"one CSV row of {function}{' ' + note if note else ''}, typed, fields named as in "
                          "Graph's JSON reports")


# ----------------------------------------------------------------------------------------- $batch fan-outs
# Directory relationships page at most 999 objects ($top; default 100): api/group-list-members.md ("The default
# and maximum page size is 100 and 999"), serviceprincipal-list-memberof.md ("100 and 999"). Owners and
# appRoleAssignedTo accept $top (group-list-owners.md) but name no maximum [UNVERIFIED: 999 assumed, as for every
# directory collection]; an over-large $top would be a 400, which fails the dataset loudly rather than quietly.
MEMBER_QUERY = "$select=id&$top=999"

GROUP_MEMBERS = FanOut(
    legs=(
        Leg(name="groupMembers", parents="/groups", parent_builder="groups", parent_kind="group",
            child="/groups/{id}/members?" + MEMBER_QUERY, count_as="groups",
            row=(("groupId", "parent.id"), ("memberId", "child.id"), ("memberType", "child.@type"),
                 ("membership", "=direct")),
            keep=("visibility",), forbidden_if=("visibility", "HiddenMembership"),
            forbidden_hint="Member.Read.Hidden", forbidden_code="hidden_membership",
            adds="members of groups with hidden membership"),
        # v1.0 GET /groups/{id}/members does not list service principals (known issue on that page and in
        # concepts/known-issues.md, "GET /groups/{id}/members doesn't return service principals in v1.0"); the
        # documented v1.0 route from the other side is /servicePrincipals/{id}/memberOf (groups and directory
        # roles the service principal is a direct member of; Application.Read.All).
        Leg(name="servicePrincipalMemberships", parents="/servicePrincipals", parent_builder="service_principals",
            parent_kind="servicePrincipal", child="/servicePrincipals/{id}/memberOf?" + MEMBER_QUERY,
            row=(("groupId", "child.id"), ("memberId", "parent.id"), ("memberType", "parent.kind"),
                 ("membership", "=direct")),
            child_types=("group",), provides="servicePrincipal", requires=(APP_READ,),
            adds="service principals' group memberships (v1.0 /groups/{id}/members does not list service "
                 "principals)"),
    ),
    derive="transitive",
)

# Entra allows these characters in the local part of a userPrincipalName: A-Z a-z 0-9 ' . - _ ! # ^ ~
# (resources/user.md, userPrincipalName). Whether startswith() compares case-sensitively the docs do not say
# (graph-facts §11, §12), so each chain asks a prefix in every case combination joined with `or` ('ab' is ab, aB,
# Ab and AB; at most 4 of Graph's 15 `or` clauses), as connector/collect/upn_plan.py does: one chain per
# folded character covers every user exactly once either way.
UPN_INITIALS = "abcdefghijklmnopqrstuvwxyz0123456789'.-_!#^~"


def case_variants(prefix: str) -> list[str]:
    """Every case combination of a lower-case prefix: the exact startswith() arguments that cover it."""
    out = [""]
    for ch in prefix:
        cases = (ch, ch.upper()) if ch != ch.upper() else (ch,)
        out = [head + c for head in out for c in cases]
    return out


def _initial_chain(prefix: str) -> str:
    """`/users?...&$filter=startswith(userPrincipalName,'x') or startswith(userPrincipalName,'X')`, quoted for a
    $batch item's relative URL."""
    clauses = " or ".join("startswith(userPrincipalName,'" + v.replace("'", "''") + "')" for v in case_variants(prefix))
    return "/users?$select=id&$expand=manager&$top=100&$filter=" + quote(clauses, safe="(),'")


# A chain's pages are sequential, so the longest chain sets the wall time: with one chain per first
# character, the commonest initial (about a tenth of the users) is a hundred pages deep at 100,000 users.
# Large tenants use two-character chains for the letters instead: more chains end on a part-filled or
# empty page (about 1,200 chains, 60 more $batch requests), but no chain is deep. The second character
# can also be "@" (a one-character local part).
FINE_FROM = 20000
_FINE_PREFIXES = tuple(a + b for a in UPN_INITIALS[:26] for b in UPN_INITIALS + "@") + tuple(UPN_INITIALS[26:])

USER_MANAGERS = FanOut(
    # GET /users?$expand=manager is documented (api/user-list-manager.md); $select inside $expand needs
    # $levels, and $levels needs $count + ConsistencyLevel, which $expand does not support (concepts/
    # query-parameters.md: "$expand is not currently supported with advanced queries"), so the manager comes
    # with its default properties. $expand on directory objects returns at most 100 objects per page (Graph
    # known issue 13635; microsoft-graph-docs PR #21506 "Max page size with $expand is 100"): 100,000 users are
    # 1,000 pages, sent as concurrent chains per initial character, 20 pages per $batch.
    legs=(Leg(name="usersByInitial", child="", seeds=tuple(_initial_chain(c) for c in UPN_INITIALS),
              fine_seeds=tuple(_initial_chain(p) for p in _FINE_PREFIXES),
              row=(("userId", "child.id"), ("managerId", "child.manager.id"), ("managerType", "child.manager.@type")),
              when="child.manager"),),
    count="/users",
    fine_from=FINE_FROM,
)

OWNER_ROW = (("objectId", "parent.id"), ("objectType", "parent.kind"), ("ownerId", "child.id"),
             ("ownerType", "child.@type"))
APP_OWNERS = FanOut(legs=(
    Leg(name="applicationOwners", parents="/applications", parent_builder="applications", parent_kind="application",
        child="/applications/{id}/owners?" + MEMBER_QUERY, row=OWNER_ROW, count_as="applications"),
    Leg(name="servicePrincipalOwners", parents="/servicePrincipals", parent_builder="service_principals",
        parent_kind="servicePrincipal", child="/servicePrincipals/{id}/owners?" + MEMBER_QUERY, row=OWNER_ROW,
        count_as="servicePrincipals"),
))

GROUP_OWNERS = FanOut(legs=(
    Leg(name="groupOwners", parents="/groups", parent_builder="groups", parent_kind="group",
        child="/groups/{id}/owners?" + MEMBER_QUERY, count_as="groups",
        row=(("groupId", "parent.id"), ("ownerId", "child.id"), ("ownerType", "child.@type"))),
    # "Currently, service principals are not listed as group owners" (api/group-list-owners.md, v1.0). From
    # the other side: /servicePrincipals/{id}/ownedObjects ("could include applications or groups",
    # api/serviceprincipal-list-ownedobjects.md, Application.Read.All).
    Leg(name="servicePrincipalOwnerships", parents="/servicePrincipals", parent_builder="service_principals",
        parent_kind="servicePrincipal", child="/servicePrincipals/{id}/ownedObjects?" + MEMBER_QUERY,
        row=(("groupId", "child.id"), ("ownerId", "parent.id"), ("ownerType", "parent.kind")),
        child_types=("group",), provides="servicePrincipal", requires=(APP_READ,),
        adds="service principals that own groups (v1.0 /groups/{id}/owners does not list service principals)"),
))

APP_ROLE_ASSIGNMENTS = FanOut(legs=(
    # api/serviceprincipal-list-approleassignedto.md: users, groups and client service principals holding an
    # app role of this (resource) service principal; for Microsoft Graph's own service principal these are
    # the application permissions granted to apps.
    Leg(name="appRoleAssignedTo", parents="/servicePrincipals", parent_builder="service_principals",
        parent_kind="servicePrincipal", child="/servicePrincipals/{id}/appRoleAssignedTo?$top=999",
        row=(("*", "child.*"),), count_as="servicePrincipals"),
))

DETECTED_APP_DEVICES = FanOut(legs=(
    # GET /deviceManagement/detectedApps/{detectedAppId}/managedDevices (api/intune-devices-manageddevice-list.md,
    # v1.0). The per-device route (managedDevices/{id}/detectedApps) is beta only. Intune page sizes are not
    # documented; nextLinks are followed.
    Leg(name="detectedAppDevices", parents="/deviceManagement/detectedApps",
        parent_builder="device_management.detected_apps", parent_kind="detectedApp", parent_top=None,
        keep=("displayName", "version", "platform"), count_as="detectedApps",
        child="/deviceManagement/detectedApps/{id}/managedDevices?$select=id,deviceName",
        row=(("appId", "parent.id"), ("appDisplayName", "parent.displayName"), ("appVersion", "parent.version"),
             ("platform", "parent.platform"), ("deviceId", "child.id"), ("deviceName", "child.deviceName"))),
))

APPLICATION_SELECT = ("id", "appId", "displayName", "createdDateTime", "signInAudience", "publisherDomain",
                      "passwordCredentials", "keyCredentials", "requiredResourceAccess", "identifierUris", "tags",
                      "notes", "disabledByMicrosoftStatus", "verifiedPublisher")
SERVICE_PRINCIPAL_SELECT = ("id", "appId", "displayName", "appDisplayName", "servicePrincipalType",
                            "appOwnerOrganizationId", "appRoleAssignmentRequired", "accountEnabled", "signInAudience",
                            "preferredSingleSignOnMode", "tags", "appRoles", "passwordCredentials", "keyCredentials",
                            "disabledByMicrosoftStatus", "verifiedPublisher")

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
        fields=shapes.ORGANIZATION,
    ),
    Dataset(
        name="subscribed_skus",
        description="Every licence SKU the tenant has, with seats (prepaid and consumed) and service plans.",
        path="/subscribedSkus",
        builder="subscribed_skus",
        requires=(SKU_READ,),
        select=("id", "skuId", "skuPartNumber", "appliesTo", "capabilityStatus", "consumedUnits", "prepaidUnits",
                "servicePlans", "subscriptionIds", "accountId", "accountName"),
        record="one subscribedSku (seat counts are organisation-wide even with a domain filter)",
        fields=shapes.SUBSCRIBED_SKU,
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
        key=("id",),
        # api/user-delta.md: "changes to the licenseAssignmentStates property are currently not tracked"
        # (graph-facts §11): `untracked`. It changes with group-based licensing (a user joins or leaves a licensing
        # group, or the group's licences change) and with the assignment's processing, neither of which need make
        # the user appear in /users/delta. "licences": a delta run reads those users again by id (a groups round
        # with members says who joined or left a licensing group), or the whole dataset when a group's licences
        # changed or the users to read again would cost more than the listing (connector/collect/licences.py).
        delta="/users/delta",
        untracked=("licenseAssignmentStates",),
        delta_merge="licences",
        record="one user (Graph `user` resource, selected properties)",
        fields=shapes.USER,
    ),
    Dataset(
        name="user_sign_in_activity",
        description="Last interactive, non-interactive and successful sign-in per user, keyed by user id.",
        path="/users",
        builder="users",
        requires=(USER_READ, AUDIT_READ),
        select=("id", "userPrincipalName", "signInActivity"),
        # "use $top=500 to get the maximum 500 users per page" (includes/throttling-entra-logs-reports.md, PR
        # #9591); the older cap was 120, refused above it with a 400 (msgraph-sdk-powershell #1898). One chain:
        # GET signInActivity is paced at 10 requests a minute, so partitions would cost requests and gain nothing.
        top=500,
        fallback_top=120,
        licence=ENTRA_PREMIUM,
        upn_field="userPrincipalName",
        paced=True,
        record="{id, userPrincipalName, signInActivity}; join to users on id",
        fields=shapes.SIGN_IN_ACTIVITY,
    ),
    Dataset(
        name="subscriptions",
        description="Commercial subscriptions behind the SKUs: status, trial flag, total licences, next lifecycle "
                    "(renewal or expiry) date.",
        path="/directory/subscriptions",
        builder="directory.subscriptions",
        requires=(SUBSCRIPTION_READ,),
        record="one companySubscription (Graph resource, every property)",
        fields=shapes.COMPANY_SUBSCRIPTION,
    ),
    _report("report_office365_active_user_detail", "getOffice365ActiveUserDetail",
            "reports.get_office365_active_user_detail_with_period",
            "Per user: licences held per workload (Exchange, OneDrive, SharePoint, Skype, Yammer, Teams), last "
            "activity and licence assignment date per workload, assigned products.",
            shapes.REPORT_OFFICE365_ACTIVE_USER),
    _report("report_m365_app_user_detail", "getM365AppUserDetail",
            "reports.get_m365_app_user_detail_with_period",
            "Per user: which Microsoft 365 apps (Outlook, Word, Excel, PowerPoint, OneNote, Teams) were used on "
            "which platform.", shapes.REPORT_M365_APP_USER),
    _report("report_office365_activations_user_detail", "getOffice365ActivationsUserDetail",
            "reports.get_office365_activations_user_detail",
            "Per user and product: Office activations on Windows, Mac, mobile and shared computers.",
            shapes.REPORT_OFFICE365_ACTIVATIONS_USER,
            period=False, note="(no period: the current state)"),
    _report("report_email_activity_user_detail", "getEmailActivityUserDetail",
            "reports.get_email_activity_user_detail_with_period",
            "Per user: e-mails sent, received and read, meetings created and interacted with.",
            shapes.REPORT_EMAIL_ACTIVITY_USER),
    _report("report_mailbox_usage_detail", "getMailboxUsageDetail",
            "reports.get_mailbox_usage_detail_with_period",
            "Per mailbox: items, storage used, quotas, archive.", shapes.REPORT_MAILBOX_USAGE),
    _report("report_onedrive_usage_account_detail", "getOneDriveUsageAccountDetail",
            "reports.get_one_drive_usage_account_detail_with_period",
            "Per OneDrive: owner, files, active files, storage used and allocated.",
            shapes.REPORT_ONEDRIVE_USAGE_ACCOUNT,
            upn_field="ownerPrincipalName"),
    _report("report_sharepoint_activity_user_detail", "getSharePointActivityUserDetail",
            "reports.get_share_point_activity_user_detail_with_period",
            "Per user: SharePoint files viewed or edited, synced, shared internally and externally, pages "
            "visited.", shapes.REPORT_SHAREPOINT_ACTIVITY_USER),
    _report("report_teams_user_activity_user_detail", "getTeamsUserActivityUserDetail",
            "reports.get_teams_user_activity_user_detail_with_period",
            "Per user: Teams chat messages, calls, meetings organised and attended, audio/video/screen-share "
            "time.", shapes.REPORT_TEAMS_USER_ACTIVITY),
    Dataset(
        name="mfa_registration",
        description="Per user: MFA, SSPR and passwordless registration and capability, methods registered, "
                    "admin flag.",
        path="/reports/authenticationMethods/userRegistrationDetails",
        builder="reports.authentication_methods.user_registration_details",
        requires=(AUDIT_READ,),
        # The API page documents only $filter and $orderby, so Graph's default page applies (its size is not
        # documented either). Public clients ask for $top=999 (graph-facts §5; docs/performance.md), and the
        # pages draw on identity and access reports' 5 requests per 10 s: asked for, and dropped once if
        # refused. Whether Graph honours it is not known [UNVERIFIED]; the estimates assume it does not.
        top=999,
        top_undocumented=True,
        licence=ENTRA_PREMIUM,
        upn_field="userPrincipalName",
        paced=True,
        record="one userRegistrationDetails (Graph resource; `id` is the user id)",
        fields=shapes.USER_REGISTRATION_DETAILS,
    ),
    Dataset(
        name="groups",
        description="Every group: type (Microsoft 365, security, dynamic), membership rule, licences assigned "
                    "through the group (group-based licensing).",
        path="/groups",
        builder="groups",
        requires=(GROUP_READ,),
        select=("id", "displayName", "description", "groupTypes", "mailEnabled", "securityEnabled", "mail",
                "mailNickname", "membershipRule", "membershipRuleProcessingState", "onPremisesSyncEnabled",
                "isAssignableToRole", "assignedLicenses", "createdDateTime", "visibility",
                "resourceProvisioningOptions"),
        top=999,
        key=("id",),
        # api/group-delta.md, concepts/delta-query-groups.md: every selected property is tracked (no exception is
        # documented); properties never set are left out of a delta object and are null here, as in the listing.
        delta="/groups/delta",
        record="one group (Graph `group` resource, selected properties)",
        fields=shapes.GROUP,
    ),
    Dataset(
        name="group_members",
        description="Group memberships, direct and through nested groups, listed with JSON batching; service "
                    "principals' memberships through /servicePrincipals/{id}/memberOf.",
        path="/groups/{id}/members",
        builder="groups",
        requires=(GROUP_READ,),
        strategy="fan_out",
        fan_out=GROUP_MEMBERS,
        optional=(OptionalPermission(MEMBER_READ_HIDDEN, "members of groups with hidden membership"),
                  OptionalPermission(APP_READ, "service principals' group memberships (v1.0 /groups/{id}/members "
                                               "does not list service principals)")),
        record="{groupId, memberId, memberType, membership: direct|transitive}",
        fields=shapes.GROUP_MEMBER,
        key=("groupId", "memberId", "membership"),
        # Direct memberships from /groups/delta's `members@delta` applied to the previous snapshot, users deleted
        # from /users/delta, service principals' memberships read again, transitive rows derived again
        # (connector/collect/memberships.py says what delta covers and what is read another way).
        delta="/groups/delta",
        delta_merge="memberships",
    ),
    Dataset(
        name="role_assignments",
        description="Directory role assignments with the role's name and the principal (user, group or service "
                    "principal).",
        path="/roleManagement/directory/roleAssignments",
        builder="role_management.directory.role_assignments",
        requires=(ROLE_READ,),
        expand=("principal",),
        strategy="role_assignments",
        record="one unifiedRoleAssignment with `principal` (expanded) and `roleDefinition` {id, displayName, "
               "templateId, isBuiltIn}",
        fields=shapes.ROLE_ASSIGNMENT,
    ),
    Dataset(
        name="devices",
        description="Entra ID device objects: join type, OS, compliance and management flags, last sign-in.",
        path="/devices",
        builder="devices",
        requires=(DEVICE_READ,),
        # Properties of `device` in v1.0 (resources/device.md; graph-facts §8): createdDateTime is not one of them
        # (only beta returns it: msgraph-beta-sdk-java #996), and selecting an undefined property can be refused
        # with 400, so it is not asked for; registrationDateTime is when the device was registered.
        select=("id", "deviceId", "displayName", "accountEnabled", "operatingSystem", "operatingSystemVersion",
                "approximateLastSignInDateTime", "registrationDateTime", "trustType",
                "profileType", "deviceOwnership", "enrollmentType", "isCompliant", "isManaged", "managementType",
                "manufacturer", "model", "onPremisesSyncEnabled", "onPremisesLastSyncDateTime", "mdmAppId"),
        top=999,
        record="one device (Graph `device` resource, selected properties)",
        fields=shapes.DEVICE,
    ),
    Dataset(
        name="managed_devices",
        description="Intune managed devices: owner, compliance, OS version, encryption, storage, last sync.",
        path="/deviceManagement/managedDevices",
        builder="device_management.managed_devices",
        requires=(INTUNE_READ,),
        licence=INTUNE,
        # An unfiltered listing was reported to leave devices out in large tenants (microsoft-graph-docs #21659,
        # open). v1.0 documents one count to check it against: GET /deviceManagement/managedDeviceOverview,
        # enrolledDeviceCount, "Total enrolled device count. Does not include PC devices managed via Intune PC
        # Agent" (api/intune-devices-manageddeviceoverview-get.md, application DeviceManagementManagedDevices.Read.All;
        # resources/intune-devices-manageddeviceoverview.md). The List page documents no $count or $filter.
        documented_count=("/deviceManagement/managedDeviceOverview", "enrolledDeviceCount"),
        record="one managedDevice (Graph resource, every property, with `@odata.type`)",
        fields=shapes.MANAGED_DEVICE,
    ),
    Dataset(
        name="detected_apps",
        description="Software inventory from Intune: application, version, publisher, platform, device count.",
        path="/deviceManagement/detectedApps",
        builder="device_management.detected_apps",
        requires=(INTUNE_READ,),
        licence=INTUNE,
        record="one detectedApp (Graph resource, with `@odata.type`)",
        fields=shapes.DETECTED_APP,
    ),
    Dataset(
        name="detected_app_devices",
        description="Which detected application (name, version) is on which Intune managed device: the software "
                    "inventory link for software-asset tools.",
        path="/deviceManagement/detectedApps/{id}/managedDevices",
        builder="device_management.detected_apps",
        requires=(INTUNE_READ,),
        licence=INTUNE,
        strategy="fan_out",
        fan_out=DETECTED_APP_DEVICES,
        record="{appId, appDisplayName, appVersion, platform, deviceId, deviceName}; join deviceId to "
               "managed_devices.id and appId to detected_apps.id",
        fields=shapes.DETECTED_APP_DEVICES,
    ),
    Dataset(
        name="applications",
        description="App registrations: sign-in audience, API permissions requested, and secrets and certificates "
                    "(hints, ids and dates only, never secret values).",
        path="/applications",
        builder="applications",
        requires=(APP_READ,),
        # $select=keyCredentials returns the public key (`key`) and is limited to 150 requests a minute per
        # tenant (api/application-list.md); at 999 per page that is far away. `key` is dropped from the records.
        select=APPLICATION_SELECT,
        top=999,
        strategy="app_credentials",
        record="one application (Graph resource, selected properties; secretText and key removed)",
        fields=shapes.APPLICATIONS,
    ),
    Dataset(
        name="service_principals",
        description="Service principals (enterprise apps, managed identities, Microsoft apps): type, owning "
                    "organisation, assignment required, enabled, app roles, credentials' dates.",
        path="/servicePrincipals",
        builder="service_principals",
        requires=(APP_READ,),
        select=SERVICE_PRINCIPAL_SELECT,
        top=999,  # api/serviceprincipal-list.md: default 100, maximum 999
        strategy="app_credentials",
        record="one servicePrincipal (Graph resource, selected properties; secretText and key removed)",
        fields=shapes.SERVICE_PRINCIPALS,
    ),
    Dataset(
        name="app_owners",
        description="Owners of app registrations and service principals, listed with JSON batching.",
        path="/applications/{id}/owners",
        builder="applications",
        requires=(APP_READ,),
        strategy="fan_out",
        fan_out=APP_OWNERS,
        record="{objectId, objectType: application|servicePrincipal, ownerId, ownerType}",
        fields=shapes.APP_OWNERS,
    ),
    Dataset(
        name="oauth2_grants",
        description="Delegated permission grants (consents): which client app may call which API with which "
                    "scopes, for all users or for one user.",
        path="/oauth2PermissionGrants",
        builder="oauth2_permission_grants",
        requires=(GRANT_READ,),
        # api/oauth2permissiongrant-list.md: only $filter (eq) is supported, no $select or $top.
        record="one oAuth2PermissionGrant: clientId and resourceId are service_principals.id; consentType "
               "AllPrincipals (principalId null) or Principal (principalId = users.id); scope is space-separated",
        fields=shapes.OAUTH2_GRANTS,
    ),
    Dataset(
        name="app_role_assignments",
        description="App role assignments: which users, groups and apps hold which role of which app, including "
                    "the application permissions granted to apps (Microsoft Graph's own service principal).",
        path="/servicePrincipals/{id}/appRoleAssignedTo",
        builder="service_principals",
        requires=(APP_READ,),
        strategy="fan_out",
        fan_out=APP_ROLE_ASSIGNMENTS,
        record="one appRoleAssignment (Graph resource): principalId/principalType hold appRoleId of resourceId; "
               "join appRoleId to service_principals.appRoles.id for the role's value (00000000-... = default "
               "access)",
        fields=shapes.APP_ROLE_ASSIGNMENTS,
    ),
    Dataset(
        name="group_owners",
        description="Group owners, listed with JSON batching; service principals that own groups through "
                    "/servicePrincipals/{id}/ownedObjects.",
        path="/groups/{id}/owners",
        builder="groups",
        requires=(GROUP_READ,),
        strategy="fan_out",
        fan_out=GROUP_OWNERS,
        optional=(OptionalPermission(APP_READ, "service principals that own groups (v1.0 /groups/{id}/owners "
                                               "does not list service principals)"),),
        record="{groupId, ownerId, ownerType: user|servicePrincipal}",
        fields=shapes.GROUP_OWNERS,
    ),
    Dataset(
        name="user_managers",
        description="Each user's manager (users with none are not listed), read with JSON batching.",
        path="/users?$expand=manager",
        builder="users",
        requires=(USER_READ,),
        strategy="fan_out",
        fan_out=USER_MANAGERS,
        record="{userId, managerId, managerType: user|orgContact}",
        fields=shapes.USER_MANAGERS,
    ),
    Dataset(
        name="role_eligibilities",
        description="Eligible directory role assignments (Privileged Identity Management): who may activate "
                    "which role, where, until when.",
        path="/roleManagement/directory/roleEligibilitySchedules",
        builder="role_management.directory.role_eligibility_schedules",
        requires=(ELIGIBILITY_READ,),
        licence=ENTRA_P2,
        # Supports $select, $filter and $expand, not $top (api/rbacapplication-list-roleeligibilityschedules.md).
        record="one unifiedRoleEligibilitySchedule (Graph resource)",
        fields=shapes.ROLE_SCHEDULE_COMMON,
    ),
    Dataset(
        name="role_assignment_schedules",
        description="Active directory role assignments with their schedule (Privileged Identity Management): "
                    "permanent, time-bound or activated from an eligibility.",
        path="/roleManagement/directory/roleAssignmentSchedules",
        builder="role_management.directory.role_assignment_schedules",
        requires=(ASSIGNMENT_SCHEDULE_READ,),
        licence=ENTRA_P2,
        record="one unifiedRoleAssignmentSchedule (Graph resource)",
        fields=shapes.ROLE_ASSIGNMENT_SCHEDULES,
    ),
    # Beta only (learn: copilotreportroot-getmicrosoft365copilotusageuserdetail, "APIs under the /beta version
    # are subject to change. Use of these APIs in production applications is not supported."; Reports.Read.All;
    # global service only). Opt-in, and every run that collects it carries a `beta_endpoint` warning.
    replace(_report("copilot_usage_user_detail", "getMicrosoft365CopilotUsageUserDetail", "reports",
                    "Per Microsoft 365 Copilot licence holder: last Copilot activity overall and per app (Teams, "
                    "Word, Excel, PowerPoint, Outlook, OneNote, Loop, Copilot Chat). Beta endpoint: opt-in.",
                    beta_shapes.COPILOT_USAGE_USER),
            path="/copilot/reports/getMicrosoft365CopilotUsageUserDetail(period='{period}')", strategy="beta_report",
            report=None, api="beta", opt_in=True,
            record="one copilotUsageUserDetail (JSON report row, as Graph's /beta sends it)"),
)

DATASETS: dict[str, Dataset] = {d.name: d for d in _DECLARATIONS}
DEFAULT_DATASETS = tuple(name for name, d in DATASETS.items() if not d.opt_in)  # what M365_DATASETS='*' collects
