"""Application Insights export: configured on first use, with the run's facts as attributes."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_configure_exports_the_connector_logger_with_its_facts():
    """In a separate process (OpenTelemetry's providers are global); the ingestion endpoint refuses
    connections, so nothing leaves the machine."""
    code = (
        "import logging, sys\n"
        "from connector.service import telemetry\n"
        "env = {'APPLICATIONINSIGHTS_CONNECTION_STRING': 'InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=http://127.0.0.1:9/'}\n"
        "print(telemetry.configure(env)); print(telemetry.configure(env))\n"
        "log = logging.getLogger('m365_connector')\n"
        "handlers = [h for h in log.handlers if type(h).__name__ == 'LoggingHandler']\n"
        "print(len(handlers))\n"
        "seen = []\n"
        "handlers[0].emit = lambda record: seen.append(record)\n"
        "log.info('collection finished', extra={'m365': {'event': 'collection_finished', 'runId': 'r1', "
        "'status': 'partial', 'seconds': 1.5, 'datasets': {'users': {'status': 'succeeded', 'records': 3}}}})\n"
        "r = seen[0]; print(r.run_id, r.status, r.records, r.datasets)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["on", "on", "1"], proc.stdout + proc.stderr  # once per process, one exporter
    assert lines[3].startswith("r1 partial 3 ") and '"users"' in lines[3]
