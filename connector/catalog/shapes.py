"""What one record of each dataset holds: names and types of the Graph properties and report columns.

Types come from Graph's v1.0 metadata (the CSDL in microsoftgraph/msgraph-metadata,
clean_v10_metadata/cleanMetadata.xml): Edm.String and enumerations are `string`, Edm.Int32/Int64
`integer`, Edm.DateTimeOffset `datetime`, Edm.Guid `uuid`, complex types `object`, collections
`array`. Usage-report columns are typed as connector/collect/reports.py writes them (tests/test_schema.py
checks both against real records). The declarations feed the published JSON Schema
(docs/schema/) and the one normalisation the format makes (connector/catalog/schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass


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


def F(name: str, type: str, description: str = "") -> Field:  # noqa: N802 - reads like a table
    return Field(name, type, description)


def _o(name: str, description: str, fields: tuple[Field, ...]) -> Field:
    return Field(name, "object", description, fields=fields)


def _a(name: str, description: str, items: str | tuple[Field, ...]) -> Field:
    return Field(name, "array", description, items=items)


ID = F("id", "string", "Graph's object id (a GUID for directory objects).")

# -- complex types ---------------------------------------------------------------------------------------------

ASSIGNED_LICENSE = (
    _a("disabledPlans", "Service plans (servicePlanId) switched off in this licence.", "uuid"),
    F("skuId", "uuid", "The licence SKU; join to subscribed_skus.skuId."),
)
ASSIGNED_PLAN = (
    F("assignedDateTime", "datetime", "When the plan was assigned."),
    F("capabilityStatus", "string", "Enabled, Warning, Suspended, Deleted or LockedOut."),
    F("service", "string", "The service, such as exchange or SharePoint."),
    F("servicePlanId", "uuid", "The service plan."),
)
SERVICE_PLAN_INFO = (
    F("appliesTo", "string", "User or Company."),
    F("provisioningStatus", "string", "Success, Disabled, Error, PendingInput, PendingActivation, "
                                      "PendingProvisioning."),
    F("servicePlanId", "uuid", "The service plan."),
    F("servicePlanName", "string", "The service plan's name, such as EXCHANGE_S_ENTERPRISE."),
)

# -- directory ---------------------------------------------------------------------------------------------------

ORGANIZATION = (
    F("id", "string", "The tenant id."),
    F("displayName", "string", "The organisation's name."),
    _a("verifiedDomains", "Domains the tenant has verified.", (
        F("capabilities", "string", "Such as Email, OfficeCommunicationsOnline."),
        F("isDefault", "boolean", "The default domain for new users."),
        F("isInitial", "boolean", "The initial *.onmicrosoft.com domain."),
        F("name", "string", "The domain name."),
        F("type", "string", "Managed or Federated."),
    )),
    F("countryLetterCode", "string", "Country of the organisation, ISO 3166-1 alpha-2."),
    F("country", "string", "Country name."),
    F("city", "string", "City."),
    F("tenantType", "string", "AAD (workforce) or CIAM (external)."),
    F("createdDateTime", "datetime", "When the tenant was created."),
    F("preferredLanguage", "string", "Preferred language, such as en."),
)

SUBSCRIBED_SKU = (
    F("id", "string", "<tenantId>_<skuId>."),
    F("skuId", "uuid", "The SKU; users' assignedLicenses.skuId refer to it."),
    F("skuPartNumber", "string", "The SKU's part number, such as ENTERPRISEPACK or SPE_E3."),
    F("appliesTo", "string", "User or Company."),
    F("capabilityStatus", "string", "Enabled, Warning, Suspended, Deleted or LockedOut."),
    F("consumedUnits", "integer", "Licences assigned (seats in use), organisation-wide."),
    _o("prepaidUnits", "Seats bought, by state of the subscription.", (
        F("enabled", "integer", "Seats in active subscriptions."),
        F("lockedOut", "integer", "Seats in locked-out subscriptions."),
        F("suspended", "integer", "Seats in suspended subscriptions."),
        F("warning", "integer", "Seats in subscriptions in their grace period."),
    )),
    _a("servicePlans", "Service plans the SKU includes.", SERVICE_PLAN_INFO),
    _a("subscriptionIds", "Commercial subscriptions behind the SKU (subscriptions.commerceSubscriptionId).",
       "string"),
    F("accountId", "string", "The account (tenant) id."),
    F("accountName", "string", "The account name."),
)

USER = (
    ID,
    F("userPrincipalName", "string", "Sign-in name, user@domain."),
    F("displayName", "string", "Name shown in the address book."),
    F("mail", "string", "Primary SMTP address; null without a mailbox."),
    F("accountEnabled", "boolean", "false: the account cannot sign in."),
    F("userType", "string", "Member or Guest."),
    F("createdDateTime", "datetime", "When the user was created."),
    F("department", "string", "Department."),
    F("jobTitle", "string", "Job title."),
    F("companyName", "string", "Company name."),
    F("officeLocation", "string", "Office."),
    F("city", "string", "City."),
    F("country", "string", "Country or region."),
    F("usageLocation", "string", "Two-letter country code; required before a licence can be assigned."),
    F("employeeId", "string", "Employee number from HR."),
    F("employeeType", "string", "Employee, Contractor, Consultant, Vendor, ..."),
    F("onPremisesSyncEnabled", "boolean", "true: synchronised from on-premises AD; null: never synchronised."),
    _a("assignedLicenses", "Licences the user holds, directly or through groups (one per SKU).", ASSIGNED_LICENSE),
    _a("licenseAssignmentStates", "How each licence is assigned: one entry per SKU and per path (direct or "
                                  "each group), so a SKU can appear more than once.", (
        F("assignedByGroup", "string", "null for a direct assignment, else the id of the group that assigns it."),
        _a("disabledPlans", "Service plans switched off in this assignment.", "uuid"),
        F("error", "string", "None, CountViolation, MutuallyExclusiveViolation, DependencyViolation, "
                             "ProhibitedInUsageLocationViolation, UniquenessViolation or Other."),
        F("lastUpdatedDateTime", "datetime", "When the assignment last changed."),
        F("skuId", "uuid", "The licence SKU."),
        F("state", "string", "Active, ActiveWithError, Disabled or Error."),
    )),
    _a("assignedPlans", "Service plans the user's licences give.", ASSIGNED_PLAN),
)

SIGN_IN_ACTIVITY = (
    ID,
    F("userPrincipalName", "string", "Sign-in name; join to users on id."),
    _o("signInActivity", "null or absent when the user never signed in (or not since April 2020).", (
        F("lastNonInteractiveSignInDateTime", "datetime", "Last non-interactive sign-in attempt (a client signing "
                                                          "in on the user's behalf)."),
        F("lastNonInteractiveSignInRequestId", "uuid", "Request id of that sign-in (a GUID)."),
        F("lastSignInDateTime", "datetime", "Last interactive sign-in attempt, successful or not."),
        F("lastSignInRequestId", "uuid", "Request id of that sign-in (a GUID)."),
        F("lastSuccessfulSignInDateTime", "datetime", "Last successful sign-in, interactive or not; recorded since "
                                                      "December 2023."),
        F("lastSuccessfulSignInRequestId", "uuid", "Request id of that sign-in (a GUID)."),
    )),
)

COMPANY_SUBSCRIPTION = (
    ID,
    F("commerceSubscriptionId", "string", "The commercial subscription id (subscribed_skus.subscriptionIds)."),
    F("createdDateTime", "datetime", "When the subscription was created."),
    F("isTrial", "boolean", "true for a trial."),
    F("nextLifecycleDateTime", "datetime", "Renewal, or the next change of state (such as expiry)."),
    F("ownerId", "string", "Owner object id."),
    F("ownerTenantId", "string", "Owner tenant id."),
    F("ownerType", "string", "Owner type, such as User."),
    _a("serviceStatus", "Service plans of the subscription.", SERVICE_PLAN_INFO),
    F("skuId", "string", "The SKU; join to subscribed_skus.skuId."),
    F("skuPartNumber", "string", "The SKU's part number."),
    F("status", "string", "Enabled, Expired, Suspended, Warning, LockedOut."),
    F("totalLicenses", "integer", "Licences in the subscription."),
)

USER_REGISTRATION_DETAILS = (
    F("id", "string", "The user id; join to users on id."),
    F("isAdmin", "boolean", "The user holds an admin role."),
    F("isMfaCapable", "boolean", "Registered a strong method allowed by policy."),
    F("isMfaRegistered", "boolean", "Registered a strong authentication method."),
    F("isPasswordlessCapable", "boolean", "Registered a passwordless method allowed by policy."),
    F("isSsprCapable", "boolean", "Registered and allowed to reset the password themselves."),
    F("isSsprEnabled", "boolean", "Allowed to reset the password themselves."),
    F("isSsprRegistered", "boolean", "Registered for self-service password reset."),
    F("isSystemPreferredAuthenticationMethodEnabled", "boolean", "System-preferred MFA is on for the user."),
    F("lastUpdatedDateTime", "datetime", "When the report row was last updated."),
    _a("methodsRegistered", "Methods registered, such as microsoftAuthenticatorPush.", "string"),
    _a("systemPreferredAuthenticationMethods", "The system-preferred methods.", "string"),
    F("userDisplayName", "string", "Display name."),
    F("userPreferredMethodForSecondaryAuthentication", "string", "The user's preferred second factor (can be "
                                                                 "an empty string)."),
    F("userPrincipalName", "string", "Sign-in name."),
    F("userType", "string", "member or guest."),
)

GROUP = (
    ID,
    F("displayName", "string", "Name."),
    F("description", "string", "Description."),
    _a("groupTypes", "Unified = Microsoft 365 group; DynamicMembership = membership by rule; empty = "
                     "security or distribution group.", "string"),
    F("mailEnabled", "boolean", "Mail-enabled."),
    F("securityEnabled", "boolean", "Security group (can be given access and licences)."),
    F("mail", "string", "SMTP address."),
    F("mailNickname", "string", "Mail alias."),
    F("membershipRule", "string", "The dynamic membership rule, if any."),
    F("membershipRuleProcessingState", "string", "On or Paused."),
    F("onPremisesSyncEnabled", "boolean", "Synchronised from on-premises AD."),
    F("isAssignableToRole", "boolean", "Can be assigned a directory role."),
    _a("assignedLicenses", "Licences assigned through the group (group-based licensing); members hold them "
                           "with licenseAssignmentStates.assignedByGroup = this id.", ASSIGNED_LICENSE),
    F("createdDateTime", "datetime", "When the group was created."),
    F("visibility", "string", "Public, Private or HiddenMembership (Microsoft 365 groups)."),
    _a("resourceProvisioningOptions", "Team when the group has a Microsoft Teams team.", "string"),
)

GROUP_MEMBER = (
    F("groupId", "string", "The group; join to groups on id."),
    F("memberId", "string", "The member's object id."),
    F("memberType", "string", "user, group, device, orgContact or servicePrincipal."),
    F("membership", "string", "direct, or transitive for a member reached only through nested groups."),
)

ROLE_ASSIGNMENT = (
    ID,
    F("appScopeId", "string", "App-specific scope, if any."),
    F("condition", "string", "Condition of the assignment, if any."),
    F("directoryScopeId", "string", "/ for the whole directory, or /administrativeUnits/<id>, /<object id>."),
    F("principalId", "string", "Who holds the role."),
    F("principalOrganizationId", "string", "Tenant of the principal."),
    F("resourceScope", "string", "Legacy scope (/ for the directory); in Graph's responses, not in its v1.0 "
                                 "metadata."),
    F("roleDefinitionId", "string", "The role (its template id for built-in roles)."),
    _o("principal", "The principal, expanded: its `@odata.type` says which kind, and it carries that kind's "
                    "properties (users: userPrincipalName; service principals: appId).", (
        F("@odata.type", "string", "#microsoft.graph.user, #microsoft.graph.group or "
                                   "#microsoft.graph.servicePrincipal."),
        ID,
        F("displayName", "string", "Name."),
        F("accountEnabled", "boolean", "Users and service principals: account enabled."),
        F("userPrincipalName", "string", "Users: sign-in name."),
        F("userType", "string", "Users: Member or Guest."),
        F("securityEnabled", "boolean", "Groups: security group."),
        F("isAssignableToRole", "boolean", "Groups: role-assignable."),
        F("appId", "string", "Service principals: the application id."),
        F("servicePrincipalType", "string", "Service principals: Application, ManagedIdentity, Legacy, ..."),
    )),
    _o("roleDefinition", "The role's name, joined from roleDefinitions; null when the role is unknown.", (
        ID,
        F("displayName", "string", "The role's name, such as Global Administrator."),
        F("templateId", "string", "Template id (the same in every tenant for built-in roles)."),
        F("isBuiltIn", "boolean", "Built-in or custom role."),
    )),
)

DEVICE = (
    ID,
    F("deviceId", "string", "Device id set at registration; managed_devices.azureADDeviceId refers to it."),
    F("displayName", "string", "Name."),
    F("accountEnabled", "boolean", "false: the device cannot authenticate."),
    F("operatingSystem", "string", "Operating system."),
    F("operatingSystemVersion", "string", "Operating system version."),
    F("approximateLastSignInDateTime", "datetime", "Last sign-in, approximately."),
    F("registrationDateTime", "datetime", "When the device was registered."),
    F("trustType", "string", "AzureAd (joined), ServerAd (hybrid joined) or Workplace (registered)."),
    F("profileType", "string", "RegisteredDevice, SecureVM, Printer, Shared, IoT."),
    F("deviceOwnership", "string", "Company or Personal."),
    F("enrollmentType", "string", "How it was enrolled."),
    F("isCompliant", "boolean", "Compliant with the device management policies."),
    F("isManaged", "boolean", "Managed by an MDM such as Intune."),
    F("managementType", "string", "Management channel, such as MDM."),
    F("manufacturer", "string", "Manufacturer."),
    F("model", "string", "Model."),
    F("onPremisesSyncEnabled", "boolean", "Synchronised from on-premises AD."),
    F("onPremisesLastSyncDateTime", "datetime", "Last synchronisation from on-premises."),
    F("mdmAppId", "string", "Application id of the MDM."),
)

MANAGED_DEVICE = (
    F("@odata.type", "string", "#microsoft.graph.managedDevice."),
    ID,
    F("activationLockBypassCode", "string", "Activation lock bypass code (read with $select only; null here)."),
    F("androidSecurityPatchLevel", "string", "Android security patch level."),
    F("azureADDeviceId", "string", "Entra device id; join to devices.deviceId."),
    F("azureADRegistered", "boolean", "Registered in Entra ID."),
    F("complianceGracePeriodExpirationDateTime", "datetime", "End of the compliance grace period."),
    F("complianceState", "string", "unknown, compliant, noncompliant, conflict, error, inGracePeriod, "
                                   "configManager."),
    _o("configurationManagerClientEnabledFeatures", "Configuration Manager co-management workloads.", (
        F("compliancePolicy", "boolean", "Compliance policy."),
        F("deviceConfiguration", "boolean", "Device configuration."),
        F("inventory", "boolean", "Inventory."),
        F("modernApps", "boolean", "Modern apps."),
        F("resourceAccess", "boolean", "Resource access."),
        F("windowsUpdateForBusiness", "boolean", "Windows Update for Business."),
    )),
    _a("deviceActionResults", "Remote actions and their state.", (
        F("actionName", "string", "Action."),
        F("actionState", "string", "State of the action."),
        F("lastUpdatedDateTime", "datetime", "Last update."),
        F("startDateTime", "datetime", "Start."),
    )),
    F("deviceCategoryDisplayName", "string", "Device category."),
    F("deviceEnrollmentType", "string", "Enrollment type."),
    _o("deviceHealthAttestationState", "Windows health attestation.", (
        F("attestationIdentityKey", "string"),
        F("bitLockerStatus", "string"),
        F("bootAppSecurityVersion", "string"),
        F("bootDebugging", "string"),
        F("bootManagerSecurityVersion", "string"),
        F("bootManagerVersion", "string"),
        F("bootRevisionListInfo", "string"),
        F("codeIntegrity", "string"),
        F("codeIntegrityCheckVersion", "string"),
        F("codeIntegrityPolicy", "string"),
        F("contentNamespaceUrl", "string"),
        F("contentVersion", "string"),
        F("dataExcutionPolicy", "string"),
        F("deviceHealthAttestationStatus", "string"),
        F("earlyLaunchAntiMalwareDriverProtection", "string"),
        F("healthAttestationSupportedStatus", "string"),
        F("healthStatusMismatchInfo", "string"),
        F("issuedDateTime", "datetime"),
        F("lastUpdateDateTime", "string", "A string in Graph's metadata, not a date-time."),
        F("operatingSystemKernelDebugging", "string"),
        F("operatingSystemRevListInfo", "string"),
        F("pcr0", "string"),
        F("pcrHashAlgorithm", "string"),
        F("resetCount", "integer"),
        F("restartCount", "integer"),
        F("safeMode", "string"),
        F("secureBoot", "string"),
        F("secureBootConfigurationPolicyFingerPrint", "string"),
        F("testSigning", "string"),
        F("tpmVersion", "string"),
        F("virtualSecureMode", "string"),
        F("windowsPE", "string"),
    )),
    F("deviceName", "string", "Device name."),
    F("deviceRegistrationState", "string", "Registration state."),
    F("easActivated", "boolean", "Exchange ActiveSync activated."),
    F("easActivationDateTime", "datetime", "Exchange ActiveSync activation (0001-01-01T00:00:00Z when never)."),
    F("easDeviceId", "string", "Exchange ActiveSync id."),
    F("emailAddress", "string", "The user's e-mail address."),
    F("enrolledDateTime", "datetime", "Enrollment time."),
    F("enrollmentProfileName", "string", "Enrollment profile."),
    F("ethernetMacAddress", "string", "Ethernet MAC address."),
    F("exchangeAccessState", "string", "Exchange access state."),
    F("exchangeAccessStateReason", "string", "Reason for the Exchange access state."),
    F("exchangeLastSuccessfulSyncDateTime", "datetime", "Last successful Exchange sync (0001-01-01T00:00:00Z when "
                                                        "never)."),
    F("freeStorageSpaceInBytes", "integer", "Free storage in bytes."),
    F("iccid", "string", "SIM card id."),
    F("imei", "string", "IMEI."),
    F("isEncrypted", "boolean", "Storage encrypted."),
    F("isSupervised", "boolean", "Supervised (iOS)."),
    F("jailBroken", "string", "True, False or Unknown (a string in Graph)."),
    F("lastSyncDateTime", "datetime", "Last successful check-in with Intune."),
    F("managedDeviceName", "string", "Generated name."),
    F("managedDeviceOwnerType", "string", "company or personal."),
    F("managementAgent", "string", "Management channel, such as mdm."),
    F("managementCertificateExpirationDate", "datetime", "Expiry of the management certificate."),
    F("managementState", "string", "Management state."),
    F("manufacturer", "string", "Manufacturer."),
    F("meid", "string", "MEID."),
    F("model", "string", "Model."),
    F("notes", "string", "Notes."),
    F("operatingSystem", "string", "Operating system."),
    F("osVersion", "string", "Operating system version."),
    F("partnerReportedThreatState", "string", "Threat state reported by a partner (Mobile Threat Defense)."),
    F("phoneNumber", "string", "Phone number."),
    F("physicalMemoryInBytes", "integer", "Memory in bytes (0 unless read with $select)."),
    F("remoteAssistanceSessionErrorDetails", "string", "Remote assistance error."),
    F("remoteAssistanceSessionUrl", "string", "Remote assistance session URL."),
    F("requireUserEnrollmentApproval", "boolean", "Enrollment needs approval (iOS)."),
    F("serialNumber", "string", "Serial number."),
    F("subscriberCarrier", "string", "Mobile carrier."),
    F("totalStorageSpaceInBytes", "integer", "Storage in bytes."),
    F("udid", "string", "UDID (Apple)."),
    F("userDisplayName", "string", "The primary user's name."),
    F("userId", "string", "The primary user; join to users on id."),
    F("userPrincipalName", "string", "The primary user's sign-in name."),
    F("wiFiMacAddress", "string", "Wi-Fi MAC address."),
)

DETECTED_APP = (
    F("@odata.type", "string", "#microsoft.graph.detectedApp."),
    F("id", "string", "Opaque id of the application version."),
    F("deviceCount", "integer", "Devices where it was detected."),
    F("displayName", "string", "Application name."),
    F("platform", "string", "windows, macOS, ios, androidWorkProfile, ... (detectedAppPlatformType)."),
    F("publisher", "string", "Publisher (can be empty)."),
    F("sizeInByte", "integer", "Size in bytes."),
    F("version", "string", "Version."),
)


# -- usage reports: CSV columns in Microsoft's documented order, typed as collect/reports.py writes them

def _csv(header: str, name: str, type: str) -> Field:
    """One report column: the field name Graph's JSON reports use, the CSV header in the description."""
    if type == "products":
        return _a(name, f'CSV column "{header}": the products, as a list.', "string")
    return F(name, type, f'CSV column "{header}".')


_REFRESH = _csv("Report Refresh Date", "reportRefreshDate", "date")
_UPN = _csv("User Principal Name", "userPrincipalName", "string")
_NAME = _csv("Display Name", "displayName", "string")
_DELETED = (_csv("Is Deleted", "isDeleted", "boolean"), _csv("Deleted Date", "deletedDate", "date"))
_PERIOD = _csv("Report Period", "reportPeriod", "integer")
_PRODUCTS = _csv("Assigned Products", "assignedProducts", "products")
_WORKLOADS = (("Exchange", "exchange"), ("OneDrive", "oneDrive"), ("SharePoint", "sharePoint"),
              ("Skype For Business", "skypeForBusiness"), ("Yammer", "yammer"), ("Teams", "teams"))
_APPS = (("Outlook", "outlook"), ("Word", "word"), ("Excel", "excel"), ("PowerPoint", "powerPoint"),
         ("OneNote", "oneNote"), ("Teams", "teams"))
_PLATFORMS = ("Windows", "Mac", "Mobile", "Web")

REPORT_OFFICE365_ACTIVE_USER = (
    _REFRESH, _UPN, _NAME, *_DELETED,
    *(_csv(f"Has {w} License", f"has{n[0].upper()}{n[1:]}License", "boolean") for w, n in _WORKLOADS),
    *(_csv(f"{w} Last Activity Date", f"{n}LastActivityDate", "date") for w, n in _WORKLOADS),
    *(_csv(f"{w} License Assign Date", f"{n}LicenseAssignDate", "date") for w, n in _WORKLOADS),
    _PRODUCTS,
)
REPORT_M365_APP_USER = (
    _REFRESH, _UPN,
    _csv("Last Activation Date", "lastActivationDate", "date"),
    _csv("Last Activity Date", "lastActivityDate", "date"),
    _PERIOD,
    *(_csv(p, p.lower(), "boolean") for p in _PLATFORMS),
    *(_csv(a, n, "boolean") for a, n in _APPS),
    *(_csv(f"{a} ({p})", f"{n}{p}", "boolean") for p in _PLATFORMS for a, n in _APPS),
)
REPORT_OFFICE365_ACTIVATIONS_USER = (
    _REFRESH, _UPN, _NAME,
    _csv("Product Type", "productType", "string"),
    _csv("Last Activated Date", "lastActivatedDate", "date"),
    _csv("Windows", "windows", "integer"),
    _csv("Mac", "mac", "integer"),
    _csv("Windows 10 Mobile", "windows10Mobile", "integer"),
    _csv("iOS", "ios", "integer"),
    _csv("Android", "android", "integer"),
    _csv("Activated On Shared Computer", "activatedOnSharedComputer", "boolean"),
)
REPORT_EMAIL_ACTIVITY_USER = (
    _REFRESH, _UPN, _NAME, *_DELETED,
    _csv("Last Activity Date", "lastActivityDate", "date"),
    _csv("Send Count", "sendCount", "integer"),
    _csv("Receive Count", "receiveCount", "integer"),
    _csv("Read Count", "readCount", "integer"),
    _csv("Meeting Created Count", "meetingCreatedCount", "integer"),
    _csv("Meeting Interacted Count", "meetingInteractedCount", "integer"),
    _PRODUCTS, _PERIOD,
)
REPORT_MAILBOX_USAGE = (
    _REFRESH, _UPN, _NAME, *_DELETED,
    _csv("Created Date", "createdDate", "date"),
    _csv("Last Activity Date", "lastActivityDate", "date"),
    _csv("Item Count", "itemCount", "integer"),
    _csv("Storage Used (Byte)", "storageUsedInBytes", "integer"),
    _csv("Issue Warning Quota (Byte)", "issueWarningQuotaInBytes", "integer"),
    _csv("Prohibit Send Quota (Byte)", "prohibitSendQuotaInBytes", "integer"),
    _csv("Prohibit Send/Receive Quota (Byte)", "prohibitSendReceiveQuotaInBytes", "integer"),
    _csv("Deleted Item Count", "deletedItemCount", "integer"),
    _csv("Deleted Item Size (Byte)", "deletedItemSizeInBytes", "integer"),
    _csv("Deleted Item Quota (Byte)", "deletedItemQuotaInBytes", "integer"),
    _csv("Has Archive", "hasArchive", "boolean"),
    # Not in the documented list, but in real files (third-party fixtures).
    _csv("Recipient Type", "recipientType", "string"),
    _PERIOD,
)
REPORT_ONEDRIVE_USAGE_ACCOUNT = (
    _REFRESH,
    _csv("Site URL", "siteUrl", "string"),
    _csv("Owner Display Name", "ownerDisplayName", "string"),
    _csv("Is Deleted", "isDeleted", "boolean"),
    _csv("Last Activity Date", "lastActivityDate", "date"),
    _csv("File Count", "fileCount", "integer"),
    _csv("Active File Count", "activeFileCount", "integer"),
    _csv("Storage Used (Byte)", "storageUsedInBytes", "integer"),
    _csv("Storage Allocated (Byte)", "storageAllocatedInBytes", "integer"),
    _csv("Owner Principal Name", "ownerPrincipalName", "string"),
    _PERIOD,
)
REPORT_SHAREPOINT_ACTIVITY_USER = (
    _REFRESH, _UPN, *_DELETED,
    _csv("Last Activity Date", "lastActivityDate", "date"),
    _csv("Viewed Or Edited File Count", "viewedOrEditedFileCount", "integer"),
    _csv("Synced File Count", "syncedFileCount", "integer"),
    _csv("Shared Internally File Count", "sharedInternallyFileCount", "integer"),
    _csv("Shared Externally File Count", "sharedExternallyFileCount", "integer"),
    _csv("Visited Page Count", "visitedPageCount", "integer"),
    _PRODUCTS, _PERIOD,
)
REPORT_TEAMS_USER_ACTIVITY = (
    _REFRESH,
    _csv("Tenant Display Name", "tenantDisplayName", "string"),
    _csv("Shared Channel Tenant Display Names", "sharedChannelTenantDisplayNames", "string"),
    _csv("User Id", "userId", "string"),
    _UPN,
    _csv("Last Activity Date", "lastActivityDate", "date"),
    *_DELETED,
    _PRODUCTS,
    *(_csv(h, h[0].lower() + h.title().replace(" ", "").replace("-", "")[1:], "integer") for h in (
        "Team Chat Message Count", "Private Chat Message Count", "Call Count", "Meeting Count", "Post Messages",
        "Reply Messages", "Urgent Messages", "Meetings Organized Count", "Meetings Attended Count",
        "Ad Hoc Meetings Organized Count", "Ad Hoc Meetings Attended Count",
        "Scheduled One-time Meetings Organized Count", "Scheduled One-time Meetings Attended Count",
        "Scheduled Recurring Meetings Organized Count", "Scheduled Recurring Meetings Attended Count")),
    _csv("Audio Duration", "audioDuration", "string"),
    _csv("Video Duration", "videoDuration", "string"),
    _csv("Screen Share Duration", "screenShareDuration", "string"),
    _csv("Audio Duration In Seconds", "audioDurationInSeconds", "integer"),
    _csv("Video Duration In Seconds", "videoDurationInSeconds", "integer"),
    _csv("Screen Share Duration In Seconds", "screenShareDurationInSeconds", "integer"),
    _csv("Has Other Action", "hasOtherAction", "boolean"),
    _csv("Is Licensed", "isLicensed", "boolean"),
    _PERIOD,
)

# -- access and software-inventory datasets -------------------------------------------------------------------

CREDENTIAL_COMMON = (
    Field("keyId", "uuid", "the credential's id"),
    Field("displayName", "string", "friendly name"),
    Field("startDateTime", "datetime", "valid from"),
    Field("endDateTime", "datetime", "expires at"),
    Field("customKeyIdentifier", "string", "custom key identifier (base64), e.g. a certificate thumbprint"),
)
PASSWORD_CREDENTIAL = (*CREDENTIAL_COMMON,
                       Field("hint", "string", "the first three characters of the secret (never the secret)"))
KEY_CREDENTIAL = (*CREDENTIAL_COMMON,
                  Field("type", "string", "AsymmetricX509Cert, X509CertAndPassword, Symmetric"),
                  Field("usage", "string", "Verify or Sign"))
CREDENTIAL_FIELDS = (
    Field("passwordCredentials", "array", "client secrets: hints, ids and dates only (the connector removes any "
          "secretText)", items=PASSWORD_CREDENTIAL),
    Field("keyCredentials", "array", "certificates and keys: ids, thumbprints and dates (the public key itself, "
          "`key`, is removed)", items=KEY_CREDENTIAL),
)
VERIFIED_PUBLISHER = Field("verifiedPublisher", "object", "", fields=(
    Field("displayName", "string", ""),
    Field("verifiedPublisherId", "string", ""),
    Field("addedDateTime", "datetime", ""),
))
ROLE_SCHEDULE_COMMON = (
    Field("id", "string", "the schedule's id"),
    Field("principalId", "uuid", "the user, group or service principal"),
    Field("roleDefinitionId", "string", "the role (role_assignments.roleDefinition.id)"),
    Field("directoryScopeId", "string", "'/' for the whole tenant, else the scope object"),
    Field("appScopeId", "string", "app-specific scope, or null"),
    Field("memberType", "string", "Direct, Group or Inherited"),
    Field("status", "string", "Provisioned, ..."),
    Field("createdDateTime", "datetime", ""),
    Field("modifiedDateTime", "datetime", ""),
    Field("createdUsing", "string", "the request that created the schedule"),
    Field("scheduleInfo", "object", "start and expiration", fields=(
        Field("startDateTime", "datetime", ""),
        Field("expiration", "object", "", fields=(Field("type", "string", "noExpiration, afterDateTime, "
                                                                          "afterDuration"),
                                                  Field("endDateTime", "datetime", ""),
                                                  Field("duration", "string", "ISO 8601 duration"))),
        Field("recurrence", "object", "recurrence pattern (patternedRecurrence), usually null", fields=(
            Field("pattern", "object", "how often", fields=(
                Field("type", "string", "daily, weekly, absoluteMonthly, relativeMonthly, absoluteYearly, ..."),
                Field("interval", "integer", ""), Field("month", "integer", ""),
                Field("dayOfMonth", "integer", ""), Field("daysOfWeek", "array", "", items="string"),
                Field("firstDayOfWeek", "string", ""), Field("index", "string", "first, second, ..."))),
            Field("range", "object", "from when until when", fields=(
                Field("type", "string", "endDate, noEnd or numbered"), Field("startDate", "date", ""),
                Field("endDate", "date", ""), Field("recurrenceTimeZone", "string", ""),
                Field("numberOfOccurrences", "integer", ""))))))),
)
DETECTED_APP_DEVICES = (
    Field("appId", "string", "detected_apps.id"),
    Field("appDisplayName", "string", ""),
    Field("appVersion", "string", ""),
    Field("platform", "string", "windows, macOS, ios, ..."),
    Field("deviceId", "uuid", "managed_devices.id"),
    Field("deviceName", "string", ""),
)
APPLICATIONS = (
    Field("id", "uuid", "object id"),
    Field("appId", "uuid", "application (client) id"),
    Field("displayName", "string", ""),
    Field("createdDateTime", "datetime", ""),
    Field("signInAudience", "string", "AzureADMyOrg, AzureADMultipleOrgs, ..."),
    Field("publisherDomain", "string", ""),
    *CREDENTIAL_FIELDS,
    Field(
        "requiredResourceAccess",
        "array",
        "API permissions the app requests",
        items=(
            Field("resourceAppId", "uuid", "the API (e.g. Microsoft Graph 00000003-0000-0000-c000-000000000000)"),
            Field(
                "resourceAccess",
                "array",
                "",
                items=(
                    Field("id", "uuid", "app role or scope id"),
                    Field("type", "string", "Role (application) or Scope (delegated)"),
                ),
            ),
        ),
    ),
    Field("identifierUris", "array", "", items="string"),
    Field("tags", "array", "", items="string"),
    Field("notes", "string", ""),
    Field("disabledByMicrosoftStatus", "string", ""),
    VERIFIED_PUBLISHER,
)
SERVICE_PRINCIPALS = (
    Field("id", "uuid", "object id"),
    Field("appId", "uuid", "application (client) id"),
    Field("displayName", "string", ""),
    Field("appDisplayName", "string", ""),
    Field("servicePrincipalType", "string", "Application, ManagedIdentity, Legacy, SocialIdp, ..."),
    Field(
        "appOwnerOrganizationId",
        "uuid",
        "tenant where the app is registered (yours, Microsoft's f8cdef31-a31e-4b4a-93e4-5f571e91255a, a vendor's)",
    ),
    Field("appRoleAssignmentRequired", "boolean", "users need an assignment to sign in"),
    Field("accountEnabled", "boolean", ""),
    Field("signInAudience", "string", ""),
    Field("preferredSingleSignOnMode", "string", "saml, password, oidc, notSupported or null"),
    Field("tags", "array", "", items="string"),
    Field(
        "appRoles",
        "array",
        "roles the app defines: join app_role_assignments.appRoleId",
        items=(
            Field("id", "uuid", ""),
            Field("value", "string", "e.g. User.Read.All"),
            Field("displayName", "string", ""),
            Field("allowedMemberTypes", "array", "", items="string"),
            Field("isEnabled", "boolean", ""),
            Field("description", "string", ""),
            Field("origin", "string", ""),
        ),
    ),
    *CREDENTIAL_FIELDS,
    Field("disabledByMicrosoftStatus", "string", ""),
    VERIFIED_PUBLISHER,
)
APP_OWNERS = (
    Field("objectId", "uuid", "applications.id or service_principals.id"),
    Field("objectType", "string", "application or servicePrincipal"),
    Field("ownerId", "uuid", "users.id or service_principals.id"),
    Field("ownerType", "string", "user or servicePrincipal"),
)
OAUTH2_GRANTS = (
    Field("id", "string", ""),
    Field("clientId", "uuid", "the client service principal"),
    Field("resourceId", "uuid", "the API's service principal"),
    Field("consentType", "string", "AllPrincipals or Principal"),
    Field("principalId", "uuid", "the user, for consentType Principal; else null"),
    Field("scope", "string", "delegated permissions, space-separated"),
)
APP_ROLE_ASSIGNMENTS = (
    Field("id", "string", ""),
    Field("appRoleId", "uuid", "the role (service_principals.appRoles.id)"),
    Field("principalId", "uuid", "users.id, groups.id or service_principals.id"),
    Field("principalType", "string", "User, Group or ServicePrincipal"),
    Field("principalDisplayName", "string", ""),
    Field("resourceId", "uuid", "the resource service principal"),
    Field("resourceDisplayName", "string", ""),
    Field("createdDateTime", "datetime", ""),
    Field("deletedDateTime", "datetime", ""),
)
GROUP_OWNERS = (
    Field("groupId", "uuid", "groups.id"),
    Field("ownerId", "uuid", "users.id or service_principals.id"),
    Field("ownerType", "string", "user or servicePrincipal"),
)
USER_MANAGERS = (
    Field("userId", "uuid", "users.id"),
    Field("managerId", "uuid", "users.id (or an orgContact)"),
    Field("managerType", "string", "user or orgContact"),
)
ROLE_ASSIGNMENT_SCHEDULES = (*ROLE_SCHEDULE_COMMON, Field("assignmentType", "string", "Assigned or Activated"))
