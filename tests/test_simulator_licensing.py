"""The simulated tenant's licensing is coherent and has what licence reviews look for (issue 12, point 10)."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import orjson

from simulator import Simulator, TenantSpec
from tests.conftest import apply_env
from tests.helpers import read_dataset, run

ROOT = Path(__file__).resolve().parent.parent


def test_group_based_licences_name_real_groups_and_their_skus():
    sim = Simulator(TenantSpec(seed=41, users=1500))
    users = list(sim.tenant.users())
    inv = sim.inventory
    groups = {g["id"]: i for i, g in enumerate(inv.groups())}
    members = {gid: {oid for _t, oid in inv.transitive_members(i)} for gid, i in groups.items()}
    assigns = {g["id"]: {lic["skuId"] for lic in g["assignedLicenses"]} for g in inv.groups()}
    inherited = direct_and_group = errors = 0
    for u in users:
        held = {lic["skuId"] for lic in u["assignedLicenses"]}
        paths = collections.defaultdict(list)
        for st in u["licenseAssignmentStates"]:
            paths[st["skuId"]].append(st)
            group = st["assignedByGroup"]
            if group:
                inherited += 1
                assert u["id"] in members[group], "the user is not in the group the licence is inherited from"
                assert st["skuId"] in assigns[group], "the group does not assign that SKU"
            if st["state"] == "Error":
                errors += 1
                assert group and st["error"] == "CountViolation" and st["skuId"] not in held
        # Every licence held has an assignment path, and every active path gives the licence.
        assert held == {sid for sid, sts in paths.items() if any(st["state"] == "Active" for st in sts)}
        direct_and_group += sum(1 for sts in paths.values()
                                if {st["assignedByGroup"] is None for st in sts} == {True, False})
    # Licence groups hold exactly the users who inherit from them.
    for gid, skus in assigns.items():
        if skus:
            want = {u["id"] for u in users for st in u["licenseAssignmentStates"] if st["assignedByGroup"] == gid}
            assert want == {oid for _t, oid in inv.direct_members(groups[gid])}
    assert inherited > 300 and direct_and_group > 20 and errors > 0
    # Seats follow the licences actually assigned; the SKU whose group assignments fail has no spare seat.
    held = collections.Counter(lic["skuId"] for u in users for lic in u["assignedLicenses"])
    skus = sim.tenant.subscribed_skus()
    assert all(s["consumedUnits"] == held[s["skuId"]] for s in skus)
    ems = next(s for s in skus if s["skuPartNumber"] == "EMS")
    assert ems["prepaidUnits"]["enabled"] == ems["consumedUnits"]
    suspended = next(s for s in skus if s["capabilityStatus"] == "Suspended")
    assert held[suspended["skuId"]] > 0 and suspended["prepaidUnits"]["enabled"] == 0
    licensed = [u for u in users if u["assignedLicenses"]]
    assert sum(not u["accountEnabled"] for u in licensed) > 20
    assert sum(u["signInActivity"] is None for u in licensed) > 50
    assert sum(u["userType"] == "Guest" for u in licensed) > 5


def test_licence_changes_change_some_users_only():
    before = Simulator(TenantSpec(seed=42, users=800)).tenant
    after = Simulator(TenantSpec(seed=42, users=800, licence_changes=1)).tenant
    changed = sum(before.user(i)["assignedLicenses"] != after.user(i)["assignedLicenses"] for i in range(800))
    assert 5 < changed < 60
    assert all(before.user(i)["id"] == after.user(i)["id"] for i in range(0, 800, 97))


def test_report_names_visible_from_the_command_line(monkeypatch, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--users", "60", "--report-names", "visible"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        env = orjson.loads(proc.stdout.readline())
        apply_env(monkeypatch, env)
        manifest, store = run(env, SNAPSHOT_DIR=str(tmp_path), M365_DATASETS="report_office365_active_user_detail")
    finally:
        proc.terminate()
        proc.wait(20)
    entry = manifest["datasets"]["report_office365_active_user_detail"]
    assert entry["status"] == "succeeded" and entry["concealed"] is False
    rows = read_dataset(store, manifest, "report_office365_active_user_detail")
    assert rows and all("@" in r["userPrincipalName"] for r in rows)
    # Activity follows sign-ins: somebody is active, somebody has no activity date at all.
    dates = [[v for k, v in r.items() if k.endswith("LastActivityDate")] for r in rows]
    assert any(any(d) for d in dates) and any(not any(d) for d in dates)
