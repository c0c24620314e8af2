"""One collection per tenant at a time: a lease on `tenants/<tenant>/run.lock`, held while collecting.

The Function's queue worker and the CLI both take it, so a run-now, the timer, a duplicate queue
delivery, a scaled-out instance and a command-line run into the same destination never collect in
parallel. The holder (run id, host, process) is written with the lease, so anyone can tell a live
run from one whose worker died: a Blob lease not renewed expires within LEASE_SECONDS, a file lock
(local folder) is released by the OS when the process dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from connector.store.contract import Store
from connector.store.status import now_iso

log = logging.getLogger("m365_connector")

LEASE_SECONDS = 60
RENEW_SECONDS = 20


class TenantBusy(Exception):
    """Another collection holds the tenant's lock; the queue delivers the message again later."""

    def __init__(self, message: str, holder: dict[str, str] | None = None):
        super().__init__(message)
        self.holder = holder or {}


def lock_path(key: str) -> str:
    return f"tenants/{key}/run.lock"


def holder_info(run_id: str, trigger: str) -> dict[str, str]:
    """Who holds the lock; lower-case keys (Blob metadata names are case-insensitive)."""
    return {"runid": run_id, "trigger": trigger, "host": socket.gethostname()[:100], "pid": str(os.getpid()),
            "since": now_iso()}


class TenantLock:
    """A lease on `tenants/<tenant>/run.lock`: held while collecting, renewed, and expiring if the holder dies."""

    def __init__(self, store: Store, key: str, seconds: int = LEASE_SECONDS):
        self.store = store
        self.path = lock_path(key)
        self.seconds = seconds
        self.holder: dict[str, str] = {}
        self._lease: Any = None
        self._also: dict[str, Any] = {}  # lock path -> lease: the same tenant under its id (claim())

    def acquire(self, run_id: str = "", trigger: str = "") -> bool:
        self.holder = holder_info(run_id, trigger) if run_id else {}
        self._lease = self.store.lease(self.path, self.seconds, self.holder)
        return self._lease is not None

    def claim(self, tenant_id: str) -> str:
        """Hold the tenant's lock under its id too, once a token names it (`tid`): M365_TENANT_ID may spell the
        tenant as a domain in one process and as its GUID in another, and the data of both goes under the GUID.
        Returns the path of that lock; raises TenantBusy when another process holds it."""
        key = tenant_id.strip().lower()
        path = lock_path(key)
        if path == self.path or path in self._also:
            return path
        lease = self.store.lease(path, self.seconds, self.holder)
        if lease is None:
            holder = live_holder(self.store, key)
            raise TenantBusy(busy_message(key, holder), holder)
        self._also[path] = lease
        return path

    def renew(self) -> None:
        for lease in (self._lease, *self._also.values()):
            if lease is not None:
                lease.renew()

    def release(self) -> None:
        for lease in (*self._also.values(), self._lease):
            if lease is not None:
                try:
                    lease.release()
                except Exception:
                    log.warning("could not release the tenant lock; it expires within %d s", self.seconds)
        self._also.clear()
        self._lease = None


def live_holder(store: Store, key: str) -> dict[str, str] | None:
    """The holder of the tenant's lock while somebody holds it, else None."""
    return store.lease_holder(lock_path(key))


def is_collecting(store: Store, key: str, run_id: str) -> bool:
    """True while a live lease on the tenant's lock names this run."""
    holder = live_holder(store, key)
    return holder is not None and holder.get("runid") == run_id


class Renewer(threading.Thread):
    """Renews the lease and beats a heartbeat; cancels the collection if the lease is lost."""

    def __init__(self, lock: TenantLock, heartbeat: Callable[[], None] | None, interval: float):
        super().__init__(name="m365-lease-renewer", daemon=True)
        self.lock, self.heartbeat, self.interval = lock, heartbeat, interval
        self.stop = threading.Event()
        self.lost = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Future[Any] | None = None

    def watch(self, task: asyncio.Future[Any]) -> None:
        """Start renewing; `task` is cancelled if the lease cannot be kept."""
        self.loop, self.task = asyncio.get_running_loop(), task
        self.start()

    def run(self) -> None:
        failures = 0
        while not self.stop.wait(self.interval):
            try:
                self.lock.renew()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("renewing the tenant lock failed (%s)", type(exc).__name__)
                if failures >= 2:
                    self.lost = True
                    if self.loop is not None and self.task is not None:
                        self.loop.call_soon_threadsafe(self.task.cancel)
                    return
                continue
            if self.heartbeat is not None:
                try:
                    self.heartbeat()
                except Exception as exc:
                    log.warning("writing the status heartbeat failed (%s)", type(exc).__name__)

    def finish(self) -> None:
        self.stop.set()
        if self.is_alive():
            self.join(timeout=30)  # no heartbeat may land after the final record


def busy_message(key: str, holder: dict[str, str] | None) -> str:
    who = ""
    if holder:
        who = (f" by run {holder.get('runid') or '?'} ({holder.get('trigger') or '?'}, host "
               f"{holder.get('host') or '?'}, process {holder.get('pid') or '?'}, since {holder.get('since') or '?'})")
    return (f"another collection of tenant {key} is running into this destination{who}; {lock_path(key)} is "
            "locked. Wait for it to finish (a lock of a process that died is freed within a minute).")


@contextmanager
def tenant_lock(store: Store, key: str, run_id: str, trigger: str,
                seconds: int = LEASE_SECONDS, renew_seconds: float = RENEW_SECONDS) -> Iterator[Renewer]:
    """Hold the tenant's lock for a block (the CLI): raises TenantBusy when it is taken. The yielded
    renewer must be given the collection's task with watch() so a lost lease stops the collection."""
    lock = TenantLock(store, key, seconds)
    if not lock.acquire(run_id, trigger):
        holder = live_holder(store, key)
        raise TenantBusy(busy_message(key, holder), holder)
    renewer = Renewer(lock, None, renew_seconds)
    try:
        yield renewer
    finally:
        renewer.finish()
        lock.release()
