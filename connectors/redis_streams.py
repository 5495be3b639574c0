"""Redis Streams consumer group: the plain reader and acker, and the bytewax source over them.

The consumer group is the checkpoint store: an entry stays pending for its consumer until the
sink has committed its batch and acked it, so a restart resumes exactly where the database is.

- ``StreamReader``: one consumer of the group on every configured stream. It reads its own pending
  entries first (left over from a previous run under the same name), then new ones; it never blocks;
  earlier streams in the list (live) are served before later ones (backfill).
- ``StreamAcker``: after a commit, copies bad entries to the dead-letter stream, XACKs every
  entry and XDELs them, in one MULTI/EXEC: a dead letter is never written without its ack.
- ``RedisStreamSource``: the bytewax source; worker ``n`` of the cluster is consumer
  ``<INDEXER_CONSUMER>-<n>``, the same name after a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from bytewax.inputs import DynamicSource, StatelessSourcePartition

from config.settings import Settings
from flows.events import Event

log = logging.getLogger(__name__)

Entry = tuple[str, str, dict[bytes, bytes] | None]  # stream, entry id, fields (None: deleted)

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
    """One consumer of a group over several streams, pending entries first."""

    def __init__(self, client: redis.Redis, streams: Iterable[str], group: str, consumer: str):
        self.client = client
        self.streams = tuple(streams)
        self.group = group
        self.consumer = consumer
        # Per stream: the id after which to read our own pending history, or None once it is done.
        self._pending_from: dict[str, str | None] = {s: "0" for s in self.streams}

    def ensure_groups(self) -> None:
        """Create the group at the start of each stream (MKSTREAM) unless it exists."""
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, count: int) -> list[Entry]:
        """Up to ``count`` entries: own pending ones first, then new ones, earlier streams first."""
        out: list[Entry] = []
        for stream in self.streams:
            want = count - len(out)
            if want <= 0:
                break
            start = self._pending_from[stream]
            entries = self._xreadgroup(stream, start or ">", want)
            if start is not None:
                if entries:
                    self._pending_from[stream] = entries[-1][1]
                else:
                    self._pending_from[stream] = None  # history done: new entries from now on
                    entries = self._xreadgroup(stream, ">", want)
            out.extend(entries)
        return out

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
                out.append((stream, _text(entry_id), fields or None))
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


class StreamAcker:
    """Finishes entries after their batch committed: dead letters, XACK, XDEL."""

    def __init__(self, client: redis.Redis, group: str, settings: Settings):
        self.client = client
        self.group = group
        self.dead_letter_stream = settings.dead_letter_stream
        self.dead_letter_maxlen = settings.dead_letter_maxlen
        self.delete_after_ack = settings.delete_after_ack

    def finish(self, events: Iterable[Event]) -> int:
        """Dead-letter the bad events and ack (and delete) all of them. Returns dead letters."""
        by_stream: dict[str, list[str]] = {}
        dead = 0
        pipe = self.client.pipeline(transaction=True)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for ev in events:
            by_stream.setdefault(ev.stream, []).append(ev.entry_id)
            if ev.error is not None:
                dead += 1
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
        return dead


def entry_payload(fields: dict[Any, Any] | None) -> bytes | None:
    """The raw bytes of an entry, for a dead letter."""
    if not fields:
        return None
    for key in (b"event", "event", b"labels", "labels"):
        if key in fields:
            value = fields[key]
            return value if isinstance(value, bytes) else str(value).encode()
    return repr(fields).encode()


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
        self._idle_since: float | None = None
        self._backoff = 0.0
        self._started = False

    def next_batch(self) -> list[Entry]:
        if STOP_READING.is_set():
            log.info("consumer %s: stop requested, no more reads", self.reader.consumer)
            raise StopIteration()
        try:
            entries = self._read()
        except REDIS_ERRORS as exc:
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
            self._awake = None
        else:
            self._sleep(self.settings.poll_interval)
        return entries

    def _read(self) -> list[Entry]:
        if not self._started:
            self.reader.ensure_groups()
            self._inflight = self.reader.pending()
            self._started = True
        room = self.settings.concurrency - self._inflight
        if room < self.batch_size:
            # Acks happen in the sink, possibly on another worker: ask Redis.
            self._inflight = self.reader.pending()
            room = self.settings.concurrency - self._inflight
        entries = self.reader.read(min(room, self.batch_size)) if room > 0 else []
        if entries:
            self._inflight += len(entries)
            self._idle_since = None
        else:
            self._maybe_stop(room)
        return entries

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
        # Idle long enough (every read came back empty): stop once all we read is acked.
        if self.reader.pending() == 0:
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

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ReaderPartition:
        reader = StreamReader(
            client_for(self.settings.redis_url),
            self.streams,
            self.group,
            f"{self.settings.consumer}-{worker_index}",
        )
        return _ReaderPartition(reader, self.settings)
