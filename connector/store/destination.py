"""Which snapshot store a run writes to: a local folder (SNAPSHOT_DIR) or a Blob container."""

from __future__ import annotations

from connector.config import Settings
from connector.store.blob import BlobStore
from connector.store.contract import Store
from connector.store.local import LocalStore


def open_store(settings: Settings, *, interactive: bool = False) -> Store:
    if settings.snapshot_dir:
        return LocalStore(settings.snapshot_dir)
    return BlobStore(settings.snapshot_container, account_url=settings.snapshot_account_url,
                     connection_string=settings.snapshot_connection_string, interactive=interactive)
