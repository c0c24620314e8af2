"""The collection engine: runs every selected dataset declaration concurrently into one snapshot.

A run publishes a complete, verifiable snapshot or says exactly what is partial and why: data
files stay invisible until every dataset has finished, then are committed together, then derived
files, the manifest (counts, sizes, sha256), `latest.json` (only forward, only for runs that
succeeded or are partial) and the `latest/` copies (connector.store.publish). Missing permissions or
licences skip a dataset with a named warning; they never stop the others.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from connector.catalog.datasets import DATASETS, Dataset
from connector.catalog.schema import normaliser_for
from connector.collect.changes import changes_file
from connector.collect.checkpoint import Refused, Spool, settings_fingerprint
from connector.collect.delta import Feed
from connector.collect.failures import classify, retry_facts, skip_before_start
from connector.collect.progress import PROGRESS_LOG_SECONDS, log_progress
from connector.collect.results import DatasetResult, log_summary, run_status, warning
from connector.collect.results import manifest as build_manifest
from connector.collect.strategy import RESTART, Context, strategy_for
from connector.config import Settings
from connector.graph.auth import GraphCredential, read_client_secret, secret_expiry_warning, token_failure_from
from connector.graph.unreachable import Unreachable
from connector.store.contract import JsonlGzWriter, Store, write_json
from connector.store.publish import Publication, run_prefix

log = logging.getLogger("m365_connector")
# Seconds the quota ledger's table may fail transiently during a run before the request waiting on it fails
# (connector/store/quota_rows.py); the run's own time limits bound it as well.
LEDGER_PATIENCE = 300.0

def new_run_id(now: datetime | None = None) -> str:
    """Sorts by time: 20261122T020000Z-3f9a1c."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Run:
    """One collection: owns the Graph session, the results and the manifest."""

    def __init__(self, settings: Settings, store: Store, *, trigger: str = "cli", run_id: str | None = None,
                 progress: Callable[[Run], None] | None = None, progress_every: float | None = PROGRESS_LOG_SECONDS,
                 lock_path: str | None = None, claim_tenant: Callable[[str], str] | None = None):
        self.settings = settings
        self.lock_path = lock_path  # the tenant lock this run holds, so a sweep can tell it is alive
        # Called with the tenant's id once the token names it, before anything is written: takes the tenant's lock
        # under that id as well (M365_TENANT_ID may be a domain), raising TenantBusy when another process holds
        # it, and returns that lock's path.
        self.claim_tenant = claim_tenant
        self.publication: Publication | None = None
        self._unreachable: dict[str, Unreachable] = {}
        self.store = store
        self.trigger = trigger
        self.run_id = run_id or new_run_id()
        self.progress = progress
        self.progress_every = progress_every  # seconds between progress log lines; None: none
        self.dataset_started: dict[str, float] = {}
        self.tenant_id = settings.tenant_id
        self.results: dict[str, DatasetResult] = {n: DatasetResult() for n in settings.selected_datasets}
        self.warnings: list[dict[str, str]] = []
        self.error: dict[str, Any] | None = None
        self.granted: frozenset[str] = frozenset()
        self.started = time.time()
        self.finished: float | None = None
        self.status = "running"
        self.graph = None
        self.prices: Any = None  # the price sheet (M365_PRICE_SHEET), read before any Graph request
        self.insights: dict[str, Any] | None = None  # the manifest's entry for the derived insights files
        self.estimates: dict[str, Any] = {}  # per-user datasets: expected duration (connector/collect/estimate.py)
        self.pausing = False  # set before cancelling a run that will resume: chains save where they stand
        self.feeds: dict[str, Feed] = {}  # keyed datasets' change feeds (connector/collect/delta.py)

    # -- helpers ---------------------------------------------------------------------------
    def _notify(self) -> None:
        if self.progress:
            try:
                self.progress(self)
            except Exception:  # progress reporting must never break a collection
                log.exception("progress callback failed")

    def _accepts(self, ds: Dataset) -> Callable[[dict[str, Any]], bool] | None:
        if not ds.upn_field or self.settings.domains is None:
            return None
        suffixes = tuple("@" + d for d in self.settings.domains)
        key = ds.upn_field
        return lambda rec: (rec.get(key) or "").lower().endswith(suffixes)

    async def _log_progress(self) -> None:
        """A progress line every `progress_every` seconds while datasets run (logs, Application Insights)."""
        while True:
            await asyncio.sleep(self.progress_every or PROGRESS_LOG_SECONDS)
            try:
                log_progress(self)
            except Exception:  # progress reporting must never break a collection
                log.exception("progress log failed")

    # -- one dataset ---------------------------------------------------------------------------
    async def _write(self, ds: Dataset, ctx: Context, res: DatasetResult) -> None:
        """Stream the dataset's strategy into its file and its checkpoint spool (connector/collect/checkpoint.py);
        the file is discarded unless complete, and started again when the strategy yields RESTART. A
        checkpoint of this run id is replayed first: a complete dataset is then done, a chain continues. A keyed
        dataset goes through its change feed (connector/collect/delta.py): delta or full, and its changes file."""
        assert self.publication is not None
        spool = Spool(self.store, self.tenant_id, self.run_id, ds.name, ds.paced,
                      settings_fingerprint(self.settings, ds.query()))
        feed = await self._feed(ds, ctx)
        try:
            writer = await self._resume(ds, ctx, res, spool, feed)
            if feed is not None:
                await feed.before_listing(resumed="resumed" in ctx.extra)
            await self._stream(ds, ctx, res, spool, feed, writer)
        except BaseException:
            if feed is not None and feed.out is not None:
                await feed.out.writer.abort()
            raise
        finally:
            if feed is not None:
                feed.close()

    async def _feed(self, ds: Dataset, ctx: Context) -> Feed | None:
        """The dataset's change feed, its mode chosen and its changes read, before any record is written."""
        if not ds.key:
            return None
        feed = Feed(self, ds, ctx)
        await asyncio.to_thread(feed.choose)
        await feed.prepare()
        assert self.publication is not None
        await feed.open_changes(self.publication.writer)
        self.feeds[ds.name] = feed
        return feed

    def _writer(self, ds: Dataset, feed: Feed | None) -> JsonlGzWriter:
        assert self.publication is not None
        writer = self.publication.writer(ds.file, normaliser_for(ds))
        if feed is not None:
            writer.taps = feed.taps()
        return writer

    async def _stream(self, ds: Dataset, ctx: Context, res: DatasetResult, spool: Spool, feed: Feed | None,
                      writer: JsonlGzWriter) -> None:
        assert self.publication is not None
        accept = self._accepts(ds)
        written: str | None = None  # the next link after the last page both the file and the spool hold
        try:
            if not spool.state["complete"]:
                source = feed.records(strategy_for(ds)) if feed is not None else strategy_for(ds)(ctx, ds)
                async for records in source:
                    link = ctx.next_link
                    if records is RESTART:
                        await writer.abort()
                        if feed is not None:
                            await feed.restart(self.publication.writer)
                        writer = self._writer(ds, feed)
                        res.records = res.excludedByDomainFilter = 0
                        spool.restart()
                        written = None
                        continue
                    if accept is not None and not ctx.domain_filter:
                        accept = None  # the strategy found no user names to filter on (concealed reports)
                        res.domainFilter = "not applied"
                    if accept is not None:
                        kept = [r for r in records if accept(r)]
                        res.excludedByDomainFilter += len(records) - len(kept)
                        records = kept
                    await spool.add(await writer.write(records))
                    res.records, written = writer.records, link
                    if spool.due(link):
                        await spool.save(res, ctx, link)
                await spool.save(res, ctx, None, complete=True)
            info = await writer.finish()  # committed with the run's other files once every dataset is done
            if feed is not None:
                ctx.extra["delta"] = await feed.finish()
        except BaseException:
            if self.pausing and written and spool.clean:  # the worker's budget is spent: keep every page
                await asyncio.shield(spool.save(res, ctx, written))
            await writer.abort()
            raise
        res.file, res.bytes, res.sha256 = ds.file, info.bytes, info.sha256

    async def _resume(self, ds: Dataset, ctx: Context, res: DatasetResult, spool: Spool,
                      feed: Feed | None = None) -> JsonlGzWriter:
        """A fresh writer, fed with the records of this run's checkpoint of the dataset when there is one to
        trust (a bad one is set aside with a warning and the dataset starts from the beginning). A delta read is
        applied again rather than resumed: it is short, and its stored link stays until the run is published."""
        assert self.publication is not None
        writer = self._writer(ds, feed)
        res.records = res.excludedByDomainFilter = 0
        if feed is not None and feed.mode == "delta":
            return writer
        state = await asyncio.to_thread(spool.load)
        if state is not None and not state["complete"] and not state["nextLink"]:
            state = None  # saved mid-way without a place to continue: nothing to resume from
            spool.restart()
        if state is not None:
            try:
                await spool.replay(writer)
            except Refused as why:
                await writer.abort()
                await asyncio.to_thread(spool.set_aside, str(why))
                if feed is not None:
                    await feed.restart(self.publication.writer)
                writer = self._writer(ds, feed)
            else:
                spool.restore(res, ctx)
                log.info("%s resumed from its checkpoint: %d records replayed, %s", ds.name, res.records,
                         "complete" if state["complete"] else "the listing continues from its next link")
        if spool.refused:
            ctx.warnings.append(spool.refused)
        return writer

    async def _collect(self, ds: Dataset) -> None:
        res = self.results[ds.name]
        res.status = "running"
        if ds.upn_field:
            res.domainFilter = "all users" if self.settings.domains is None else "applied"
        t0 = self.dataset_started[ds.name] = time.perf_counter()
        self._notify()
        ctx = Context(self.settings, self.graph, self.granted)
        try:
            # The run's time limit bounds every dataset: one still paging when it passes fails with a
            # named warning, and the others are published in time.
            await asyncio.wait_for(self._write(ds, ctx, res), max(0.0, self.graph.deadline.remaining()))
            res.status = "succeeded"
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            res.status, res.records = "failed", 0
            res.error = {"code": "RunTimeLimit", "message": "the run's time limit passed while collecting"}
            res.warnings.append(warning(
                "run_time_limit", ds.name,
                f"{ds.name} was still being collected when the run's time limit passed (M365_RUN_TIME_LIMIT="
                f"{self.settings.run_time_limit} minutes); it is left out of this snapshot. Raise the limit (and "
                "functionTimeout in host.json) or collect it in a run of its own."))
        except Exception as exc:
            unreachable = classify(ds, res, exc, self.settings, self.store, self.granted)
            if unreachable is not None:
                self._unreachable[ds.name] = unreachable
        finally:
            res.plan.update(ctx.plan)
            res.extra.update(ctx.extra)
            res.warnings.extend(ctx.warnings)
            res.durationSeconds = round(time.perf_counter() - t0, 3)
            stats = self.graph.stats.get(ds.name)
            if stats:
                res.requests, res.retries, res.throttled = stats.requests, stats.retries, stats.throttled
                retry_facts(ds, res, stats)
            self._notify()

    # -- the run ---------------------------------------------------------------------------
    async def execute(self) -> dict[str, Any]:
        await asyncio.to_thread(self.store.prepare)  # an unusable destination fails before any Graph request
        budget = await asyncio.to_thread(self._budget)  # and so does an unusable quota ledger
        from connector.insights.prices import load as load_prices

        self.prices = await asyncio.to_thread(load_prices, self.settings, self.store)  # ConfigError when malformed
        credential = None
        try:
            try:
                secret = await asyncio.to_thread(read_client_secret, self.settings)
                credential = GraphCredential(self.settings, secret)
                self.granted, claims = await asyncio.to_thread(credential.roles)
            except Exception as exc:
                failure = token_failure_from(exc, self.settings.authority_host)
                self.error = {"stage": "token", **failure.as_dict()}
                self.warnings.append(warning("token_failed", None, str(failure)))
                for res in self.results.values():
                    res.status = "failed"
                return await self._finish()
            self.tenant_id = claims.get("tid") or self.settings.tenant_id
            if self.claim_tenant is not None:
                self.lock_path = await asyncio.to_thread(self.claim_tenant, self.tenant_id)
            self.publication = Publication(self.store, self.tenant_id, self.run_id, self.lock_path)
            from connector.insights.derive import DERIVED_FILES

            selected = [DATASETS[n] for n in self.settings.selected_datasets]
            await asyncio.to_thread(self.publication.begin, [ds.file for ds in selected] + list(DERIVED_FILES)
                                    + [changes_file(ds) for ds in selected if ds.key])
            expiry = secret_expiry_warning(secret)
            if expiry:
                self.warnings.append(warning("secret_expiring", None, expiry))
                log.warning(expiry, extra={"event": "secret_expiring"})  # alerted on (infra/core/alerts.bicep)

            from connector.graph.client import Graph

            self.graph = Graph(self.settings, credential, budget)
            try:
                await self._estimate()
                tasks = []
                for name in self.settings.selected_datasets:
                    ds = DATASETS[name]
                    if not skip_before_start(ds, self.results[name], self.settings, self.granted):
                        tasks.append(self._collect(ds))
                self._notify()
                ticker = asyncio.ensure_future(self._log_progress()) if self.progress_every else None
                try:
                    await asyncio.gather(*tasks)
                finally:
                    if ticker is not None:
                        ticker.cancel()
            finally:
                await self.graph.aclose()
            self._graph_unreachable()
            return await self._finish()
        except BaseException:
            if self.publication is not None:  # cancelled, lease lost, storage failed: publish nothing
                await self.publication.rollback()
            raise
        finally:
            if credential is not None:
                credential.close()

    def _budget(self) -> Any:
        """The app-wide quotas' budget of this process, its ledger beside the snapshot destination (a Table
        beside Blob Storage, files in a local folder) so every process of the deployment shares it."""
        from connector.graph.ledger import MemoryRows, budget_for
        from connector.store.quota_rows import ledger_place, quota_rows

        def rows() -> Any:
            found = quota_rows(self.settings)
            if found is None:
                log.info("Graph's app-wide quotas are counted in this process only: the snapshot destination's "
                         "settings reach Blob Storage alone (SNAPSHOT_CONNECTION_STRING without a TableEndpoint, or "
                         "SNAPSHOT_ACCOUNT_URL not <account>.blob.<suffix>)")
            return found if found is not None else MemoryRows()

        budget = budget_for((self.settings.graph_endpoint, self.settings.client_id), self.settings.quota_limits(),
                            rows, ledger_place(self.settings))
        ledger = budget.ledger
        ledger.rows.read(ledger.key("app_any"))  # DestinationError naming the setting when it cannot be reached
        if hasattr(ledger.rows, "patience"):  # reachable: from now on a transient failure is waited out
            ledger.rows.patience = LEDGER_PATIENCE
        return budget

    async def _estimate(self) -> None:
        """Expected durations from the tenant's size and Graph's quotas, logged before the datasets start (the
        count is the one /users/$count the user listings share); the quota of resource units follows the size."""
        from connector.collect.estimate import PER_USER, app_demand, estimates
        from connector.collect.paging import tenant_user_count

        names = [n for n in self.settings.selected_datasets
                 if n in PER_USER and not DATASETS[n].missing_roles(self.granted)]
        if not names:
            return
        try:
            users = await tenant_user_count(self.graph)
        except Exception as exc:  # Graph unreachable or untrusted: each dataset says so with its fix
            log.info("no expected durations: /users/$count failed (%s)", type(exc).__name__)
            return
        if users is None:
            return
        self.graph.pacer.set_tenant_size(users)
        self.estimates = estimates(names, users, self.graph.pacer.limits)
        self.graph.budget.set_demand(self.graph.consumer, app_demand(self.estimates))
        for estimate in self.estimates.values():
            # The tenant in every line: a sweep collects several at once and their lines interleave.
            log.info("expected duration (tenant %s): %s", self.tenant_id, estimate.text(), extra={"m365": {
                "event": "expected_duration", "runId": self.run_id, "tenantId": self.tenant_id,
                "dataset": estimate.dataset, **estimate.as_dict()}})
        self._notify()

    def _graph_unreachable(self) -> None:
        """Every dataset that was tried failed to reach Graph the same way: that is the run's error."""
        tried = [n for n, r in self.results.items() if r.status != "skipped"]
        found = {self._unreachable[n] for n in tried if n in self._unreachable}
        if tried and len(found) == 1 and all(n in self._unreachable for n in tried):
            self.error = {"stage": "graph", **found.pop().as_dict()}

    async def derive(self) -> None:
        """Derived files (licence insights), computed from the committed data files read back from the store,
        before the manifest lists them (each in the manifest's `files` with bytes and sha256). A failure here
        costs the insights, never the collected data."""
        from connector.insights.derive import derive

        try:
            self.insights = await asyncio.to_thread(derive, self.store, self.manifest(), self.settings, self.prices)
        except Exception as exc:
            log.error("licence insights failed", exc_info=exc)
            self.insights = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            self.warnings.append(warning("insights_failed", None, "Licence insights could not be computed "
                                          f"({type(exc).__name__}); the datasets are complete. Run `python -m "
                                          "connector insights` over this run to retry."))
            return
        self.warnings.extend(self.insights.get("warnings", ()))
        if self.publication is not None:
            for name, info in (self.insights.get("files") or {}).items():
                self.publication.adopt(name, info)

    async def _finish(self) -> dict[str, Any]:
        self.status = run_status(self.results)
        for res in self.results.values():
            self.warnings.extend(w for w in res.warnings if w not in self.warnings)
        pub = self.publication
        if pub is None:  # no token, so no file was written: the manifest says why
            self.finished = time.time()
            manifest = self.manifest()
            write_json(self.store, f"{run_prefix(self.tenant_id, self.run_id)}/manifest.json", manifest)
            log_summary(self)
            self._notify()
            return manifest
        done = {r.file: name for name, r in self.results.items() if r.status == "succeeded" and r.file}
        changes = {r.extra["delta"]["changes"]: name for name, r in self.results.items()
                   if r.status == "succeeded" and (r.extra.get("delta") or {}).get("changes")}
        await pub.commit({**done, **changes}, done)
        await self.derive()
        newer = await asyncio.to_thread(pub.newer_published) if self.status != "failed" else None
        if newer:
            self.warnings.append(warning(
                "not_latest", None, f"run {newer} started later and was published first, so latest.json and "
                                    "latest/ stay with it; this run is complete under its own folder."))
        self.finished = time.time()
        manifest = self.manifest()
        # The manifest, latest.json, latest/ and the marker, in one thread that runs to its end even if the run is
        # cancelled meanwhile (the rollback waits for it). What fails after the manifest is written does not
        # unpublish the run: it is said in the run's result (not in the manifest, written before) as a
        # latest_not_updated warning, and the CLI exits with its own code.
        problems = await asyncio.to_thread(pub.publish, manifest)
        if self.status != "failed":
            problems += await asyncio.to_thread(self._store_links)
        if problems:
            self.warnings.extend(problems)
            manifest = {**manifest, "warnings": list(self.warnings)}
        log_summary(self)
        self._notify()
        return manifest

    def _store_links(self) -> list[dict[str, str]]:
        """Delta links for the next run, once this run is published: only for datasets it collected. A link that
        cannot be written leaves the previous one, whose base run is still published: the pair stays usable."""
        for name, feed in self.feeds.items():
            if self.results[name].status == "succeeded":
                try:
                    feed.store_link()
                except Exception as exc:
                    log.error("storing the delta link of %s failed (%s)", name, type(exc).__name__)
                    return [warning("delta_link_not_stored", name, f"the delta link of {name} could not be stored "
                                    f"({type(exc).__name__}); the next run continues from the previous one")]
        return []

    def manifest(self) -> dict[str, Any]:
        return build_manifest(self)

async def collect(settings: Settings, store: Store, *, trigger: str = "cli", run_id: str | None = None,
                  progress: Callable[[Run], None] | None = None,
                  progress_every: float | None = PROGRESS_LOG_SECONDS, lock_path: str | None = None,
                  claim_tenant: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Run one collection and return its manifest (already written to the store), with any latest_not_updated
    warning of what failed after it was written."""
    return await Run(settings, store, trigger=trigger, run_id=run_id, progress=progress,
                     progress_every=progress_every, lock_path=lock_path, claim_tenant=claim_tenant).execute()


def collect_sync(settings: Settings, store: Store, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(collect(settings, store, **kwargs))
