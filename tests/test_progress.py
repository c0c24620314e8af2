"""Progress of a long run in the logs (what the Function app's log stream and Application Insights show)."""

from __future__ import annotations

import logging

from connector.collect.engine import collect_sync
from connector.collect.progress import PROGRESS_EVENT
from connector.service.telemetry import SummaryFilter
from connector.store.destination import open_store
from simulator import Simulator, TenantSpec
from tests.conftest import apply_env
from tests.helpers import settings_for


def test_engine_logs_progress_while_datasets_run(monkeypatch, tmp_path, caplog):
    # The older sign-in page of 120: five pages, so the listing lasts long enough for several progress lines.
    with Simulator(TenantSpec(seed=8, users=500, latency=0.15, sign_in_page_limit=120)) as sim:
        env = sim.env(secret_in="env")
        apply_env(monkeypatch, env)
        settings = settings_for(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="users,user_sign_in_activity")
        with caplog.at_level(logging.INFO, logger="m365_connector"):
            manifest = collect_sync(settings, open_store(settings), trigger="test", progress_every=0.2)
    assert manifest["status"] == "succeeded"
    events = [r for r in caplog.records if getattr(r, "m365", {}).get("event") == PROGRESS_EVENT]
    assert len(events) >= 2, "a run of several seconds logs several progress lines"
    facts = events[-1].m365
    assert facts["runId"] == manifest["runId"] and facts["status"].startswith("running (")
    running = facts["datasets"]
    assert running and all({"records", "requests", "throttled", "recordsPerSecond", "secondsLeft"} <= set(d)
                           for d in running.values())
    # The time left comes from the tenant's size and Graph's quotas (the expected durations logged at the start).
    assert "expectedSecondsLeft" in facts
    expected = [r for r in caplog.records if getattr(r, "m365", {}).get("event") == "expected_duration"]
    assert {r.m365["dataset"] for r in expected} == {"users", "user_sign_in_activity"}
    # Each names the tenant, in its text as well: a sweep collects several tenants at once and their lines mix.
    assert all(r.m365["tenantId"] == manifest["tenantId"] and manifest["tenantId"] in r.getMessage()
               for r in expected)
    assert manifest["estimates"]["user_sign_in_activity"]["users"] == 500
    assert max(d["records"] for e in events for d in e.m365["datasets"].values()) > 0  # it moves
    # The text carries the figures too (the Functions host forwards only the text).
    SummaryFilter().filter(events[-1])
    assert "requests/" in events[-1].getMessage() and manifest["runId"] in events[-1].getMessage()
    finished = [r for r in caplog.records if getattr(r, "m365", {}).get("event") == "collection_finished"]
    assert len(finished) == 1 and finished[0].created >= events[-1].created  # no progress after the end


def test_no_progress_lines_when_turned_off(monkeypatch, tmp_path, caplog):
    with Simulator(TenantSpec(seed=8, users=200, latency=0.1)) as sim:
        env = sim.env(secret_in="env")
        apply_env(monkeypatch, env)
        settings = settings_for(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="user_sign_in_activity")
        with caplog.at_level(logging.INFO, logger="m365_connector"):
            collect_sync(settings, open_store(settings), trigger="test", progress_every=None)
    assert not [r for r in caplog.records if getattr(r, "m365", {}).get("event") == PROGRESS_EVENT]
