"""The deployment templates (infra/*.bicep), checked over their parse trees.

No Bicep compiler can run here, so the templates are parsed with pycep (the parser checkov uses,
same version) and the properties the deployment promises are asserted on the trees: Flex
Consumption, identity-only storage, Key Vault with RBAC, local auth off, narrowly scoped role
assignments, azd conventions, and app settings equal to the settings the code reads.
checkov (scripts/check-infra) covers the generic security rules.
"""

from __future__ import annotations

import importlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

try:
    from pycep import BicepParser
except ImportError:  # pragma: no cover - a setup problem, reported as such
    pytest.fail("pycep-parser is not installed in this environment: install requirements-dev.txt "
                "(it pins pycep-parser, the same version as requirements-infra.txt).", pytrace=False)

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"

# Settings the code reads that the templates deliberately do NOT set in Azure, with the reason.
# Review this list when the code gains a setting: anything not here and not in the templates fails
# test_app_settings_are_exactly_what_the_code_reads.
NOT_SET_IN_AZURE: dict[str, str] = {
    "M365_CLIENT_SECRET": "local runs only; in Azure the secret is read from Key Vault",
    "SNAPSHOT_DIR": "local runs only; in Azure snapshots go to SNAPSHOT_ACCOUNT_URL",
    "SNAPSHOT_CONNECTION_STRING": "Azurite only; in Azure the managed identity is used, never a key",
    "M365_AUTHORITY_HOST": "override for tests and private endpoints; M365_CLOUD picks the hosts",
    "M365_GRAPH_ENDPOINT": "override for tests and private endpoints; M365_CLOUD picks the hosts",
    "M365_MAX_CONCURRENCY": "optional tuning; the code's default applies",
    "M365_MAX_RETRIES": "optional tuning; the code's default applies",
    "M365_INACTIVE_DAYS": "optional: licence insights' inactivity threshold; the code's default (90) applies",
    "M365_PRICE_SHEET": "optional: add it (a blob URL) to put money on licence waste; unset, insights count seats",
    "M365_PRODUCT_NAMES_URL": "optional override; the code refreshes product names from Microsoft's published CSV",
    "M365_RUN_TIME_LIMIT": "optional tuning; the default (100 minutes) stays below host.json's functionTimeout",
    "M365_INVOCATION_BUDGET": "optional tuning; the default (75% of host.json's functionTimeout) applies",
    "M365_GRAPH_QUOTAS": "optional: Graph's documented quotas are the defaults; set only if Microsoft changes one",
    "M365_GRAPH_QUOTA_SCALE": "the simulator only (tests, benchmarks); Graph's quotas are never scaled in Azure",
    "M365_INSIGHTS_EXCLUDE": "optional: SKUs, users or groups to leave out of licence findings; none by default",
    "M365_DELTA": "optional: delta runs are on by default; off reads every dataset in full every run",
    "M365_RECONCILE_DAYS": "optional tuning; the default (a full reconcile of delta datasets weekly) applies",
    "AzureWebJobsStorage": "connection-string form, for Azurite; Azure uses the identity-based __ settings",
    "AzureWebJobsStorage__accountName": "alternative to the service URIs, public cloud only; the URIs are set",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "optional: unset, the connector exports its own logger itself",
}

# Settings the templates set that our code does not read itself, with the reader.
READ_BY_PLATFORM: dict[str, str] = {
    "AZURE_CLIENT_ID": "azure-identity DefaultAzureCredential: which user-assigned identity to use",
    "AzureWebJobsStorage__credential": "Functions host: identity-based host storage",
    "AzureWebJobsStorage__clientId": "Functions host: identity-based host storage",
    "AzureWebJobsStorage__blobServiceUri": "Functions host: timer locks, deployment package",
    "AzureWebJobsStorage__queueServiceUri": "Functions host: queue trigger on m365-runs",
    "AzureWebJobsStorage__tableServiceUri": "Functions host: identity-based host storage",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Functions host and the OpenTelemetry exporter",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Functions host and exporter: Entra auth (local auth is off)",
}

# Never on Flex Consumption (the runtime lives in functionAppConfig), nor ones that carry keys.
FLEX_FORBIDDEN = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT", "WEBSITE_TIME_ZONE", "TZ",
}

# Built-in role definition ids (Azure built-in roles; the same in every tenant).
ROLE = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}


# -- helpers over pycep's trees ----------------------------------------------------------------------------

@cache
def parse(relative: str) -> dict[str, Any]:
    path = INFRA / relative
    assert path.is_file(), f"{path} is missing"
    return BicepParser().parse(file_path=path)


def bicep_files() -> list[str]:
    return sorted(str(p.relative_to(INFRA)) for p in INFRA.rglob("*.bicep"))


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's body; pycep nests a conditional resource (`= if (...) {...}`) one level deeper."""
    config = resource["config"]
    if "condition" in config and isinstance(config.get("config"), dict):
        return config["config"]
    return config


def resources_of(relative: str, rtype: str, *, existing: bool = False) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in parse(relative)["resources"].items()
            if r["type"] == rtype and r["existing"] is existing}


def one(relative: str, rtype: str) -> dict[str, Any]:
    found = resources_of(relative, rtype)
    assert len(found) == 1, f"{relative}: expected one {rtype}, found {sorted(found)}"
    return body(next(iter(found.values())))


def dig(node: Any, *path: str) -> Any:
    for key in path:
        assert isinstance(node, dict) and key in node, f"missing {'.'.join(path)} (at {key!r})"
        node = node[key]
    return node


def accessor(node: Any) -> str | None:
    """'a.b.c' for a property access expression, else None."""
    if not (isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor"):
        return None
    ops = node["operator"]["operands"]
    rest = ops["operand_2"] if isinstance(ops["operand_2"], str) else accessor(ops["operand_2"])
    return f"{ops['operand_1']}.{rest}"


def default(relative: str, param: str) -> Any:
    return dig(parse(relative), "parameters", param)["default"]


def decorator(relative: str, param: str, kind: str) -> Any:
    for d in dig(parse(relative), "parameters", param)["decorators"]:
        if d["type"] == kind:
            return d["argument"]
    return None


def module(name: str) -> dict[str, Any]:
    return dig(parse("main.bicep"), "modules", name)


def app_settings() -> dict[str, Any]:
    site = one("app/api.bicep", "Microsoft.Web/sites")
    settings = dig(site, "properties", "siteConfig", "appSettings")
    names = [s["name"] for s in settings]
    assert len(names) == len(set(names)), f"duplicate app settings: {names}"
    return {s["name"]: s["value"] for s in settings}


def optional_import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


# -- the templates hang together ---------------------------------------------------------------------------

def test_every_template_parses_and_modules_get_the_params_they_declare():
    files = bicep_files()
    assert {"main.bicep", "app/api.bicep", "app/rbac.bicep", "core/storage.bicep", "core/keyvault.bicep",
            "core/monitor.bicep", "core/identity.bicep"} <= set(files)
    main = parse("main.bicep")
    assert main["globals"]["scope"]["value"] == "subscription"
    used = {"main.bicep"}
    for name, mod in main["modules"].items():
        assert mod["type"] == "local", f"module {name}: registry modules are not scanned by checkov"
        path = mod["detail"]["path"].removeprefix("./")
        used.add(path)
        declared = parse(path)["parameters"]
        given = set(mod["config"]["params"])
        assert given <= set(declared), f"module {name} gets undeclared params {given - set(declared)}"
        required = {p for p, d in declared.items() if d["default"] is None}
        assert required <= given, f"module {name} misses required params {required - given}"
        assert mod["config"]["scope"] == "rg"
    assert used == set(files), f"templates no module uses: {set(files) - used}"


def test_parameters_file_matches_main_and_holds_no_secret():
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = parse("main.bicep")["parameters"]
    assert set(params) <= set(declared), f"unknown parameters: {set(params) - set(declared)}"
    required = {p for p, d in declared.items() if d["default"] is None}
    assert required <= set(params), f"required parameters azd cannot fill: {required - set(params)}"
    for name, entry in params.items():
        value = str(entry["value"])
        assert re.fullmatch(r"\$\{[A-Z0-9_]+(=[^}]*)?\}", value), f"{name}: {value!r} is not an azd ${{VAR}}"
        assert "SECRET}" not in value and "secret" not in name.lower().replace("secretname", ""), name
    abbrs = json.loads((INFRA / "abbreviations.json").read_text())
    assert abbrs["storageStorageAccounts"] == "st" and abbrs["keyVaultVaults"] == "kv-"


def test_no_secret_value_in_any_template():
    for path in bicep_files():
        tree = parse(path)
        for name, p in tree["parameters"].items():
            kinds = {d["type"] for d in p["decorators"]}
            assert "secure" not in kinds, f"{path}: secure parameter {name}: secrets are set after deployment"
        for name, r in tree["resources"].items():
            assert not r["type"].startswith("Microsoft.KeyVault/vaults/secrets"), f"{path}: {name} creates a secret"
        text = (INFRA / path).read_text()
        assert not re.search(r"listKeys|AccountKey=|SharedAccessSignature", text), path


# -- app settings == what the code reads -------------------------------------------------------------------

def code_setting_names() -> set[str]:
    from connector.config import SETTING_NAMES

    names = set(SETTING_NAMES)
    runs = optional_import("connector.service.runs")
    if runs is None or not hasattr(runs, "FUNCTION_SETTING_NAMES"):
        pytest.skip("connector.service.runs.FUNCTION_SETTING_NAMES does not exist yet: the Function app's settings "
                    "cannot be compared with the templates until it does")
    return names | set(runs.FUNCTION_SETTING_NAMES)


def test_app_settings_are_exactly_what_the_code_reads():
    code = code_setting_names()
    templates = set(app_settings())
    stale = set(NOT_SET_IN_AZURE) - code
    assert not stale, f"NOT_SET_IN_AZURE lists settings the code no longer reads: {sorted(stale)}"
    missing = code - set(NOT_SET_IN_AZURE) - templates
    assert not missing, (f"the code reads settings the templates do not set: {sorted(missing)}; set them in "
                         "infra/app/api.bicep, or list them in NOT_SET_IN_AZURE with the reason")
    unread = templates - code - set(READ_BY_PLATFORM)
    assert not unread, f"the templates set settings nothing reads: {sorted(unread)}"
    assert not templates & set(NOT_SET_IN_AZURE), sorted(templates & set(NOT_SET_IN_AZURE))


def test_settings_are_identity_based_and_flex_clean():
    s = app_settings()
    assert not FLEX_FORBIDDEN & set(s), sorted(FLEX_FORBIDDEN & set(s))
    assert "AzureWebJobsStorage" not in s  # the connection-string form
    assert s["AzureWebJobsStorage__credential"] == "managedidentity"
    for name in ("AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID"):
        assert s[name] == "identityClientId", name
    assert s["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    for name, param in {"AzureWebJobsStorage__blobServiceUri": "blobEndpoint", "SNAPSHOT_ACCOUNT_URL": "blobEndpoint",
                        "AzureWebJobsStorage__queueServiceUri": "queueEndpoint",
                        "AzureWebJobsStorage__tableServiceUri": "tableEndpoint", "KEY_VAULT_URL": "keyVaultUri",
                        "M365_SCHEDULE": "m365Schedule", "M365_CLIENT_SECRET_NAME": "m365ClientSecretName",
                        "M365_AUTH_MODE": "m365AuthMode", "SNAPSHOT_CONTAINER": "snapshotContainerName"}.items():
        assert s[name] == param, f"{name} = {s[name]!r}, expected the parameter {param}"
    wiring = module("api")["config"]["params"]
    assert accessor(wiring["blobEndpoint"]) == "storage.outputs.blobEndpoint"
    assert accessor(wiring["identityClientId"]) == "identity.outputs.clientId"
    assert accessor(wiring["keyVaultUri"]) == "keyVault.outputs.uri"
    outputs = parse("core/storage.bicep")["outputs"]
    assert accessor(outputs["blobEndpoint"]["value"]) == "storage.properties.primaryEndpoints.blob"
    assert accessor(parse("core/keyvault.bicep")["outputs"]["uri"]["value"]) == "vault.properties.vaultUri"
    assert accessor(parse("core/identity.bicep")["outputs"]["clientId"]["value"]) == "identity.properties.clientId"


def test_parameter_defaults_agree_with_the_code():
    from connector import config

    assert default("main.bicep", "m365ClientSecretName") == config.DEFAULT_SECRET_NAME
    assert dig(parse("main.bicep"), "variables", "snapshotContainerName", "value") == config.DEFAULT_CONTAINER
    assert set(decorator("main.bicep", "m365Cloud", "allowed")) == set(config.CLOUDS)
    assert default("main.bicep", "m365Schedule") == "0 0 2 * * *"
    assert decorator("main.bicep", "m365AuthMode", "allowed") == ["secret", "certificate", "federated"]
    assert default("main.bicep", "m365AuthMode") == "secret"
    assert default("main.bicep", "m365Domains") == "*" and default("main.bicep", "m365Datasets") == "*"
    runs = optional_import("connector.service.runs")
    if runs is not None:
        assert default("main.bicep", "m365Schedule") == runs.DEFAULT_SCHEDULE
        assert dig(parse("main.bicep"), "variables", "runQueueName", "value") == runs.RUNS_QUEUE


# -- hosting -----------------------------------------------------------------------------------------------

def test_function_app_on_flex_consumption_with_user_assigned_identity():
    plan = one("app/api.bicep", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True
    site = one("app/api.bicep", "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert "linuxFxVersion" not in props["siteConfig"]
    assert props["siteConfig"]["minTlsVersion"] == "1.2" and props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    for path in ("main.bicep", "app/api.bicep"):
        assert decorator(path, "pythonVersion", "allowed") == ["3.11", "3.12"]
        assert default(path, "pythonVersion") == "3.11"
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"] == "${blobEndpoint}${deploymentContainerName}"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert set(config["scaleAndConcurrency"]) == {"maximumInstanceCount", "instanceMemoryMB"}
    policies = resources_of("app/api.bicep", "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(body(p)["name"] for p in policies.values()) == ["ftp", "scm"]
    assert all(body(p)["properties"]["allow"] is False for p in policies.values())


def test_azd_conventions():
    site = one("app/api.bicep", "Microsoft.Web/sites")
    tags = dig(site, "tags", "function")
    assert tags["type"] == "union" and tags["parameters"]["arg_2"] == {"'azd-service-name'": "api"}
    main = parse("main.bicep")
    assert dig(main, "resources", "rg", "config", "tags") == "tags"
    assert dig(main, "variables", "tags", "value") == {"'azd-env-name'": "environmentName"}
    assert decorator("main.bicep", "location", "metadata") == {"azd": {"type": "location"}}
    assert decorator("main.bicep", "environmentName", "max_length") == 64
    assert main["outputs"] and all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in main["outputs"])
    for name in ("AZURE_FUNCTION_APP_NAME", "AZURE_KEY_VAULT_NAME", "AZURE_KEY_VAULT_URL", "SNAPSHOT_ACCOUNT_URL",
                 "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID", "M365_CLIENT_SECRET_NAME", "AZURE_RESOURCE_GROUP"):
        assert name in main["outputs"], name
    text = (ROOT / "azure.yaml").read_text()  # no YAML parser in the test environment: the four lines
    service = re.search(r"(?m)^services:\n  api:\n((?:    .*\n)+)", text)
    assert service, "azure.yaml has no service 'api'"
    lines = {line.strip() for line in service.group(1).splitlines()}
    assert {"project: .", "language: python", "host: function"} <= lines


# -- storage -----------------------------------------------------------------------------------------------

def test_storage_account_is_identity_only_and_hardened():
    account = one("core/storage.bicep", "Microsoft.Storage/storageAccounts")
    props = account["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowCrossTenantReplication"] is False
    blob = one("core/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices")["properties"]
    assert blob["isVersioningEnabled"] is True
    assert blob["deleteRetentionPolicy"]["enabled"] is True
    assert blob["containerDeleteRetentionPolicy"]["enabled"] is True
    containers = resources_of("core/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert sorted(body(c)["name"] for c in containers.values()) == ["deploymentContainerName", "snapshotContainerName"]
    assert all(body(c)["properties"]["publicAccess"] == "None" for c in containers.values())
    queue = one("core/storage.bicep", "Microsoft.Storage/storageAccounts/queueServices/queues")
    assert queue["name"] == "runQueueName"
    params = module("storage")["config"]["params"]
    assert params["runQueueName"] == "runQueueName" and params["snapshotContainerName"] == "snapshotContainerName"
    assert dig(parse("main.bicep"), "variables", "runQueueName", "value") == "m365-runs"
    assert dig(parse("main.bicep"), "variables", "snapshotContainerName", "value") == "m365-snapshots"


def test_lifecycle_rule_deletes_old_runs_after_retention_days():
    from connector.store.publish import run_prefix

    policy = one("core/storage.bicep", "Microsoft.Storage/storageAccounts/managementPolicies")
    rules = policy["properties"]["policy"]["rules"]
    assert len(rules) == 1 and rules[0]["enabled"] is True
    definition = rules[0]["definition"]
    prefix = "tenants/"
    assert run_prefix("t", "r").startswith(prefix)  # where the connector writes runs
    assert definition["filters"]["prefixMatch"] == ["${snapshotContainerName}/" + prefix]
    assert definition["filters"]["blobTypes"] == ["blockBlob"]
    actions = definition["actions"]
    assert actions["baseBlob"]["delete"] == {"daysAfterModificationGreaterThan": "retentionDays"}
    assert actions["baseBlob"]["tierToCool"] == {"daysAfterModificationGreaterThan": "coolAfterDays"}
    assert "daysAfterCreationGreaterThan" in actions["version"]["delete"]  # versions do not outlive it
    assert default("main.bicep", "retentionDays") == 400
    assert module("storage")["config"]["params"]["retentionDays"] == "retentionDays"


# -- Key Vault and monitoring ------------------------------------------------------------------------------

def test_key_vault_uses_rbac_soft_delete_and_purge_protection():
    vault = one("core/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True
    assert vault["softDeleteRetentionInDays"] == "softDeleteRetentionInDays"
    assert default("core/keyvault.bicep", "softDeleteRetentionInDays") == 90
    assert "accessPolicies" not in vault
    assert vault["sku"]["name"] == "standard"


def test_monitoring_accepts_only_entra_authenticated_telemetry():
    appi = one("core/monitor.bicep", "Microsoft.Insights/components")["properties"]
    assert appi["DisableLocalAuth"] is True
    assert accessor(appi["WorkspaceResourceId"]) == "logAnalytics.id"
    workspace = one("core/monitor.bicep", "Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


# -- role assignments --------------------------------------------------------------------------------------

def test_role_assignments_are_each_scoped_to_one_resource():
    tree = parse("app/rbac.bicep")
    roles = dig(tree, "variables", "roles", "value")
    existing = {name: r["type"] for name, r in tree["resources"].items() if r["existing"]}
    assignments = resources_of("app/rbac.bicep", "Microsoft.Authorization/roleAssignments")
    got = set()
    for name, resource in assignments.items():
        ra = body(resource)
        role_ref = accessor(ra["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
        assert ra["properties"]["roleDefinitionId"]["function"]["type"] == "subscription_resource_id", name
        role_id = roles[role_ref.removeprefix("roles.")]
        scope = ra["scope"]
        assert scope in existing, f"{name}: scope {scope!r} is not one resource"  # never rg/subscription
        guid_args = ra["name"]["function"]["parameters"]
        assert accessor(guid_args["base_string"]) == f"{scope}.id", f"{name}: name not derived from its scope"
        got.add((role_id, existing[scope], ra["properties"]["principalId"]))
        if ra["properties"]["principalId"] == "principalId":
            assert ra["properties"]["principalType"] == "ServicePrincipal", name
    stg, kv, appi = "Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults", "Microsoft.Insights/components"
    assert got == {
        (ROLE["Storage Blob Data Owner"], stg, "principalId"),
        (ROLE["Storage Queue Data Contributor"], stg, "principalId"),
        (ROLE["Storage Table Data Contributor"], stg, "principalId"),
        (ROLE["Key Vault Secrets User"], kv, "principalId"),
        (ROLE["Monitoring Metrics Publisher"], appi, "principalId"),
        (ROLE["Key Vault Secrets Officer"], kv, "deployerPrincipalId"),
    }
    officer = next(r for r in assignments.values() if body(r)["properties"]["principalId"] == "deployerPrincipalId")
    assert "condition" in officer["config"], "the deployer's role must be optional (principalId may be empty)"
    params = module("rbac")["config"]["params"]
    assert accessor(params["principalId"]) == "identity.outputs.principalId"
    assert accessor(params["storageAccountName"]) == "storage.outputs.name"
    assert accessor(params["keyVaultName"]) == "keyVault.outputs.name"
    assert module("api")["config"]["dependsOn"] == ["rbac"]  # roles exist before the app starts
    for path in bicep_files():
        if path != "app/rbac.bicep":
            assert not resources_of(path, "Microsoft.Authorization/roleAssignments"), path


# -- alerts ------------------------------------------------------------------------------------------------------

def _alert_queries() -> dict[str, str]:
    rules = resources_of("core/alerts.bicep", "Microsoft.Insights/scheduledQueryRules")
    return {name: body(r)["properties"]["criteria"]["allOf"][0]["query"] for name, r in rules.items()}


def _kql_regexes(query: str) -> list[re.Pattern[str]]:
    """The regular expressions of KQL extract(@"...", 1, message) calls, as Python patterns."""
    return [re.compile(p.replace("\\\\", "\\")) for p in re.findall(r'extract\(@"(.*?)", 1, message\)', query)]


def test_alerts_are_on_by_default_and_mail_the_given_address():
    assert default("main.bicep", "alertsEnabled") is True
    assert default("main.bicep", "alertEmail") == ""
    params = module("alerts")["config"]["params"]
    assert accessor(params["applicationInsightsId"]) == "monitor.outputs.applicationInsightsId"
    assert params["alertEmail"] == "alertEmail" and params["alertsEnabled"] == "alertsEnabled"
    azd = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert azd["alertEmail"]["value"] == "${ALERT_EMAIL=}" and azd["alertsEnabled"]["value"] == "${ALERTS_ENABLED=true}"
    group = resources_of("core/alerts.bicep", "Microsoft.Insights/actionGroups")
    assert len(group) == 1
    only = next(iter(group.values()))
    assert "condition" in only["config"], "no e-mail address, no action group"
    receivers = body(only)["properties"]["emailReceivers"]
    assert [r["emailAddress"] for r in receivers] == ["alertEmail"]
    assert len(body(only)["properties"]["groupShortName"]) <= 12  # Azure's limit
    rules = resources_of("core/alerts.bicep", "Microsoft.Insights/scheduledQueryRules")
    assert set(rules) == {"runFailed", "poisoned", "stale", "credential"}
    for name, rule in rules.items():
        b = body(rule)
        assert b["kind"] == "LogAlert", name
        props = b["properties"]
        assert props["enabled"] == "alertsEnabled" and props["scopes"] == ["applicationInsightsId"], name
        assert props["actions"] == "actions" and 0 <= props["severity"] <= 4, name
        assert props["evaluationFrequency"].startswith("PT") and props["windowSize"], name
    stale = body(rules["stale"])["properties"]
    assert "ago(26h)" in stale["criteria"]["allOf"][0]["query"] and stale["windowSize"] == "P2D"
    assert stale["criteria"]["allOf"][0]["operator"] == "LessThan" and stale["criteria"]["allOf"][0]["threshold"] == 1


def test_alert_queries_look_for_what_the_code_logs(indexed, monkeypatch, tmp_path, caplog):
    """Each query matches a log line the connector really writes (no Kusto engine here: the strings and
    the extract() patterns are checked against the messages)."""
    import logging
    from datetime import UTC, datetime, timedelta

    from connector.graph.auth import SecretInfo, secret_expiry_warning
    from connector.service.runs import POISON_QUEUE
    from connector.service.telemetry import SummaryFilter
    from simulator import Simulator, TenantSpec
    from tests.conftest import apply_env
    from tests.helpers import run

    queries = _alert_queries()
    with Simulator(TenantSpec(seed=2, users=20)) as sim:
        env = sim.env(secret_in="env")
        apply_env(monkeypatch, env)
        with caplog.at_level(logging.INFO, logger="m365_connector"):
            manifest, _ = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="organization")
    finished = [r for r in caplog.records if r.getMessage().startswith("collection finished")]
    assert len(finished) == 1
    SummaryFilter().filter(finished[0])  # what the Functions host forwards: the facts in the text
    message = finished[0].getMessage()
    for name in ("runFailed", "stale"):
        assert 'message startswith "collection finished"' in queries[name]
        extracted = [p.search(message).group(1) for p in _kql_regexes(queries[name])]
        assert manifest["status"] in extracted, (name, extracted, message)
    assert manifest["runId"] in [p.search(message).group(1) for p in _kql_regexes(queries["runFailed"])]
    assert finished[0].status == manifest["status"] and finished[0].run_id == manifest["runId"]  # the dimensions

    poison = f"run 20261122T020000Z-3f9a1c failed: its message went to {POISON_QUEUE}"
    assert f'"went to {POISON_QUEUE}"' in queries["poisoned"] and f"went to {POISON_QUEUE}" in poison
    assert 'operation_Name == "run_poison"' in queries["poisoned"] and "run_poison" in indexed
    worker = (ROOT / "connector/service/worker.py").read_text()
    assert '"run_poisoned"' in queries["poisoned"] and '"run_poisoned"' in worker

    soon = datetime.now(UTC) + timedelta(days=10)
    for kind, prefix in (("secret", "The client secret in Key Vault"),
                         ("certificate", "The client certificate in Key Vault")):
        text = secret_expiry_warning(SecretInfo(value="x", source="keyvault", expires_on=soon, kind=kind))
        assert text and text.startswith(prefix) and f'message startswith "{prefix}"' in queries["credential"]
    assert '"secret_expiring"' in queries["credential"]
    assert 'extra={"event": "secret_expiring"}' in (ROOT / "connector/collect/engine.py").read_text()
