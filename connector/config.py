"""Settings from environment variables (Function app settings), validated once at start.

Every problem names the setting, what is wrong and the fix, so a misconfigured deployment says what
to change instead of failing later inside a request. A message never repeats the value: a secret or
a SAS pasted into the wrong setting must not reach a log or the anonymous health answer. At most the
scheme and host of a URL are shown, and list entries are named by position.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from connector.catalog.datasets import DATASETS, DEFAULT_DATASETS
from connector.catalog.quotas import Quota, QuotaError, parse_overrides, parse_scale, quotas

GUID_HINT = "a GUID such as 00000000-0000-0000-0000-000000000000"
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$", re.I)

DEFAULT_SECRET_NAME = "m365-client-secret"
AUTH_MODES = ("secret", "certificate", "federated")
DEFAULT_CONTAINER = "m365-snapshots"
REPORT_PERIODS = ("D7", "D30", "D90", "D180")
DEFAULT_INACTIVE_DAYS = 90
# Microsoft's published "Product names and service plan identifiers for licensing" CSV
# (learn.microsoft.com/entra/identity/users/licensing-service-plan-reference).
PRODUCT_NAMES_URL = ("https://download.microsoft.com/download/e/3/e/e3e9faf2-f28b-490a-9ada-c6089a1fc5b0/"
                     "Product%20names%20and%20service%20plan%20identifiers%20for%20licensing.csv")


@dataclass(frozen=True)
class Cloud:
    name: str
    authority_host: str
    graph_endpoint: str

    @property
    def graph_resource(self) -> str:
        return self.graph_endpoint


CLOUDS: dict[str, Cloud] = {
    "global": Cloud("global", "https://login.microsoftonline.com", "https://graph.microsoft.com"),
    "usgov": Cloud("usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us"),
    "usgovdod": Cloud("usgovdod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    "china": Cloud("china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
}

# Every setting the connector reads; the deployment templates are checked against this list.
SETTING_NAMES: tuple[str, ...] = (
    "M365_TENANT_ID",
    "M365_CLIENT_ID",
    "M365_CLIENT_SECRET",
    "KEY_VAULT_URL",
    "M365_CLIENT_SECRET_NAME",
    "M365_AUTH_MODE",
    "M365_CLIENT_CERTIFICATE_NAME",
    "M365_CLOUD",
    "M365_AUTHORITY_HOST",
    "M365_GRAPH_ENDPOINT",
    "M365_DOMAINS",
    "M365_DATASETS",
    "M365_MAX_CONCURRENCY",
    "M365_MAX_RETRIES",
    "M365_RUN_TIME_LIMIT",
    "M365_GRAPH_QUOTAS",
    "M365_GRAPH_QUOTA_SCALE",
    "M365_REPORT_PERIOD",
    "M365_INACTIVE_DAYS",
    "M365_PRICE_SHEET",
    "M365_INSIGHTS_EXCLUDE",
    "M365_DELTA",
    "M365_RECONCILE_DAYS",
    "M365_PRODUCT_NAMES_URL",
    "SNAPSHOT_DIR",
    "SNAPSHOT_CONTAINER",
    "SNAPSHOT_ACCOUNT_URL",
    "SNAPSHOT_CONNECTION_STRING",
)


@dataclass(frozen=True)
class Problem:
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class ConfigError(Exception):
    """One or more settings are missing or invalid; str() lists each with its fix."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Settings:
    tenant_id: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    key_vault_url: str | None = None
    secret_name: str = DEFAULT_SECRET_NAME
    auth_mode: str = "secret"
    certificate_name: str | None = None
    cloud: str = "global"
    authority_host: str = CLOUDS["global"].authority_host
    graph_endpoint: str = CLOUDS["global"].graph_endpoint
    graph_resource: str = CLOUDS["global"].graph_resource
    instance_discovery: bool = True
    domains: tuple[str, ...] | None = None  # None = every user
    datasets: tuple[str, ...] | None = None  # None = every dataset
    max_concurrency: int = 16
    max_retries: int = 6
    run_time_limit: int = 100  # minutes a run may spend on Graph (host.json's functionTimeout is 120)
    # Graph's documented quotas (connector/catalog/quotas.py) overridden: ((name, limit, seconds), ...)
    quota_overrides: tuple[tuple[str, float, float], ...] = ()
    quota_scale: float = 1.0  # quota windows divided by this: only against the simulator, scaled alike
    report_period: str = "D30"  # usage reports: D7, D30, D90 or D180
    snapshot_dir: str | None = None
    snapshot_container: str = DEFAULT_CONTAINER
    snapshot_account_url: str | None = None
    snapshot_connection_string: str | None = field(default=None, repr=False)
    inactive_days: int = DEFAULT_INACTIVE_DAYS  # licence insights: no successful sign-in for longer = inactive
    # URL-valued settings may carry a SAS: never in a repr, and written out only as public_url() gives them.
    price_sheet: str | None = field(default=None, repr=False)  # CSV skuPartNumber,monthlyPrice,currency: path or URL
    product_names_url: str | None = field(default=PRODUCT_NAMES_URL, repr=False)  # None: only the shipped copy
    insights_exclude: tuple[str, ...] = ()  # "sku:<part|id>", "user:<upn|id>", "group:<id|name>": left out of findings
    # Change feeds (connector/collect/delta.py): datasets Graph tracks read only their changes since the last run
    # unless `delta` is off or the run asks for a full read (`full`: run --full, {"full": true} in a run request);
    # every `reconcile_days` a delta dataset is read in full and compared with what delta maintained.
    delta: bool = True
    reconcile_days: int = 7
    full: bool = False

    @property
    def graph_scope(self) -> str:
        return f"{self.graph_resource}/.default"

    def quota_limits(self) -> dict[str, Quota]:
        """Graph's documented quotas with M365_GRAPH_QUOTAS' overrides, windows divided by M365_GRAPH_QUOTA_SCALE."""
        return quotas({n: (limit, window) for n, limit, window in self.quota_overrides}, self.quota_scale)

    @property
    def selected_datasets(self) -> tuple[str, ...]:
        return self.datasets if self.datasets is not None else DEFAULT_DATASETS  # opt-in ones only when named


def _list(value: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\n;]", value) if p.strip()]


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def shown_url(value: str) -> str:
    """What a message may show of a URL: its scheme and host (never a path, query, SAS or user info)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(not a URL)"
    if not parts.scheme or not host:
        return "(not a URL)"
    return f"{parts.scheme}://{host}{port}"


def public_url(value: str) -> str:
    """What any output (a file, a log line, an answer) may hold of a URL-valued setting: scheme, host, port and
    path. The query (a SAS: `sig=...`), the fragment and user info are dropped, whatever the setting."""
    shown = shown_url(value)
    if shown == "(not a URL)":
        return shown
    return shown + urlsplit(value).path


_URL_IN_TEXT = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s'\"<>]+)")


def _cut_url(match: re.Match[str]) -> str:
    rest = re.split(r"[?#]", match.group(2), maxsplit=1)[0]
    authority, slash, path = rest.partition("/")
    return match.group(1) + authority.rpartition("@")[2] + slash + path


def scrub_urls(text: str) -> str:
    """`text` (an exception's message, say) with every URL in it cut like public_url() cuts one (no query,
    fragment or user info): libraries such as httpx quote the URL they failed on, SAS and all."""
    return _URL_IN_TEXT.sub(_cut_url, text)


_QUERY_IN_TEXT = re.compile(r"(?<=[^\s?])\?[^\s'\"<>]*")


class _NoUrlSecrets(logging.Filter):
    """Cuts the user info of every URL, and every query, from a library's log line before any handler sees it
    (urllib3 logs the host and the path with its query apart: `http://host:port "GET /path?sig=... HTTP/1.1"`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        cut = _QUERY_IN_TEXT.sub("", scrub_urls(message))
        if cut != message:
            record.msg, record.args = cut, ()
        return True


_NO_URL_SECRETS = _NoUrlSecrets()
# Libraries that log the URLs they request with their query: httpx at INFO (every request), urllib3 at DEBUG.
# A SAS in a URL-valued setting (M365_PRODUCT_NAMES_URL, M365_PRICE_SHEET) would reach the logs through them.
URL_LOGGERS = ("httpx", "urllib3.connectionpool")


def keep_secrets_out_of_library_logs() -> None:
    """Idempotent: the URL-logging libraries' loggers cut queries and user info from their lines."""
    for name in URL_LOGGERS:
        target = logging.getLogger(name)
        if _NO_URL_SECRETS not in target.filters:
            target.addFilter(_NO_URL_SECRETS)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def entries(positions: list[int]) -> str:
    """'the 2nd entry' / 'the 1st and 3rd entries': names list items without repeating them."""
    words = [_ordinal(i) for i in positions]
    text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return f"the {text} {'entry' if len(words) == 1 else 'entries'}"


def _https_origin(name: str, value: str, problems: list[Problem], *, allow_path: bool = False) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        problems.append(Problem(name, "is not a URL. Give the full https:// URL, for example "
                                      "https://login.microsoftonline.com, or unset it to use the cloud's default."))
        return None
    if parts.scheme != "https" or not parts.hostname:
        problems.append(Problem(name, "is not an https:// URL. Give the full URL, for example "
                                      "https://login.microsoftonline.com, or unset it to use the cloud's default."))
        return None
    if (parts.path not in ("", "/") and not allow_path) or parts.query or parts.fragment or parts.username:
        extra = " (a SAS token or key does not belong here: the managed identity signs in)" if parts.query else ""
        problems.append(Problem(name, f"must be a host only: scheme, host and optional port, no path, query or user "
                                      f"name{extra}. Use {shown_url(value)}."))
        return None
    return value.rstrip("/")


_CONN_KEYS = {"defaultendpointsprotocol", "accountname", "accountkey", "blobendpoint", "queueendpoint",
              "tableendpoint", "fileendpoint", "endpointsuffix", "sharedaccesssignature", "usedevelopmentstorage",
              "developmentstorageproxyuri"}


def connection_string_problem(value: str, service: str = "blob") -> str | None:
    """Why a storage connection string is unusable (without quoting any part of it), or None."""
    compact = value.replace(" ", "").rstrip(";").lower()
    if compact == "usedevelopmentstorage=true":
        return None
    pairs: dict[str, str] = {}
    for part in value.strip().strip(";").split(";"):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or key.strip().lower() not in _CONN_KEYS:
            return ("is not a storage connection string: expected Key=Value pairs separated by ';' such as "
                    "DefaultEndpointsProtocol, AccountName, AccountKey, BlobEndpoint, QueueEndpoint (or "
                    "UseDevelopmentStorage=true for Azurite).")
        pairs[key.strip().lower()] = val.strip()
    endpoint = pairs.get(f"{service}endpoint") or pairs.get("accountname")
    if not endpoint:
        return f"names no {service} endpoint: add AccountName=... or {service.capitalize()}Endpoint=https://...."
    if not (pairs.get("accountkey") or pairs.get("sharedaccesssignature")):
        return "holds neither AccountKey nor SharedAccessSignature, so nothing can sign the requests."
    return None


def _url_or_none(name: str, value: str, problems: list[Problem]) -> str | None:
    """An https:// URL (http:// only for this machine, e.g. Azurite or a test server)."""
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme == "https" and parts.hostname or parts.scheme == "http" and loopback:
        return value
    shown = f"{parts.scheme}://{parts.hostname}" if parts.scheme and parts.hostname else "the value"  # never a SAS
    problems.append(Problem(name, f"{shown} is not an https:// URL (plain http:// is accepted only for 127.0.0.1 "
                                  "or localhost)."))
    return None


class _Reader:
    """Reads the environment one concern at a time, collecting every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[Problem] = []

    def get(self, name: str) -> str:
        return (self.env.get(name) or "").strip()

    def problem(self, setting: str, message: str) -> None:
        self.problems.append(Problem(setting, message))

    def has_problem(self, setting: str) -> bool:
        return any(p.setting == setting for p in self.problems)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            self.problem(name, f"must be a whole number from {low} to {high}.")
            return default
        return value

    def identity(self) -> dict[str, object]:
        tenant = self.get("M365_TENANT_ID")
        if not tenant:
            self.problem("M365_TENANT_ID", "is required. Set it to the Directory (tenant) ID from the Entra admin "
                                           "center (Overview page) or the tenant's domain, such as "
                                           "contoso.onmicrosoft.com.")
        elif not (_is_guid(tenant) or _DOMAIN_RE.match(tenant)):
            self.problem("M365_TENANT_ID", f"is neither {GUID_HINT} nor a domain name such as "
                                           "contoso.onmicrosoft.com. Copy the Directory (tenant) ID from the Entra "
                                           "admin center.")
        client_id = self.get("M365_CLIENT_ID")
        if not client_id:
            self.problem("M365_CLIENT_ID", "is required. Set it to the Application (client) ID of the app "
                                           "registration (Entra admin center, App registrations, Overview).")
        elif not _is_guid(client_id):
            self.problem("M365_CLIENT_ID", f"is not {GUID_HINT}. Use the Application (client) ID, not the app's "
                                           "name, object ID or secret.")
        return {"tenant_id": tenant, "client_id": client_id}

    def credential(self) -> dict[str, object]:
        auth_mode = (self.get("M365_AUTH_MODE") or "secret").lower()
        if auth_mode not in AUTH_MODES:
            self.problem("M365_AUTH_MODE", "is not a sign-in mode. Use secret (client secret), certificate (a "
                                           "certificate in Key Vault) or federated (the Function's managed "
                                           "identity, no secret at all).")
        secret = self.env.get("M365_CLIENT_SECRET") or None
        key_vault_url = self.get("KEY_VAULT_URL") or None
        if key_vault_url:
            key_vault_url = _https_origin("KEY_VAULT_URL", key_vault_url, self.problems, allow_path=False)
        vault_bad = self.has_problem("KEY_VAULT_URL")
        if auth_mode == "secret" and not secret and not key_vault_url and not vault_bad:
            self.problem("KEY_VAULT_URL", "is required when M365_CLIENT_SECRET is not set. Set it to the vault that "
                                          "holds the client secret, such as https://kv-m365.vault.azure.net, or set "
                                          "M365_CLIENT_SECRET for a local run.")
        certificate_name = self.get("M365_CLIENT_CERTIFICATE_NAME") or None
        if auth_mode == "certificate":
            if not key_vault_url and not vault_bad:
                self.problem("KEY_VAULT_URL", "is required with M365_AUTH_MODE=certificate: set it to the vault that "
                                              "holds the certificate.")
            if not certificate_name:
                self.problem("M365_CLIENT_CERTIFICATE_NAME", "is required with M365_AUTH_MODE=certificate: set it to "
                                                             "the name of the certificate in Key Vault whose public "
                                                             "key is on the app registration.")
        secret_name = self.get("M365_CLIENT_SECRET_NAME") or DEFAULT_SECRET_NAME
        if not re.fullmatch(r"[0-9A-Za-z-]{1,127}", secret_name):
            self.problem("M365_CLIENT_SECRET_NAME", "is not a valid Key Vault secret name (letters, digits and '-', "
                                                    "at most 127 characters). Give the secret's name, not its "
                                                    "value.")
        if certificate_name and not re.fullmatch(r"[0-9A-Za-z-]{1,127}", certificate_name):
            self.problem("M365_CLIENT_CERTIFICATE_NAME", "is not a valid Key Vault certificate name (letters, digits "
                                                         "and '-').")
        return {"client_secret": secret, "key_vault_url": key_vault_url, "secret_name": secret_name,
                "auth_mode": auth_mode, "certificate_name": certificate_name}

    def cloud(self) -> dict[str, object]:
        cloud_name = (self.get("M365_CLOUD") or "global").lower()
        cloud = CLOUDS.get(cloud_name)
        if cloud is None:
            self.problem("M365_CLOUD", f"is not a known cloud. Use one of: {', '.join(CLOUDS)}.")
            cloud = CLOUDS["global"]
        authority = self.get("M365_AUTHORITY_HOST")
        graph = self.get("M365_GRAPH_ENDPOINT")
        authority_host = (_https_origin("M365_AUTHORITY_HOST", authority, self.problems) if authority
                          else cloud.authority_host)
        graph_endpoint = _https_origin("M365_GRAPH_ENDPOINT", graph, self.problems) if graph else cloud.graph_endpoint
        return {"cloud": cloud.name, "authority_host": authority_host or cloud.authority_host,
                "graph_endpoint": graph_endpoint or cloud.graph_endpoint, "graph_resource": cloud.graph_resource,
                "instance_discovery": not (authority or graph)}

    def scope(self) -> dict[str, object]:
        domains_raw = self.get("M365_DOMAINS") or "*"
        domains: tuple[str, ...] | None = None
        if domains_raw != "*":
            items = [d.lower().lstrip("@") for d in _list(domains_raw)]
            bad = [i for i, d in enumerate(items, 1) if not _DOMAIN_RE.match(d)]
            if bad or not items:
                what = f"{entries(bad)} {'is' if len(bad) == 1 else 'are'} not a domain name" if bad else "is empty"
                self.problem("M365_DOMAINS", f"{what}. Use '*' for every user, or domains separated by commas, such "
                                             "as contoso.com,fabrikam.com.")
            domains = tuple(dict.fromkeys(items))
        datasets_raw = self.get("M365_DATASETS") or "*"
        datasets: tuple[str, ...] | None = None
        if datasets_raw != "*":
            items = _list(datasets_raw)
            unknown = [i for i, d in enumerate(items, 1) if d not in DATASETS]
            if unknown or not items:
                what = (f"{entries(unknown)} {'is' if len(unknown) == 1 else 'are'} not a dataset name" if unknown
                        else "is empty")
                self.problem("M365_DATASETS", f"{what}. Use '*' or names from: {', '.join(DATASETS)}.")
            datasets = tuple(dict.fromkeys(items))
        report_period = (self.get("M365_REPORT_PERIOD") or "D30").upper()
        if report_period not in REPORT_PERIODS:
            self.problem("M365_REPORT_PERIOD", "is not a report period. Use D7, D30, D90 or D180 (days of usage the "
                                               "reports cover).")
            report_period = "D30"
        return {"domains": domains, "datasets": datasets, "report_period": report_period}

    def limits(self) -> dict[str, object]:
        return {"max_concurrency": self.integer("M365_MAX_CONCURRENCY", 16, 1, 64),
                "max_retries": self.integer("M365_MAX_RETRIES", 6, 0, 10),
                "run_time_limit": self.integer("M365_RUN_TIME_LIMIT", 100, 1, 1440), **self.quotas(), **self.delta()}

    def delta(self) -> dict[str, object]:
        raw = (self.get("M365_DELTA") or "on").lower()
        if raw not in ("on", "off"):
            self.problem("M365_DELTA", "is neither on nor off. Use on (read only the changes since the last run "
                                       "where Graph tracks them) or off (every run reads everything).")
        return {"delta": raw != "off", "reconcile_days": self.integer("M365_RECONCILE_DAYS", 7, 1, 365)}

    def quotas(self) -> dict[str, object]:
        overrides: dict[str, tuple[float, float]] = {}
        scale = 1.0
        try:
            overrides = parse_overrides(self.get("M365_GRAPH_QUOTAS"))
        except QuotaError as exc:
            self.problem("M365_GRAPH_QUOTAS", str(exc).removeprefix("M365_GRAPH_QUOTAS").lstrip(": "))
        try:
            scale = parse_scale(self.get("M365_GRAPH_QUOTA_SCALE") or "1")
        except QuotaError as exc:
            self.problem("M365_GRAPH_QUOTA_SCALE", str(exc).removeprefix("M365_GRAPH_QUOTA_SCALE").lstrip(": "))
        return {"quota_overrides": tuple((name, *pair) for name, pair in overrides.items()), "quota_scale": scale}

    def destination(self) -> dict[str, object]:
        container = self.get("SNAPSHOT_CONTAINER") or DEFAULT_CONTAINER
        if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", container):
            self.problem("SNAPSHOT_CONTAINER", "is not a valid Blob container name (3-63 lower-case letters, digits "
                                               "and single hyphens).")
        account_url = self.get("SNAPSHOT_ACCOUNT_URL") or None
        if account_url:
            account_url = _https_origin("SNAPSHOT_ACCOUNT_URL", account_url, self.problems)
        connection_string = self.env.get("SNAPSHOT_CONNECTION_STRING") or None
        if connection_string:
            problem = connection_string_problem(connection_string)
            if problem:
                self.problem("SNAPSHOT_CONNECTION_STRING", problem)
        return {"snapshot_dir": self.get("SNAPSHOT_DIR") or None, "snapshot_container": container,
                "snapshot_account_url": account_url, "snapshot_connection_string": connection_string}


    def insights(self) -> dict[str, object]:
        """Licence insights: inactivity threshold, optional price sheet, where product names are refreshed from."""
        inactive_days = self.integer("M365_INACTIVE_DAYS", DEFAULT_INACTIVE_DAYS, 1, 3650)
        price_sheet = self.get("M365_PRICE_SHEET") or None
        if price_sheet and urlsplit(price_sheet).scheme in ("http", "https"):
            price_sheet = _url_or_none("M365_PRICE_SHEET", price_sheet, self.problems)
        elif price_sheet and not os.path.isfile(price_sheet):
            # Never the value: it may be a secret or a SAS pasted without its https:// (item 2 of issue 22).
            self.problem("M365_PRICE_SHEET", "is neither a file this process can read nor an https:// blob URL. "
                                             "Give the path of a CSV with the columns skuPartNumber,monthlyPrice,"
                                             "currency, or its blob URL (https://<account>.blob.core.windows.net/"
                                             "<container>/<name>.csv, with a SAS or read by the managed identity).")
            price_sheet = None
        names_raw = self.get("M365_PRODUCT_NAMES_URL")
        names_url: str | None = PRODUCT_NAMES_URL
        if names_raw.lower() in ("none", "off"):
            names_url = None
        elif names_raw:
            names_url = _url_or_none("M365_PRODUCT_NAMES_URL", names_raw, self.problems)
        exclude = tuple(x.strip() for x in self.get("M365_INSIGHTS_EXCLUDE").split(",") if x.strip())
        bad = [x for x in exclude if x.split(":", 1)[0].lower() not in ("sku", "user", "group") or not
               x.split(":", 1)[-1].strip() or ":" not in x]
        if bad:
            self.problem("M365_INSIGHTS_EXCLUDE", f"{', '.join(bad)}: each entry is sku:<part number or id>, "
                                                  "user:<userPrincipalName or id> or group:<id or display name>, "
                                                  "separated by commas (e.g. sku:FLOW_FREE,user:admin@contoso.com).")
            exclude = ()
        return {"inactive_days": inactive_days, "price_sheet": price_sheet, "product_names_url": names_url,
                "insights_exclude": exclude}


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read and validate every setting; raise ConfigError listing all problems at once."""
    reader = _Reader(os.environ if env is None else env)
    values: dict[str, object] = {}
    for part in (reader.identity, reader.credential, reader.cloud, reader.scope, reader.limits, reader.destination,
                 reader.insights):
        values.update(part())
    if reader.problems:
        raise ConfigError(reader.problems)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def load_offline_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings for commands that only read snapshots (no Graph): the destination and the insights settings;
    the tenant is optional (a GUID picks the tenant's folder)."""
    reader = _Reader(os.environ if env is None else env)
    values: dict[str, object] = {"tenant_id": reader.get("M365_TENANT_ID"), "client_id": ""}
    for part in (reader.destination, reader.insights):
        values.update(part())
    if reader.problems:
        raise ConfigError(reader.problems)
    return Settings(**values)  # type: ignore[arg-type]


def require_destination(settings: Settings) -> None:
    """A run needs somewhere to write; checked only by commands that write snapshots."""
    if not (settings.snapshot_dir or settings.snapshot_account_url or settings.snapshot_connection_string):
        raise ConfigError([Problem("SNAPSHOT_DIR", "no snapshot destination is set. Set SNAPSHOT_DIR to a local "
                                                   "folder, SNAPSHOT_ACCOUNT_URL to a storage account's blob "
                                                   "endpoint (managed identity), or SNAPSHOT_CONNECTION_STRING "
                                                   "(Azurite), or pass --out DIR.")])
