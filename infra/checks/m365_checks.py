"""Custom checkov checks for the Bicep templates (loaded with --external-checks-dir infra/checks).

checkov's own Bicep checks do not cover identity-only access (its shared-key check CKV2_AZURE_40 is
Terraform-only; there is none for Key Vault RBAC or Azure Monitor local auth), so these fill the gap.
A property must be the literal value: an expression or parameter checkov cannot evaluate fails.
"""

from __future__ import annotations

from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

# App settings that Flex Consumption rejects or ignores (the runtime is in functionAppConfig), and
# forms that carry a key: AzureWebJobsStorage as a plain connection string, Azure Files content share.
FLEX_FORBIDDEN_SETTINGS = frozenset({
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_TIME_ZONE",
    "TZ",
    "AzureWebJobsStorage",
})
KEY_MARKERS = ("AccountKey=", "SharedAccessSignature=", "SharedAccessKey=", "listKeys", "list_keys")


def _body(conf: dict[str, Any]) -> dict[str, Any]:
    """The resource body; pycep wraps a conditional resource (`= if (...) {...}`) in condition/config."""
    if "condition" in conf and isinstance(conf.get("config"), dict):
        return conf["config"]
    return conf


def _get(conf: dict[str, Any], *path: str) -> Any:
    node: Any = _body(conf)
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


class _LiteralCheck(BaseResourceCheck):
    key_path: tuple[str, ...] = ()
    expected_value: Any = None

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = ["/".join(self.key_path)]
        return CheckResult.PASSED if _get(conf, *self.key_path) is self.expected_value else CheckResult.FAILED


class StorageSharedKeyDisabled(_LiteralCheck):
    key_path = ("properties", "allowSharedKeyAccess")
    expected_value = False

    def __init__(self) -> None:
        super().__init__(name="Storage accounts disable shared key access (allowSharedKeyAccess: false)",
                         id="CKV_M365_1", categories=(CheckCategories.IAM,),
                         supported_resources=("Microsoft.Storage/storageAccounts",))


class KeyVaultRbacAuthorization(_LiteralCheck):
    key_path = ("properties", "enableRbacAuthorization")
    expected_value = True

    def __init__(self) -> None:
        super().__init__(name="Key Vaults use Azure RBAC, not access policies (enableRbacAuthorization: true)",
                         id="CKV_M365_2", categories=(CheckCategories.IAM,),
                         supported_resources=("Microsoft.KeyVault/vaults",))


class AppInsightsLocalAuthDisabled(_LiteralCheck):
    key_path = ("properties", "DisableLocalAuth")
    expected_value = True

    def __init__(self) -> None:
        super().__init__(name="Application Insights accepts only Entra-authenticated telemetry "
                              "(DisableLocalAuth: true)",
                         id="CKV_M365_3", categories=(CheckCategories.IAM,),
                         supported_resources=("Microsoft.Insights/components",))


class LogAnalyticsLocalAuthDisabled(_LiteralCheck):
    key_path = ("properties", "features", "disableLocalAuth")
    expected_value = True

    def __init__(self) -> None:
        super().__init__(name="Log Analytics workspaces disable local (shared key) auth",
                         id="CKV_M365_4", categories=(CheckCategories.IAM,),
                         supported_resources=("Microsoft.OperationalInsights/workspaces",))


class FunctionAppIdentityOnlySettings(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(name="Function apps carry no storage keys or connection strings, nor settings "
                              "Flex Consumption forbids, and deploy with a managed identity",
                         id="CKV_M365_5", categories=(CheckCategories.SECRETS,),
                         supported_resources=("Microsoft.Web/sites",))

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = ["properties/siteConfig/appSettings", "properties/functionAppConfig"]
        settings = _get(conf, "properties", "siteConfig", "appSettings") or []
        if not isinstance(settings, list):
            return CheckResult.FAILED  # an expression: cannot be verified
        for setting in settings:
            if not isinstance(setting, dict):
                return CheckResult.FAILED
            name, value = setting.get("name"), str(setting.get("value"))
            if name in FLEX_FORBIDDEN_SETTINGS or any(marker in value for marker in KEY_MARKERS):
                return CheckResult.FAILED
        auth = _get(conf, "properties", "functionAppConfig", "deployment", "storage", "authentication", "type")
        if auth is not None and auth not in ("UserAssignedIdentity", "SystemAssignedIdentity"):
            return CheckResult.FAILED
        return CheckResult.PASSED


check_storage_shared_key = StorageSharedKeyDisabled()
check_key_vault_rbac = KeyVaultRbacAuthorization()
check_app_insights_local_auth = AppInsightsLocalAuthDisabled()
check_log_analytics_local_auth = LogAnalyticsLocalAuthDisabled()
check_function_app_settings = FunctionAppIdentityOnlySettings()
