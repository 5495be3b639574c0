"""The last step: commit a batch to Postgres, then ack its entries in Redis.

``BatchCommitter`` is plain Python (tested without bytewax); ``PostgresSink`` is the thin bytewax
adapter. Nothing is acked before its batch has committed. A transient failure (connection lost,
deadlock, serialization failure, pool timeout) is retried with backoff until it clears; a failure
that would repeat (the database rejects a value) is narrowed down by splitting the batch in halves,
in stream order, until the one event that causes it is dead-lettered with the database's message.
A bytewax sink must not raise (that aborts the whole dataflow), so neither does this.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg_pool import ConnectionPool, PoolTimeout

from config.settings import Settings
from connectors.redis_streams import REDIS_ERRORS, StreamAcker, client_for
from flows.events import Event
from observability.batches import BatchReport

from .pool import shared_pool
from .writer import PostgresWriter

log = logging.getLogger(__name__)

# SQLSTATE classes and codes worth retrying: the connection, resources, the server shutting down,
# locks, deadlocks and serialization failures. Anything else would fail the same way again.
_TRANSIENT_CLASSES = ("08", "53", "57")
_TRANSIENT_CODES = {"40001", "40P01", "55P03", "55006"}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        # No answer from the server at all: a lost or refused connection.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_CODES


class BatchWriter(Protocol):
    """PostgresWriter (records) or LabelWriter (labels): one transaction, raise having changed
    nothing."""

    def write(self, events: Sequence[Event]) -> object: ...


class Archive(Protocol):
    """sinks/archive's ArchiveWriter: keeps a committed batch's events; raises OSError."""

    def write(self, events: Sequence[Event]) -> object: ...

    def close(self) -> None: ...


def backoff(attempt: int, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: 0.1 s, 0.2 s, ... up to ``cap``."""
    return random.uniform(0, min(cap, 0.1 * 2**attempt))


class BatchCommitter:
    def __init__(
        self,
        writer: BatchWriter,
        acker: StreamAcker,
        sleep: Callable[[float], None] = time.sleep,
        archive: Archive | None = None,
    ):
        self.writer = writer
        self.acker = acker
        self.sleep = sleep
        self.archive = archive  # written after the commit, before the ack
        self._report = BatchReport(())

    def commit(self, events: Sequence[Event]) -> None:
        report = self._report = BatchReport(events)  # metrics, trace, dead-letter log
        self._write(list(events))
        report.write_done()
        if self.archive is not None:
            self._archive(self.archive, events)
        self._ack(events)
        report.acked(self.acker.group)

    def _write(self, events: list[Event]) -> None:
        attempt = 0
        while True:
            try:
                self._report.wrote(self.writer.write(events))
                return
            except (psycopg.Error, PoolTimeout) as exc:
                if not is_transient(exc):
                    self._isolate(events, exc)  # type: ignore[arg-type]
                    return
                self._report.retry("postgres", "write")
                delay = backoff(attempt)
                attempt += 1
                log.warning(
                    "database unavailable (%s: %s); retry %d in %.1fs",
                    type(exc).__name__,
                    _first_line(exc),
                    attempt,
                    delay,
                )
                self.sleep(delay)

    def _isolate(self, events: list[Event], exc: psycopg.Error) -> None:
        good = [ev for ev in events if ev.ok]
        if len(good) <= 1:
            for ev in good:
                ev.error = f"database rejected the event: {_first_line(exc)}"
            try:
                # the rest of the entry (its commit) still counts
                self._report.wrote(self.writer.write(events))
            except psycopg.Error:
                log.error(
                    "batch of %d rejected even without its records; dead-lettering all", len(events)
                )
                for ev in events:
                    ev.error = ev.error or f"database rejected the batch: {_first_line(exc)}"
            return
        half = len(events) // 2
        self._write(events[:half])
        self._write(events[half:])

    def _archive(self, archive: Archive, events: Sequence[Event]) -> None:
        attempt = 0
        while True:
            try:
                archive.write(events)
                return
            except OSError as exc:
                self._report.retry("archive", "write")
                delay = backoff(attempt)
                attempt += 1
                log.warning("archive write failed (%s); retry %d in %.1fs", exc, attempt, delay)
                self.sleep(delay)

    def _ack(self, events: Sequence[Event]) -> None:
        attempt = 0
        while True:
            try:
                self.acker.finish(events)
                break
            except REDIS_ERRORS as exc:
                self._report.retry("redis", "ack")
                delay = backoff(attempt)
                attempt += 1
                log.warning(
                    "redis unavailable for ack (%s); retry %d in %.1fs",
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                self.sleep(delay)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class _CommitPartition(StatelessSinkPartition[tuple[str, list[Event]]]):
    def __init__(self, committer: BatchCommitter, on_close: Callable[[], None] | None = None):
        self.committer = committer
        self.on_close = on_close  # releases the handle-check worker

    def write_batch(self, items: list[tuple[str, list[Event]]]) -> None:
        for _shard, batch in items:
            self.committer.commit(batch)

    def close(self) -> None:
        if self.committer.archive is not None:
            try:
                self.committer.archive.close()
            except OSError as exc:  # the spool stays; the next start recovers it
                log.error("archive could not be closed: %s", exc)
        if self.on_close is not None:
            self.on_close()


class PostgresSink(DynamicSink[tuple[str, list[Event]]]):
    """Each worker commits the batches it receives; the connection pool is per process. The
    record path (no ``writer`` given) writes with PostgresWriter and, with
    ENABLE_DID_RESOLUTION, runs the process's handle-check worker (resolution/worker.py) from
    its first partition's start to its last one's close."""

    def __init__(
        self,
        settings: Settings,
        group: str | None = None,
        writer: Callable[[ConnectionPool], BatchWriter] | None = None,
        archive_dir: str | None = None,
    ):
        self.settings = settings
        self.group = group or settings.group
        self.writer = writer
        self.archive_dir = archive_dir

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CommitPartition:
        s = self.settings
        pool = shared_pool(s.database_url, s.db_pool_max_size, s.db_pool_min_idle)
        acker = StreamAcker(client_for(s.redis_url), self.group, s)
        archive = None
        if self.archive_dir is not None:
            from sinks.archive.parquet import ArchiveWriter

            archive = ArchiveWriter(
                self.archive_dir,
                roll_bytes=s.archive_roll_bytes,
                roll_seconds=s.archive_roll_seconds,
                worker=worker_index,
            )
        if self.writer is not None:
            return _CommitPartition(BatchCommitter(self.writer(pool), acker, archive=archive))
        resolve = s.enable_did_resolution
        on_close = None
        if resolve:
            from resolution import worker  # it imports this module

            worker.acquire(s, pool)
            on_close = worker.release
        writer = PostgresWriter(pool, resolve_handles=resolve)
        return _CommitPartition(BatchCommitter(writer, acker, archive=archive), on_close)
