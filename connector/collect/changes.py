"""What changed in a dataset since its previous snapshot: the changes file (`changes/<dataset>.jsonl.gz`).

One line per record added, changed or removed, keyed by the dataset's key properties (Dataset.key):
`{"id": ..., "change": "changed", "properties": [...], "record": {...}}`; `record` is the record as this run's
snapshot holds it (added and changed), `properties` the top-level properties whose values differ. Membership
datasets (a key of several properties, nothing else to change) say `memberAdded` and `memberRemoved`.

Two ways to know: a delta run applies Graph's changes to the previous records and says what it did
(connector/collect/delta.py); a full read is compared with the previous snapshot by key and a hash of each
line, lines that differ by value at the end (Differ). The previous snapshot is read as a stream and verified
against its manifest's sha256; keys, hashes and differing lines wait in KeyValueSpools (memory up to 250,000
keys, then a temporary SQLite file), so memory does not grow with the tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

import msgspec
import orjson

from connector.catalog.datasets import Dataset
from connector.spool import KeyValueSpool
from connector.store.contract import JsonlGzWriter, Store, gzip_inflater, read_json
from connector.store.publish import MANIFEST, latest_folder, run_prefix

LINES_PER_BATCH = 2000
PIECE = 1 << 20  # bytes of JSON Lines inflated at a time


class BaselineCorrupt(Exception):
    """The previous snapshot's file does not match its manifest (bytes or sha256)."""


def changes_file(ds: Dataset) -> str:
    return f"changes/{ds.name}.jsonl.gz"


def record_hash(record: dict[str, Any]) -> int:
    """A hash of the record's content, the same whatever the order of its properties (63 bits: a SQLite integer)."""
    digest = hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def key_of(ds: Dataset, record: dict[str, Any]) -> str:
    if len(ds.key) == 1:
        return str(record.get(ds.key[0]))
    return "|".join(str(record.get(k)) for k in ds.key)


def changed_properties(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def hashed(ds: Dataset, lines: list[bytes]) -> list[tuple[str, int, dict[str, Any]]]:
    """(key, hash, record) of JSON Lines: the CPU-bound part of a comparison, run in a thread."""
    out = []
    for line in lines:
        if line:
            record = orjson.loads(line)
            out.append((key_of(ds, record), record_hash(record), record))
    return out


@cache
def key_decoder(names: tuple[str, ...]) -> msgspec.json.Decoder:
    """Reads only the key properties of a JSON line (msgspec skips the rest without building it)."""
    fields = [(f"k{i}", Any, None) for i in range(len(names))]
    return msgspec.json.Decoder(msgspec.defstruct("Key", fields, rename={f"k{i}": n for i, n in enumerate(names)}))


def line_hash(line: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(line, digest_size=8).digest(), "big") >> 1


def keyed_lines(ds: Dataset, lines: list[bytes]) -> list[tuple[str, int, bytes]]:
    """(key, hash of the line's bytes, line): the cheap first comparison of a full read with the previous file.
    Equal bytes are equal records; different bytes may still be equal values (another serialisation: a record
    rewritten by a delta run), which Differ.finish tells apart."""
    decode = key_decoder(ds.key).decode
    out = []
    for line in lines:
        if line:
            parts = [getattr(decode(line), f"k{i}") for i in range(len(ds.key))]
            key = str(parts[0]) if len(parts) == 1 else "|".join(str(p) for p in parts)
            out.append((key, line_hash(line), line))
    return out


class Baseline:
    """A published file of a dataset, read back as a stream of JSON Lines and checked against its manifest."""

    def __init__(self, store: Store, tenant_id: str, run_id: str, file: str, sha256: str):
        self.store, self.tenant_id, self.run_id, self.file, self.sha256 = store, tenant_id, run_id, file, sha256
        self.path = f"{run_prefix(tenant_id, run_id)}/{file}"

    @classmethod
    def of_run(cls, store: Store, tenant_id: str, run_id: str, ds: Dataset) -> Baseline | None:
        """The dataset's file of that run, when the run is published and the dataset succeeded in it."""
        try:
            manifest = read_json(store, f"{run_prefix(tenant_id, run_id)}/{MANIFEST}")
        except ValueError:
            return None
        if not isinstance(manifest, dict) or manifest.get("runId") != run_id:
            return None
        entry = (manifest.get("datasets") or {}).get(ds.name) or {}
        if entry.get("status") != "succeeded" or entry.get("file") != ds.file or not entry.get("sha256"):
            return None
        return cls(store, tenant_id, run_id, ds.file, entry["sha256"])

    @classmethod
    def latest(cls, store: Store, tenant_id: str, ds: Dataset) -> Baseline | None:
        """The dataset's newest published file (latest/manifest.json names the run it comes from)."""
        try:
            current = read_json(store, f"{latest_folder(tenant_id)}/{MANIFEST}")
        except ValueError:
            return None
        for entry in (current or {}).get("files") or [] if isinstance(current, dict) else []:
            if isinstance(entry, dict) and entry.get("path") == ds.file and isinstance(entry.get("runId"), str):
                return cls.of_run(store, tenant_id, entry["runId"], ds)
        return None

    def lines(self) -> Iterator[list[bytes]]:
        """The file's JSON Lines in batches; BaselineCorrupt at the end when its sha256 is not the manifest's.
        Inflated a piece at a time (PIECE bytes), so memory does not grow with the file."""
        inflate = gzip_inflater()
        digest = hashlib.sha256()
        rest = b""
        for chunk in self.store.read_chunks(self.path):
            digest.update(chunk)
            data = chunk
            while data:
                text = rest + inflate.decompress(data, PIECE)
                data = inflate.unconsumed_tail
                lines = text.split(b"\n")
                rest = lines.pop()
                for i in range(0, len(lines), LINES_PER_BATCH):
                    yield [line for line in lines[i:i + LINES_PER_BATCH] if line]
        rest += inflate.flush()
        if rest.strip():
            yield [line for line in rest.split(b"\n") if line]
        if digest.hexdigest() != self.sha256:
            raise BaselineCorrupt(f"{self.path} does not match the sha256 its manifest gives")

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """lines() read in a thread, a batch at a time."""
        it = self.lines()
        done = object()
        while True:
            batch = await asyncio.to_thread(next, it, done)
            if batch is done:
                return
            yield batch  # type: ignore[misc]


class ChangeLines:
    """Writes the changes file and counts what it says."""

    def __init__(self, ds: Dataset, writer: JsonlGzWriter):
        self.ds, self.writer = ds, writer
        self.membership = len(ds.key) > 1
        self.counts = {"added": 0, "changed": 0, "removed": 0}
        self._pending: list[dict[str, Any]] = []

    def _line(self, record: dict[str, Any], change: str) -> dict[str, Any]:
        line = {k: record.get(k) for k in self.ds.key}
        line["change"] = change
        return line

    async def added(self, record: dict[str, Any]) -> None:
        self.counts["added"] += 1
        await self._add({**self._line(record, "memberAdded" if self.membership else "added"), "record": record})

    async def changed(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        properties = changed_properties(old, new)
        if not properties:
            return  # the same values (another order of properties): no change
        self.counts["changed"] += 1
        await self._add({**self._line(new, "changed"), "properties": properties, "record": new})

    async def removed(self, old: dict[str, Any]) -> None:
        self.counts["removed"] += 1
        await self._add(self._line(old, "memberRemoved" if self.membership else "removed"))

    async def _add(self, line: dict[str, Any]) -> None:
        self._pending.append(line)
        if len(self._pending) >= LINES_PER_BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            await self.writer.write(batch)


class Differ:
    """A full read compared with the previous snapshot as this run's file is written (`see` gets the JSON Lines
    the file got, replayed checkpoints included); `finish` writes what was changed and removed. Lines are
    compared by a hash of their bytes; those that differ wait in a spool (disk past 250,000) and are compared by
    value at the end, so memory does not grow with the tenant even if every line was written differently."""

    def __init__(self, ds: Dataset, baseline: Baseline, out: ChangeLines):
        self.ds, self.baseline, self.out = ds, baseline, out
        self.previous = KeyValueSpool()  # key -> hash of the previous line; keys seen in this run are removed
        self.changed = KeyValueSpool()  # key -> this run's line, for lines whose bytes differ

    async def prepare(self) -> None:
        async for batch in self.baseline.batches():
            for key, digest, _line in await asyncio.to_thread(keyed_lines, self.ds, batch):
                self.previous.put(key, digest)

    async def see(self, data: bytes) -> None:
        rows = await asyncio.to_thread(keyed_lines, self.ds, data.split(b"\n"))
        before = self.previous.get_many(key for key, _h, _l in rows)
        for key, digest, line in rows:
            old = before.get(key)
            if old is None:
                await self.out.added(orjson.loads(line))
            elif old != digest:
                self.changed.put(key, line.decode())
        self.previous.delete_many(k for k, _h, _l in rows if k in before)

    async def finish(self) -> None:
        """A second pass over the previous snapshot: the old values of changed records, and removed ones."""
        if len(self.changed) or len(self.previous):
            async for batch in self.baseline.batches():
                rows = await asyncio.to_thread(keyed_lines, self.ds, batch)
                keys = [key for key, _h, _l in rows]
                changed, gone = self.changed.get_many(keys), self.previous.get_many(keys)
                for key, _digest, line in rows:
                    if key in changed:
                        await self.out.changed(orjson.loads(line), orjson.loads(changed[key]))
                    elif key in gone:
                        await self.out.removed(orjson.loads(line))
        await self.out.flush()

    def close(self) -> None:
        self.previous.close()
        self.changed.close()
