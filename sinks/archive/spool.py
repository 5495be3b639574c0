"""The archive's spool: where a writer's rows are durable before they become Parquet files.

Layout under ``DIR/_spool/``:

* ``.lock``: the archive-wide lock (flock), held while a writer registers and while orphans are
  recovered, so that two processes never recover the same writer or miss each other's ledger;
* ``<writer>/lock``: held (flock) by the live writer for its whole life; a folder whose lock can
  be taken belongs to a writer that is gone (crashed, killed);
* ``<writer>/seg-<n>.arrows``: a segment, Arrow IPC stream format: the schema message, then one
  record-batch message per archived batch, each written with one ``write`` and ``fdatasync``ed.
  A crash can only cut the last message short, and reading stops before it;
* ``_ledger/<writer>.json``: the (stream, entry id) pairs of the last batch of a recovered writer,
  the only ones it may have archived without acking (see parquet.py). Kept for LEDGER_DAYS.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from .schema import BATCH, SPOOL_SCHEMA

log = logging.getLogger(__name__)

SPOOL = "_spool"
LEDGER = "_ledger"
LEDGER_DAYS = 7  # a redelivery comes within minutes of a restart; a week leaves room for outages
_SEGMENT_GLOB = "seg-*.arrows"


def fsync_dir(path: Path) -> None:
    """Make a folder's new, renamed or removed entries durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """mkdir -p, each created folder made durable in its parent."""
    if path.is_dir():
        return
    make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_dir(path.parent)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on path (created if missing), or None if another holds
    it. flock is per open file, so a second writer of the same process conflicts too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


@contextmanager
def archive_lock(root: Path) -> Iterator[None]:
    fd = os.open(root / SPOOL / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class Segment:
    """One append-only spool file. ``good`` is its size after the last successful append."""

    def __init__(self, path: Path, number: int):
        self.path = path
        self.number = number
        self.opened = time.monotonic()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.good = 0
        try:
            self.append_bytes(SPOOL_SCHEMA.serialize())
            fsync_dir(path.parent)
        except OSError:
            self.close()
            path.unlink(missing_ok=True)
            raise

    def append(self, batch: pa.RecordBatch) -> None:
        self.append_bytes(batch.serialize())

    def append_bytes(self, data: pa.Buffer | bytes) -> None:
        if self._fd is None:
            raise OSError(f"segment {self.path} is sealed")
        try:
            _write_all(self._fd, memoryview(data))
            os.fdatasync(self._fd)
        except OSError:
            # After a failed fsync the written pages may be lost even though a read shows them:
            # cut the file back, and the caller seals it (readers stop at ``good`` in any case).
            try:
                os.ftruncate(self._fd, self.good)
            except OSError:
                pass
            raise
        self.good += len(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_segment(path: Path, limit: int | None = None) -> pa.Table:
    """Every complete batch of a segment (the first ``limit`` bytes when given); a message cut
    short by a crash, or a segment without even its schema, ends the reading there."""
    if limit == 0 or path.stat().st_size == 0:  # killed before even the schema was written
        return SPOOL_SCHEMA.empty_table()
    # Mapped, not read: the batches point into the file's pages instead of a copy.
    with pa.memory_map(str(path)) as mapped:
        data = mapped.read_buffer(limit)
    batches: list[pa.RecordBatch] = []
    try:
        reader = ipc.open_stream(data)
        while True:
            batches.append(reader.read_next_batch())
    except StopIteration:
        pass
    except (OSError, pa.ArrowInvalid):
        pass  # the cut-off tail: never written completely, so never acked
    return pa.Table.from_batches(batches, schema=SPOOL_SCHEMA)


class SpoolDir:
    """A live writer's folder under DIR/_spool, locked for as long as the writer lives."""

    def __init__(self, root: Path, name: str):
        self.root = root
        self.path = root / SPOOL / name
        with archive_lock(root):
            self.path.mkdir()
            fsync_dir(self.path.parent)
            fd = _try_lock(self.path / "lock")
        if fd is None:
            raise OSError(f"archive spool {self.path} is locked by another writer")
        self._lock_fd = fd

    def segment(self, number: int) -> Segment:
        return Segment(self.path / f"seg-{number:06d}.arrows", number)

    def release(self) -> None:
        """Remove the (empty) folder and let go of the lock."""
        with archive_lock(self.root):
            if any(self.path.glob(_SEGMENT_GLOB)):
                log.warning(
                    "archive: %s keeps segments not rolled; the next start recovers them", self.path
                )
            else:
                (self.path / "lock").unlink(missing_ok=True)
                self.path.rmdir()
                fsync_dir(self.path.parent)
        os.close(self._lock_fd)


def recover_orphans(root: Path, convert: Callable[[str, pa.Table], None]) -> int:
    """Turn the segments of every writer that is gone into Parquet (``convert(segment id,
    rows)``, which must be idempotent), first noting its last batch in the ledger. Returns how
    many writers were recovered."""
    recovered = 0
    with archive_lock(root):
        for folder in sorted((root / SPOOL).iterdir()):
            if not folder.is_dir() or folder.name.startswith(("_", ".")):
                continue
            fd = _try_lock(folder / "lock")
            if fd is None:
                continue  # alive
            try:
                _recover(root, folder, convert)
            finally:
                os.close(fd)
            recovered += 1
        _prune_ledger(root)
    return recovered


def _recover(root: Path, folder: Path, convert: Callable[[str, pa.Table], None]) -> None:
    segments = sorted(folder.glob(_SEGMENT_GLOB))
    tables = [read_segment(path) for path in segments]
    rows = sum(t.num_rows for t in tables)
    last = max((pc.max(t[BATCH]).as_py() for t in tables if t.num_rows), default=None)
    if last is not None:
        unacked: list[list[str]] = []
        for t in tables:
            mine = t.filter(pc.equal(t[BATCH], last))
            pairs = zip(mine["stream"].to_pylist(), mine["entryId"].to_pylist(), strict=True)
            unacked += [[stream, entry] for stream, entry in pairs]
        write_ledger(root, folder.name, unacked)
    for path, table in zip(segments, tables, strict=True):
        if table.num_rows:
            convert(segment_id(path), table)
        path.unlink()
    (folder / "lock").unlink(missing_ok=True)
    folder.rmdir()
    fsync_dir(folder.parent)
    log.info("archive: recovered %d rows of stopped writer %s", rows, folder.name)


def segment_id(path: Path) -> str:
    """``<writer>-<n>``: names the segment's Parquet files, the same on every try."""
    return f"{path.parent.name}-{path.stem.removeprefix('seg-')}"


def write_ledger(root: Path, writer: str, ids: list[list[str]]) -> None:
    folder = root / SPOOL / LEDGER
    make_dirs(folder)
    path = folder / f"{writer}.json"
    tmp = folder / f".{writer}.json.tmp"
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(ids, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(folder)


def _prune_ledger(root: Path) -> None:
    folder = root / SPOOL / LEDGER
    if not folder.is_dir():
        return
    cutoff = time.time() - LEDGER_DAYS * 86_400
    for path in folder.glob("*.json"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


class Ledger:
    """The entries recovered writers may have archived without acking, loaded as they appear."""

    def __init__(self, root: Path):
        self.folder = root / SPOOL / LEDGER
        self.ids: set[tuple[str, str]] = set()
        self._loaded: set[str] = set()

    def refresh(self) -> set[tuple[str, str]]:
        if self.folder.is_dir():
            for path in self.folder.glob("*.json"):
                if path.name in self._loaded:
                    continue
                with path.open(encoding="utf-8") as handle:
                    self.ids.update((s, e) for s, e in json.load(handle))
                self._loaded.add(path.name)
        return self.ids
