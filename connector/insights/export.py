"""licence_findings.csv: the per-user findings as a CSV in the shape of the Microsoft 365 admin center's user
export (Users, Active users, Export users), for tools that take CSV uploads. docs/insights.md names the columns
and why; the file is written as the users stream by, beside licence_findings.jsonl.gz, one row per line there."""

from __future__ import annotations

import hashlib
from typing import Any

from connector.insights.lines import csv_fields
from connector.insights.read import DERIVED_BLOCK
from connector.store.contract import Store

# The admin center's export columns the connector can fill from the snapshot, with its names and spelling
# (Block credential: True for a blocked sign-in; Licenses: product names), then the finding's own columns.
ADMIN_COLUMNS = ("Display name", "User principal name", "Object Id", "Block credential", "Licenses")
FINDING_COLUMNS = ("Finding", "Severity", "SKU part number", "SKU id", "Recommended licence", "Excluded")
COLUMNS = ADMIN_COLUMNS + FINDING_COLUMNS
BOM = b"\xef\xbb\xbf"  # UTF-8 with a byte order mark, as Microsoft's report CSVs are (Excel reads names right)


class FindingsCsv:
    """Writes the findings CSV to the store in blocks; counts, sizes and hashes as it goes."""

    def __init__(self, store: Store, relpath: str):
        self._sink = store.sink(relpath)
        self._hash = hashlib.sha256()
        self.records = 0
        self.bytes = 0
        self._put(BOM)
        self._parts = [(csv_fields(COLUMNS) + "\r\n").encode()]  # encoded rows not yet written
        self._size = 0

    def _put(self, data: bytes) -> None:
        self._hash.update(data)
        self.bytes += len(data)
        self._sink.put(data)

    def _flush(self) -> None:
        data = b"".join(self._parts)
        if data:
            self._put(data)
        self._parts, self._size = [], 0

    def write_rows(self, rows: list[str]) -> None:
        """Rows (lines.UserLines.row), one for each line of licence_findings.jsonl.gz, encoded as they come
        (text of a block would take up to four times its size as a str with non-Latin names)."""
        if not rows:
            return
        self.records += len(rows)
        data = "".join(rows).encode("utf-8")
        self._parts.append(data)
        self._size += len(data)
        if self._size >= DERIVED_BLOCK:
            self._flush()

    def finish(self) -> dict[str, Any]:
        self._flush()
        return {"bytes": self.bytes, "sha256": self._hash.hexdigest(), "records": self.records}

    def commit(self) -> None:
        self._sink.commit()

    def abort(self) -> None:
        self._sink.abort()
