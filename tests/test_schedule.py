"""M365_SCHEDULE: six-field NCRONTAB, checked the way the Functions host would refuse it (issue 11.12)."""

from __future__ import annotations

import logging

import pytest

from connector.service.appconfig import function_problems
from connector.service.schedule import DEFAULT_SCHEDULE, schedule_problem, timer_schedule


@pytest.mark.parametrize("value", [
    "0 0 2 * * *", "0 30 1 * * MON-FRI", "*/15 * * * * *", "0 0 */6 * * *", "0 5,35 9-17 * * 1-5",
    "0 0 2 1 JAN *", "0 0 2 * * Sun", "0 0 0 29 2 *", "0 0 2 * * 0", "0 0 2 * * 6",
])
def test_valid_schedules(value):
    assert schedule_problem(value) is None
    assert timer_schedule({"M365_SCHEDULE": value}) == value


@pytest.mark.parametrize(("value", "fragment"), [
    ("0 0 25 * * *", "out of range"),
    ("99 99 99 * * *", "out of range"),
    ("0 60 2 * * *", "out of range"),
    ("0 0 2 32 * *", "out of range"),
    ("0 0 2 * 13 *", "out of range"),
    ("0 0 2 * * 7", "day-of-week"),
    ("0 2 * * *", "has 5 fields"),
    ("0 0 2 * * * 2026", "has 7 fields"),
    ("0 0 2 L * *", "word"),
    ("0 0 2 15W * *", "word"),
    ("0 0 2 * * 5#2", "characters"),
    ("0 0 2 ? * *", "characters"),
    ("0 0 H * * *", "word"),
    ("0 0 2 * * MONDAY", "word"),
    ("0 0 2 31 2 *", "never fires"),
    ("every day", "has 2 fields"),
    ("00:05:00", "has 1 field"),
])
def test_invalid_schedules(value, fragment, caplog):
    problem = schedule_problem(value)
    assert problem is not None and fragment in problem
    assert value not in problem.replace(repr(DEFAULT_SCHEDULE), "")  # never repeats the value (only the example)
    with caplog.at_level(logging.ERROR, logger="m365_connector"):
        assert timer_schedule({"M365_SCHEDULE": value}) == DEFAULT_SCHEDULE
    assert "M365_SCHEDULE" in caplog.text and value not in caplog.text.replace(DEFAULT_SCHEDULE, "")


def test_health_reports_an_invalid_schedule():
    env = {"M365_TENANT_ID": "contoso.onmicrosoft.com", "M365_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
           "M365_CLIENT_SECRET": "x" * 30, "SNAPSHOT_DIR": "/tmp/x",
           "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert function_problems(env) == []
    problems = function_problems({**env, "M365_SCHEDULE": "0 0 25 * * *"})
    assert [p.setting for p in problems] == ["M365_SCHEDULE"]
