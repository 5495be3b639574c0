"""Redis Streams consumer group: the plain reader and acker, and the bytewax source over them.

The consumer group is the checkpoint store: an entry stays pending for its consumer until the
sink has committed its batch and acked it, so a restart resumes exactly where the database is.

- ``StreamReader``: one consumer of the group on every configured stream. It reads its own pending
  entries first (left over from a previous run under the same name), then entries it claims from
  consumers idle longer than INDEXER_CLAIM_IDLE_MS, then new ones; it never blocks; earlier
  streams in the list (live) are served before later ones (backfill). An entry delivered more
  than INDEXER_MAX_DELIVERIES times (it keeps killing its consumers, say) is dead-lettered and
  acked instead of being handed out again.
- ``StreamAcker``: after a commit, copies bad entries to the dead-letter stream, XACKs every
  entry and XDELs them, in one MULTI/EXEC: a dead letter is never written without its ack.
- ``RedisStreamSource``: the bytewax source; worker ``n`` of the cluster is consumer
  ``<INDEXER_CONSUMER>-<n>``, the same name after a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from bytewax.inputs import DynamicSource, StatelessSourcePartition

from config.settings import Settings
from flows.events import Event
from observability import metrics, tracing
from observability.batches import dead_lettered

log = logging.getLogger(__name__)

# stream, entry id, fields (None: deleted from the stream), times delivered (this one included)
Entry = tuple[str, str, dict[bytes, bytes] | None, int]

# Every Redis failure is retried with backoff, not only lost connections: a server out of memory
# answers with an error reply (and aborts a MULTI), and giving up would end the reader for good
# or abort the dataflow while the process looks alive.
REDIS_ERRORS = (redis.RedisError,)

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def client_for(url: str) -> redis.Redis:
    """One client (and so one connection pool) per process and URL, shared by all workers."""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
            )
            _clients[url] = client
        return client


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamReader:
    """One consumer of a group over several streams: own pending entries, claims, then new ones.

    Claims use XPENDING (with IDLE) and XCLAIM rather than XAUTOCLAIM: XPENDING names each
    entry's consumer, so the entries in flight on this process's other workers (``siblings``) are
    never taken, and it gives the delivery count that INDEXER_MAX_DELIVERIES is checked against.
    XCLAIM's own idle check makes a claim race with the owner's ack or another claimer harmless.
    """

    def __init__(
        self,
        client: redis.Redis,
        streams: Iterable[str],
        group: str,
        consumer: str,
        *,
        claim_idle_ms: int | None = None,
        max_deliveries: int | None = None,
        dead_letters: StreamAcker | None = None,
        siblings: Iterable[str] = (),
    ):
        self.client = client
        self.streams = tuple(streams)
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.dead_letters = dead_letters
        self._not_claimed = frozenset(siblings) | {consumer}
        # Per stream: the id after which to read our own pending history, or None once it is done.
        self._pending_from: dict[str, str | None] = {s: "0" for s in self.streams}
        # Entries of that history read so far: pending, but in flight only once read again.
        self.history_read = 0
        # Per stream: where the next claim pass goes on in the group's pending list.
        self._claim_from: dict[str, str] = {s: "-" for s in self.streams}
        self._next_claim = 0.0  # time.monotonic() of the next claim pass; at once on start
        # To dead-letter, by (stream, id): kept until the write succeeds, once even if read again.
        self._over_limit: dict[tuple[str, str], Event] = {}

    def ensure_groups(self) -> None:
        """Create the group at the start of each stream (MKSTREAM) unless it exists."""
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, count: int) -> list[Entry]:
        """Up to ``count`` entries, earlier streams first; per stream our own pending ones, then
        claimed ones, then new ones."""
        try:
            return self._read(count)
        except REDIS_ERRORS:
            # The reply of a read may have been lost after Redis handed the entries to us: read
            # our whole pending list again next time so none is left behind (an entry read twice
            # is harmless: writes are idempotent and acks by id).
            self._pending_from = {s: "0" for s in self.streams}
            raise

    def _read(self, count: int) -> list[Entry]:
        self._dead_letter_over_limit()
        claim = self.claim_idle_ms is not None and time.monotonic() >= self._next_claim
        more_to_claim = False
        out: list[Entry] = []
        for stream in self.streams:
            want = count - len(out)
            if want <= 0:
                break
            if self._pending_from[stream] is not None:
                own = self._own_pending(stream, want)
                if own:
                    out.extend(own)
                    continue
            if claim:
                claimed, more = self._claim(stream, want)
                out.extend(claimed)
                more_to_claim |= more
                want -= len(claimed)
                if want <= 0:
                    continue
            out.extend(self._xreadgroup(stream, ">", want))
        if claim and not more_to_claim:
            assert self.claim_idle_ms is not None
            self._next_claim = time.monotonic() + min(self.claim_idle_ms / 1000, 10.0) / 2
        return self._without_over_limit(out)

    def _own_pending(self, stream: str, want: int) -> list[Entry]:
        """The next part of our own pending history (entries read before a restart), with their
        delivery counts; [] once it is done."""
        start = self._pending_from[stream] or "0"
        entries = self._xreadgroup(stream, start, want)
        if not entries:
            self._pending_from[stream] = None  # history done: new entries from now on
            return []
        first, last = entries[0][1], entries[-1][1]
        counts = {
            _text(p["message_id"]): int(p["times_delivered"])
            for p in self.client.xpending_range(
                stream, self.group, first, last, len(entries), consumername=self.consumer
            )
        }
        self._pending_from[stream] = last
        self.history_read += len(entries)
        return [(s, i, f, counts.get(i, 1)) for s, i, f, _ in entries]

    def _claim(self, stream: str, want: int) -> tuple[list[Entry], bool]:
        """Entries pending on other consumers idle for claim_idle_ms, now ours. Also returns
        whether the pending list may hold more to claim."""
        assert self.claim_idle_ms is not None
        scan = max(want, 100)
        try:
            rows = self.client.xpending_range(
                stream, self.group, self._claim_from[stream], "+", scan, idle=self.claim_idle_ms
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return [], False
        candidates: dict[str, int] = {}
        last_seen = None
        for row in rows:
            entry_id = _text(row["message_id"])
            if len(candidates) >= want:
                break
            last_seen = entry_id
            if _text(row["consumer"]) not in self._not_claimed:
                candidates[entry_id] = int(row["times_delivered"])
        more = len(rows) >= scan or len(candidates) >= want
        self._claim_from[stream] = f"({last_seen}" if more and last_seen else "-"
        if not candidates:
            return [], more
        claimed = self.client.xclaim(
            stream, self.group, self.consumer, self.claim_idle_ms, list(candidates)
        )
        out: list[Entry] = []
        for entry_id, fields in claimed or []:
            entry_id = _text(entry_id)
            out.append((stream, entry_id, fields or None, candidates.get(entry_id, 0) + 1))
        if out:
            log.info(
                "consumer %s claimed %d entries of %s idle for %d ms or more",
                self.consumer,
                len(out),
                stream,
                self.claim_idle_ms,
            )
        return out, more

    def _without_over_limit(self, entries: list[Entry]) -> list[Entry]:
        """Set aside the entries delivered too often for the dead-letter stream."""
        limit = self.max_deliveries
        if limit is None or self.dead_letters is None:
            return entries
        keep: list[Entry] = []
        for entry in entries:
            stream, entry_id, fields, deliveries = entry
            if deliveries <= limit:
                keep.append(entry)
                continue
            self._over_limit[stream, entry_id] = Event(
                stream,
                entry_id,
                error=(
                    f"delivered {deliveries} times without being committed "
                    f"(INDEXER_MAX_DELIVERIES={limit})"
                ),
                payload=entry_payload(fields),
                deliveries=deliveries,
            )
        if self._over_limit:
            self._dead_letter_over_limit()
        return keep

    def _dead_letter_over_limit(self) -> None:
        if not self._over_limit or self.dead_letters is None:
            return
        self.dead_letters.finish(list(self._over_limit.values()))
        log.warning(
            "consumer %s dead-lettered %d entries delivered more than %s times",
            self.consumer,
            len(self._over_limit),
            self.max_deliveries,
        )
        self._over_limit = {}

    def _xreadgroup(self, stream: str, start: str, count: int) -> list[Entry]:
        try:
            reply = self.client.xreadgroup(self.group, self.consumer, {stream: start}, count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group was deleted under us: recreate it and read on.
            self.ensure_groups()
            self._pending_from[stream] = "0"
            return []
        out: list[Entry] = []
        for _name, entries in reply or []:
            for entry_id, fields in entries:
                out.append((stream, _text(entry_id), fields or None, 1))
        return out

    def pending(self) -> int:
        """Entries delivered to this consumer and not yet acked, over all streams."""
        total = 0
        for stream in self.streams:
            try:
                summary = self.client.xpending(stream, self.group)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    continue
                raise
            for consumer in summary.get("consumers") or []:
                if _text(consumer["name"]) == self.consumer:
                    total += int(consumer["pending"])
        return total


#: Called with the events of every dead-letter write, once it has succeeded (``ev.error`` is the
#: reason), by the sink's acker as by the reader's delivery limit: counted once, here.
DEAD_LETTER_LISTENERS: list[Callable[[list[Event]], None]] = [dead_lettered]


class StreamAcker:
    """Finishes entries after their batch committed: dead letters, XACK, XDEL.

    Only the ids of the entries given are acked and deleted: entries pending on any other
    consumer of the group are never touched, so no trim can lose them.
    """

    def __init__(self, client: redis.Redis, group: str, settings: Settings):
        self.client = client
        self.group = group
        self.dead_letter_stream = settings.dead_letter_stream
        self.dead_letter_maxlen = settings.dead_letter_maxlen
        self.delete_after_ack = settings.delete_after_ack

    def finish(self, events: Iterable[Event]) -> int:
        """Dead-letter the bad events and ack (and delete) all of them. Returns dead letters."""
        by_stream: dict[str, list[str]] = {}
        dead: list[Event] = []
        pipe = self.client.pipeline(transaction=True)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for ev in events:
            by_stream.setdefault(ev.stream, []).append(ev.entry_id)
            if ev.error is not None:
                dead.append(ev)
                pipe.xadd(
                    self.dead_letter_stream,
                    {
                        "payload": ev.payload if ev.payload is not None else b"",
                        "stream": ev.stream,
                        "id": ev.entry_id,
                        "reason": ev.error,
                        "deliveries": str(ev.deliveries),
                        "time": now,
                    },
                    maxlen=self.dead_letter_maxlen,
                    approximate=True,
                )
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
            if self.delete_after_ack:
                pipe.xdel(stream, *ids)
        pipe.execute()
        for listener in DEAD_LETTER_LISTENERS if dead else ():
            try:
                listener(dead)
            except Exception:  # noqa: BLE001 - counting must never undo an ack
                log.exception("dead-letter listener failed")
        return len(dead)


def entry_payload(fields: dict[Any, Any] | None) -> bytes | None:
    """The raw bytes of an entry, for a dead letter."""
    if not fields:
        return None
    for key in (b"event", "event", b"labels", "labels"):
        if key in fields:
            value = fields[key]
            return value if isinstance(value, bytes) else str(value).encode()
    return repr(fields).encode()


#: Other work of the process that INDEXER_STOP_WHEN_IDLE waits for: each answers whether it is
#: still busy (the handle-check worker, resolution/worker.py, while checks are due).
BUSY: list[Callable[[], bool]] = []


class Backlog:
    """When a read last came back as full as it was allowed to be: the streams hold more than we
    take, so the indexer is catching up (background work, resolution/worker.py, yields then)."""

    seen_at = float("-inf")  # time.monotonic()


# Set (by the SIGTERM/Ctrl-C handler in flows/index.py) to stop reading: every partition then
# ends, bytewax flushes the batches in flight through the sink, which commits and acks them.
STOP_READING = threading.Event()


class _ReaderPartition(StatelessSourcePartition[Entry]):
    def __init__(self, reader: StreamReader, settings: Settings):
        self.reader = reader
        self.settings = settings
        self.batch_size = min(settings.batch_size, settings.concurrency)
        self._awake: datetime | None = None
        self._inflight = 0  # entries read and maybe not acked yet, refreshed from XPENDING
        self._history = 0  # entries pending on us at start (a previous run's), not in flight
        self._idle_since: float | None = None
        self._backoff = 0.0
        self._started = False

    def next_batch(self) -> list[Entry]:
        if STOP_READING.is_set():
            log.info("consumer %s: stop requested, no more reads", self.reader.consumer)
            raise StopIteration()
        started = time.time_ns()
        try:
            entries = self._read()
        except REDIS_ERRORS as exc:
            metrics.retried("redis", "read")
            self._backoff = min(max(self._backoff * 2, 0.1), 5.0)
            log.warning(
                "redis read failed (%s: %s); retrying in %.1fs",
                type(exc).__name__,
                str(exc)[:200],
                self._backoff,
            )
            self._sleep(self._backoff)
            return []
        self._backoff = 0.0
        if entries:
            tracing.read_done(self.reader.consumer, started)
            self._awake = None
        else:
            self._sleep(self.settings.poll_interval)
        return entries

    def _read(self) -> list[Entry]:
        if not self._started:
            self.reader.ensure_groups()
            self._history = self.reader.pending()
            self._started = True
        room = self.settings.concurrency - self._inflight
        if room < self.batch_size:
            # Acks happen in the sink, possibly on another worker: ask Redis.
            self._inflight = self._outstanding()
            room = self.settings.concurrency - self._inflight
        want = min(room, self.batch_size)
        entries = self.reader.read(want) if room > 0 else []
        if entries:
            if len(entries) == want:
                Backlog.seen_at = time.monotonic()
            self._inflight += len(entries)
            self._idle_since = None
        else:
            self._maybe_stop(room)
        return entries

    def _outstanding(self) -> int:
        """Entries read in this run and not acked yet: our pending count, less the part of a
        previous run's pending entries not read again yet (else a restart with CONCURRENCY or
        more of them pending would never find room to read them)."""
        unread = max(self._history - self.reader.history_read, 0)
        return max(self.reader.pending() - unread, 0)

    def _maybe_stop(self, room: int) -> None:
        limit = self.settings.stop_when_idle
        if limit is None or room <= 0:
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
            return
        if now - self._idle_since < limit:
            return
        # Idle long enough (every read came back empty): stop once all we read is acked and
        # the rest of the process is done too.
        if self.reader.pending() == 0 and not any(busy() for busy in list(BUSY)):
            log.info(
                "consumer %s idle for %.1fs with nothing pending: stopping",
                self.reader.consumer,
                limit,
            )
            raise StopIteration()

    def _sleep(self, seconds: float) -> None:
        self._awake = datetime.now(UTC) + timedelta(seconds=seconds)

    def next_awake(self) -> datetime | None:
        return self._awake


class RedisStreamSource(DynamicSource[Entry]):
    """Every worker is one consumer of the group on each stream."""

    def __init__(
        self, settings: Settings, streams: Iterable[str] | None = None, group: str | None = None
    ):
        self.settings = settings
        self.streams = tuple(streams or settings.streams)
        self.group = group or settings.group
        self.worker_count = 1  # of the whole cluster, known once built (flows/index.py shards)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ReaderPartition:
        s = self.settings
        self.worker_count = worker_count
        client = client_for(s.redis_url)
        reader = StreamReader(
            client,
            self.streams,
            self.group,
            f"{s.consumer}-{worker_index}",
            claim_idle_ms=s.claim_idle_ms,
            max_deliveries=s.max_deliveries,
            dead_letters=StreamAcker(client, self.group, s),
            # Every worker of this dataflow is alive: their entries are in flight, not orphaned.
            siblings=[f"{s.consumer}-{n}" for n in range(worker_count)],
        )
        return _ReaderPartition(reader, s)
