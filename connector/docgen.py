"""Documentation generated from the dataset registry, so permission tables cannot drift from the code.

`python -m connector docs` rewrites the marked blocks in README.md and
docs/setup-app-registration.md; a test fails when they differ from what the registry says.
"""

from __future__ import annotations

import re
from pathlib import Path

from .datasets import DATASETS

ROOT = Path(__file__).resolve().parent.parent
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph's application id, in every tenant


def _requirement(groups: tuple[tuple[str, ...], ...]) -> str:
    """`A` or `B` (any one), and `C` ... (all groups needed)."""
    return " **and** ".join(" or ".join(f"`{r}`" if i == 0 else r for i, r in enumerate(group)) for group in groups)


def _optional(ds) -> str:
    return "".join(f"<br>optional: {' or '.join(f'`{r}`' if i == 0 else r for i, r in enumerate(o.roles))} "
                   f"({o.adds})" for o in ds.optional)


def permission_table() -> str:
    rows = ["| dataset | what | application permission (least privileged first; any one of a group) | licence |",
            "|---|---|---|---|"]
    for ds in DATASETS.values():
        rows.append(f"| `{ds.name}` | {ds.description} | {_requirement(ds.requires)}{_optional(ds)} | "
                    f"{ds.licence or ''} |")
    return "\n".join(rows)


def least_privileged_roles() -> list[str]:
    """A small set of roles that covers every dataset: the least privileged role of each requirement group,
    unless a role already chosen satisfies the group (RoleManagement.Read.Directory, needed for
    role_assignments, also reads the PIM schedules)."""
    groups = sorted({group for ds in DATASETS.values() for group in ds.requires}, key=len)
    chosen: set[str] = set()
    for group in sorted(groups, key=lambda g: (len(g), g)):
        if not chosen.intersection(group):
            chosen.add(group[0])
    # a later, shorter choice may cover an earlier group better: drop roles no group needs alone
    for role in sorted(chosen):
        rest = chosen - {role}
        if all(rest.intersection(g) for g in groups):
            chosen = rest
    return sorted(chosen)


def optional_roles() -> list[tuple[str, list[str]]]:
    """Optional permissions not already in the least-privileged set: (role, ["what it adds (datasets)"])."""
    base = set(least_privileged_roles())
    out: dict[str, dict[str, list[str]]] = {}
    for ds in DATASETS.values():
        for opt in ds.optional:
            if not base.intersection(opt.roles):
                out.setdefault(opt.roles[0], {}).setdefault(opt.adds, []).append(f"`{ds.name}`")
    return [(role, [f"{adds} ({', '.join(names)})" for adds, names in uses.items()])
            for role, uses in sorted(out.items())]


def az_permission_commands() -> str:
    lines = [f'GRAPH={GRAPH_APP_ID}   # Microsoft Graph',
             'role() { az ad sp show --id "$GRAPH" --query "appRoles[?value==\'$1\'].id" -o tsv; }']
    for role in least_privileged_roles():
        lines.append(f'az ad app permission add --id "$APP_ID" --api "$GRAPH" --api-permissions '
                     f'"$(role {role})=Role"')
    optional = optional_roles()
    if optional:
        lines.append("# optional (see the list above):")
    for role, _ in optional:
        lines.append(f'az ad app permission add --id "$APP_ID" --api "$GRAPH" --api-permissions '
                     f'"$(role {role})=Role"')
    return "\n".join(lines)


BLOCKS = {
    "permissions": permission_table,
    "roles": lambda: "\n".join(f"- `{r}`" for r in least_privileged_roles()),
    "optional-roles": lambda: "\n".join(f"- `{r}`: " + "; ".join(uses) for r, uses in optional_roles()),
    "az-permissions": lambda: f"```bash\n{az_permission_commands()}\n```",
}
FILES = ("README.md", "docs/setup-app-registration.md")
_BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(\n<!-- end generated -->)", re.S)


def render(text: str) -> str:
    return _BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group("name")]() + m.group(4), text)


def stale_files(root: Path = ROOT) -> list[str]:
    return [name for name in FILES if (root / name).exists()
            and render((root / name).read_text()) != (root / name).read_text()]


def write(root: Path = ROOT) -> list[str]:
    changed = stale_files(root)
    for name in changed:
        path = root / name
        path.write_text(render(path.read_text()))
    return changed
