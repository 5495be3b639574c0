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
from collections import Counter
from collections.abc import Callable, Sequence

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg_pool import PoolTimeout

from config.settings import Settings
from connectors.redis_streams import REDIS_ERRORS, StreamAcker, client_for
from flows.events import Event

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


def backoff(attempt: int, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: 0.1 s, 0.2 s, ... up to ``cap``."""
    return random.uniform(0, min(cap, 0.1 * 2**attempt))


class BatchCommitter:
    def __init__(
        self,
        writer: PostgresWriter,
        acker: StreamAcker,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.writer = writer
        self.acker = acker
        self.sleep = sleep

    def commit(self, events: Sequence[Event]) -> None:
        self._write(list(events))
        self._ack(events)

    def _write(self, events: list[Event]) -> None:
        attempt = 0
        while True:
            try:
                self.writer.write(events)
                return
            except (psycopg.Error, PoolTimeout) as exc:
                if not is_transient(exc):
                    self._isolate(events, exc)  # type: ignore[arg-type]
                    return
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
                self.writer.write(events)  # the rest of the entry (its commit) still counts
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

    def _ack(self, events: Sequence[Event]) -> None:
        attempt = 0
        while True:
            try:
                dead = self.acker.finish(events)
                break
            except REDIS_ERRORS as exc:
                delay = backoff(attempt)
                attempt += 1
                log.warning(
                    "redis unavailable for ack (%s); retry %d in %.1fs",
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                self.sleep(delay)
        if dead:
            reasons = Counter(_reason_kind(ev.error or "") for ev in events if ev.error)
            log.warning(
                "dead-lettered %d entries: %s",
                dead,
                ", ".join(f"{k} x{n}" for k, n in reasons.most_common(5)),
            )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _reason_kind(reason: str) -> str:
    # Whole reasons, shortened: "record" alone tells an operator nothing.
    return reason if len(reason) <= 80 else reason[:77] + "..."


class _CommitPartition(StatelessSinkPartition[tuple[str, list[Event]]]):
    def __init__(self, committer: BatchCommitter):
        self.committer = committer

    def write_batch(self, items: list[tuple[str, list[Event]]]) -> None:
        for _shard, batch in items:
            self.committer.commit(batch)


class PostgresSink(DynamicSink[tuple[str, list[Event]]]):
    """Each worker commits the batches it receives; the connection pool is per process."""

    def __init__(self, settings: Settings, group: str | None = None):
        self.settings = settings
        self.group = group or settings.group

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CommitPartition:
        s = self.settings
        pool = shared_pool(s.database_url, s.db_pool_max_size, s.db_pool_min_idle)
        acker = StreamAcker(client_for(s.redis_url), self.group, s)
        return _CommitPartition(BatchCommitter(PostgresWriter(pool), acker))
