"""The simulated tenant: its shape and knobs (:class:`TenantSpec`), its identity (ids, domains, app
secret), its users, its subscribed SKUs and its organization object.

Users are generated from ``(seed, index)`` on demand (simulator/user_objects.py) so that a
200,000-user tenant costs only a compact per-user index (simulator/user_index.py) in memory. All
values use Microsoft Graph v1.0 property names and JSON shapes (graph-facts §0, §1, §3).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from .licensing import PLANS, Grant, Licences
from .people import FIRST_NAME_FORMS, KIND_GUEST, KIND_MEMBER, KIND_SERVICE, LAST_NAME_FORMS, UserTraits
from .seeded import DAY, digest, guid, iso
from .user_index import UPN_LOCAL_CHARS, UserIndex
from .user_objects import UserObjects

# Least-privileged application permissions for every dataset the connector collects.
DEFAULT_ROLES = frozenset({
    "User.Read.All", "Organization.Read.All", "AuditLog.Read.All", "Reports.Read.All", "ReportSettings.Read.All",
    "GroupMember.Read.All", "RoleManagement.Read.Directory", "Device.Read.All",
    "DeviceManagementManagedDevices.Read.All", "Application.Read.All", "DelegatedPermissionGrant.Read.All",
    "Member.Read.Hidden",
})
DEFAULT_DOMAINS = ("contoso.onmicrosoft.com", "contoso.com", "fabrikam.com")


@dataclass
class TenantSpec:
    """Shape of the simulated tenant plus runtime knobs.

    ``seed``, ``users``, ``domains`` and ``now`` fix the data when the
    simulator starts; every other field is read per request, so tests may
    change them on ``sim.spec`` between runs.
    """

    seed: int = 1
    users: int = 100
    roles: frozenset[str] = DEFAULT_ROLES
    premium: bool = True
    domains: tuple[str, ...] = DEFAULT_DOMAINS
    latency: float = 0.0
    throttle_rate: float = 0.0
    retry_after: float = 1
    transient_rate: float = 0.0
    secret_expired: bool = False
    foreign_next_link: bool = False
    token_lifetime: int = 3599
    secret_expires_in_days: int | None = None
    certificate_registered: bool = True  # the app certificate's public key is on the app registration
    # An admin of the tenant consented to the (multi-tenant) app, so its service principal exists there. Without
    # it the token endpoint answers AADSTS700016 "... not found in the directory ... not been installed by the
    # administrator of the tenant or consented to by any user in the tenant" (graph-facts §7, "App not found in
    # tenant": Azure/azure-sdk-for-python#8314, HTTP 400 unauthorized_client).
    app_consented: bool = True
    count_lag: int = 0  # $count is eventually consistent: added to every count it answers
    rate_limit_ru_per_10s: int | None = None
    now: dt.datetime | None = None  # reference "today" for generated dates; default: today 00:00 UTC
    groups: int | None = None  # default: users // 25, at least 12
    applications: int | None = None  # app registrations; default: users // 50, at least 8
    p2: bool = True  # Entra ID P2 (PIM) on top of `premium`
    own_secret_days: int = 200  # days until the connector's own app registration's secret expires (< 0: expired)
    devices: int | None = None  # Entra devices; default: 60% of users (about three quarters Intune-managed)
    report_names_concealed: bool = True  # Microsoft's default since 2021 (graph-facts §4)
    report_settings_wrapped: bool = False  # answer /admin/reportSettings in the doc sample's {"value": {...}} shape
    report_rate_limit: int = 14  # usage-report requests per 10 minutes per report API (0 = unlimited)
    # Rounds of licence changes since the tenant was first collected: each round gives about 3% of the
    # members another licence combination (fixed at start, like seed and users). Two simulators that differ
    # only here are the same tenant at two points in time.
    licence_changes: int = 0
    # The "Product names and service plan identifiers for licensing" CSV served on the download-centre stand-in:
    # None = the copy the connector ships; product_names_status != 200 answers with that status instead.
    product_names_csv: bytes | None = None
    product_names_status: int = 200
    # UPNs begin with these characters in turn (prefixed to the generated local part): a test tenant whose
    # users start with every character Entra allows, in both cases. "" = the generator's own names.
    upn_initials: str = ""
    # Quirks and limits of the real service that are reported but not documented; off unless a test or
    # benchmark turns them on (graph-facts §11).
    startswith_case_sensitive: bool = False  # startswith() compares case-sensitively (docs don't say; off)
    sign_in_eventual_quirk: bool = False  # signInActivity empty for some users under ConsistencyLevel: eventual
    identity_reports_limit: int | None = None  # identity and access reports: requests per 10 s (None: quotas)
    sign_in_is_identity_report: bool = False  # with identity_reports_limit: signInActivity listings count too
    # Graph's documented quotas (graph-facts §6, concepts/throttling-limits.md), enforced unless turned off:
    # identity resource units by tenant size, identity and access reports 5 per 10 s, GET signInActivity
    # 10 per minute, Intune 2,000 per 20 s, usage reports 14 per 10 minutes per report and 40 per tenant.
    quotas: bool = True
    # Every quota window divided by this (the collector's M365_GRAPH_QUOTA_SCALE must match: env() sets it):
    # a 1,000,000-user run in minutes for benchmarks, the test suite in seconds. Not a behaviour of Graph.
    quota_scale: float = field(default_factory=lambda: float(os.environ.get("SIMULATOR_QUOTA_SCALE") or 1))
    # Users per page when signInActivity is selected: 500 (includes/throttling-entra-logs-reports.md, the v1.0
    # List users page); 120 is the older documented cap. With sign_in_top_fails, a $top above the cap is
    # refused with the 400 reported in msgraph-sdk-powershell #1898 instead of being capped.
    sign_in_page_limit: int = 500
    sign_in_top_fails: bool = False
    # userRegistrationDetails and $top: the API page documents only $filter and $orderby (graph-facts §5), and
    # neither its default page nor a maximum; public clients send $top=999 and page on, so it is not refused
    # [UNVERIFIED]. "ignore" (default, the strict reading): pages of 100 whatever $top says; "honour": $top up
    # to 999; "refuse": a 400 for any $top.
    registration_top: str = "ignore"
    registration_needs_directory_read: bool = False  # userRegistrationDetails' licence check wants Directory.Read.All
    # Found in a documentation audit (graph-facts §12):
    # - Intune licensed: without it /deviceManagement/* answers 400 BadRequest "Request not applicable to target
    #   tenant.", the one reported answer of an Intune-backed API on an unlicensed tenant (msgraph-beta-sdk-go
    #   #198); the docs only say the Intune API "requires an active Intune license for the tenant".
    intune_licensed: bool = True
    # - The unfiltered /deviceManagement/managedDevices listing leaves out this many devices (the last ones) while
    #   managedDeviceOverview still counts them: reported incomplete in large tenants (microsoft-graph-docs #21659).
    managed_devices_left_out: int = 0
    # - Groups with hidden membership without Member.Read.Hidden: users report that Graph lists their members as
    #   empty rather than refusing (microsoft-graph-docs #12552, #12285; msgraph-sdk-dotnet #1255), the default
    #   here; True answers 403 Authorization_RequestDenied instead (what api/group-list-members.md's "is also
    #   required" would suggest; the exact refusal is not documented).
    hidden_membership_refused: bool = False
    # - roleAssignmentSchedules with RoleAssignmentSchedule.Read.Directory as the only fitting role: accepted by
    #   default (a rendering of the learn page names it least privileged); True refuses it with 403, as the
    #   generated permissions table (RoleManagement.* only for applications) would have it. Which one Graph does
    #   is not verified.
    assignment_schedule_role_refused: bool = False
    # Benchmarks: keep each user's JSON once built for a $select, so a second collection costs the
    # stand-in little CPU (real Graph's CPU is not on the client's machine). Memory: about 2.5 KB per user
    # and select. Not a behaviour of Graph; off for tests.
    render_cache: bool = False
    # Test data shaping, not a behaviour of Graph: this share of the users holding the E3 suite use Office
    # like frontline workers (no desktop Office in getM365AppUserDetail, mailbox and OneDrive mostly under the
    # 2 GB of Microsoft 365 F3), so the insights' downgrade rule has candidates to find. 0 turns it off.
    frontline_share: float = 0.15
    # Microsoft 365 Copilot seats: this share of the E3 and E5 members also hold the Copilot add-on
    # (Microsoft_365_Copilot), and the beta Copilot usage report lists them. 0 (the default): no Copilot SKU.
    copilot_share: float = 0.0
    # Users that do not exist yet at start but can be created later (simulator/changes.py), for tests and
    # benchmarks of incremental (delta) runs; the users that exist at start are the same whatever it is.
    pending_users: int = 0
    # Delta tokens (simulator/graph/delta.py): days added to every token's age, as if Graph's clock had moved
    # on (tests of the documented 7-day lifetime of directory-object delta tokens); and a synchronisation reset:
    # every $deltatoken request answered 410 Gone (concepts/delta-query-overview.md). Not behaviours of Graph.
    delta_age_days: float = 0.0
    delta_reset: bool = False
    extra: dict[str, Any] = field(default_factory=dict)



class Tenant:
    """The simulated tenant; safe to share between threads. Users are fixed when the index is built,
    except for what a test changes on purpose while a client pages (:meth:`rename`, :meth:`delete`)."""

    def __init__(self, spec: TenantSpec) -> None:
        self.seed = spec.seed
        self.user_count = spec.users
        self.upn_initials = spec.upn_initials
        bad = set(spec.upn_initials) - set(UPN_LOCAL_CHARS)
        if bad:
            raise ValueError(f"upn_initials has characters Entra does not allow in a UPN: {''.join(sorted(bad))}")
        self.domains = tuple(spec.domains)
        self.premium_at_start = spec.premium
        self.frontline_share = spec.frontline_share
        now = spec.now or dt.datetime.now(dt.UTC)
        self.now = now.replace(hour=0, minute=0, second=0, microsecond=0) if spec.now is None else now
        self.now_epoch = int(self.now.timestamp())
        self.tenant_id = guid(digest(self.seed, "tenant"))
        self.client_id = guid(digest(self.seed, "client"))
        self.service_principal_id = guid(digest(self.seed, "sp"))
        self.client_secret = "Sim8Q~" + base64.urlsafe_b64encode(digest(self.seed, "secret")[:24]).decode().rstrip("=")
        self.managed_identity_client_id = guid(digest(self.seed, "mi-client"))
        self.managed_identity_principal_id = guid(digest(self.seed, "mi-principal"))
        self.initial_domain = self.domains[0]
        self.default_domain = self.domains[1] if len(self.domains) > 1 else self.domains[0]
        self.licences = Licences(self.seed, spec.premium, spec.licence_changes, spec.copilot_share)
        self.skus = self.licences.skus
        self.index = UserIndex(self.seed, self.user_count + spec.pending_users, self.domains, self.upn_initials,
                               self.licences, spec.pending_users)
        # Properties changed after start (simulator/changes.py), per user index: applied over the generated user.
        self.overrides: dict[int, dict[str, Any]] = {}
        self.objects = UserObjects(self.seed, self.now_epoch, self.initial_domain, self.default_domain, self.licences)

    # ------------------------------------------------------------------ users

    def _core(self, index: int) -> UserTraits:
        d = digest(self.seed, f"user:{index}")
        kind = KIND_GUEST if d[4] < 14 else KIND_SERVICE if d[4] < 18 else KIND_MEMBER
        return UserTraits(
            kind,
            FIRST_NAME_FORMS[int.from_bytes(d[0:2], "big") % len(FIRST_NAME_FORMS)],
            LAST_NAME_FORMS[int.from_bytes(d[2:4], "big") % len(LAST_NAME_FORMS)],
            d[5],
            d[6],
            self.licences.combo(index, kind, d),
            d,
        )

    def grants(self, index: int, core: UserTraits | None = None) -> tuple[Grant, ...]:
        """How user ``index`` holds each SKU of its combination (see :meth:`Licences.grants`)."""
        core = core or self._core(index)
        return self.licences.grants(index, core.kind, core.combo)

    def users(self) -> Iterator[dict[str, Any]]:
        """Every user with every property the simulator serves, in the order Graph pages them."""
        for i in self.all_indexes():
            yield self.user(i)

    def user(self, index: int, properties: Collection[str] | None = None) -> dict[str, Any]:
        """The user object for ``index`` (Graph v1.0 names and shapes); ``properties`` limits the result to
        those (canonical) names and skips generating the rest."""
        core = self._core(index)
        user = self.objects.build(index, core, self.upn(index), self.index.invited_upn(index), properties)
        changed = self.overrides.get(index)
        if changed:
            user.update({k: v for k, v in changed.items() if properties is None or k in properties})
        return user

    def user_id(self, index: int) -> str:
        """Object id of user ``index`` (cheap; no index needed)."""
        return self.index.user_id(index)

    def upn(self, index: int) -> str:
        """userPrincipalName of user ``index``."""
        return self.index.upn(index)

    def exists(self, index: int) -> bool:
        return self.index.exists(index)

    def index_of(self, key: str) -> int | None:
        """Index of the user with this object id or UPN (case-insensitive), else None."""
        return self.index.index_of(key)

    # ------------------------------------------------------------------ changes while paging (tests)

    def rename(self, index: int, upn: str) -> None:
        """Change a user's UPN, as an admin would in the middle of a collection."""
        self.index.rename(index, upn)

    def delete(self, index: int) -> None:
        """Delete a user (it disappears from lists, counts and lookups)."""
        self.index.delete(index)

    @property
    def version(self) -> int:
        """Incremented by every rename and deletion."""
        return self.index.version

    @property
    def live_count(self) -> int:
        return self.index.live_count

    def all_indexes(self) -> range | tuple[int, ...]:
        """Every existing user's index, in paging order."""
        return self.index.all_indexes()

    def prefix_matches(self, prefixes: tuple[str, ...], case_sensitive: bool = False) -> tuple[int, ...]:
        """Indexes (in paging order) of users whose UPN starts with any prefix (case-insensitively unless
        asked otherwise)."""
        return self.index.prefix_matches(prefixes, case_sensitive)

    page_from = staticmethod(UserIndex.page_from)

    # ------------------------------------------------------------------ organization & SKUs

    def consumed_units(self) -> dict[str, int]:
        """Users holding each SKU (by simulator key)."""
        return self.index.consumed_units()

    def subscribed_skus(self) -> list[dict[str, Any]]:
        """The /subscribedSkus collection, consistent with the users' assignedLicenses."""
        return self.licences.subscribed_skus(self.consumed_units(), self.display_name, self.tenant_id)

    @property
    def display_name(self) -> str:
        """Organization display name, derived from the initial domain."""
        return self.initial_domain.split(".")[0].capitalize()

    def organization(self) -> dict[str, Any]:
        """The single /organization object."""
        created = 1457947613  # 2016-03-14T09:26:53Z
        domains = []
        for name in self.domains:
            initial = name == self.initial_domain
            domains.append(
                {
                    "capabilities": "Email, OfficeCommunicationsOnline"
                    if initial or name == self.default_domain
                    else "Email",
                    "isDefault": name == self.default_domain,
                    "isInitial": initial,
                    "name": name,
                    "type": "Managed",
                }
            )
        plans = []
        seen: set[str] = set()
        for sku in self.skus:
            for p in sku.plans:
                name, plan_id, svc = PLANS[p]
                if plan_id in seen:
                    continue
                seen.add(plan_id)
                plans.append(
                    {
                        "assignedDateTime": iso(created + 30 * DAY),
                        "capabilityStatus": sku.status,
                        "service": svc,
                        "servicePlanId": plan_id,
                    }
                )
        return {
            "id": self.tenant_id,
            "deletedDateTime": None,
            "businessPhones": ["+1 425 555 0100"],
            "city": "Redmond",
            "country": None,
            "countryLetterCode": "US",
            "createdDateTime": iso(created),
            "defaultUsageLocation": None,
            "displayName": self.display_name,
            "isMultipleDataLocationsForServicesEnabled": None,
            "marketingNotificationEmails": [],
            "onPremisesLastSyncDateTime": iso(self.now_epoch - 17 * 60),
            "onPremisesSyncEnabled": True,
            "partnerTenantType": None,
            "postalCode": "98052",
            "preferredLanguage": "en",
            "securityComplianceNotificationMails": [],
            "securityComplianceNotificationPhones": [],
            "state": "WA",
            "street": "One Microsoft Way",
            "technicalNotificationMails": [f"admin@{self.default_domain}"],
            "tenantType": "AAD",
            "directorySizeQuota": {"used": self.user_count + 40, "total": max(300000, self.user_count * 2)},
            "privacyProfile": None,
            "assignedPlans": plans,
            "provisionedPlans": [
                {"capabilityStatus": "Enabled", "provisioningStatus": "Success", "service": s}
                for s in ("exchange", "SharePoint", "MicrosoftCommunicationsOnline")
            ],
            "verifiedDomains": domains,
        }
