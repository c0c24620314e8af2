"""The `m365-runs` Storage queue: sending run requests and reading them back, trusting nothing.

Anyone who can write to the queue can put a message there, so a message is only a pointer: the
worker checks its shape strictly (run id by fullmatch on ASCII digits, tenant shaped like a tenant,
datasets a short list of names) and then believes the status record in its own storage, not the
message. Queue calls give up within seconds when Storage is unreachable, so an HTTP caller is
answered instead of waiting for the SDK's default retry (about 86 s).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from connector.config import ConfigError
from connector.service.appconfig import STORAGE_CONNECTION, queue_endpoint, queue_problem
from connector.store.status import valid_run_id

RUNS_QUEUE = "m365-runs"
POISON_QUEUE = f"{RUNS_QUEUE}-poison"
MAX_MESSAGE = 64 * 1024  # Storage queue messages are at most 64 KiB
TRIGGERS = frozenset({"http", "timer"})
_TENANT_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")  # a GUID or a domain, lower case

# Azurite's documented development account, for "UseDevelopmentStorage=true" (public, not a secret).
_DEV_STORAGE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;")


@dataclass(frozen=True)
class RunMessage:
    run_id: str
    tenant: str
    trigger: str
    datasets: tuple[str, ...] | None
    requested_at: str | None


class BadMessage(ValueError):
    """Why a message was refused; never quotes the message."""


def parse_message(body: str | bytes) -> RunMessage:
    """A queue message's fields, or BadMessage saying which check failed."""
    if len(body) > MAX_MESSAGE:
        raise BadMessage("larger than a queue message can be")
    try:
        msg = orjson.loads(body)
    except ValueError:
        raise BadMessage("not JSON") from None
    if not isinstance(msg, dict):
        raise BadMessage("not a JSON object")
    if msg.get("v", 1) != 1:
        raise BadMessage("an unknown message version")
    if not valid_run_id(msg.get("runId")):
        raise BadMessage("runId is not a run id (such as 20261122T020000Z-3f9a1c)")
    tenant = msg.get("tenant")
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise BadMessage("tenant is not a tenant id or domain in lower case")
    datasets = msg.get("datasets")
    if datasets is not None:
        if (not isinstance(datasets, list) or not datasets or len(datasets) > 200
                or not all(isinstance(d, str) and re.fullmatch(r"[a-z0-9_]{1,64}", d) for d in datasets)):
            raise BadMessage("datasets is not a list of dataset names")
        datasets = tuple(dict.fromkeys(datasets))
    trigger = msg.get("trigger")
    requested_at = msg.get("requestedAt")
    return RunMessage(msg["runId"], tenant, trigger if trigger in TRIGGERS else "queue", datasets,
                      requested_at if isinstance(requested_at, str) and len(requested_at) <= 40 else None)


def encode_message(run_id: str, tenant: str, trigger: str, datasets: list[str] | None, requested_at: str) -> str:
    return orjson.dumps({"v": 1, "runId": run_id, "tenant": tenant, "trigger": trigger,
                         "datasets": datasets or None, "requestedAt": requested_at}).decode()


def queue_client(env: Mapping[str, str] | None = None, queue: str = RUNS_QUEUE) -> Any:
    """A QueueClient on the AzureWebJobsStorage connection, encoding messages as the trigger expects.

    The queue trigger decodes Base64 by default (host.json extensions.queues.messageEncoding), so
    messages are sent with TextBase64EncodePolicy. Retries are few and short: this client serves
    HTTP requests, and a caller must hear within seconds that the queue cannot be reached.
    """
    from azure.storage.queue import ExponentialRetry, QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    env = os.environ if env is None else env
    options: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(), "message_decode_policy": TextBase64DecodePolicy(),
        "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=1, random_jitter_range=0.5),
        "connection_timeout": 3, "read_timeout": 10,
    }
    conn = (env.get(STORAGE_CONNECTION) or "").strip()
    if conn:
        if conn.replace(" ", "").lower() == "usedevelopmentstorage=true":
            conn = _DEV_STORAGE
        return QueueClient.from_connection_string(conn, queue, **options)
    endpoint = queue_endpoint(env)
    if not endpoint:
        raise ConfigError([queue_problem()])
    credential_kind = (env.get("AzureWebJobsStorage__credential") or "").strip().lower()
    client_id = (env.get("AzureWebJobsStorage__clientId") or "").strip() or None
    if credential_kind == "managedidentity":
        from azure.identity import ManagedIdentityCredential

        credential: Any = ManagedIdentityCredential(client_id=client_id)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=client_id)
    return QueueClient(endpoint, queue, credential=credential, **options)


def send_message(env: Mapping[str, str], body: str, delay: int = 0) -> None:
    """Send a run message; `delay` seconds before it becomes visible (a tenant's slot after the schedule's tick)."""
    from azure.core.exceptions import ResourceNotFoundError

    visible = {"visibility_timeout": delay} if delay > 0 else {}
    with queue_client(env) as client:
        try:
            client.send_message(body, **visible)
        except ResourceNotFoundError:  # first run on a fresh account: the host may not have created it yet
            try:
                client.create_queue()
            except Exception:
                pass
            client.send_message(body, **visible)
