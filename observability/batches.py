"""One committed batch as the sink saw it, reported once acked: metrics and trace; and every dead
letter, wherever it was written (the sink's after a commit, the reader's over the delivery limit):
metrics, the dead-letter log and the totals."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence

from flows.events import Event

from . import metrics, tracing
from .logs import DEAD_LETTERS

_totals: Counter[str] = Counter()
_totals_lock = threading.Lock()


def totals() -> dict[str, int]:
    """Since the process started: batches, events acked, dead letters, retries."""
    with _totals_lock:
        return {k: _totals[k] for k in ("batches", "events", "dead_letters", "retries")}


class BatchReport:
    """Collects what happens to one batch in the sink; ``acked`` reports it."""

    __slots__ = ("events", "times", "rows", "write_retries", "ack_retries")

    def __init__(self, events: Sequence[Event]):
        self.events = events
        self.times = tracing.BatchTimes(time.time_ns())
        self.rows: Counter[tuple[str, str]] = Counter()
        self.write_retries = 0
        self.ack_retries = 0

    def wrote(self, stats: object) -> None:
        """After each successful write of (part of) the batch; ``stats.tables`` counts rows by
        (table, op) when the writer knows them."""
        self.rows.update(getattr(stats, "tables", None) or {})

    def retry(self, target: str, step: str) -> None:
        if step == "ack":
            self.ack_retries += 1
        else:
            self.write_retries += 1
        metrics.retried(target, step)
        with _totals_lock:
            _totals["retries"] += 1

    def write_done(self) -> None:
        self.times.write_end = time.time_ns()

    def acked(self, group: str) -> None:
        times = self.times
        times.ack_end = now = time.time_ns()
        events = self.events
        reasons = [ev.error for ev in events if ev.error is not None]
        oldest = times.write_start
        last = None
        for ev in events:
            o = ev.origin
            if o is not last and o is not None:  # events of one read come one after another
                last = o
                oldest = min(oldest, o.read_start)
        metrics.batch_finished(
            events,
            self.rows,
            write_seconds=(times.write_end - times.write_start) / 1e9,
            latency_seconds=(now - oldest) / 1e9,
            now_ms=now // 1_000_000,
        )
        tracing.record_batch(
            events, times, group, self.rows, len(reasons), self.write_retries, self.ack_retries
        )
        with _totals_lock:
            _totals["batches"] += 1
            _totals["events"] += len(events)


def dead_lettered(events: Sequence[Event]) -> None:
    """Count entries just written to the dead-letter stream (``ev.error`` is the reason)."""
    reasons = [ev.error for ev in events if ev.error is not None]
    metrics.dead_lettered(reasons)
    DEAD_LETTERS.add(reasons)
    with _totals_lock:
        _totals["dead_letters"] += len(reasons)
