"""The snapshot store in a local folder: `.partial` files renamed at commit, an flock as the tenant lease."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import orjson

from connector.store.contract import BLOCK_SIZE, PROBE_NAME, DestinationError, Lease, Sink


class _LocalSink:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._final = path
        self._tmp = path.with_name(path.name + ".partial")
        self._fh = open(self._tmp, "wb")

    def put(self, block: bytes) -> None:
        self._fh.write(block)

    def finish(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def commit(self) -> None:
        if not self._fh.closed:
            self.finish()
        os.replace(self._tmp, self._final)

    def abort(self) -> None:
        try:
            self._fh.close()  # may raise again on a full disk: the file goes all the same
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


def _temporary(path: Path) -> Path:
    """A name of its own beside `path` for one writer's bytes before the rename: writers of the same file at the
    same moment (the Function's concurrent requests) never share one (issue 22, item 6). Hidden and `.partial`,
    so listings skip it, and discard() removes what a killed writer left."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")


def _write_whole(path: Path, data: bytes) -> Path:
    """`data` in a temporary file beside `path`, flushed to disk; the caller renames or links it."""
    tmp = _temporary(path)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave it behind
        raise
    return tmp


class _StagedCopy:
    """A copy written beside its target and renamed over it at commit (the sink contract without put()).

    Files in the store are never changed once written (every write is a new file renamed into place), so the
    copy is a hard link where the file system allows one: latest/ then costs neither a second copy of every
    file on disk nor the time to write and fsync it (about a second at 100,000 users, ten at 1,000,000)."""

    def __init__(self, src: Path, dst: Path):
        dst.parent.mkdir(parents=True, exist_ok=True)
        self._final = dst
        self._tmp = _temporary(dst)
        try:
            try:
                os.link(src, self._tmp)
            except OSError:  # another file system, or one without hard links: a real copy
                shutil.copyfile(src, self._tmp)
                with open(self._tmp, "rb") as fh:
                    os.fsync(fh.fileno())
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def commit(self) -> None:
        os.replace(self._tmp, self._final)
        # rename() does nothing when both names are links to one file (POSIX rename(2)): a run published again
        # (its redelivery finishing latest/) would leave the temporary link behind.
        self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        self._tmp.unlink(missing_ok=True)


class LocalStore:
    """SNAPSHOT_DIR: the same layout as Blob Storage, in a folder."""

    setting = "SNAPSHOT_DIR"

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.location = str(self.root)
        self.requests = 0

    def _path(self, relpath: str) -> Path:
        path = (self.root / relpath).resolve()
        if self.root not in path.parents:
            raise ValueError(f"path escapes the snapshot folder: {relpath}")
        return path

    def prepare(self) -> None:
        """Create the folder and prove it can be written, before any Graph request is spent."""
        probe = self.root / f"{PROBE_NAME}-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as fh:
                fh.write(b"probe")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            hint = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                    errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full",
                    errno.ENOTDIR: "a part of the path is a file"}.get(exc.errno or 0, reason.lower())
            raise DestinationError(self.setting, f"cannot write to {self.root} ({hint}). Point SNAPSHOT_DIR "
                                                 "(or --out) at a folder this process may write.") from exc
        finally:
            probe.unlink(missing_ok=True)

    def explain(self, exc: BaseException) -> DestinationError:
        """A failure of this folder as one line naming the setting."""
        if isinstance(exc, DestinationError):
            return exc
        reason = os.strerror(exc.errno).lower() if isinstance(exc, OSError) and exc.errno else type(exc).__name__
        return DestinationError(self.setting, f"writing to {self.root} failed ({reason}).")

    def sink(self, relpath: str) -> Sink:
        self.requests += 1
        return _LocalSink(self._path(relpath))

    def write_bytes(self, relpath: str, data: bytes, content_type: str = "") -> None:
        self.requests += 1
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_whole(path, data)
        try:
            os.replace(tmp, path)  # atomic: readers see the old or the new file, never half of one
        finally:
            tmp.unlink(missing_ok=True)

    def read_bytes(self, relpath: str) -> bytes | None:
        self.requests += 1
        try:
            return self._path(relpath).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_chunks(self, relpath: str) -> Iterator[bytes]:
        """The file as a stream of blocks (reading back large files without holding them); FileNotFoundError."""
        with open(self._path(relpath), "rb") as fh:
            while block := fh.read(BLOCK_SIZE):
                yield block

    def list(self, prefix: str) -> list[str]:
        self.requests += 1
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()
                      and not p.name.endswith(".partial") and not p.name.startswith("."))

    def list_first(self, prefix: str, limit: int) -> list[str]:
        """The first `limit` file names directly in the folder `prefix`, in name order."""
        self.requests += 1
        base = self._path(prefix)
        try:
            names = sorted(e.name for e in os.scandir(base)
                           if e.is_file() and not e.name.endswith(".partial") and not e.name.startswith("."))
        except FileNotFoundError:
            return []
        return [f"{prefix.rstrip('/')}/{n}" for n in names[:limit]]

    def url(self, relpath: str) -> str:
        return str(self._path(relpath))

    def create(self, relpath: str, data: bytes) -> bool:
        """Write only if absent; False when the file exists. The file appears whole: written beside it, then
        hard-linked to its name, which fails if the name exists (a reader never sees it empty)."""
        self.requests += 1
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_whole(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: an exclusive create, written at once
            try:
                with open(path, "xb") as fh:
                    fh.write(data)
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def read_tagged(self, relpath: str) -> tuple[bytes, str] | None:
        """Content and a tag that changes with it (the content itself: files have no ETag)."""
        data = self.read_bytes(relpath)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())

    def _guard(self, relpath: str) -> Any:
        """An flock beside a file, so compare-and-replace is atomic among processes on this machine."""
        import fcntl

        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path.with_name(f".{path.name}.guard"), "a+b")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        return fh

    def replace_if_unchanged(self, relpath: str, data: bytes, tag: str | None) -> bool:
        """Write only if the file still has `tag` (None: only if it does not exist)."""
        with self._guard(relpath):
            current = self.read_tagged(relpath)
            if (current[1] if current else None) != tag:
                return False
            self.write_bytes(relpath, data)
            return True

    def delete_if_unchanged(self, relpath: str, tag: str) -> None:
        with self._guard(relpath):
            current = self.read_tagged(relpath)
            if current is not None and current[1] == tag:
                self._path(relpath).unlink(missing_ok=True)

    def delete(self, relpath: str) -> None:
        self.requests += 1
        self._path(relpath).unlink(missing_ok=True)

    def discard(self, relpath: str) -> None:
        """Remove a file and whatever a writer left of it (its .partial, temporary copies of killed writers)."""
        path = self._path(relpath)
        self.requests += 1
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".partial").unlink(missing_ok=True)
        for leftover in path.parent.glob(f".{glob_escape(path.name)}.*.partial"):
            leftover.unlink(missing_ok=True)

    def discard_folder(self, prefix: str) -> None:
        """Remove the folder `prefix` with everything in it, temporaries included: one call, not a discard() a file
        (each of which scans the folder for a killed writer's leftovers: thousands of a run's spooled chunks took
        2.9-8.8 s at 1,000,000 users)."""
        self.requests += 1
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)

    def clear_temporaries(self, prefix: str) -> None:
        """Remove the temporary files killed writers left directly in the folder `prefix` (call it only while
        no other writer can be at work there: under the tenant's lock)."""
        self.requests += 1
        for leftover in self._path(prefix).glob(".*.partial"):
            leftover.unlink(missing_ok=True)

    def stage_copy(self, src: str, dst: str) -> _StagedCopy:
        """A copy of `src` that stays invisible under `dst` until commit() (abort() drops it): several copies
        staged first and committed together make a folder change all at once for a reader, or not at all."""
        self.requests += 1
        return _StagedCopy(self._path(src), self._path(dst))

    def lease(self, relpath: str, seconds: int, holder: Mapping[str, str] | None = None) -> Lease | None:
        """An exclusive lock on a file (flock); the OS releases it if the process dies. The holder is
        written into the file, so others can tell who holds it."""
        import fcntl

        self.requests += 1
        path = self._path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+b")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None
        fh.seek(0)
        fh.truncate()
        fh.write(orjson.dumps(dict(holder or {})))
        fh.flush()
        return _FileLease(fh)

    def lease_holder(self, relpath: str) -> dict[str, str] | None:
        """Who holds the lock on `relpath`, or None when nobody does."""
        import fcntl

        self.requests += 1
        try:
            fh = open(self._path(relpath), "rb")
        except FileNotFoundError:
            return None
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = orjson.loads(fh.read() or b"{}")
                except ValueError:
                    holder = {}
                return holder if isinstance(holder, dict) else {}
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return None


class _FileLease:
    def __init__(self, fh: Any):
        self._fh = fh

    def renew(self) -> None:
        """A file lock does not expire."""

    def release(self) -> None:
        self._fh.close()
