"""Exit codes of the command line, per command: shown in `--help` and generated into the README."""

from __future__ import annotations

EXIT = {"succeeded": 0, "partial": 3, "failed": 1}
EXIT_CONFIG = 2
EXIT_BUSY = 4
EXIT_LATEST = 5
_RUN_CODES = (
    (0, "succeeded: every selected dataset was collected (every registered tenant, when `run` collects them all)"),
    (3, "partial: some datasets were skipped or failed (the summary says which and why), the others collected; "
        "collecting every registered tenant: some tenants partial or failed (one line per tenant says which)"),
    (1, "failed: nothing was collected (for example no token), or the snapshot could not be written; every "
        "registered tenant failed"),
    (2, "bad configuration or command line: the message names the setting or option"),
    (4, "another run of the tenant is collecting into the same destination (its lock is held); try again later"),
    (5, "collected and published in the run's own folder (succeeded or partial: the summary says which), but "
        "`latest.json` or `latest/` could not be updated (for example a full disk): the `latest_not_updated` "
        "warning says why, `latest/` keeps its earlier copies, and the next run updates it"),
)
EXIT_CODES: dict[str, tuple[tuple[int, str], ...]] = {
    "run": _RUN_CODES,
    "check": (
        (0, "a token was had and every selected dataset can be collected"),
        (3, "a token was had, but some datasets cannot be collected (missing permission or licence: see the fixes)"),
        (1, "no token: the message names the cause (expired secret, wrong tenant or client id, no consent)"),
        (2, "bad configuration or command line"),
    ),
    "demo": _RUN_CODES,
    "insights": ((0, "the insights files of the run were computed and its manifest updated"),
                 (1, "the run was not found, or its insights could not be computed (the message says why)"),
                 (2, "bad configuration or command line")),
    "tenants": ((0, "done: the registry was changed, listed, or the consent URL printed"),
                (1, "`remove` or `consent-url`: the tenant is not registered"),
                (2, "bad configuration or command line, or a malformed registry entry (the message names the entry "
                    "and the field)")),
    "docs": ((0, "the generated files are up to date (or were updated)"),
             (1, "`--check`: a generated file is out of date; run `m365-connector docs`")),
}
