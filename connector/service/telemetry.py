"""Logging for the Function app: one named logger, a readable run summary, optional Application Insights.

The engine logs one summary per run with its facts in `extra={"m365": {...}}`. The Functions host
forwards only the message text of Python log records to Application Insights, and OpenTelemetry
drops nested dicts, so the summary filter adds the facts to the message and as flat attributes.
Nothing here does I/O at import; Application Insights is configured on first use, and only when
APPLICATIONINSIGHTS_CONNECTION_STRING is set.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import orjson

from connector.config import keep_secrets_out_of_library_logs

LOGGER_NAME = "m365_connector"
log = logging.getLogger(LOGGER_NAME)

_lock = threading.Lock()
_installed = False
_configured = False


class SummaryFilter(logging.Filter):
    """Makes the engine's `collection_finished` record readable without the nested `m365` dict."""

    def filter(self, record: logging.LogRecord) -> bool:
        facts = getattr(record, "m365", None)
        if not isinstance(facts, dict) or getattr(record, "_m365_flattened", False):
            return True
        record._m365_flattened = True
        datasets = facts.get("datasets") or {}
        record.event = facts.get("event")
        record.run_id = facts.get("runId")
        record.tenant_id = facts.get("tenantId")
        record.trigger = facts.get("trigger")
        record.status = facts.get("status")
        record.seconds = facts.get("seconds")
        record.datasets = orjson.dumps(datasets).decode()
        record.records = sum(int(d.get("records") or 0) for d in datasets.values())
        if not record.args:
            per = ", ".join(f"{n}={d.get('status')}/{d.get('records')} records/{d.get('seconds')}s"
                            + (f"/{d['requests']} requests/{d.get('throttled')} throttled" if "requests" in d else "")
                            for n, d in datasets.items())
            record.msg = (f"{record.msg}: run {record.run_id} trigger={record.trigger} status={record.status} "
                          f"seconds={record.seconds} datasets: {per}")
        return True


def install() -> None:
    """Idempotent and free of I/O: safe to call at import of function_app."""
    global _installed
    with _lock:
        if _installed:
            return
        log.addFilter(SummaryFilter())
        keep_secrets_out_of_library_logs()  # a SAS in a URL-valued setting never reaches a log line
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
        _installed = True


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def configure(env: Mapping[str, str] | None = None) -> str:
    """Turn on Application Insights export of the connector's logger once per process.

    Returns what happened: "off" (no connection string), "worker" (the Functions worker exports,
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true; configuring again would double every record),
    "missing-package", "on", or "failed".
    """
    global _configured
    env = os.environ if env is None else env
    install()
    with _lock:
        if _configured:
            return "on"
        if not env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            return "off"
        if _truthy(env.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY")):
            return "worker"
        try:
            from azure.monitor.opentelemetry import configure_azure_monitor
        except ImportError:
            log.warning("APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry is not "
                        "installed: add it to requirements.txt to export the connector's logs with their "
                        "dimensions (the Functions host still forwards plain log text).")
            _configured = True
            return "missing-package"
        try:
            configure_azure_monitor(logger_name=LOGGER_NAME,
                                    connection_string=env["APPLICATIONINSIGHTS_CONNECTION_STRING"])
        except Exception as exc:  # telemetry must never stop a collection
            log.warning("Application Insights could not be configured: %s", type(exc).__name__)
            return "failed"
        _configured = True
        return "on"


def event(message: str, **facts: Any) -> None:
    """An info record whose facts are both in the text (host path) and attributes (OpenTelemetry)."""
    text = " ".join(f"{k}={v}" for k, v in facts.items() if v is not None)
    log.info("%s %s", message, text, extra={k: v for k, v in facts.items() if v is not None})
