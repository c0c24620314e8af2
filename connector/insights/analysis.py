"""Licence figures per SKU and per user, counted in one streaming pass over a run's `users` file.

Definitions (docs/insights.md has them in full): a user holds a SKU when `assignedLicenses` lists it;
the last successful sign-in is `lastSuccessfulSignInDateTime`, else the latest of `lastSignInDateTime` and
`lastNonInteractiveSignInDateTime`; inactive = older than `inactiveDays` before the run started; never
signed in = no sign-in at all and the account older than that. Per-user activity (user id -> epoch
seconds) and the previous run's assignments (user id -> a small integer) wait in spools (connector/spool.py:
a dict up to 250,000 users, on disk past that) and are looked up a chunk of users at a time.

Users share few licence combinations (assignedLicenses with their states: about a hundred in 200,000 users),
so what a combination means (SKUs held, how assigned, errors, overlaps, the findings' fixed parts) is worked out
once; a user then costs a look-up, a judgement of its activity and a count, and the counts are added to the SKUs
at the end. The files are the same, byte for byte, as those of the per-user code this replaced (compared on
collected snapshots: docs/performance.md; tests/test_insights_bytes.py pins the bytes' shape).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from connector.insights.advice import COPILOT_SKUS, DOWNGRADES, Exclusions, Overlaps
from connector.insights.lines import Piece, UserLines, piece
from connector.insights.read import GzLines, batches, lines, records
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


_ISO = datetime.fromisoformat
_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> epoch seconds of its midnight (UTC); dates repeat a lot


def epoch(value: Any) -> int | None:
    """ISO 8601 date-time or date (Graph, reports) -> epoch seconds; None for null, "" or nonsense.
    Graph's usual `2024-05-01T08:00:00Z` takes a fast path (datetime's own parser; what it refuses, a few slices
    and a cached day, which also read a leap second or 24:00:00)."""
    if not value or not isinstance(value, str):
        return None
    if len(value) == 20 and value[19] == "Z":
        try:
            return int(_ISO(value).timestamp())
        except ValueError:
            pass
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


class SignIns(msgspec.Struct, gc=False):
    """The signInActivity dates the insights read (the request ids are skipped)."""

    lastSuccessfulSignInDateTime: Any = None
    lastSignInDateTime: Any = None
    lastNonInteractiveSignInDateTime: Any = None


class SignInUser(msgspec.Struct, gc=False):
    id: str
    signInActivity: SignIns | None = None


def last_successful(sia: SignIns | None) -> int:
    """The last successful sign-in (definition above) of a signInActivity, NEVER when there is none."""
    if not sia:
        return NEVER
    stamp = epoch(sia.lastSuccessfulSignInDateTime)
    if stamp is None:  # null or "" (successes before December 2023 were not backfilled)
        attempts = (epoch(sia.lastSignInDateTime), epoch(sia.lastNonInteractiveSignInDateTime))
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
    chunk: Mapping[str, int] = field(default_factory=dict)

    def _key(self, user: Any) -> str:
        return user.id if self.by == "id" else (user.userPrincipalName or "").lower()

    def load(self, users: list[Any]) -> None:
        if self.spool is not None:
            self.chunk = self.spool.get_many((self._key(u) for u in users), whole=True)

    def of(self, user: Any) -> int | None:
        """Epoch seconds, NEVER, or None when this source knows nothing about the user (among the loaded)."""
        if self.source is None:
            return None
        return self.chunk.get(self._key(user))

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


def sign_in_activity(store: Store, relpath: str, expected: int | None = None) -> Activity:
    """Last successful sign-in per user id, from a file of `expected` records (the manifest's count)."""
    spool = KeyValueSpool(expected=expected)
    for batch in batches(store, relpath, SignInUser):
        spool.put_many([(rec.id, last_successful(rec.signInActivity)) for rec in batch])
    return Activity("signInActivity", "id", spool)


def report_activity(store: Store, relpath: str, expected: int | None = None) -> Activity:
    """getOffice365ActiveUserDetail: the latest of the per-workload last activity dates, keyed by UPN. Reports
    know activity, not sign-ins: "never" cannot be told from "long ago", so no user is NEVER here."""
    spool = KeyValueSpool(keep_max=True, expected=expected)  # a UPN listed twice keeps its latest activity
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


class State(msgspec.Struct, frozen=True, gc=False):
    """A licenseAssignmentStates entry as the insights read it (its date and disabled plans are skipped)."""

    skuId: Any = None
    assignedByGroup: Any = None
    error: Any = None
    state: Any = None


class Licence(msgspec.Struct, frozen=True, gc=False):
    """An assignedLicenses entry."""

    skuId: Any = None
    disabledPlans: tuple[Any, ...] | None = None


class User(msgspec.Struct, gc=False):
    """A users record as the insights read it: msgspec skips every other field (assignedPlans is half the bytes)
    without building it. Its licences and their states, hashable, are the key of its licence combination."""

    id: Any = None
    userPrincipalName: Any = None
    displayName: Any = None
    accountEnabled: Any = None
    userType: Any = None
    createdDateTime: Any = None
    assignedLicenses: tuple[Licence, ...] | None = None
    licenseAssignmentStates: tuple[State, ...] | None = None


class Combo:
    """What every user with the same assignedLicenses and licenseAssignmentStates shares, worked out once: the
    SKUs held (sorted), how each is assigned, the errors, the overlaps, and the finding pieces per user state.
    Users are counted per state and the counts added to the SKUs at the end (`Tally.flush`)."""

    __slots__ = ("any", "held", "tallies", "flat", "direct", "via", "groups", "errors", "redundant", "copilot",
                 "downgrade", "counts", "pieces", "error_pieces")

    def __init__(self, licences: tuple[Licence, ...] | None, states: tuple[State, ...] | None):
        self.any = bool(licences or states)
        held = {(lic.skuId or "").lower() for lic in licences} if licences else set()
        held.discard("")
        self.held = tuple(sorted(held))
        self.flat = b',"skuIds":' + orjson.dumps(self.held) + b"}"  # the rest of the user's user_licences line
        self.direct: set[str] = set()
        self.via: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}
        for st in states or ():
            sid = (st.skuId or "").lower()
            group = st.assignedByGroup
            if not group:
                self.direct.add(sid)
                continue
            self.via.setdefault(sid, []).append(group)
            err, state = st.error, st.state
            if state == "Error" or state == "ActiveWithError" or (err and err != "None"):
                self.errors[sid] = err if err and err != "None" else state
        self.groups = [g for gs in self.via.values() for g in gs]
        self.tallies: list[SkuTally] = []
        self.redundant: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        self.copilot: list[str] = []
        self.downgrade: list[str] = []
        self.counts: dict[tuple[str | None, bool, bool, bool], int] = {}  # users per (class, inactive, never, guest)
        self.pieces: dict[tuple[str | None, bool], list[Piece]] = {}
        self.error_pieces: list[Piece] = []


class Tally:
    """Counts one run's users against its SKUs; writes licence_findings.jsonl.gz lines as it goes."""

    def __init__(self, skus: Iterable[dict[str, Any]], *, started: int, inactive_days: int, activity: Activity,
                 group_names: dict[str, str], lines: GzLines | None, billed: Callable[[SkuTally], bool],
                 free: Callable[[SkuTally], bool] = lambda t: False, overlaps: Overlaps | None = None,
                 exclusions: Exclusions | None = None, downgrades: dict[str, dict[str, Any]] | None = None,
                 csv: Any = None, copilot: dict[str, str | None] | None = None,
                 product_name: Callable[[str], str | None] = lambda sid: None):
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
        self._excluding = bool(self.exclusions)
        self.cutoff = started - inactive_days * 86400
        self.activity = activity
        self.group_names = group_names
        self.lines = lines
        self.csv = csv  # export.FindingsCsv: the same lines in the admin center's CSV shape
        self.product_name = product_name
        self.copilot = copilot  # userPrincipalName -> last Copilot activity (None: none) from the Copilot report
        self.copilot_skus = {sid for sid, t in self.skus.items() if t.part_number.upper() in COPILOT_SKUS}
        self.findings: dict[tuple[str, str], Finding] = {}
        self.users = self.licensed = self.guests = self.licensed_guests = 0
        self.user_classes = dict.fromkeys((ACTIVE, NEW, INACTIVE, NEVER_SIGNED_IN, DISABLED, UNKNOWN), 0)
        self.combos: dict[tuple[tuple[Licence, ...] | None, tuple[State, ...] | None], Combo] = {}
        self._out_lines: list[bytes] = []  # findings lines and CSV rows of the chunk of users being counted
        self._out_rows: list[str] = []

    def sku(self, sku_id: str) -> SkuTally:
        tally = self.skus.get(sku_id)
        if tally is None:
            tally = self.skus[sku_id] = SkuTally(sku_id, sku_id, None)
        return tally

    @property
    def last_key(self) -> str:
        """Evidence field of the last activity: a sign-in, or a usage report's activity date."""
        return "lastSuccessfulSignIn" if self.activity.source != "usageReports" else "lastReportedActivity"

    def _old(self, user: User) -> bool:
        """Created before the inactivity cut-off (newer accounts are neither inactive nor never signed in)."""
        created = epoch(user.createdDateTime)
        return created is None or created < self.cutoff

    def judge(self, user: User, last: int | None) -> tuple[str, int | None, bool, bool]:
        """(exclusive class, last activity in epoch seconds or None, inactive, never signed in) of one user whose
        activity source gives `last` (Activity.of).
        `inactive` and `never` follow the definitions whatever the account state; the class gives precedence
        to a disabled account, so each licensed user lands in exactly one class."""
        disabled = user.accountEnabled is False
        source = self.activity.source
        if source is None:
            return (DISABLED if disabled else UNKNOWN), None, False, False
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

    def combo(self, key: tuple[tuple[Licence, ...] | None, tuple[State, ...] | None]) -> Combo:
        """A licence combination (assignedLicenses, their states), worked out at its first user (SKUs met first
        are listed first)."""
        licences = key[0]
        combo = self.combos[key] = Combo(licences, key[1])
        combo.tallies = [self.sku(sid) for sid in combo.held]
        if self.overlaps is not None and len(combo.held) > 1:
            combo.redundant = self.overlaps.redundant([{"skuId": lic.skuId, "disabledPlans": lic.disabledPlans}
                                                       for lic in licences or ()])
        combo.copilot = sorted(self.copilot_skus.intersection(combo.held))
        combo.downgrade = [sid for sid in combo.held if sid in self.downgrade_to]
        combo.error_pieces = [self._piece("group_assignment_error", self.sku(sid), sid, combo, error=err)
                              for sid, err in combo.errors.items()]
        return combo

    def count(self, users: list[User], changes: Changes | None, flat: GzLines) -> None:
        """Count a chunk of users, write their findings lines and user_licences lines. (The hot loop: users share
        few combinations, so a user costs a look-up, a judgement and a count; `flush` adds the counts up.)"""
        uids = [u.id for u in users]
        self.activity.load(users)
        known = self.activity.chunk.get if self.activity.source else None
        by_id = self.activity.by == "id"
        before = changes.load(uids) if changes else None
        earlier = changes.held if changes else []
        combos, judge, hits, dumps = self.combos, self.judge, self._hits, orjson.dumps
        copilot, fits = self.copilot is not None, bool(self.fits)
        out_flat = []
        for user, uid in zip(users, uids, strict=True):
            key = (user.assignedLicenses, user.licenseAssignmentStates)
            combo = combos.get(key) or self.combo(key)
            guest = user.userType == "Guest"
            if combo.any:
                last = known(uid if by_id else (user.userPrincipalName or "").lower()) if known else None
                cls, last, inactive, never = judge(user, last)
                state = (cls, inactive, never, guest)
                found = combo.error_pieces
                if combo.held:
                    waste = _WASTE.get(cls)
                    pieces = combo.pieces.get((waste, guest))
                    if pieces is None:
                        pieces = combo.pieces[(waste, guest)] = self._pieces(combo, waste, guest)
                    if not waste and (combo.copilot and copilot or combo.downgrade and fits):
                        pieces = pieces + self._dynamic(combo, user)
                    found = pieces + found if found else pieces
                if found:
                    hits(user, last, found)
            else:
                state = (None, False, False, guest)
            combo.counts[state] = combo.counts.get(state, 0) + 1
            if before is not None:
                was = before.pop(uid, None)
                if was is None or earlier[was] != combo.held:
                    changes.changed(None if was is None else earlier[was], combo.held)  # type: ignore[union-attr]
            out_flat.append(b'{"id":' + dumps(uid) + combo.flat)
        flat.write_lines(out_flat)
        if self.lines is not None:
            self.lines.write_lines(self._out_lines)
            self._out_lines = []
        if self.csv is not None:
            self.csv.write_rows(self._out_rows)
            self._out_rows = []
        if changes:
            changes.done(uids)

    def _pieces(self, combo: Combo, waste: str | None, guest: bool) -> list[Piece]:
        """The findings a user of this combination and state gets (before the ones that depend on the user)."""
        pieces = []
        for sid, t in zip(combo.held, combo.tallies, strict=True):
            if waste and t.billed:
                pieces.append(self._piece(waste, t, sid, combo))
            if guest:
                pieces.append(self._piece("licence_on_guest", t, sid, combo))
            if sid in combo.direct and sid in combo.via:
                pieces.append(self._piece("direct_and_group_assignment", t, sid, combo))
            if t.not_active:
                status = (t.record.get("capabilityStatus") if t.record else None,)
                pieces.append(self._piece("subscription_not_active", t, sid, combo, status=status))
        for sid, cover, plans in combo.redundant:
            extra = {"coveredBy": [self.skus[c].part_number if c in self.skus else c for c in cover],
                     "sharedPlans": list(plans)}
            pieces.append(self._piece("overlapping_licence", self.sku(sid), sid, combo, extra=extra))
        return pieces

    def _dynamic(self, combo: Combo, user: User) -> list[Piece]:
        """Findings that depend on the user's usage: an unused Copilot licence, a downgrade candidate."""
        pieces = []
        upn = (user.userPrincipalName or "").lower()
        if self.copilot is not None and combo.copilot and not self.copilot.get(upn):
            extra = {"copilotLastActivity": None, "inCopilotReport": upn in self.copilot}
            pieces += [self._piece("copilot_unused", self.skus[sid], sid, combo, extra=extra)
                       for sid in combo.copilot if self.skus[sid].billed]
        fit = self.fits.get(upn) if combo.downgrade else None
        if fit is not None:
            pieces += [self._piece("downgrade_candidate", self.skus[sid], sid, combo,
                                   extra={"downgradeTo": self.downgrade_to[sid], **fit}) for sid in combo.downgrade]
        return pieces

    def _piece(self, code: str, t: SkuTally, sid: str, combo: Combo, error: str | None = None,
               status: tuple[Any] | None = None, extra: dict[str, Any] | None = None) -> Piece:
        groups = combo.via.get(sid)
        names = self.group_names
        assignment = "direct" if not groups else "direct+group" if sid in combo.direct else "group"
        listed = [{"id": g, "displayName": names.get(g)} for g in groups or ()]
        return piece(code, t, sid, "info" if t.free else FINDINGS[code][0], self.product_name(sid) or t.part_number,
                     assignment, listed, combo.groups, error, status, extra)

    def _hits(self, user: User, last: int | None, pieces: list[Piece]) -> None:
        """Count the user's findings (or their exclusions: reported, not counted) and write their lines and rows."""
        uid = user.id
        lines, rows = self._out_lines, self._out_rows
        out = None if self.lines is None else UserLines(user, _iso(last) if last else None, self.last_key,
                                                        self.activity.source)
        for p in pieces:
            excluded = self._excluding and self.exclusions.reason(uid, user.userPrincipalName, p.sku.sku_id,
                                                                   p.sku.part_number, p.groups) or None
            if excluded:
                self.exclusions.counts[p.key] = self.exclusions.counts.get(p.key, 0) + 1
            else:
                f = p.finding
                if f is None:
                    f = p.finding = self.findings.get(p.key) or self.findings.setdefault(p.key,
                                                                                         Finding(p.key[0], p.sku))
                f.count += 1
                if len(f.samples) < SAMPLE:
                    f.samples.append(uid)
            if out is not None:
                lines.append(out.line(p, excluded))
                rows.append(out.row(p, excluded))

    def flush(self) -> None:
        """Add the users counted per combination and state to the totals and to their SKUs."""
        classes = self.user_classes
        for combo in self.combos.values():
            users = 0
            for (cls, inactive, never, guest), n in combo.counts.items():
                users += n
                self.users += n
                self.guests += n if guest else 0
                if not combo.held:
                    continue
                self.licensed += n
                self.licensed_guests += n if guest else 0
                classes[cls] += n
                for sid, t in zip(combo.held, combo.tallies, strict=True):
                    t.assigned += n
                    t.classes[cls] += n
                    if cls == DISABLED:
                        t.disabled += n
                    if inactive:
                        t.inactive += n
                    if never:
                        t.never += n
                    if guest:
                        t.guests += n
                    if sid in combo.direct and sid in combo.via:
                        t.direct_and_group += n
            combo.counts = {}
            for sid in combo.errors:
                self.sku(sid).group_errors += users

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


class FlatUser(msgspec.Struct, gc=False):
    """A user_licences line."""

    id: str
    skuIds: tuple[str, ...]


def previous_assignments(store: Store, relpath: str, flat: bool, expected: int | None = None
                         ) -> tuple[KeyValueSpool, list[tuple[str, ...]]]:
    """user id -> SKU ids held in an earlier run: a spool of user id -> the index of its SKU ids in the list
    returned with it (users share few combinations: a small integer a user, not a string), from the run's
    user_licences file (`flat`, a few bytes a user) or, for runs without one, from its users file."""
    spool, held, index = KeyValueSpool(expected=expected), [], {}

    def number(skus: tuple[str, ...]) -> int:
        i = index.get(skus)
        if i is None:
            i = index[skus] = len(held)
            held.append(skus)
        return i

    if flat:
        for batch in batches(store, relpath, FlatUser):
            spool.put_many([(rec.id, number(rec.skuIds)) for rec in batch])
        return spool, held
    for line in lines(store, relpath):
        if line:
            uid, skus = _id_and_skus(line)
            spool.put(uid, number(skus))
    return spool, held


class Changes:
    """Users and licences added and removed since the previous run, counted while the users stream by:
    `load` brings a chunk of users' earlier assignments in, `done` drops them from the spool, and what
    is left at the end are the users that are gone."""

    def __init__(self, previous: tuple[KeyValueSpool, list[tuple[str, ...]]]):
        self.previous, self.held = previous  # user id -> index in `held` (previous_assignments)
        self.added = 0
        self.assigned: dict[str, int] = {}
        self.removed: dict[str, int] = {}

    def load(self, uids: list[str]) -> dict[str, int]:
        """The earlier assignments (indexes in `held`) of a chunk of users, to be popped as the users are
        counted; in memory, the spool's own map (what is left in it at the end are the users that are gone)."""
        return self.previous.get_many(uids, whole=True)  # type: ignore[return-value]

    def done(self, uids: list[str]) -> None:
        if self.previous.on_disk:
            self.previous.delete_many(uids)

    def changed(self, before: tuple[str, ...] | None, now: tuple[str, ...]) -> None:
        """One current user whose sorted SKU ids differ from the earlier ones (None: a new user)."""
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
        for i in self.previous.values():
            gone += 1
            for sid in self.held[i]:
                self.removed[sid] = self.removed.get(sid, 0) + 1
        self.previous.close()
        return gone


def count_users(store: Store, relpath: str, tally: Tally, changes: Changes | None, flat: GzLines) -> None:
    """One pass over the users file: the tally, the changes, and user_licences (id and SKU ids per user)."""
    chunk: list[User] = []
    for users in batches(store, relpath, User):
        chunk += users
        if len(chunk) >= USERS_PER_CHUNK:
            tally.count(chunk, changes, flat)
            chunk = []
    tally.count(chunk, changes, flat)
    tally.flush()
