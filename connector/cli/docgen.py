"""Documentation generated from the registries, so tables and lists cannot drift from the code.

`python -m connector docs` rewrites the marked blocks (`<!-- generated:NAME -->` ... `<!-- end generated -->`)
in FILES and the JSON Schema of every dataset in docs/schema/; `python -m connector docs --check`
and a test fail when any of them differs from what the code says.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from connector.catalog.datasets import DATASETS

ROOT = Path(__file__).resolve().parents[2]
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


def _request(ds) -> str:
    query = ds.query()
    if ds.strategy == "report":
        call = f"{ds.path}(period='D30')" if ds.report_period else f"{ds.path}()"
        return f"`GET {call}`"
    if ds.api != "v1.0":  # opt-in, from another version of Graph
        return f"`GET /{ds.api}{ds.path.format(period='D30')}?$format=application/json` (opt-in: not in `*`)"
    text = f"`GET {ds.path}{'?' + query if query else ''}`"
    return text if ds.strategy == "pages" else f"{text} (strategy `{ds.strategy}`)"


def dataset_table() -> str:
    """docs/snapshot-format.md: what one record of each dataset is, its fields and its schema."""
    rows = ["| dataset | one record is | fields (all, with types: the schema) | Graph request |", "|---|---|---|---|"]
    for ds in DATASETS.values():
        names = [f"`{f.name}`" for f in ds.fields]
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
        schema = f"[{ds.name}.schema.json](schema/{ds.name}.schema.json)"
        rows.append(f"| `{ds.name}` | {ds.record} | {shown}; {schema} | {_request(ds)} |")
    return "\n".join(rows)


def dataset_names() -> str:
    return ", ".join(f"`{name}`" for name in DATASETS)


def exit_codes() -> str:
    """README: exit codes of the commands, from connector.cli.exit_codes."""
    from connector.cli.exit_codes import EXIT_CODES

    rows = ["| command | exit code | meaning |", "|---|---|---|"]
    for command in ("run", "check"):
        rows += [f"| `{command}` | `{code}` | {text} |" for code, text in EXIT_CODES[command]]
    return "\n".join(rows)


BLOCKS = {
    "permissions": permission_table,
    "datasets": dataset_table,
    "dataset-names": dataset_names,
    "exit-codes": exit_codes,
    "roles": lambda: "\n".join(f"- `{r}`" for r in least_privileged_roles()),
    "optional-roles": lambda: "\n".join(f"- `{r}`: " + "; ".join(uses) for r, uses in optional_roles()),
    "az-permissions": lambda: f"```bash\n{az_permission_commands()}\n```",
}
FILES = ("README.md", "docs/setup-app-registration.md", "docs/snapshot-format.md", "docs/function-app.md")
_BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(\n<!-- end generated -->)", re.S)


def render(text: str) -> str:
    return _BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group("name")]() + m.group(4), text)


SCHEMA_DIR = "docs/schema"


def schema_files() -> dict[str, bytes]:
    """docs/schema/<dataset>.schema.json for every dataset, and insights.schema.json, as written."""
    from connector.catalog.schema import json_schema
    from connector.insights.contract import insights_schema
    from connector.insights.tenants import summary_schema

    files = {f"{SCHEMA_DIR}/{ds.name}.schema.json": orjson.dumps(json_schema(ds), option=orjson.OPT_INDENT_2) + b"\n"
             for ds in DATASETS.values()}
    files[f"{SCHEMA_DIR}/insights.schema.json"] = orjson.dumps(insights_schema(), option=orjson.OPT_INDENT_2) + b"\n"
    files[f"{SCHEMA_DIR}/tenants-summary.schema.json"] = orjson.dumps(summary_schema(),
                                                                      option=orjson.OPT_INDENT_2) + b"\n"
    return files


OPENAPI_FILE = "docs/openapi.json"


def _wanted(root: Path) -> dict[str, bytes | None]:
    """Every generated path with its content; None = a stale schema file to delete."""
    from connector.service.openapi import document

    wanted: dict[str, bytes | None] = {name: render((root / name).read_text()).encode()
                                       for name in FILES if (root / name).exists()}
    wanted[OPENAPI_FILE] = orjson.dumps(document(), option=orjson.OPT_INDENT_2) + b"\n"
    schemas = schema_files()
    wanted.update(schemas)
    for path in sorted((root / SCHEMA_DIR).glob("*.schema.json")):
        rel = path.relative_to(root).as_posix()
        if rel not in schemas:
            wanted[rel] = None
    return wanted


def stale_files(root: Path = ROOT) -> list[str]:
    stale = []
    for name, content in _wanted(root).items():
        path = root / name
        current = path.read_bytes() if path.exists() else None
        if current != content:
            stale.append(name)
    return stale


def write(root: Path = ROOT) -> list[str]:
    changed = stale_files(root)
    wanted = _wanted(root)
    for name in changed:
        path = root / name
        if wanted[name] is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(wanted[name])
    return changed
