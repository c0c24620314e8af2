"""Documentation that is generated from the code stays in step with it."""

from __future__ import annotations

from connector.catalog.datasets import DATASETS
from connector.cli.docgen import ROOT, least_privileged_roles, permission_table, stale_files


def test_generated_blocks_are_up_to_date():
    assert stale_files() == [], "run: python -m connector docs"


def test_permission_table_lists_every_dataset_with_its_least_privileged_role():
    table = permission_table()
    for ds in DATASETS.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{ds.name}` |"))
        for group in ds.requires:
            assert f"`{group[0]}`" in row
    roles = set(least_privileged_roles())
    groups = {g for ds in DATASETS.values() for g in ds.requires}
    assert all(roles.intersection(g) for g in groups)  # every dataset is covered
    assert roles <= {g[0] for g in groups}  # by least-privileged roles only
    for role in roles:  # none is spare
        assert not all((roles - {role}).intersection(g) for g in groups), role


def test_every_setting_is_documented_in_the_readme():
    from connector.config import SETTING_NAMES

    readme = (ROOT / "README.md").read_text()
    missing = [name for name in SETTING_NAMES if f"`{name}`" not in readme]
    assert missing == []


def test_optional_permissions_are_rendered_apart_from_the_required_ones():
    from connector.cli.docgen import optional_roles

    table = permission_table()
    row = next(line for line in table.splitlines() if line.startswith("| `group_members` |"))
    assert "optional: `Member.Read.Hidden` (members of groups with hidden membership)" in row
    roles = dict(optional_roles())
    assert "Member.Read.Hidden" in roles and "ReportSettings.Read.All" in roles
    assert "Member.Read.Hidden" not in least_privileged_roles()
    for name in ("README.md", "docs/setup-app-registration.md"):
        text = (ROOT / name).read_text()
        block = text.split("<!-- generated:optional-roles -->")[1].split("<!-- end generated -->")[0]
        assert "`Member.Read.Hidden`: members of groups with hidden membership (`group_members`)" in block, name


def test_every_manifest_warning_code_is_documented():
    """Codes the code can put in a manifest's warnings, against docs/snapshot-format.md's list."""
    import re

    codes = set()
    for path in (ROOT / "connector").rglob("*.py"):
        if path.name in ("api.py", "main.py"):  # HTTP error codes (docs/function-app.md, the OpenAPI) and
            continue                           # `check --json` errors, not manifest warnings
        text = path.read_text()
        codes |= set(re.findall(r'(?:(?<![.\w])warning|_warning|\.warn)\(\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'\{"code": "([a-z_]+)"', text))
    assert {"missing_permission", "secret_expiring", "concealed_names"} <= codes  # the patterns still find them
    text = (ROOT / "docs/snapshot-format.md").read_text()
    row = text[text.index("| code | meaning |"):text.index("Per dataset:")]  # the table of warning codes
    assert sorted(c for c in codes if f"`{c}`" not in row) == []


def test_every_azd_variable_is_documented_in_deploy_md():
    import json
    import re

    params = json.loads((ROOT / "infra/main.parameters.json").read_text())["parameters"]
    text = (ROOT / "docs/deploy.md").read_text()
    for name, entry in params.items():
        var = re.match(r"\$\{([A-Z0-9_]+)", entry["value"]).group(1)
        assert f"`{var}`" in text and f"`{name}`" in text, f"{var} / {name} missing from docs/deploy.md"
