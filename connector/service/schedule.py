"""M365_SCHEDULE: the timer's six-field NCRONTAB expression, checked before the host sees it.

The Functions host parses the schedule with NCrontab when it starts; an expression it refuses
stops the timer. The expression is read when function_app is imported (indexing), so an invalid
value falls back to the default, is logged, and /api/health names the setting. Parsing is done by
croniter in NCRONTAB order (`second_at_beginning`), plus the rules where NCrontab is stricter than
croniter: exactly six fields, no `L`, `W`, `#`, `?` or `H`, names only as three-letter month and
day abbreviations, day of week 0-6 (Sunday is 0; NCrontab has no 7).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime

log = logging.getLogger("m365_connector")

DEFAULT_SCHEDULE = "0 0 2 * * *"
FIELDS = ("second", "minute", "hour", "day", "month", "day-of-week")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELD_CHARS = re.compile(r"[0-9A-Za-z*/,\-]+")
_SHAPE = (f"a six-field NCRONTAB expression ({{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}, "
          f"UTC), such as {DEFAULT_SCHEDULE!r} for 02:00 UTC daily or '0 30 1 * * MON-FRI'")


def _field_problem(index: int, field: str) -> str | None:
    name = FIELDS[index]
    if not _FIELD_CHARS.fullmatch(field):
        return f"the {name} field has characters NCRONTAB does not accept (only digits, names, * / , -)"
    words = re.findall(r"[A-Za-z]+", field)
    allowed = _MONTHS if name == "month" else _DAYS if name == "day-of-week" else ()
    for word in words:
        if word.upper() not in allowed:
            return (f"the {name} field holds a word NCRONTAB does not know"
                    + (f" (use {allowed[0]}-{allowed[-1]} style three-letter names)" if allowed else ""))
    if name == "day-of-week" and any(int(n) > 6 for n in re.findall(r"(?<![/0-9])[0-9]+", field)):
        return "the day-of-week field goes from 0 (Sunday) to 6 (Saturday)"
    return None


def schedule_problem(value: str) -> str | None:
    """Why an M365_SCHEDULE value is not a valid six-field NCRONTAB expression, or None.
    The message never repeats the value."""
    from croniter import croniter

    fields = value.split()
    if len(fields) != 6:
        return f"has {len(fields)} field{'s' if len(fields) != 1 else ''}; it must be {_SHAPE}."
    for i, field in enumerate(fields):
        problem = _field_problem(i, field)
        if problem:
            return f"is not valid: {problem}. It must be {_SHAPE}."
    if not croniter.is_valid(value, second_at_beginning=True):
        return f"is not valid: a value is out of range (second 0-59, minute 0-59, hour 0-23, day 1-31, month 1-12). " \
               f"It must be {_SHAPE}."
    try:
        croniter(value, datetime(2024, 1, 1, tzinfo=UTC), second_at_beginning=True).get_next(datetime)
    except Exception:
        return "never fires (no date matches it, such as 31 February). Give a day that exists."
    return None


def timer_schedule(env: Mapping[str, str] | None = None) -> str:
    """The timer's schedule. Read when function_app is imported (indexing), so a missing setting gets the
    default; an invalid one also falls back to the default and /api/health reports it."""
    env = os.environ if env is None else env
    value = (env.get("M365_SCHEDULE") or "").strip()
    if not value:
        return DEFAULT_SCHEDULE
    problem = schedule_problem(value)
    if problem:
        log.error("M365_SCHEDULE %s The timer uses %s until it is fixed.", problem, DEFAULT_SCHEDULE)
        return DEFAULT_SCHEDULE
    return value


def next_fire(value: str, after: datetime) -> datetime:
    """When a valid NCRONTAB expression next fires after `after` (UTC)."""
    from croniter import croniter

    return croniter(value, after, second_at_beginning=True).get_next(datetime)
