"""Shared fixtures: a real Azurite (Blob + Queue) and the local Graph/Entra/Key Vault simulator."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The suite meets Graph's documented quotas a hundred times faster: the simulator divides every quota window
# by this (GET signInActivity 10 per 0.6 s, identity and access reports 5 per 0.1 s) and hands the collector
# the same M365_GRAPH_QUOTA_SCALE in its env(), so both pace alike. Tests of the quotas set their own scale.
os.environ.setdefault("SIMULATOR_QUOTA_SCALE", "100")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Azurite's documented development account (public, fixed; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _azurite_binary() -> str:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if not found:
        pytest.fail("Azurite is not installed: run scripts/test (it installs Azurite into .tools) or "
                    "`npm install -g azurite`.")
    return found


class Azurite:
    def __init__(self) -> None:
        self.blob_port, self.queue_port, self.table_port = _free_port(), _free_port(), _free_port()
        self.proc = subprocess.Popen(
            [_azurite_binary(), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry",
             "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
             "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
             "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        for port in (self.blob_port, self.queue_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"Azurite exited: {self.proc.stderr.read().decode()[:500]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("Azurite did not start within 30 s") from None
                    time.sleep(0.1)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{AZURITE_ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{AZURITE_ACCOUNT};"
                f"TableEndpoint=http://127.0.0.1:{self.table_port}/{AZURITE_ACCOUNT};")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = Azurite()
    yield server
    server.stop()


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Point the process at a simulator: clear connector settings, then set the given ones."""
    for key in list(os.environ):
        if key.startswith(("M365_", "SNAPSHOT_", "KEY_VAULT", "IDENTITY_", "AZURE_")):
            monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def apply_function_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], connection_string: str) -> None:
    """Point the process at a simulator as the Function app: its own settings cleared, the given ones set,
    and the run queues (on Azurite) there and empty."""
    from azure.storage.queue import QueueClient

    from connector.service import runs

    for name in runs.FUNCTION_SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    apply_env(monkeypatch, env)
    for q in (runs.RUNS_QUEUE, runs.POISON_QUEUE):
        client = QueueClient.from_connection_string(connection_string, q)
        try:
            client.create_queue()
        except Exception:
            client.clear_messages()


@pytest.fixture(scope="session")
def indexed():
    """The Function app's index (name -> function). app.get_functions() is not idempotent: once per process."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}
