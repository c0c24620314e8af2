"""Licence figures per SKU and per user, counted in one streaming pass over a run's `users` file.

Definitions (docs/insights.md has them in full): a user holds a SKU when `assignedLicenses` lists it;
the last successful sign-in is `lastSuccessfulSignInDateTime`, else the latest of `lastSignInDateTime` and
`lastNonInteractiveSignInDateTime`; inactive = older than `inactiveDays` before the run started; never
signed in = no sign-in at all and the account older than that. Per-user activity (user id -> epoch
seconds) and the previous run's assignments wait in on-disk spools (connector/spool.py) and are looked
up a chunk of users at a time, so memory does not grow with the tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from connector.insights.advice import COPILOT_SKUS, DOWNGRADES, Exclusions, Overlaps
from connector.insights.read import GzLines, lines, records
from connector.spool import KeyValueSpool
from connector.store.contract import Store

NEVER = -1  # in the activity map: the user has no sign-in at all
SAMPLE = 20  # sampleUserIds per finding
USERS_PER_CHUNK = 2000  # users parsed, then judged with one spool look-up for all of them

# Exclusive classes of a licensed user, in order of precedence.
DISABLED, NEVER_SIGNED_IN, INACTIVE, ACTIVE, NEW, UNKNOWN = (
    "disabled", "neverSignedIn", "inactive", "active", "new", "unknown")

# Findings: code -> (severity, what it counts, wastes a seat)
FINDINGS: dict[str, tuple[str, str, bool]] = {
    "unused_seats": ("medium", "seats", True),
    "licence_on_disabled_account": ("high", "users", True),
    "licence_never_used": ("high", "users", True),
    "licence_inactive": ("medium", "users", True),
    "over_assigned": ("high", "seats", False),
    "subscription_not_active": ("high", "users", False),
    "group_assignment_error": ("high", "users", False),
    "direct_and_group_assignment": ("low", "users", False),
    "licence_on_guest": ("low", "users", False),
    "overlapping_licence": ("medium", "users", False),  # money: the redundant SKU's price
    "renewal_unused_seats": ("medium", "seats", False),  # money: the seats not renewed
    "trial_ending": ("medium", "users", False),
    "downgrade_candidate": ("low", "users", False),  # money: the suite's price less the cheaper plan's
    "copilot_unused": ("medium", "users", False),  # money: the Copilot licence's price
}
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}  # info: about a free SKU
_WASTE = {DISABLED: "licence_on_disabled_account", NEVER_SIGNED_IN: "licence_never_used", INACTIVE: "licence_inactive"}
_NONE: set[str] = set()  # returned for unlicensed users; never modified


_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> epoch seconds of its midnight (UTC); dates repeat a lot


def epoch(value: Any) -> int | None:
    """ISO 8601 date-time or date (Graph, reports) -> epoch seconds; None for null, "" or nonsense.
    Graph's usual `2024-05-01T08:00:00Z` takes a fast path (a few slices and a cached day)."""
    if not value or not isinstance(value, str):
        return None
    if len(value) == 20 and value[10] == "T" and value[19] == "Z" and value[13] == value[16] == ":":
        day = _DAYS.get(value[:10])
        if day is None:
            day = epoch(value[:10])
            if day is None:
                return None
            _DAYS[value[:10]] = day
        try:
            return day + int(value[11:13]) * 3600 + int(value[14:16]) * 60 + int(value[17:19])
        except ValueError:
            return None
    try:
        if len(value) == 10:
            value += "T00:00:00+00:00"
        stamp = datetime.fromisoformat(value)  # Python 3.11 reads the trailing Z
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return int(stamp.timestamp())
    except ValueError:
        return None


def last_successful(sia: dict[str, Any] | None) -> int:
    """The last successful sign-in (definition above) of a signInActivity, NEVER when there is none."""
    if not sia:
        return NEVER
    stamp = epoch(sia.get("lastSuccessfulSignInDateTime"))
    if stamp is None:  # null or "" (successes before December 2023 were not backfilled)
        attempts = (epoch(sia.get("lastSignInDateTime")), epoch(sia.get("lastNonInteractiveSignInDateTime")))
        stamp = max((s for s in attempts if s is not None), default=None)
    return NEVER if stamp is None else stamp


@dataclass
class Activity:
    """Last activity per user: from sign-in activity (keyed by id) or a usage report (keyed by UPN), in an
    on-disk spool; `load` brings one chunk of users' values into memory before they are judged."""

    source: str | None  # "signInActivity", "usageReports" or None
    by: str = "id"  # which user property keys the spool
    spool: KeyValueSpool | None = None
    note: str = ""
    chunk: dict[str, int] = field(default_factory=dict)

    def _key(self, user: dict[str, Any]) -> str:
        return user.get("id") if self.by == "id" else (user.get("userPrincipalName") or "").lower()

    def load(self, users: list[dict[str, Any]]) -> None:
        if self.spool is not None:
            self.chunk = self.spool.get_many(self._key(u) for u in users)

    def of(self, user: dict[str, Any]) -> int | None:
        """Epoch seconds, NEVER, or None when this source knows nothing about the user (among the loaded)."""
        if self.source is None:
            return None
        return self.chunk.get(self._key(user))

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


def sign_in_activity(store: Store, relpath: str) -> Activity:
    spool = KeyValueSpool()
    put = spool.put
    for rec in records(store, relpath):
        put(rec["id"], last_successful(rec.get("signInActivity")))
    return Activity("signInActivity", "id", spool)


def report_activity(store: Store, relpath: str) -> Activity:
    """getOffice365ActiveUserDetail: the latest of the per-workload last activity dates, keyed by UPN. Reports
    know activity, not sign-ins: "never" cannot be told from "long ago", so no user is NEVER here."""
    spool = KeyValueSpool(keep_max=True)  # a UPN listed twice keeps its latest activity
    for rec in records(store, relpath):
        stamps = [epoch(v) for k, v in rec.items() if k.endswith("LastActivityDate") or k == "lastActivityDate"]
        best = max((s for s in stamps if s is not None), default=None)
        upn = (rec.get("userPrincipalName") or "").lower()
        if upn:
            spool.put(upn, best if best is not None else 0)
    return Activity("usageReports", "upn", spool)


@dataclass
class SkuTally:
    sku_id: str
    part_number: str
    record: dict[str, Any] | None  # the subscribed_skus record; None for a SKU only users mention
    assigned: int = 0
    disabled: int = 0
    inactive: int = 0
    never: int = 0
    guests: int = 0
    direct_and_group: int = 0
    group_errors: int = 0
    billed: bool = False  # paid for: waste findings apply
    free: bool = False  # costs nothing (bundled list or a price of 0): its findings are informational
    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (ACTIVE, NEW, INACTIVE, NEVER_SIGNED_IN, DISABLED, UNKNOWN), 0))
    not_active: bool = False  # capabilityStatus other than Enabled: its holders risk losing the service

    def __post_init__(self) -> None:
        self.not_active = self.record is not None and self.record.get("capabilityStatus") != "Enabled"


@dataclass
class Finding:
    code: str
    sku: SkuTally
    count: int = 0
    samples: list[str] = field(default_factory=list)


class Tally:
    """Counts one run's users against its SKUs; writes licence_findings.jsonl.gz lines as it goes."""

    def __init__(self, skus: Iterable[dict[str, Any]], *, started: int, inactive_days: int, activity: Activity,
                 group_names: dict[str, str], lines: GzLines | None, billed: Callable[[SkuTally], bool],
                 free: Callable[[SkuTally], bool] = lambda t: False, overlaps: Overlaps | None = None,
                 exclusions: Exclusions | None = None, downgrades: dict[str, dict[str, Any]] | None = None,
                 csv: Any = None, copilot: dict[str, str | None] | None = None):
        self.skus: dict[str, SkuTally] = {}
        for s in skus:
            sid = (s.get("skuId") or "").lower()
            self.skus[sid] = SkuTally(sid, s.get("skuPartNumber") or sid, s)
        for t in self.skus.values():
            t.billed = billed(t)  # waste findings only where seats are paid for
            t.free = free(t)
        self.overlaps = overlaps
        self.fits = downgrades or {}  # userPrincipalName -> usage evidence that fits the cheaper plan
        self.downgrade_to = {sid: DOWNGRADES[t.part_number.upper()][0] for sid, t in self.skus.items()
                             if t.part_number.upper() in DOWNGRADES and t.billed}
        self.exclusions = exclusions or Exclusions()
        self.cutoff = started - inactive_days * 86400
        self.activity = activity
        self.group_names = group_names
        self.lines = lines
        self.csv = csv  # export.FindingsCsv: the same lines in the admin center's CSV shape
        self.copilot = copilot  # userPrincipalName -> last Copilot activity (None: none) from the Copilot report
        self.copilot_skus = {sid for sid, t in self.skus.items() if t.part_number.upper() in COPILOT_SKUS}
        self.findings: dict[tuple[str, str], Finding] = {}
        self.users = self.licensed = self.guests = self.licensed_guests = 0
        self.user_classes = dict.fromkeys((ACTIVE, NEW, INACTIVE, NEVER_SIGNED_IN, DISABLED, UNKNOWN), 0)

    def sku(self, sku_id: str) -> SkuTally:
        tally = self.skus.get(sku_id)
        if tally is None:
            tally = self.skus[sku_id] = SkuTally(sku_id, sku_id, None)
        return tally

    @property
    def last_key(self) -> str:
        """Evidence field of the last activity: a sign-in, or a usage report's activity date."""
        return "lastSuccessfulSignIn" if self.activity.source != "usageReports" else "lastReportedActivity"

    def _old(self, user: dict[str, Any]) -> bool:
        """Created before the inactivity cut-off (newer accounts are neither inactive nor never signed in)."""
        created = epoch(user.get("createdDateTime"))
        return created is None or created < self.cutoff

    def judge(self, user: dict[str, Any]) -> tuple[str, int | None, bool, bool]:
        """(exclusive class, last activity in epoch seconds or None, inactive, never signed in) of one user.
        `inactive` and `never` follow the definitions whatever the account state; the class gives precedence
        to a disabled account, so each licensed user lands in exactly one class."""
        disabled = user.get("accountEnabled") is False
        source = self.activity.source
        if source is None:
            return (DISABLED if disabled else UNKNOWN), None, False, False
        last = self.activity.of(user)
        if source == "usageReports":  # reports record activity, not sign-ins: no date = no activity in their data
            inactive = last < self.cutoff if last else self._old(user)
            cls = DISABLED if disabled else INACTIVE if inactive else ACTIVE if last else NEW
            return cls, last or None, inactive, False
        if last is None:  # not in the sign-in file (e.g. created while the run read it)
            return (DISABLED if disabled else UNKNOWN), None, False, False
        if last == NEVER:
            never = self._old(user)
            return (DISABLED if disabled else NEVER_SIGNED_IN if never else NEW), None, False, never
        inactive = last < self.cutoff
        return (DISABLED if disabled else INACTIVE if inactive else ACTIVE), last, inactive, False

    def add(self, user: dict[str, Any]) -> set[str]:
        """Count one user; returns the SKU ids it holds. (The hot loop: kept to plain operations.)"""
        self.users += 1
        get = user.get
        guest = get("userType") == "Guest"
        if guest:
            self.guests += 1
        licences = get("assignedLicenses")
        states = get("licenseAssignmentStates")
        if not licences and not states:
            return _NONE
        held = {(lic.get("skuId") or "").lower() for lic in licences} if licences else set()
        held.discard("")
        direct: set[str] = set()
        via: dict[str, list[str]] = {}
        errors: dict[str, str] = {}
        for st in states or ():
            sid = (st.get("skuId") or "").lower()
            group = st.get("assignedByGroup")
            if not group:
                direct.add(sid)
                continue
            via.setdefault(sid, []).append(group)
            err, state = st.get("error"), st.get("state")
            if state == "Error" or state == "ActiveWithError" or (err and err != "None"):
                errors[sid] = err if err and err != "None" else state
        cls, last, inactive, never = self.judge(user)
        hit = self._hit
        if held:
            self.licensed += 1
            if guest:
                self.licensed_guests += 1
            self.user_classes[cls] += 1
            waste = _WASTE.get(cls)
            disabled = cls == DISABLED
            skus = self.skus
            for sid in sorted(held):  # not set order: that changes with the process's string hash seed
                t = skus.get(sid) or self.sku(sid)
                t.assigned += 1
                t.classes[cls] += 1
                if disabled:
                    t.disabled += 1
                if inactive:
                    t.inactive += 1
                if never:
                    t.never += 1
                if waste and t.billed:
                    hit(waste, t, user, last, sid, direct, via)
                if guest:
                    t.guests += 1
                    hit("licence_on_guest", t, user, last, sid, direct, via)
                if via and sid in direct and sid in via:
                    t.direct_and_group += 1
                    hit("direct_and_group_assignment", t, user, last, sid, direct, via)
                if t.not_active:
                    hit("subscription_not_active", t, user, last, sid, direct, via)
            if self.overlaps is not None and len(held) > 1:
                for sid, cover, plans in self.overlaps.redundant(licences):
                    extra = {"coveredBy": [self.skus[c].part_number if c in self.skus else c for c in cover],
                             "sharedPlans": list(plans)}
                    hit("overlapping_licence", self.sku(sid), user, last, sid, direct, via, extra=extra)
            if self.copilot is not None and not waste and self.copilot_skus.intersection(held):
                self._copilot(user, held, last, direct, via)
            if self.fits and not waste:  # a disabled or unused licence is a waste finding, not a downgrade
                fit = self.fits.get((get("userPrincipalName") or "").lower())
                for sid in sorted(held) if fit is not None else ():
                    if sid in self.downgrade_to:
                        hit("downgrade_candidate", skus[sid], user, last, sid, direct, via,
                            extra={"downgradeTo": self.downgrade_to[sid], **fit})
        for sid, err in errors.items():
            t = self.sku(sid)
            t.group_errors += 1
            hit("group_assignment_error", t, user, last, sid, direct, via, err)
        return held

    def _copilot(self, user: dict[str, Any], held: set[str], last: int | None, direct: set[str],
                 via: dict[str, list[str]]) -> None:
        """A Copilot licence paid for whose holder has no Copilot activity in the report's period."""
        upn = (user.get("userPrincipalName") or "").lower()
        if self.copilot.get(upn):  # type: ignore[union-attr]
            return
        listed = upn in self.copilot  # type: ignore[operator]
        for sid in sorted(self.copilot_skus.intersection(held)):
            if self.skus[sid].billed:
                self._hit("copilot_unused", self.skus[sid], user, last, sid, direct, via,
                          extra={"copilotLastActivity": None, "inCopilotReport": listed})

    def _path(self, sid: str, direct: set[str], via: dict[str, list[str]]) -> tuple[str, list[dict[str, Any]]]:
        groups = via.get(sid)
        if not groups:
            return "direct", []
        names = self.group_names
        return ("direct+group" if sid in direct else "group",
                [{"id": g, "displayName": names.get(g)} for g in groups])

    def _hit(self, code: str, t: SkuTally, user: dict[str, Any], last: int | None, sid: str, direct: set[str],
             via: dict[str, list[str]], error: str | None = None, extra: dict[str, Any] | None = None) -> None:
        key = (code, t.sku_id)
        get = user.get
        excluded = self.exclusions and self.exclusions.reason(user, t.sku_id, t.part_number,
                                                               [g for gs in via.values() for g in gs])
        if excluded:  # reported as excluded (count and line), not counted in the finding
            self.exclusions.counts[key] = self.exclusions.counts.get(key, 0) + 1
        else:
            f = self.findings.get(key)
            if f is None:
                f = self.findings[key] = Finding(code, t)
            f.count += 1
            if len(f.samples) < SAMPLE:
                f.samples.append(get("id"))
        if self.lines is None:
            return
        assignment, groups = self._path(sid, direct, via)
        evidence = {
            "accountEnabled": get("accountEnabled"),
            "userType": get("userType"),
            "createdDateTime": get("createdDateTime"),
            self.last_key: _iso(last) if last else None,
            "activitySource": self.activity.source,
            "assignment": assignment,
            "groups": groups,
        }
        if error:
            evidence["error"] = error
        if code == "subscription_not_active":
            evidence["capabilityStatus"] = t.record.get("capabilityStatus") if t.record else None
        if extra:
            evidence.update(extra)
        line = {"userId": get("id"), "userPrincipalName": get("userPrincipalName"), "displayName": get("displayName"),
                "skuId": t.sku_id, "skuPartNumber": t.part_number, "code": code, "evidence": evidence}
        if excluded:
            line["excluded"] = excluded
        self.lines.write(line)
        if self.csv is not None:
            self.csv.write(line, "info" if t.free else FINDINGS[code][0])

    def seat_finding(self, code: str, t: SkuTally, count: int) -> None:
        """A finding about seats; an excluded SKU's is reported as excluded."""
        if self.exclusions.sku(t.sku_id, t.part_number):
            self.exclusions.counts[(code, t.sku_id)] = count
        else:
            self.findings[(code, t.sku_id)] = Finding(code, t, count)

    def seat_findings(self) -> None:
        """Findings about seats rather than users: unused (SKUs paid for) and over-assigned (enabled SKUs)."""
        for t in self.skus.values():
            if t.record is None or t.record.get("capabilityStatus") != "Enabled":
                continue
            enabled = (t.record.get("prepaidUnits") or {}).get("enabled") or 0
            consumed = t.record.get("consumedUnits") or 0
            if enabled > consumed and t.billed:
                self.seat_finding("unused_seats", t, enabled - consumed)
            elif consumed > enabled:
                self.seat_finding("over_assigned", t, consumed - enabled)


_DATES: dict[int, str] = {}  # day number -> "YYYY-MM-DD"


def _iso(ts: int) -> str:
    day, rest = divmod(ts, 86400)
    date = _DATES.get(day)
    if date is None:
        date = _DATES[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
    return f"{date}T{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}Z"


_ID, _LICENCES = b'"id":"', b'"assignedLicenses":['


def _id_and_skus(line: bytes) -> tuple[str, tuple[str, ...]]:
    """A users line's id and SKU ids without parsing the whole record (about a tenth of the cost): the
    snapshot writer's compact JSON lets `"id":"` and the `assignedLicenses` array be cut out and parsed
    alone; any surprise falls back to parsing the whole line."""
    try:
        i = line.index(_ID) + 6
        uid = line[i:line.index(b'"', i)].decode()
        a = line.index(_LICENCES) + len(_LICENCES) - 1
        b = line.index(b"]", a) + 1 if line[a + 1:a + 2] == b"]" else line.index(b"}]", a) + 2
        licences = orjson.loads(line[a:b])
        if len(uid) != 36 or line.count(_ID) != 1:
            raise ValueError(uid)
    except ValueError:
        user = orjson.loads(line)
        uid, licences = user["id"], user.get("assignedLicenses") or ()
    return uid, tuple(sorted({(lic.get("skuId") or "").lower() for lic in licences}))


def previous_assignments(store: Store, relpath: str, flat: bool) -> KeyValueSpool:
    """user id -> SKU ids held in an earlier run (comma-separated, in an on-disk spool): from its
    user_licences file (`flat`, a few bytes a user) or, for runs without one, from its users file."""
    spool = KeyValueSpool()
    if flat:
        for rec in records(store, relpath):
            spool.put(rec["id"], ",".join(rec["skuIds"]))
        return spool
    for line in lines(store, relpath):
        if line:
            uid, skus = _id_and_skus(line)
            spool.put(uid, ",".join(skus))
    return spool


class Changes:
    """Users and licences added and removed since the previous run, counted while the users stream by:
    `load` brings a chunk of users' earlier assignments in, `done` drops them from the spool, and what
    is left at the end are the users that are gone."""

    def __init__(self, previous: KeyValueSpool):
        self.previous = previous
        self.chunk: dict[str, tuple[str, ...]] = {}
        self._shared: dict[str, tuple[str, ...]] = {}
        self.added = 0
        self.assigned: dict[str, int] = {}
        self.removed: dict[str, int] = {}

    def _skus(self, joined: str) -> tuple[str, ...]:
        skus = self._shared.get(joined)
        if skus is None:
            skus = self._shared[joined] = tuple(joined.split(",")) if joined else ()
        return skus

    def load(self, uids: list[str]) -> None:
        self.chunk = {k: self._skus(v) for k, v in self.previous.get_many(uids).items()}

    def done(self, uids: list[str]) -> None:
        self.previous.delete_many(uids)

    def add(self, uid: str, now: tuple[str, ...]) -> None:
        """One current user and the sorted SKU ids it holds."""
        before = self.chunk.pop(uid, None)
        if before == now:
            return  # the common case: nothing changed
        if before is None:
            self.added += 1
            gained, lost = now, ()
        else:
            gained = [s for s in now if s not in before]
            lost = [s for s in before if s not in now]
        for sid in gained:
            self.assigned[sid] = self.assigned.get(sid, 0) + 1
        for sid in lost:
            self.removed[sid] = self.removed.get(sid, 0) + 1

    def finish(self) -> int:
        """Users that are gone (their licences count as removed); returns how many."""
        gone = 0
        for joined in self.previous.values():
            gone += 1
            for sid in self._skus(joined):
                self.removed[sid] = self.removed.get(sid, 0) + 1
        self.previous.close()
        return gone


def count_users(store: Store, relpath: str, tally: Tally, changes: Changes | None, flat: GzLines) -> None:
    """One pass over the users file: the tally, the changes, and user_licences (id and SKU ids per user)."""
    add, track, write, dumps = tally.add, (changes.add if changes else None), flat.write_line, orjson.dumps
    chunk: list[dict[str, Any]] = []

    def count(users: list[dict[str, Any]]) -> None:
        uids = [u.get("id") for u in users]
        tally.activity.load(users)
        if changes:
            changes.load(uids)
        for user, uid in zip(users, uids, strict=True):
            held = tuple(sorted(add(user)))
            if track:
                track(uid, held)
            write(b'{"id":' + dumps(uid) + b',"skuIds":' + dumps(held) + b"}")
        if changes:
            changes.done(uids)

    for user in records(store, relpath, skip=b'"assignedPlans":['):
        chunk.append(user)
        if len(chunk) >= USERS_PER_CHUNK:
            count(chunk)
            chunk = []
    count(chunk)
