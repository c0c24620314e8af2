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
INTUNE = "Microsoft Intune"
# Graph error codes meaning "the tenant lacks the licence", as opposed to a missing permission.
LICENCE_ERROR_CODES = frozenset({"Authentication_RequestFromNonPremiumTenantOrB2CTenant"})


@dataclass(frozen=True)
class Field:
    """One property of a dataset's records: the source of the published JSON Schema and of the one
    normalisation the format makes (Graph's `""` for an unset date-time becomes null).

    `type` is one of string, boolean, integer, number, datetime (ISO 8601 date-time), date
    (YYYY-MM-DD), uuid, object (properties in `fields`) or array (elements in `items`: a type name,
    or a tuple of Fields for objects).
    """

    name: str
    type: str
    description: str = ""
    fields: tuple[Field, ...] = ()
    items: str | tuple[Field, ...] | None = None


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
    strategy: str = "pages"  # how records are fetched: a strategy registered in connector.strategy
    record: str = ""  # what one output record is, for the documentation
    report: str | None = None  # usage-report function (strategy "report"), e.g. getMailboxUsageDetail
    report_period: bool = True  # the report function takes (period='D30'); getOffice365ActivationsUserDetail not
    fields: tuple[Field, ...] = ()  # the record's properties (names, types, descriptions)
    clouds: frozenset[str] = ALL_CLOUDS  # M365_CLOUD values where Graph offers the API; elsewhere skipped

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


def _report(name: str, function: str, builder: str, description: str, *, upn_field: str = "userPrincipalName",
            period: bool = True, note: str = "") -> Dataset:
    """A Microsoft 365 usage report (CSV through a pre-authenticated download), declared in one call."""
    return Dataset(name=name, description=description, path=f"/reports/{function}", builder=builder,
                   requires=(REPORTS_READ,), upn_field=upn_field, strategy="report", report=function,
                   report_period=period, clouds=GLOBAL_ONLY,
                   record=f"one CSV row of {function}{' ' + note if note else ''}, typed, fields named as in "
                          "Graph's JSON reports")


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
    Dataset(
        name="subscriptions",
        description="Commercial subscriptions behind the SKUs: status, trial flag, total licences, next lifecycle "
                    "(renewal or expiry) date.",
        path="/directory/subscriptions",
        builder="directory.subscriptions",
        requires=(SUBSCRIPTION_READ,),
        record="one companySubscription (Graph resource, every property)",
    ),
    _report("report_office365_active_user_detail", "getOffice365ActiveUserDetail",
            "reports.get_office365_active_user_detail_with_period",
            "Per user: licences held per workload (Exchange, OneDrive, SharePoint, Skype, Yammer, Teams), last "
            "activity and licence assignment date per workload, assigned products."),
    _report("report_m365_app_user_detail", "getM365AppUserDetail",
            "reports.get_m365_app_user_detail_with_period",
            "Per user: which Microsoft 365 apps (Outlook, Word, Excel, PowerPoint, OneNote, Teams) were used on "
            "which platform."),
    _report("report_office365_activations_user_detail", "getOffice365ActivationsUserDetail",
            "reports.get_office365_activations_user_detail",
            "Per user and product: Office activations on Windows, Mac, mobile and shared computers.",
            period=False, note="(no period: the current state)"),
    _report("report_email_activity_user_detail", "getEmailActivityUserDetail",
            "reports.get_email_activity_user_detail_with_period",
            "Per user: e-mails sent, received and read, meetings created and interacted with."),
    _report("report_mailbox_usage_detail", "getMailboxUsageDetail",
            "reports.get_mailbox_usage_detail_with_period",
            "Per mailbox: items, storage used, quotas, archive."),
    _report("report_onedrive_usage_account_detail", "getOneDriveUsageAccountDetail",
            "reports.get_one_drive_usage_account_detail_with_period",
            "Per OneDrive: owner, files, active files, storage used and allocated.",
            upn_field="ownerPrincipalName"),
    _report("report_sharepoint_activity_user_detail", "getSharePointActivityUserDetail",
            "reports.get_share_point_activity_user_detail_with_period",
            "Per user: SharePoint files viewed or edited, synced, shared internally and externally, pages "
            "visited."),
    _report("report_teams_user_activity_user_detail", "getTeamsUserActivityUserDetail",
            "reports.get_teams_user_activity_user_detail_with_period",
            "Per user: Teams chat messages, calls, meetings organised and attended, audio/video/screen-share "
            "time."),
    Dataset(
        name="mfa_registration",
        description="Per user: MFA, SSPR and passwordless registration and capability, methods registered, "
                    "admin flag.",
        path="/reports/authenticationMethods/userRegistrationDetails",
        builder="reports.authentication_methods.user_registration_details",
        requires=(AUDIT_READ,),
        licence=ENTRA_PREMIUM,
        upn_field="userPrincipalName",
        record="one userRegistrationDetails (Graph resource; `id` is the user id)",
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
        record="one group (Graph `group` resource, selected properties)",
    ),
    Dataset(
        name="group_members",
        description="Group memberships, direct and through nested groups, listed with JSON batching.",
        path="/groups/{id}/members",
        builder="groups",
        requires=(GROUP_READ,),
        strategy="group_members",
        record="{groupId, memberId, memberType, membership: direct|transitive}",
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
    ),
    Dataset(
        name="devices",
        description="Entra ID device objects: join type, OS, compliance and management flags, last sign-in.",
        path="/devices",
        builder="devices",
        requires=(DEVICE_READ,),
        select=("id", "deviceId", "displayName", "accountEnabled", "operatingSystem", "operatingSystemVersion",
                "approximateLastSignInDateTime", "registrationDateTime", "createdDateTime", "trustType",
                "profileType", "deviceOwnership", "enrollmentType", "isCompliant", "isManaged", "managementType",
                "manufacturer", "model", "onPremisesSyncEnabled", "onPremisesLastSyncDateTime", "mdmAppId"),
        top=999,
        record="one device (Graph `device` resource, selected properties)",
    ),
    Dataset(
        name="managed_devices",
        description="Intune managed devices: owner, compliance, OS version, encryption, storage, last sync.",
        path="/deviceManagement/managedDevices",
        builder="device_management.managed_devices",
        requires=(INTUNE_READ,),
        licence=INTUNE,
        record="one managedDevice (Graph resource, every property, with `@odata.type`)",
    ),
    Dataset(
        name="detected_apps",
        description="Software inventory from Intune: application, version, publisher, platform, device count.",
        path="/deviceManagement/detectedApps",
        builder="device_management.detected_apps",
        requires=(INTUNE_READ,),
        licence=INTUNE,
        record="one detectedApp (Graph resource, with `@odata.type`)",
    ),
)

DATASETS: dict[str, Dataset] = {d.name: d for d in _DECLARATIONS}
