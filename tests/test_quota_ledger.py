"""The app-wide quota ledger: several processes on one ledger (Azure Table rows in Azurite, or files in a
local folder) never put more than an app-wide limit in any window; ETag conflicts are retried; the least
work left goes first; a malformed row or an unreachable ledger says which row or setting."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from connector.catalog.quotas import DEFAULTS, Quota, app_buckets
from connector.graph.ledger import AppBudget, Ledger, LedgerError, MemoryRows, spans
from connector.store.contract import DestinationError
from connector.store.quota_rows import FileRows, TableRows, table_endpoint


def _quota(limit: float, window: float, name: str = "app_sign_in_activity") -> Quota:
    return replace(DEFAULTS[name], limit=limit, window=window)


def _rows(kind: str, where: str) -> Any:
    return TableRows(connection_string=where) if kind == "table" else FileRows(where)


def _draw(kind: str, where: str, app: str, quota: Quota, consumer: str, seconds: float, out: Any) -> None:
    """One process: its own ledger client and budget, drawing one unit per request for `seconds`."""
    budget = AppBudget(Ledger(_rows(kind, where), app), {quota.name: quota})
    sent: list[float] = []

    async def main() -> None:
        end = time.time() + seconds
        while time.time() < end:
            grant = await budget.take([(quota.name, "", 1.0)], consumer)
            assert grant.live()
            sent.append(time.time())

    asyncio.run(main())
    out.put((consumer, sent, budget.ledger.conflicts, budget.ledger.round_trips))


def _run_processes(kind: str, where: str, app: str, quota: Quota, processes: int, seconds: float) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: nothing shared but the ledger
    out = ctx.Queue()
    procs = [ctx.Process(target=_draw, args=(kind, where, app, quota, f"tenant-{i}", seconds, out))
             for i in range(processes)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    return results


def _most_in_any_window(stamps: list[float], window: float) -> int:
    from bench.quota_ledger import most_in_window  # the benchmark's own count, so both read windows alike

    return most_in_window(sorted(stamps), window)


@pytest.mark.parametrize("kind", ["table", "file"])
def test_processes_never_exceed_the_app_wide_limit(kind: str, azurite: Any, tmp_path: Any) -> None:
    quota = _quota(limit=6, window=0.6)
    where = azurite.connection_string if kind == "table" else str(tmp_path)
    seconds = 4.0
    results = _run_processes(kind, where, f"app-{kind}-{time.time_ns()}", quota, processes=4, seconds=seconds)
    stamps = [t for _, sent, _, _ in results for t in sent]
    # Every request is counted at the moment it was allowed to go: no window of the quota holds more.
    assert _most_in_any_window(stamps, quota.window) <= quota.limit
    assert len({consumer for consumer, sent, _, _ in results if sent}) == 4  # every process had its share
    # And the budget renews: more than one window's worth went out (a ledger whose leases never expire would
    # stop at one). How close the processes come to the limit is a figure of bench/quota_ledger.py, not of a
    # unit test: under CI load each Table round trip may take longer than the window itself.
    assert len(stamps) > quota.limit, len(stamps)


def test_etag_conflicts_are_retried(azurite: Any) -> None:
    quota = _quota(limit=100, window=10.0, name="app_any")
    app = f"app-conflict-{time.time_ns()}"
    rival = Ledger(TableRows(connection_string=azurite.connection_string), app)
    assert not isinstance(rival.lease(quota, 5, "tenant-b", 1), float)

    class Interleaved(TableRows):
        """Between this process's read and its write, another process writes the row (a real ETag change)."""

        raced = False

        def write(self, key: str, row: dict[str, Any], version: Any) -> bool:
            if not self.raced:
                self.raced = True
                assert not isinstance(rival.lease(quota, 5, "tenant-b", 1), float)
            return super().write(key, row, version)

    ledger = Ledger(Interleaved(connection_string=azurite.connection_string), app)
    lease = ledger.lease(quota, 5, "tenant-a", 1)
    assert not isinstance(lease, float) and lease.units == 5
    assert ledger.conflicts == 1  # the first write was refused (412), read again and written
    raw, _ = TableRows(connection_string=azurite.connection_string).read(f"{app}/app_any")
    assert raw is not None and raw["leases"].count("tenant-") == 3  # none of the three leases lost


def test_a_stale_etag_is_refused_by_the_table(azurite: Any) -> None:
    rows = TableRows(connection_string=azurite.connection_string)
    key = f"app-etag-{time.time_ns()}/app_any"
    assert rows.write(key, {"v": 1, "leases": [], "waiting": {}}, None)
    assert not rows.write(key, {"v": 1, "leases": [], "waiting": {}}, None)  # created meanwhile
    _, first = rows.read(key)
    assert rows.write(key, {"v": 1, "leases": [[1.0, 2.0, 1, "x"]], "waiting": {}}, first)
    assert not rows.write(key, {"v": 1, "leases": [], "waiting": {}}, first)  # the ETag moved on


def test_the_least_work_left_goes_first() -> None:
    """A big consumer (1,000 pages) and eight small ones (8 pages each) on a bucket of 4 per window: the small
    ones finish while the big one gets almost nothing; round-robin would give it about 8 of the 64."""
    quota = _quota(limit=4, window=0.25)
    rows = MemoryRows()
    budget = AppBudget(Ledger(rows, "app-fair"), {quota.name: quota})
    small = [f"small-{i}" for i in range(8)]
    budget.set_demand("big", {quota.name: 1000})
    for name in small:
        budget.set_demand(name, {quota.name: 8})
    sent: dict[str, list[float]] = {name: [] for name in [*small, "big"]}
    stop = threading.Event()

    def consumer(name: str, pages: int) -> None:
        async def main() -> None:
            for _ in range(pages):
                if stop.is_set():
                    return
                await budget.take([(quota.name, "", 1.0)], name)
                sent[name].append(time.time())
        asyncio.run(main())

    threads = [threading.Thread(target=consumer, args=(name, 8)) for name in small]
    threads.append(threading.Thread(target=consumer, args=("big", 1000)))
    for thread in threads:
        thread.start()
    for thread in threads[:-1]:
        thread.join(60)
    stop.set()
    threads[-1].join(30)
    last_small = max(sent[name][-1] for name in small)
    assert all(len(sent[name]) == 8 for name in small)
    big_before = sum(1 for t in sent["big"] if t < last_small)
    # Round-robin would give it about 8. A lease a small one asks for too late is passed over to whoever asks
    # (by design: the budget is never left idle), which on a loaded machine gave the big one 3 once.
    assert big_before <= 4, (big_before, len(sent["big"]))
    assert last_small - min(t for s in sent.values() for t in s) < 3 * 64 / quota.limit * spans(quota)[0]
    assert _most_in_any_window([t for s in sent.values() for t in s], quota.window) <= quota.limit


def test_a_spent_lease_counts_from_its_last_request_not_its_hold() -> None:
    """The sign-in chain spends each lease at once: the ledger then counts it from that request, so the next
    window's lease is not held back by the rest of the hold (and never comes sooner than a window after it)."""
    quota = _quota(limit=1, window=60.0)  # Graph's own window: a hold of 0.6 s
    span, hold = spans(quota)
    budget = AppBudget(Ledger(MemoryRows(), "app-spent"), {quota.name: quota})

    async def one_request() -> tuple[float, float]:
        grant = await budget.take([(quota.name, "", 1.0)], "tenant")
        sent = time.time()
        budget.spent(grant, "tenant")
        return sent, grant.next_window()[quota.name]

    sent, next_window = asyncio.run(one_request())
    assert sent + span - hold - 0.01 <= next_window <= sent + span - hold + 0.01  # not the lease's start + span
    deadline = time.time() + 5
    while time.time() < deadline:  # the ledger's row is shortened in a write nobody waits for
        row, _ = budget.ledger.rows.read(budget.ledger.key(quota.name))
        if row["leases"][0][1] < row["leases"][0][0] + hold:
            break
        time.sleep(0.01)
    lease = row["leases"][0]
    assert sent <= lease[1] < lease[0] + hold
    # Another process asking now is told to come back a window after that request (less its look-ahead).
    again = budget.ledger.lease(quota, 1.0, "other", 1.0)
    assert isinstance(again, float)
    assert again >= lease[1] + span - hold - 0.05 * quota.window - 0.002
    assert again < lease[0] + span - 0.05 * quota.window - 0.1


def test_a_lease_that_ended_unused_no_longer_counts() -> None:
    """A request that took a lease and then went back to wait (its tenant's buckets filled meanwhile), or woke
    after the hold: nothing was sent under the lease, so the ledger drops it and the next request need not wait
    a window (at 10 a minute that was one sign-in page of a window lost each time)."""
    quota = _quota(limit=1, window=60.0)  # one request a minute: a counted lease blocks the next for a minute
    span, hold = spans(quota)
    budget = AppBudget(Ledger(MemoryRows(), "app-unused"), {quota.name: quota})

    async def take_then_give_back_then_take() -> float:
        grant = await budget.take([(quota.name, "", 1.0)], "tenant")
        budget.give_back(grant)  # not sent
        await asyncio.sleep(max(0.0, grant.taken[0][1].end - time.time()) + 0.01)  # its hold is over
        started = time.time()
        await asyncio.wait_for(budget.take([(quota.name, "", 1.0)], "tenant"), timeout=10)
        return time.time() - started

    assert asyncio.run(take_then_give_back_then_take()) < 0.05 * quota.window + 1.0  # not a minute
    assert budget.released == 1
    row, _ = budget.ledger.rows.read(budget.ledger.key(quota.name))
    assert len(row["leases"]) == 1  # the second lease only
    # A lease something was sent under stays counted: the next one waits a window after it.
    sent = budget.ledger.lease(quota, 1.0, "other", 1.0)
    assert isinstance(sent, float) and sent > time.time() + span - hold - 0.05 * quota.window - 1.0


def test_a_malformed_row_is_refused_naming_it(azurite: Any) -> None:
    rows = TableRows(connection_string=azurite.connection_string)
    rows._ensure()  # the table, which another test may or may not have created first on this Azurite
    app = f"app-bad-{time.time_ns()}"
    quota = _quota(limit=10, window=60.0)
    rows.table.create_entity({"PartitionKey": app, "RowKey": "app_sign_in_activity", "v": 1,
                              "leases": "[[1, 2, 3]]", "waiting": "{}"})
    with pytest.raises(LedgerError, match=r"RowKey app_sign_in_activity.*field leases"):
        Ledger(rows, app).lease(quota, 1, "tenant", 1)
    rows.table.upsert_entity({"PartitionKey": app, "RowKey": "app_sign_in_activity", "v": 7,
                              "leases": "[]", "waiting": "{}"})
    with pytest.raises(LedgerError, match=r"field v is 7"):
        Ledger(rows, app).lease(quota, 1, "tenant", 1)


def test_a_malformed_file_row_is_refused_naming_it(tmp_path: Any) -> None:
    rows = FileRows(str(tmp_path))
    (tmp_path / "app_app_sign_in_activity.json").write_text('{"v": 1, "leases": [], "waiting": 3}')
    with pytest.raises(LedgerError, match=r"app_app_sign_in_activity.json: field waiting"):
        Ledger(rows, "app").lease(_quota(10, 60.0), 1, "tenant", 1)
    (tmp_path / "app_app_sign_in_activity.json").write_text("{not json")
    with pytest.raises(LedgerError, match=r"app_app_sign_in_activity.json: field v is 'not JSON'"):
        Ledger(rows, "app").lease(_quota(10, 60.0), 1, "tenant", 1)


def test_an_unwritable_local_ledger_names_the_folder(tmp_path: Any) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DestinationError, match="quota ledger's folder .*file/ledger cannot be written"):
        Ledger(FileRows(str(tmp_path / "file" / "ledger")), "app").lease(_quota(10, 60.0), 1, "tenant", 1)


def test_an_unreachable_ledger_names_the_setting() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
             f"{'a' * 86}==;TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    with pytest.raises(DestinationError) as caught:
        Ledger(TableRows(connection_string=where), "app").lease(_quota(10, 60.0), 1, "tenant", 1)
    assert caught.value.setting == "SNAPSHOT_CONNECTION_STRING"
    assert "quota ledger" in str(caught.value) and "a" * 20 not in str(caught.value)  # never the key


def test_a_blob_only_connection_string_counts_in_the_process(tmp_path: Any) -> None:
    from types import SimpleNamespace

    from connector.store.quota_rows import quota_rows

    def settings(**kw: Any) -> Any:
        return SimpleNamespace(**{"snapshot_dir": None, "snapshot_account_url": None,
                                  "snapshot_connection_string": None, **kw})

    sas_only = "BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=x&sig=y"
    assert quota_rows(settings(snapshot_connection_string=sas_only)) is None
    keyed = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={'a' * 86}==;EndpointSuffix=core.windows.net"
    assert isinstance(quota_rows(settings(snapshot_connection_string=keyed)), TableRows)
    assert isinstance(quota_rows(settings(snapshot_dir=str(tmp_path))), FileRows)
    assert quota_rows(settings(snapshot_account_url="https://proxy.example.com")) is None


def test_table_endpoint_follows_the_blob_account() -> None:
    assert table_endpoint("https://acct.blob.core.windows.net") == "https://acct.table.core.windows.net"
    assert table_endpoint("https://acct.blob.core.usgovcloudapi.net/") == "https://acct.table.core.usgovcloudapi.net"


def test_app_wide_buckets_of_a_request() -> None:
    assert sorted(app_buckets([("identity", "", 1), ("sign_in_activity", "", 1), ("identity_reports", "", 1)])) == [
        ("app_any", "", 1.0), ("app_identity", "", 1.0), ("app_identity_reports", "", 1.0),
        ("app_sign_in_activity", "", 1.0)]
    assert app_buckets([("identity", "", 2)] * 20, requests=20) == [("app_identity", "", 40.0), ("app_any", "", 20.0)]
    for name in ("app_any", "app_identity", "app_identity_reports", "app_sign_in_activity"):
        assert DEFAULTS[name].scope == "app" and DEFAULTS[name].source


def test_the_simulator_counts_an_app_across_tenants(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tenants' Graph services sharing one app: the eleventh sign-in page of the minute is refused, though
    neither tenant reached its own 10."""
    from simulator.app_quotas import AppLimits
    from simulator.graph.limits import Limits
    from simulator.graph.protocol import GraphError
    from simulator.state import SimulatorState
    from simulator.tenant import TenantSpec

    monkeypatch.setenv("SIMULATOR_QUOTA_SCALE", "1")
    shared = AppLimits()
    tenants = [SimulatorState(TenantSpec(users=10, seed=seed), app_limits=shared) for seed in (1, 2)]
    for state in tenants:
        state.client_id = "one-app"  # the same multi-tenant app registration, consented in both
    limits = [Limits(state) for state in tenants]
    for i in range(10):
        limits[i % 2].sign_in_activity()
    with pytest.raises(GraphError) as caught:
        limits[0].sign_in_activity()
    assert caught.value.status == 429 and "Application/" in caught.value.headers["x-ms-throttle-scope"]
    alone = Limits(SimulatorState(TenantSpec(users=10, seed=3)))  # another app: its own budget
    alone.sign_in_activity()


class _DroppingProxy:
    """A TCP proxy in front of Azurite's Table service that closes its first `drop` connections at once: a table
    that fails transiently (as one timed out under load in bench/tenants.py), then answers again."""

    def __init__(self, target_port: int, drop: int):
        import socket

        self.target, self.drop = target_port, drop
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("patience", [0.0, 30.0])
def test_a_table_that_fails_for_a_moment_is_waited_out_once_it_was_reachable(azurite: Any, patience: float) -> None:
    """Past the preflight (patience 0: a wrong setting fails at once), a run's ledger reads go on through a
    transient failure instead of failing the dataset waiting on them."""
    name = f"ledger{time.time_ns()}"
    rows = TableRows(connection_string=azurite.connection_string, table=name)
    rows.read("app/app_any")  # the table exists
    proxy = _DroppingProxy(azurite.table_port, drop=6)  # more than the SDK's own three attempts
    try:
        flaky = TableRows(connection_string=azurite.connection_string.replace(
            f":{azurite.table_port}/", f":{proxy.port}/"), table=name)
        flaky._ensured = True
        flaky.patience = patience
        if not patience:
            with pytest.raises(DestinationError, match="SNAPSHOT_CONNECTION_STRING"):
                flaky.read("app/app_any")
        else:
            assert flaky.read("app/app_any") == (None, None)  # no row yet: read through the failures
            assert proxy.accepted > 6
    finally:
        proxy.close()


def test_a_429_in_the_application_scope_pauses_the_bucket_for_every_process() -> None:
    """One process is refused with an application-wide 429: the other processes of the deployment (their own
    budgets on the same ledger) get no lease in that bucket until its Retry-After has passed."""
    quota = _quota(limit=10, window=1.0)
    rows = MemoryRows()
    first, second = (AppBudget(Ledger(rows, "app-pause"), {quota.name: quota}) for _ in range(2))

    async def scenario() -> tuple[float, float, float]:
        await first.take([(quota.name, "", 1.0)], "tenant-a")
        paused_at = time.time()
        await first.pause([quota.name, "not_an_app_bucket"], 1.5, "tenant-a")
        raw, _ = rows.read(Ledger(rows, "app-pause").key(quota.name))
        assert raw is not None and any(lease[3] == "429:tenant-a" for lease in raw["leases"])
        await second.take([(quota.name, "", 1.0)], "tenant-b")
        other = time.time()
        await first.take([(quota.name, "", 1.0)], "tenant-a")  # its own lease was given up as well
        return paused_at, other, time.time()

    paused_at, other, own = asyncio.run(scenario())
    assert other >= paused_at + 1.5 - 0.01 and own >= paused_at + 1.5 - 0.01, (other - paused_at, own - paused_at)


def test_only_an_application_scope_reaches_the_ledger() -> None:
    from connector.graph.client import app_scope

    assert app_scope({"x-ms-throttle-scope": "Application/Read/0785ef7c-4d5e-4c41-b7e5-8b3b2e6d7c11"})
    assert not app_scope({"x-ms-throttle-scope": "Tenant_Application/ReadWrite/9a3d526c/0785ef7c"})
    assert not app_scope({"x-ms-throttle-scope": "Tenant/Read/9a3d526c"}) and not app_scope({})


def test_leases_are_granted_when_quotas_are_scaled_out_of_the_way() -> None:
    """Benchmarks scale quotas a million times (windows of microseconds) to switch them off: a lease's start is
    kept in the row to the millisecond, and the budget must still grant (it once chased a rounded-up start for
    ever, bench/insights.py never finishing)."""
    limits = {n: replace(q, window=q.window / 1_000_000) for n, q in DEFAULTS.items() if q.scope == "app"}
    budget = AppBudget(Ledger(MemoryRows(), "app-unscaled"), limits)
    wanted = [(n, "", 1.0) for n in limits]

    async def scenario() -> int:
        for _ in range(200):
            await budget.take(wanted, "tenant")
        return budget.requests

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=60)) == 200
