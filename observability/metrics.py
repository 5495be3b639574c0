"""Prometheus metrics, served on METRICS_PORT (0: no endpoint), one endpoint per process.

Counters and histograms move once per batch (the sink sums a batch's events first), never per
event. Stream length, group lag, pending count and oldest pending age are sampled by a background
thread every INDEXER_METRICS_INTERVAL seconds; the pool's connections are read at scrape time.
The README lists every metric. No label ever holds a URL or a value taken from an entry: reasons
are reduced to their kind (reasons.py) and unknown collections count as "other".
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import redis
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from connectors.stream_status import stream_state
from flows.lexicon import LEXICONS

from .reasons import reason_kind

if TYPE_CHECKING:
    from flows.events import Event

log = logging.getLogger(__name__)

EVENTS = Counter(
    "indexer_events",
    "Entries finished (committed and acked, or dead-lettered and acked)",
    ["stream", "type", "collection"],
)
ROWS = Counter(
    "indexer_rows_written",
    "Rows written: per record collection (rows of its table), actor_sync and label",
    ["table", "op"],
)
DEAD_LETTERS = Counter(
    "indexer_dead_letters", "Entries dead-lettered, by kind of reason", ["reason"]
)
RETRIES = Counter("indexer_retries", "Retries after a transient failure", ["target", "step"])
BATCH_SIZE = Histogram(
    "indexer_batch_size",
    "Events per committed batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_LATENCY = Histogram(
    "indexer_batch_latency_seconds",
    "From the read of a batch's oldest entry to the batch's ack",
    buckets=_SECONDS,
)
BATCH_WRITE = Histogram(
    "indexer_batch_write_seconds",
    "A batch's database write, retries included",
    buckets=_SECONDS,
)
ACKED_AGE = Gauge(
    "indexer_acked_entry_age_seconds",
    "Age (from its stream id) of the newest entry of the last batch acked, per stream",
    ["stream"],
)
STREAM_LENGTH = Gauge("indexer_stream_length", "Entries in the stream (XLEN)", ["stream"])
GROUP_LAG = Gauge(
    "indexer_group_lag",
    "Entries not yet delivered to the group (XINFO GROUPS lag)",
    ["stream", "group"],
)
PENDING = Gauge(
    "indexer_pending",
    "Entries delivered to the group and not acked (XPENDING)",
    ["stream", "group"],
)
OLDEST_PENDING = Gauge(
    "indexer_oldest_pending_age_seconds",
    "Age (from its stream id) of the oldest entry pending in the group; 0 when none",
    ["stream", "group"],
)

HANDLE_CHECKS = Gauge(
    "indexer_handle_checks",
    "Handle checks queued (bsky_indexer.handle_check): due now, leased to a resolver, or "
    "retrying (backing off after resolution was unavailable)",
    ["state"],
)
#: Sampled with the streams every INDEXER_METRICS_INTERVAL (the handle-check worker's queue).
SAMPLED: list[Callable[[], None]] = []

_KNOWN_COLLECTIONS = frozenset(LEXICONS)


def batch_finished(
    events: Sequence[Event],
    rows: Mapping[tuple[str, str], int],
    write_seconds: float,
    latency_seconds: float,
    now_ms: int,
) -> None:
    # Counted by raw fields first (Counter counts in C), labels made once per distinct key.
    for (stream, kind, c), n in Tally(
        [(ev.stream, ev.type, ev.collection) for ev in events]
    ).items():
        if c is not None and c not in _KNOWN_COLLECTIONS:
            c = "other"
        EVENTS.labels(stream, kind or "undecodable", c or "").inc(n)
    newest = {ev.stream: ev.entry_id for ev in events}
    for (table, op), n in rows.items():
        if n:
            ROWS.labels(table, op).inc(n)
    BATCH_SIZE.observe(len(events))
    BATCH_WRITE.observe(write_seconds)
    BATCH_LATENCY.observe(latency_seconds)
    for stream, entry_id in newest.items():
        ms = _id_ms(entry_id)
        if ms is not None:
            ACKED_AGE.labels(stream).set(max(now_ms - ms, 0) / 1000)


def dead_lettered(reasons: Sequence[str]) -> None:
    for kind, n in Tally(reason_kind(r) for r in reasons).items():
        DEAD_LETTERS.labels(kind).inc(n)


def retried(target: str, step: str) -> None:
    RETRIES.labels(target, step).inc()


def handle_checks_queued(due: int, leased: int, retrying: int) -> None:
    HANDLE_CHECKS.labels("due").set(due)
    HANDLE_CHECKS.labels("leased").set(leased)
    HANDLE_CHECKS.labels("retrying").set(retrying)


def _id_ms(entry_id: str | bytes) -> int | None:
    """The milliseconds part of a stream entry id (the time it was added with ``*``)."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else None


class StreamSampler:
    """Samples each (stream, group) every ``interval`` seconds on a daemon thread."""

    def __init__(self, client: redis.Redis, pairs: Iterable[tuple[str, str]], interval: float):
        self.client = client
        self.pairs = tuple(pairs)
        self.interval = interval
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="stream-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            self.sample()
            for sample in list(SAMPLED):
                sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        try:
            for stream, group in self.pairs:
                self._sample(stream, group)
        except redis.RedisError as exc:
            if not self._failing:  # one line per outage, not one per interval
                log.warning("stream metrics not sampled (%s); will keep trying", type(exc).__name__)
            self._failing = True
            return
        if self._failing:
            log.info("stream metrics sampled again")
        self._failing = False

    def _sample(self, stream: str, group: str) -> None:
        # The same reading as `bsky-indexer status`; never scans entries for an unknown lag.
        state = stream_state(self.client, stream, group, lag_scan=0)
        STREAM_LENGTH.labels(stream).set(state.length)
        if not state.group_exists:
            return
        PENDING.labels(stream, group).set(state.pending)
        if state.lag is not None:  # Redis cannot tell after some deletions: leave it unset
            GROUP_LAG.labels(stream, group).set(state.lag)
        OLDEST_PENDING.labels(stream, group).set(state.oldest_pending_age_s or 0)


class _PoolCollector(Collector):
    """The process's Postgres connections, read from psycopg_pool at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sinks.postgres.pool import pools

        in_use = idle = waiting = limit = 0
        for pool in pools():
            stats = pool.get_stats()
            size = stats.get("pool_size", 0)
            available = stats.get("pool_available", 0)
            in_use += size - available
            idle += available
            waiting += stats.get("requests_waiting", 0)
            limit += pool.max_size
        conns = GaugeMetricFamily(
            "indexer_db_pool_connections", "Postgres connections of this process", labels=["state"]
        )
        conns.add_metric(["in_use"], in_use)
        conns.add_metric(["idle"], idle)
        yield conns
        yield GaugeMetricFamily(
            "indexer_db_pool_max", "Most connections this process may open", value=limit
        )
        yield GaugeMetricFamily(
            "indexer_db_pool_waiting", "Requests waiting for a connection", value=waiting
        )


REGISTRY.register(_PoolCollector())


def serve(port: int) -> bool:
    """Serve /metrics on ``port`` (all interfaces). A port already taken is logged, not fatal:
    indexing goes on without the endpoint."""
    try:
        start_http_server(port)
    except OSError as exc:
        log.error("metrics endpoint not started on port %d: %s", port, exc)
        return False
    log.info("metrics on :%d/metrics", port)
    return True


# Handle resolution (resolution/resolver.py): one count per resolve(), timed when it went to the
# network; cache lookups (fresh resolves skip the caches and count in neither).
HANDLE_RESOLUTIONS = Counter(
    "indexer_handle_resolutions",
    "DID/handle resolutions by outcome: verified, mismatch, no_handle, not_found, unavailable",
    ["outcome"],
)
HANDLE_RESOLUTION_SECONDS = Histogram(
    "indexer_handle_resolution_seconds",
    "A resolution that went to the network (DID document, then handle), failures included",
    buckets=(0.001, 0.0025) + _SECONDS[:-3],
)
HANDLE_RESOLUTION_CACHE = Counter(
    "indexer_handle_resolution_cache",
    "Resolution cache lookups: cache did (DID → handle) or handle (handle → DID), hit or miss",
    ["cache", "result"],
)


def handle_resolution(outcome: str, seconds: float | None) -> None:
    HANDLE_RESOLUTIONS.labels(outcome).inc()
    if seconds is not None:
        HANDLE_RESOLUTION_SECONDS.observe(seconds)


def handle_resolution_cache(cache: str, hit: bool) -> None:
    HANDLE_RESOLUTION_CACHE.labels(cache, "hit" if hit else "miss").inc()
