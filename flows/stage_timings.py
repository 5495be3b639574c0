"""Per-stage timings for benchmarks: on only with INDEXER_STAGE_TIMINGS=<file>.

Off (the default), nothing here is on the path. On, ``instrument`` wraps one path's source, decode
step and sink so that each call's wall time is added to its stage:

- ``read``: the source's ``next_batch`` (XREADGROUP and the pending checks around it),
- ``decode``: decode and validate a read batch,
- ``write``: ``PostgresWriter.write``, the whole Postgres transaction up to its COMMIT,
- ``ack``: dead letters, XACK and XDEL after the commit.

It also keeps, per entry, the time from its XADD (the milliseconds of its entry id, Redis' clock)
to the commit of its batch and from its read to that commit, as histograms with bounded memory.
When the process exits it writes the totals as JSON to the file (scripts/bench.py reads them).
The cost when on is two clock reads per call and a dict insert and pop per entry.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

log = logging.getLogger(__name__)


def bucket_ms(ms: float) -> int:
    """A latency's histogram bucket: 1 ms wide below 1 s, 10 ms below 10 s, 100 ms above."""
    v = int(ms)
    if v < 1_000:
        return max(v, 0)
    if v < 10_000:
        return v - v % 10
    return v - v % 100


def percentile(hist: dict[int, int] | dict[str, int], q: float) -> float | None:
    """The q-th percentile (0..100) of a histogram {bucket ms: count}; None when empty."""
    items = sorted((int(k), n) for k, n in hist.items())
    total = sum(n for _, n in items)
    if not total:
        return None
    rank = q / 100 * total
    seen = 0
    for value, n in items:
        seen += n
        if seen >= rank:
            return float(value)
    return float(items[-1][0])


class StageTimings:
    """The totals of one process, shared by its worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stages: dict[str, list[float]] = {}  # stage -> [seconds, calls, items]
        self.first_read: float | None = None  # wall clock of the first non-empty read
        self.last_commit: float | None = None
        self.last_ack: float | None = None
        self.xadd_to_commit: Counter[int] = Counter()
        self.read_to_commit: Counter[int] = Counter()
        self._read_at: dict[tuple[str, str], float] = {}  # in flight only: bounded by concurrency

    def add(self, stage: str, seconds: float, items: int) -> None:
        with self._lock:
            total = self.stages.setdefault(stage, [0.0, 0, 0])
            total[0] += seconds
            total[1] += 1
            total[2] += items

    def read(self, entries: Sequence[Any], now: float) -> None:
        if not entries:
            return
        if self.first_read is None:
            self.first_read = now
        read_at = self._read_at
        for entry in entries:
            read_at[(entry[0], entry[1])] = now

    def committed(self, events: Iterable[Any], now: float) -> None:
        now_ms = now * 1000
        pop = self._read_at.pop
        xadd: list[int] = []
        read: list[int] = []
        for ev in events:
            ms, _, _ = ev.entry_id.partition("-")
            if ms.isdigit():
                xadd.append(bucket_ms(now_ms - int(ms)))
            at = pop((ev.stream, ev.entry_id), None)
            if at is not None:
                read.append(bucket_ms((now - at) * 1000))
        with self._lock:
            self.xadd_to_commit.update(xadd)
            self.read_to_commit.update(read)
            self.last_commit = now

    def acked(self, now: float) -> None:
        self.last_ack = now

    def summary(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with self._lock:
            return {
                "pid": os.getpid(),
                "stages": {
                    name: {"seconds": s, "calls": int(c), "items": int(n)}
                    for name, (s, c, n) in self.stages.items()
                },
                "first_read": self.first_read,
                "last_commit": self.last_commit,
                "last_ack": self.last_ack,
                "xadd_to_commit_ms": dict(self.xadd_to_commit),
                "read_to_commit_ms": dict(self.read_to_commit),
                "cpu_user_s": usage.ru_utime,
                "cpu_system_s": usage.ru_stime,
                "max_rss_kb": _peak_rss_kb(),
            }

    def dump(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(self.summary(), out)
        os.replace(tmp, path)


def _peak_rss_kb() -> int | None:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a child started by a big parent would report the parent's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


_timings: StageTimings | None = None
_timings_lock = threading.Lock()


def process_timings(path: str) -> StageTimings:
    """The process's one StageTimings, written to ``path`` at exit."""
    global _timings
    with _timings_lock:
        if _timings is None:
            _timings = StageTimings()
            atexit.register(_dump_at_exit, _timings, path)
        return _timings


def _dump_at_exit(timings: StageTimings, path: str) -> None:
    try:
        timings.dump(path)
    except OSError as exc:
        log.error("could not write stage timings to %s: %s", path, exc)


# --- wrappers ----------------------------------------------------------------------------------


class _TimedSourcePartition(StatelessSourcePartition):
    def __init__(self, inner: StatelessSourcePartition, stage: str, timings: StageTimings):
        self.inner = inner
        self.stage = stage
        self.timings = timings

    def next_batch(self) -> list[Any]:
        started = time.perf_counter()
        batch = self.inner.next_batch()  # StopIteration ends the partition, as unwrapped
        self.timings.add(self.stage, time.perf_counter() - started, len(batch))
        self.timings.read(batch, time.time())
        return batch

    def next_awake(self) -> Any:
        return self.inner.next_awake()

    def close(self) -> None:
        self.inner.close()


class _TimedSource(DynamicSource):
    def __init__(self, inner: DynamicSource, stage: str, timings: StageTimings):
        self.inner = inner
        self.stage = stage
        self.timings = timings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TimedSourcePartition:
        part = self.inner.build(step_id, worker_index, worker_count)
        return _TimedSourcePartition(part, self.stage, self.timings)


class _TimedWriter:
    """Times ``write`` (one transaction) and records each event's latency to its commit."""

    def __init__(self, inner: Any, stage: str, timings: StageTimings):
        self.inner = inner
        self.stage = stage
        self.timings = timings

    def write(self, events: Sequence[Any]) -> Any:
        started = time.perf_counter()
        try:
            result = self.inner.write(events)
        finally:
            self.timings.add(self.stage, time.perf_counter() - started, len(events))
        self.timings.committed(events, time.time())
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _TimedAcker:
    def __init__(self, inner: Any, stage: str, timings: StageTimings):
        self.inner = inner
        self.stage = stage
        self.timings = timings

    def finish(self, events: Sequence[Any]) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.finish(events)
        finally:
            self.timings.add(self.stage, time.perf_counter() - started, len(events))
            self.timings.acked(time.time())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _TimedSinkPartition(StatelessSinkPartition):
    """Used when the partition has no committer to look into: the whole step is one stage."""

    def __init__(self, inner: StatelessSinkPartition, stage: str, timings: StageTimings):
        self.inner = inner
        self.stage = stage
        self.timings = timings

    def write_batch(self, items: list[Any]) -> None:
        started = time.perf_counter()
        self.inner.write_batch(items)
        self.timings.add(self.stage, time.perf_counter() - started, len(items))

    def close(self) -> None:
        self.inner.close()


class _TimedSink(DynamicSink):
    def __init__(self, inner: DynamicSink, suffix: str, timings: StageTimings):
        self.inner = inner
        self.suffix = suffix
        self.timings = timings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        part = self.inner.build(step_id, worker_index, worker_count)
        committer = getattr(part, "committer", None)
        if committer is None:
            return _TimedSinkPartition(part, f"commit{self.suffix}", self.timings)
        committer.writer = _TimedWriter(committer.writer, f"write{self.suffix}", self.timings)
        committer.acker = _TimedAcker(committer.acker, f"ack{self.suffix}", self.timings)
        return part


def instrument(
    suffix: str,
    source: DynamicSource,
    decode: Callable[[list[Any]], list[Any]],
    sink: DynamicSink,
    path: str,
) -> tuple[DynamicSource, Callable[[list[Any]], list[Any]], DynamicSink]:
    """The same three steps, timed into the process's StageTimings (written to ``path``)."""
    timings = process_timings(path)
    stage = f"decode{suffix}"

    def timed_decode(entries: list[Any]) -> list[Any]:
        started = time.perf_counter()
        out = decode(entries)
        timings.add(stage, time.perf_counter() - started, len(entries))
        return out

    return (
        _TimedSource(source, f"read{suffix}", timings),
        timed_decode,
        _TimedSink(sink, suffix, timings),
    )
