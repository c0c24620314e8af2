"""Deterministic tenant data: organization, subscribed SKUs and users.

Users are generated from ``(seed, index)`` on demand so that a 200,000-user
tenant costs only a compact per-user index (UPN, licence combination, id) in
memory. All values use Microsoft Graph v1.0 property names and JSON shapes
(graph-facts §0, §1, §3); SKU and service-plan GUIDs are the published ones
where known, otherwise merely plausible.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import gc
import hashlib
import random
import re
import threading
import unicodedata
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

# Least-privileged application permissions for every dataset the connector collects.
DEFAULT_ROLES = frozenset({
    "User.Read.All", "Organization.Read.All", "AuditLog.Read.All", "Reports.Read.All", "ReportSettings.Read.All",
    "GroupMember.Read.All", "RoleManagement.Read.Directory", "Device.Read.All",
    "DeviceManagementManagedDevices.Read.All", "Application.Read.All", "DelegatedPermissionGrant.Read.All",
    "Member.Read.Hidden",
})
DEFAULT_DOMAINS = ("contoso.onmicrosoft.com", "contoso.com", "fabrikam.com")
# graph-facts §11 (DOCS resources/user.md, userPrincipalName; Entra's username policies): the part before
# the @ may hold only A-Z a-z 0-9 and ' . - _ ! # ^ ~, and may not end with a period.
UPN_LOCAL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'.-_!#^~"
_UPN_LOCAL = re.compile(r"[A-Za-z0-9'.\-_!#^~]*[A-Za-z0-9'\-_!#^~]")


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
    identity_reports_limit: int | None = None  # identity and access reports: requests per 10 s (docs: 5)
    sign_in_is_identity_report: bool = False  # listing users with signInActivity counts against that limit
    registration_needs_directory_read: bool = False  # userRegistrationDetails' licence check wants Directory.Read.All
    # Benchmarks: keep each user's JSON once built for a $select, so a second collection costs the
    # stand-in little CPU (real Graph's CPU is not on the client's machine). Memory: about 2.5 KB per user
    # and select. Not a behaviour of Graph; off for tests.
    render_cache: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _digest(seed: int, label: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{label}".encode(), digest_size=32).digest()


def _guid(data: bytes) -> str:
    h = bytearray(data[:16])
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
DAY = 86400
_SUCCESSFUL_SIGN_IN_START = 1701388800  # 2023-12-01T00:00:00Z


@lru_cache(maxsize=8192)
def _day(days: int) -> str:
    return (_EPOCH + dt.timedelta(days=days)).strftime("%Y-%m-%d")


# "T08:00:00Z" for every second of a day (5 MB), so a timestamp costs two look-ups and a concatenation.
_TIME_OF_DAY = tuple(f"T{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}Z" for s in range(86400))


def _iso(value: int | None) -> str | None:
    """Epoch seconds -> Graph's ``2024-05-01T08:00:00Z`` (strftime is too slow for 1,000,000 users)."""
    if value is None:
        return None
    days, rem = divmod(value, 86400)
    return _day(days) + _TIME_OF_DAY[rem]


_ASCII_FOLD = str.maketrans(
    {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "đ": "d", "Đ": "D", "æ": "ae", "Æ": "AE"}
)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_ASCII_FOLD))
    return "".join(c for c in folded if c.isascii() and (c.isalnum() or c in "'-")).lower()


# (display name, ascii form or None to derive); a few non-ASCII and CJK names on purpose.
FIRST_NAMES: tuple[tuple[str, str | None], ...] = (
    ("Adele", None),
    ("Alex", None),
    ("Allan", None),
    ("Bianca", None),
    ("Brian", None),
    ("Christie", None),
    ("Debra", None),
    ("Diego", None),
    ("Emily", None),
    ("Enrico", None),
    ("Grady", None),
    ("Henrietta", None),
    ("Irvin", None),
    ("Isaiah", None),
    ("Johanna", None),
    ("Joni", None),
    ("Lee", None),
    ("Lidia", None),
    ("Lynne", None),
    ("Megan", None),
    ("Miriam", None),
    ("Nestor", None),
    ("Patti", None),
    ("Pradeep", None),
    ("José", None),
    ("Zoë", None),
    ("Björn", None),
    ("Łukasz", None),
    ("Søren", None),
    ("François", None),
    ("Chloé", None),
    ("Ærin", None),
    ("Dương", None),
    ("Ana-María", None),
    ("Jean-Luc", None),
    ("Siobhán", None),
    ("Mohammed", None),
    ("Fatima", None),
    ("Olumide", None),
    ("Kenji", None),
    ("Priya", None),
    ("Mateo", None),
    ("伟", "wei"),
    ("芳", "fang"),
    ("Ирина", "irina"),
    ("Дмитрий", "dmitriy"),
    ("Noa", None),
    ("Ingrid", None),
)
LAST_NAMES: tuple[tuple[str, str | None], ...] = (
    ("Vance", None),
    ("Wilber", None),
    ("Deyoung", None),
    ("Pinchon", None),
    ("Johnson", None),
    ("Cline", None),
    ("Berg", None),
    ("Siciliani", None),
    ("Braun", None),
    ("Gallo", None),
    ("Archie", None),
    ("Cox", None),
    ("Muller", None),
    ("Sherman", None),
    ("Lauer", None),
    ("Beaudoin", None),
    ("Gu", None),
    ("Holloway", None),
    ("Robbins", None),
    ("Bowen", None),
    ("Hunter", None),
    ("Kelley", None),
    ("Fernandez", None),
    ("Gupta", None),
    ("Müller", None),
    ("García", None),
    ("Øvergaard", None),
    ("Wójcik", None),
    ("Nguyễn", None),
    ("O'Brien", None),
    ("D'Angelo", None),
    ("Smith-Jones", None),
    ("van der Berg", None),
    ("Strauß", None),
    ("Ó Súilleabháin", None),
    ("Okafor", None),
    ("Tanaka", None),
    ("Haddad", None),
    ("Kowalski", None),
    ("Rossi", None),
    ("Silva", None),
    ("王", "wang"),
    ("李", "li"),
    ("Иванова", "ivanova"),
    ("Смирнов", "smirnov"),
    ("Cohen", None),
    ("Larsen", None),
    ("'t Hooft", None),
    ("de Vries", None),
)
_FIRST = tuple((d, a or _ascii(d)) for d, a in FIRST_NAMES)
_LAST = tuple((d, (a or _ascii(d)).replace(" ", "")) for d, a in LAST_NAMES)
GUEST_DOMAINS = ("gmail.com", "outlook.com", "hotmail.co.uk", "partner.example", "yahoo.co.jp", "proton.me")
SERVICE_ACCOUNTS = (
    "svc-backup",
    "svc_sql",
    "room.",
    "scan-to-mail",
    "noreply",
    "helpdesk",
    "_svc-sync",
    "_breakglass",
    "kiosk-",
)
DEPARTMENTS: dict[str, tuple[str, ...]] = {
    "Sales": ("Account Executive", "Sales Manager", "Inside Sales Representative"),
    "Marketing": ("Marketing Manager", "Content Strategist", "Brand Designer"),
    "Engineering": ("Software Engineer", "Senior Software Engineer", "Engineering Manager", "SRE"),
    "Finance": ("Accountant", "Financial Analyst", "Controller"),
    "Human Resources": ("HR Generalist", "Recruiter", "HR Director"),
    "IT": ("IT Administrator", "Helpdesk Technician", "Security Analyst"),
    "Legal": ("Counsel", "Paralegal"),
    "Operations": ("Operations Manager", "Logistics Coordinator", "Facilities Specialist"),
    "Recherche & Développement": ("Ingénieur R&D", "Chef de projet"),
}
# (officeLocation, city, state, country, usageLocation, postalCode, street, phone prefix, preferredLanguage)
OFFICES = (
    ("Redmond 18/2116", "Redmond", "WA", "United States", "US", "98052", "One Microsoft Way", "+1 425 555 ", "en-US"),
    ("New York 5/510", "New York", "NY", "United States", "US", "10001", "11 Times Square", "+1 212 555 ", "en-US"),
    ("London 3.14", "London", None, "United Kingdom", "GB", "EC2A 2BB", "2 Kingdom Street", "+44 20 7946 ", "en-GB"),
    (
        "Paris La Défense",
        "Paris",
        None,
        "France",
        "FR",
        "92130",
        "39 Quai du Président Roosevelt",
        "+33 1 70 ",
        "fr-FR",
    ),
    (
        "München Schwabing",
        "München",
        "BY",
        "Germany",
        "DE",
        "80807",
        "Walter-Gropius-Straße 5",
        "+49 89 3176 ",
        "de-DE",
    ),
    ("Tokyo Shinagawa", "東京", None, "Japan", "JP", "108-0075", "2-16-3 Konan", "+81 3 4332 ", "ja-JP"),
    (
        "São Paulo",
        "São Paulo",
        "SP",
        "Brazil",
        "BR",
        "04543-907",
        "Av. Pres. Juscelino Kubitschek 1909",
        "+55 11 5504 ",
        "pt-BR",
    ),
    ("Remote", None, None, None, "US", None, None, None, None),
)
_DEPARTMENT_NAMES = tuple(DEPARTMENTS)
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
}


@dataclass(frozen=True)
class Sku:
    """One subscribed SKU; ``key`` is the simulator's short name."""

    key: str
    part_number: str
    sku_id: str
    status: str
    plans: tuple[str, ...]
    applies_to: str = "User"


def _skus(premium: bool) -> tuple[Sku, ...]:
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

KIND_MEMBER, KIND_GUEST, KIND_SERVICE = 0, 1, 2


class Grant(NamedTuple):
    """How a user holds one SKU: directly, through a licence group, or both; a group assignment may have failed."""

    sku: str  # simulator SKU key
    direct: bool
    group: int | None  # index into LICENSE_GROUPS
    error: str | None  # group assignment error: the licence is then not assigned (unless also direct)

    @property
    def assigned(self) -> bool:
        return self.direct or self.error is None


class _Core(NamedTuple):
    """Everything about a user that is derived from its digest alone (no index needed)."""

    kind: int
    first: tuple[str, str]
    last: tuple[str, str]
    style: int
    domain: int
    combo: tuple[str, ...]
    digest: bytes


# Which generator group produces each served property (groups are generated only when selected).
_CONTACT = "contact"
_LICENSES = "licenses"
_SIGN_IN = "signIn"
_ON_PREM = "onPrem"
_GROUP_OF: dict[str, str] = {
    **dict.fromkeys(
        (
            "otherMails",
            "businessPhones",
            "mobilePhone",
            "jobTitle",
            "employeeId",
            "employeeType",
            "employeeHireDate",
            "employeeOrgData",
            "externalUserState",
            "externalUserStateChangeDateTime",
            "lastPasswordChangeDateTime",
        ),
        _CONTACT,
    ),
    **dict.fromkeys(("assignedLicenses", "licenseAssignmentStates", "assignedPlans", "provisionedPlans"), _LICENSES),
    "signInActivity": _SIGN_IN,
    **dict.fromkeys(
        (
            "onPremisesLastSyncDateTime",
            "onPremisesImmutableId",
            "onPremisesSamAccountName",
            "onPremisesDomainName",
            "onPremisesUserPrincipalName",
            "onPremisesDistinguishedName",
            "onPremisesSecurityIdentifier",
            "onPremisesExtensionAttributes",
        ),
        _ON_PREM,
    ),
}

# Properties a user can be served with without building the rest of the object.
_NARROW = frozenset({"id", "userPrincipalName", "signInActivity"})


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
        now = spec.now or dt.datetime.now(dt.UTC)
        self.now = now.replace(hour=0, minute=0, second=0, microsecond=0) if spec.now is None else now
        self.now_epoch = int(self.now.timestamp())
        self.tenant_id = _guid(_digest(self.seed, "tenant"))
        self.client_id = _guid(_digest(self.seed, "client"))
        self.service_principal_id = _guid(_digest(self.seed, "sp"))
        self.client_secret = "Sim8Q~" + base64.urlsafe_b64encode(_digest(self.seed, "secret")[:24]).decode().rstrip("=")
        self.managed_identity_client_id = _guid(_digest(self.seed, "mi-client"))
        self.managed_identity_principal_id = _guid(_digest(self.seed, "mi-principal"))
        self.initial_domain = self.domains[0]
        self.default_domain = self.domains[1] if len(self.domains) > 1 else self.domains[0]
        self.skus = _skus(spec.premium)
        self._sku_by_key = {s.key: s for s in self.skus}
        self._combos = [
            tuple(k for k in next(c for limit, c in _COMBOS if byte < limit) if k in self._sku_by_key)
            for byte in range(256)
        ]
        self._guest_combos = [
            tuple(k for k in next(c for limit, c in _GUEST_COMBOS if byte < limit) if k in self._sku_by_key)
            for byte in range(256)
        ]
        self.licence_changes = spec.licence_changes
        self.license_group_of = {
            key: g for g, key in enumerate(LICENSE_GROUP_SKUS) if key in self._sku_by_key
        }  # SKU key -> index of the licence group that assigns it
        self._lock = threading.Lock()
        self._upns: list[str] | None = None
        self._lower_upns: list[str] | None = None
        self._by_upn: dict[str, int] | None = None
        self._by_id: dict[str, int] | None = None
        self._consumed: dict[str, int] | None = None
        # Changes made while clients page (tests of races): index -> new UPN, deleted indexes.
        self._renamed: dict[int, str] = {}
        self._deleted: set[int] = set()
        self._sorted_names: dict[bool, tuple[list[str], list[int]]] = {}
        self.version = 0

    # ------------------------------------------------------------------ compact index

    def _combo(self, index: int, kind: int, d: bytes) -> tuple[str, ...]:
        """SKU keys the user holds (members: about 90%; some guests; no service accounts)."""
        if kind == KIND_GUEST:
            return self._guest_combos[d[13]]
        if kind != KIND_MEMBER:
            return ()
        byte = d[7]
        for r in range(1, self.licence_changes + 1):
            c = _digest(self.seed, f"licence-change:{r}:{index}")
            if c[0] < 8:
                byte = c[1]
        return self._combos[byte]

    def _core(self, index: int) -> _Core:
        d = _digest(self.seed, f"user:{index}")
        kind = KIND_GUEST if d[4] < 14 else KIND_SERVICE if d[4] < 18 else KIND_MEMBER
        return _Core(
            kind,
            _FIRST[int.from_bytes(d[0:2], "big") % len(_FIRST)],
            _LAST[int.from_bytes(d[2:4], "big") % len(_LAST)],
            d[5],
            d[6],
            self._combo(index, kind, d),
            d,
        )

    def grants(self, index: int, core: _Core | None = None) -> tuple[Grant, ...]:
        """How user ``index`` holds each SKU of its combination. A member gets a SKU that a licence group
        assigns through the group (about half), directly (about 40%) or both (about 5%); when the SKU has no
        spare seats, some group-only assignments fail with CountViolation. Guests hold theirs directly."""
        core = core or self._core(index)
        if not core.combo:
            return ()
        p = _digest(self.seed, f"grants:{index}")
        out = []
        for n, key in enumerate(core.combo):
            group = self.license_group_of.get(key)
            b = p[2 * n]
            if group is None or core.kind != KIND_MEMBER or b < 100:
                out.append(Grant(key, True, None, None))
            elif b < 243:
                error = "CountViolation" if key == SKU_WITHOUT_SPARE_SEATS and p[2 * n + 1] < 24 else None
                out.append(Grant(key, False, group, error))
            else:
                out.append(Grant(key, True, group, None))
        return tuple(out)

    def _base_upn(self, index: int, kind: int, f: str, lst: str, style: int, dom: int) -> tuple[str, str]:
        """(local part, domain) before de-duplication, from the user's digest-derived traits."""
        if kind == KIND_GUEST:
            return f"{f}.{lst}_{GUEST_DOMAINS[dom % len(GUEST_DOMAINS)]}#EXT#", self.initial_domain
        n_domains = len(self.domains)
        domain = self.domains[0] if dom < 40 or n_domains == 1 else self.domains[1 + dom % (n_domains - 1)]
        if kind == KIND_SERVICE:
            return f"{SERVICE_ACCOUNTS[style % len(SERVICE_ACCOUNTS)]}{index % 1000:03d}", domain
        if style < 100:
            local = f"{f}.{lst}"
        elif style < 150:
            local = f"{f[0]}{lst}"
        elif style < 190:
            local = f"{f}{lst[0]}"
        elif style < 205:
            local = f"{f}_{lst}"
        elif style < 215:
            local = f"{lst}.{f}"  # surname first: some start with symbols, like 'thooft.jan
        elif style < 240:
            local = f"{f}-{lst}"
        else:
            local = f"{style % 10}{f}.{lst}"  # UPNs starting with a digit exist in real tenants
        return local, domain

    def _build_index(self) -> None:
        """UPNs (unique, case-insensitively) and SKU consumption; about 1.5 s for 200,000 users, done once."""
        if self._upns is not None:
            return
        with self._lock:
            if self._upns is not None:
                return
            gc_was_enabled = gc.isenabled()
            gc.disable()  # hundreds of thousands of small objects: collections would double the time
            try:
                self._build_index_locked()
            finally:
                if gc_was_enabled:
                    gc.enable()

    def _build_index_locked(self) -> None:
        upns: list[str] = []
        lower: list[str] = []
        by_upn: dict[str, int] = {}
        next_suffix: dict[str, int] = {}  # base UPN -> the suffix to try next (keeps 1,000,000 users linear)
        consumed = dict.fromkeys(self._sku_by_key, 0)
        seed, base_upn, combo_of, grants = self.seed, self._base_upn, self._combo, self.grants
        n_first, n_last = len(_FIRST), len(_LAST)
        initials, n_initials = self.upn_initials, len(self.upn_initials)
        valid = _UPN_LOCAL.fullmatch
        for i in range(self.user_count):
            d = hashlib.blake2b(f"{seed}:user:{i}".encode(), digest_size=32).digest()
            kind = KIND_GUEST if d[4] < 14 else KIND_SERVICE if d[4] < 18 else KIND_MEMBER
            f = _FIRST[((d[0] << 8) | d[1]) % n_first][1]
            lst = _LAST[((d[2] << 8) | d[3]) % n_last][1]
            local, domain = base_upn(i, kind, f, lst, d[5], d[6])
            if n_initials:
                local = initials[i % n_initials] + local
            if not valid(local):
                raise ValueError(f"simulated user {i}: {local!r} has a character Entra does not allow in a UPN")
            upn = f"{local}@{domain}"
            key = upn.lower()
            if key in by_upn:
                base = key
                n = next_suffix.get(base, 2)
                while True:
                    if kind == KIND_GUEST:
                        head, tail = local.split("_", 1)
                        upn = f"{head}{n}_{tail}@{domain}"
                    else:
                        upn = f"{local}{n}@{domain}"
                    key = upn.lower()
                    n += 1
                    if key not in by_upn:
                        break
                next_suffix[base] = n
            by_upn[key] = i
            upns.append(upn)
            lower.append(key)
            combo = combo_of(i, kind, d)
            if combo:
                for grant in grants(i, _Core(kind, (f, f), (lst, lst), d[5], d[6], combo, d)):
                    if grant.assigned:
                        consumed[grant.sku] += 1
        self._lower_upns = lower
        self._by_upn = by_upn
        self._consumed = consumed
        self._upns = upns

    def user_id(self, index: int) -> str:
        """Object id of user ``index`` (cheap; no index needed)."""
        return _guid(_digest(self.seed, f"user:{index}")[16:])

    def upn(self, index: int) -> str:
        """userPrincipalName of user ``index``."""
        self._build_index()
        assert self._upns is not None
        return self._renamed.get(index) or self._upns[index]

    def exists(self, index: int) -> bool:
        return 0 <= index < self.user_count and index not in self._deleted

    def index_of(self, key: str) -> int | None:
        """Index of the user with this object id or UPN (case-insensitive), else None."""
        self._build_index()
        assert self._by_upn is not None
        if self._by_id is None:
            with self._lock:
                if self._by_id is None:
                    self._by_id = {self.user_id(i): i for i in range(self.user_count)}
        found = self._by_id.get(key.lower())
        if found is None:
            found = self._by_upn.get(key.lower())
        return found if found is not None and self.exists(found) else None

    # ------------------------------------------------------------------ changes while paging (tests)

    def rename(self, index: int, upn: str) -> None:
        """Change a user's UPN, as an admin would in the middle of a collection."""
        local = upn.split("@", 1)[0]
        if not _UPN_LOCAL.fullmatch(local):
            raise ValueError(f"{upn!r} has a character Entra does not allow in a UPN")
        self._build_index()
        assert self._by_upn is not None
        with self._lock:
            self._by_upn.pop(self.upn(index).lower(), None)
            self._by_upn[upn.lower()] = index
            self._renamed[index] = upn
            self.version += 1

    def delete(self, index: int) -> None:
        """Delete a user (it disappears from lists, counts and lookups)."""
        with self._lock:
            self._deleted.add(index)
            self.version += 1

    @property
    def live_count(self) -> int:
        return self.user_count - len(self._deleted)

    def all_indexes(self) -> range | tuple[int, ...]:
        """Every existing user's index, in paging order."""
        if not self._deleted:
            return range(self.user_count)
        return tuple(i for i in range(self.user_count) if i not in self._deleted)

    def prefix_matches(self, prefixes: tuple[str, ...], case_sensitive: bool = False) -> tuple[int, ...]:
        """Indexes (in paging order) of users whose UPN starts with any prefix (case-insensitively unless
        asked otherwise)."""
        return self._prefix_matches(prefixes, case_sensitive, self.version)

    @lru_cache(maxsize=256)  # noqa: B019 - the tenant lives as long as the simulator
    def _prefix_matches(self, prefixes: tuple[str, ...], case_sensitive: bool, version: int) -> tuple[int, ...]:
        self._build_index()
        assert self._lower_upns is not None and self._upns is not None
        keys, order = self._name_order(case_sensitive)
        wanted = prefixes if case_sensitive else tuple(p.lower() for p in prefixes)
        found_set: set[int] = set()
        for prefix in set(wanted):  # each prefix is a run of the names in sorted order
            lo = bisect.bisect_left(keys, prefix)
            found_set.update(order[lo:bisect.bisect_left(keys, prefix + "\U0010ffff", lo)])
        found = sorted(found_set)
        if self._renamed or self._deleted:
            keep = set(found)
            for i, upn in self._renamed.items():
                if (upn if case_sensitive else upn.lower()).startswith(wanted):
                    keep.add(i)
                else:
                    keep.discard(i)
            found = sorted(keep - self._deleted)
        return tuple(found)

    def _name_order(self, case_sensitive: bool) -> tuple[list[str], list[int]]:
        """The original UPNs sorted (lower-cased unless case-sensitive) with their indexes: a prefix's users
        are two bisections away, so hundreds of partition filters over 1,000,000 users stay cheap."""
        cached = self._sorted_names.get(case_sensitive)
        if cached is None:
            with self._lock:
                cached = self._sorted_names.get(case_sensitive)
                if cached is None:
                    names = self._upns if case_sensitive else self._lower_upns
                    assert names is not None
                    order = sorted(range(len(names)), key=names.__getitem__)
                    cached = self._sorted_names[case_sensitive] = ([names[i] for i in order], order)
        return cached

    @staticmethod
    def page_from(indexes: range | tuple[int, ...], after: int) -> int:
        """Position in ``indexes`` of the first user whose index is ``after`` or later (keyset paging)."""
        return bisect.bisect_left(indexes, after)

    # ------------------------------------------------------------------ users

    def users(self) -> Iterator[dict[str, Any]]:
        """Every user with every property the simulator serves, in the order Graph pages them."""
        for i in self.all_indexes():
            yield self.user(i)

    def user(self, index: int, properties: Collection[str] | None = None) -> dict[str, Any]:
        """The user object for ``index`` (Graph v1.0 names and shapes).

        ``properties`` limits the result to those (canonical) names and skips generating the
        rest, which keeps serving 200,000 users with a narrow ``$select`` cheap.
        """
        core = self._core(index)
        d = core.digest
        upn = self.upn(index)
        guest = core.kind == KIND_GUEST
        service = core.kind == KIND_SERVICE
        if properties is not None and _NARROW.issuperset(properties):
            # Only id, UPN and sign-in activity asked for (the sign-in listing): the rest of the
            # object is not built, which halves the cost of serving those pages.
            user: dict[str, Any] = {"id": _guid(d[16:]), "userPrincipalName": upn}
            if "signInActivity" in properties:
                user["signInActivity"] = self._sign_in(index, service)
            return {p: user[p] for p in properties if p in user}
        created = (
            self.now_epoch - (30 + int.from_bytes(d[8:10], "big") % 2970) * DAY - int.from_bytes(d[12:15], "big") % DAY
        )
        uid = _guid(d[16:])
        first, last = core.first, core.last
        local, domain = upn.split("@", 1)
        office = OFFICES[d[10] % len(OFFICES)]
        dept = _DEPARTMENT_NAMES[d[11] % len(_DEPARTMENT_NAMES)]
        licensed = bool(core.combo)
        has_mailbox = "E3" in core.combo or "E5" in core.combo
        synced = not guest and d[15] < 154

        if guest:
            ext_local, ext_domain = local.split("#EXT#")[0].rsplit("_", 1)
            mail: str | None = f"{ext_local}@{ext_domain}"
            display = f"{first[0]} {last[0]} (Guest)" if d[13] < 77 else f"{first[0]} {last[0]}"
            proxies = [f"SMTP:{mail}"]
        elif service:
            mail = f"{local}@{domain}" if d[13] < 100 else None
            display = local.replace("-", " ").replace("_", " ").replace(".", " ").title()
            proxies = [f"SMTP:{mail}"] if mail else []
        else:
            display = f"{first[0]} {last[0]}"
            mail = f"{local}@{domain}" if has_mailbox else None
            proxies = [f"SMTP:{mail}"] if mail else []
            if mail and domain != self.initial_domain:
                proxies.append(f"smtp:{local}@{self.initial_domain}")

        user = {
            "id": uid,
            "userPrincipalName": upn,
            "displayName": display,
            "givenName": None if service else first[0],
            "surname": None if service else last[0],
            "mail": mail,
            "mailNickname": local.split("#EXT#")[0] if guest else local,
            "proxyAddresses": proxies,
            "imAddresses": [upn] if has_mailbox else [],
            "accountEnabled": d[14] < (180 if service else 238),
            "userType": "Guest" if guest else "Member",
            "creationType": "Invitation" if guest else None,
            "createdDateTime": _iso(created),
            "deletedDateTime": None,
            "department": None if guest or service else dept,
            "companyName": None if guest else ("Fabrikam, Inc." if "fabrikam" in domain else "Contoso Ltd."),
            "officeLocation": None if guest else office[0],
            "streetAddress": None if guest else office[6],
            "city": None if guest else office[1],
            "state": None if guest else office[2],
            "postalCode": None if guest else office[5],
            "country": None if guest else office[3],
            "usageLocation": office[4] if licensed else None,
            "preferredLanguage": None if guest else office[8],
            "faxNumber": None,
            "employeeLeaveDateTime": None,
            "ageGroup": None,
            "consentProvidedForMinor": None,
            "legalAgeGroupClassification": None,
            "isResourceAccount": None,
            "showInAddressList": None,
            "passwordPolicies": "DisablePasswordExpiration" if service else None,
            "securityIdentifier": "S-1-12-1-"
            + "-".join(str(int.from_bytes(d[16 + i : 20 + i], "little")) for i in range(0, 16, 4)),
            "onPremisesSyncEnabled": True if synced else None,
        }
        groups = (
            {_GROUP_OF[p] for p in properties if p in _GROUP_OF} if properties is not None else set(_GROUP_OF.values())
        )
        if _CONTACT in groups:
            rnd = random.Random(int.from_bytes(_digest(self.seed, f"contact:{index}"), "big"))
            employee = not guest and not service and rnd.random() < 0.7
            phone = office[7]
            user.update(
                {
                    "otherMails": [f"{first[1]}.{last[1]}@gmail.com"] if not guest and rnd.random() < 0.05 else [],
                    "businessPhones": [f"{phone}{rnd.randrange(100, 9999):04d}"]
                    if phone and not guest and rnd.random() < 0.8
                    else [],
                    "mobilePhone": f"+1 555 01{rnd.randrange(100):02d} {rnd.randrange(10000):04d}"
                    if not guest and rnd.random() < 0.4
                    else None,
                    "jobTitle": None if guest or service else rnd.choice(DEPARTMENTS[dept]),
                    "employeeId": f"{rnd.randrange(10**5, 10**6)}" if employee else None,
                    "employeeType": rnd.choice(("Employee", "Employee", "Employee", "Contractor", "Intern"))
                    if employee
                    else None,
                    "employeeHireDate": _iso(created - rnd.randrange(0, 20) * DAY) if employee else None,
                    "employeeOrgData": {"division": dept, "costCenter": f"CC-{rnd.randrange(1000, 9999)}"}
                    if employee
                    else None,
                    "externalUserState": rnd.choice(("Accepted", "Accepted", "Accepted", "PendingAcceptance"))
                    if guest
                    else None,
                    "externalUserStateChangeDateTime": _iso(created + DAY) if guest else None,
                    "lastPasswordChangeDateTime": _iso(
                        min(created + rnd.randrange(0, 400) * DAY, self.now_epoch - DAY)
                    ),
                }
            )
        if _LICENSES in groups:
            user.update(self._licenses(index, core, created))
        if _SIGN_IN in groups:
            user["signInActivity"] = self._sign_in(index, service)
        if _ON_PREM in groups:
            rnd = random.Random(int.from_bytes(_digest(self.seed, f"onprem:{index}"), "big"))
            onprem_domain = "corp." + self.default_domain
            user.update(
                {
                    "onPremisesLastSyncDateTime": _iso(self.now_epoch - rnd.randrange(5, 180) * 60) if synced else None,
                    "onPremisesImmutableId": base64.b64encode(rnd.randbytes(16)).decode() if synced else None,
                    "onPremisesSamAccountName": (first[1][:1] + last[1])[:20] if synced else None,
                    "onPremisesDomainName": onprem_domain if synced else None,
                    "onPremisesUserPrincipalName": f"{local}@{onprem_domain}" if synced else None,
                    "onPremisesDistinguishedName": (
                        f"CN={display},OU=Users,OU={dept.split()[0]},DC=corp,DC={self.default_domain.split('.')[0]},DC=com"
                        if synced
                        else None
                    ),
                    "onPremisesSecurityIdentifier": (
                        f"S-1-5-21-{rnd.randrange(10**8, 4 * 10**9)}-{rnd.randrange(10**8, 4 * 10**9)}-"
                        f"{rnd.randrange(10**8, 4 * 10**9)}-{1000 + index}"
                        if synced
                        else None
                    ),
                    "onPremisesExtensionAttributes": {
                        f"extensionAttribute{n}": (f"EA{n}-{rnd.randrange(100)}" if synced and n in (1, 7) else None)
                        for n in range(1, 16)
                    },
                }
            )
        if properties is not None:
            return {p: user[p] for p in properties if p in user}
        return user

    def _licenses(self, index: int, core: _Core, created: int) -> dict[str, Any]:
        rnd = random.Random(int.from_bytes(_digest(self.seed, f"licenses:{index}"), "big"))
        plan_date = _iso(created + rnd.randrange(0, 30) * DAY)
        assigned_licenses: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        assigned_plans: list[dict[str, Any]] = []
        seen_plans: set[str] = set()
        for grant in self.grants(index, core):
            sku = self._sku_by_key[grant.sku]
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

    def _sign_in(self, index: int, service: bool) -> dict[str, Any] | None:
        """signInActivity, or None for users who never signed in (about 12%)."""
        rnd = random.Random(int.from_bytes(_digest(self.seed, f"signin:{index}"), "big"))
        if rnd.random() < 0.12 or (service and rnd.random() < 0.5):
            return None
        now = self.now_epoch
        days = int(rnd.expovariate(1 / 25)) if rnd.random() < 0.85 else rnd.randrange(90, 900)
        last_i = now - days * DAY - rnd.randrange(DAY)
        last_ni = last_i + rnd.randrange(-72, 72) * 3600 if rnd.random() < 0.9 else None
        if last_ni is not None and last_ni > now:
            last_ni = now - rnd.randrange(1, 600) * 60
        id_i, id_ni = _guid(rnd.randbytes(16)), _guid(rnd.randbytes(16))
        # the last interactive attempt failed for ~5% of users, so "successful" falls back to non-interactive
        ok = [
            (t, rid) for t, rid in ((last_i if rnd.random() < 0.95 else None, id_i), (last_ni, id_ni)) if t is not None
        ]
        last_ok, id_ok = max(ok) if ok else (None, None)
        if last_ok is not None and last_ok < _SUCCESSFUL_SIGN_IN_START:
            last_ok = id_ok = None  # lastSuccessfulSignInDateTime was not backfilled before 1 Dec 2023
        activity = {
            "lastSignInDateTime": _iso(last_i),
            "lastSignInRequestId": id_i,
            "lastNonInteractiveSignInDateTime": _iso(last_ni),
            "lastNonInteractiveSignInRequestId": id_ni if last_ni is not None else None,
            "lastSuccessfulSignInDateTime": _iso(last_ok),
            "lastSuccessfulSignInRequestId": id_ok,
        }
        # Graph's own samples (user-list.md, "Get users including their last sign-in time") write an unset
        # lastSuccessfulSignInDateTime as "" with request id "", and a missing non-interactive sign-in as
        # 0001-01-01T00:00:00Z with request id "", though the CSDL types are nullable: about half of the
        # users without one get that form (graph-facts §1 and §11).
        if rnd.random() < 0.5:
            if last_ok is None:
                activity["lastSuccessfulSignInDateTime"] = activity["lastSuccessfulSignInRequestId"] = ""
            if last_ni is None:
                activity["lastNonInteractiveSignInDateTime"] = "0001-01-01T00:00:00Z"
                activity["lastNonInteractiveSignInRequestId"] = ""
        return activity

    # ------------------------------------------------------------------ organization & SKUs

    def consumed_units(self) -> dict[str, int]:
        """Users holding each SKU (by simulator key)."""
        self._build_index()
        assert self._consumed is not None
        return dict(self._consumed)

    def subscribed_skus(self) -> list[dict[str, Any]]:
        """The /subscribedSkus collection, consistent with the users' assignedLicenses."""
        consumed = self.consumed_units()
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
                    "accountName": self.display_name.upper().replace(" ", ""),
                    "accountId": self.tenant_id,
                    "appliesTo": sku.applies_to,
                    "capabilityStatus": sku.status,
                    "consumedUnits": used,
                    "id": f"{self.tenant_id}_{sku.sku_id}",
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
                    "subscriptionIds": [_guid(_digest(self.seed, f"subscription:{sku.key}"))],
                }
            )
        return out

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
                        "assignedDateTime": _iso(created + 30 * DAY),
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
            "createdDateTime": _iso(created),
            "defaultUsageLocation": None,
            "displayName": self.display_name,
            "isMultipleDataLocationsForServicesEnabled": None,
            "marketingNotificationEmails": [],
            "onPremisesLastSyncDateTime": _iso(self.now_epoch - 17 * 60),
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
