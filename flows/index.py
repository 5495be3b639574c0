"""The indexer dataflow; only the wiring. Run it with ``python -m bytewax.run flows.index``.

    Redis streams ─► read (connectors/redis_streams.py) ─► decode (flows/decode.py)
      ─► key by DID shard ─► batch by size or age (flows/batching.py)
      ─► commit to Postgres, [archive to Parquet (sinks/archive)], then XACK/XDEL
         (sinks/postgres/sink.py)

The label stream (INDEXER_MODE=label, or beside the record streams with all) takes the same path
with flows/decode_labels.py and sinks/postgres/labels.py.

Bad entries travel the same path as good ones and are dead-lettered by the sink after the commit,
so every entry is acked exactly once, by the step after the database.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow

import observability
from config.settings import ConfigError, Settings
from connectors.redis_streams import STOP_READING, Entry, RedisStreamSource, entry_payload
from flows.batching import MaxAgeBatcher, shard_keys, shard_of
from flows.decode import decode_entry
from flows.decode_labels import decode_label_entry
from flows.events import Event
from flows.stage_timings import instrument
from observability import logs, tracing
from sinks.postgres.labels import LabelWriter
from sinks.postgres.sink import PostgresSink

log = logging.getLogger("bsky_indexer")


def decode_batch(
    entries: list[Entry], decode: Callable[[str, str, dict], Event] = decode_entry
) -> list[Event]:
    started = time.time_ns()
    out = []
    for stream, entry_id, fields, deliveries in entries:
        if fields is None:
            out.append(
                Event(
                    stream,
                    entry_id,
                    error="entry was deleted from the stream before it was indexed",
                    deliveries=deliveries,
                )
            )
            continue
        ev = decode(stream, entry_id, fields)
        ev.deliveries = deliveries
        if ev.payload is None:
            ev.payload = entry_payload(fields)  # kept in case the database rejects it later
        out.append(ev)
    origin = tracing.origin_of(len(entries), started)  # travels with each event to the sink
    for ev in out:
        ev.origin = origin
    return out


def decode_label_batch(entries: list[Entry]) -> list[Event]:
    return decode_batch(entries, decode_label_entry)


def build_flow(settings: Settings) -> Dataflow:
    """Mode ``stream``: the record streams; ``label``: the label stream; ``all``: both, side by
    side, each path with its own consumer group, batches and transactions."""
    flow = Dataflow("bsky_indexer")
    if settings.mode in ("all", "stream"):
        source = RedisStreamSource(settings)
        sink = PostgresSink(settings, archive_dir=settings.archive_dir)  # labels: no archive
        _index_path(flow, "", source, decode_batch, sink, settings)
    if settings.mode in ("all", "label"):
        group = settings.label_group
        source = RedisStreamSource(settings, (settings.label_stream,), group)
        sink = PostgresSink(settings, group, LabelWriter)
        _index_path(flow, "_labels", source, decode_label_batch, sink, settings)
    return flow


def _index_path(
    flow: Dataflow,
    suffix: str,
    source: RedisStreamSource,
    decode: Callable[[list[Entry]], list[Event]],
    sink: PostgresSink,
    settings: Settings,
) -> None:
    """read -> decode -> key by shard -> batch -> commit and ack."""
    reader = source  # knows the cluster's worker count once built, even when instrumented
    if settings.shards:
        shard_keys(settings.shards)  # found once here (~6 ms a shard), not on the first events
    if settings.stage_timings:  # benchmarks only: see flows/stage_timings.py
        source, decode, sink = instrument(suffix, source, decode, sink, settings.stage_timings)
    entries = op.input(f"read{suffix}", flow, source)
    events = op.flat_map_batch(f"decode{suffix}", entries, decode)
    # INDEXER_SHARDS=0: one shard per worker of the cluster, each written by its own worker.
    # Every worker builds its source before the first event reaches this step.
    keyed = op.key_on(
        f"shard{suffix}",
        events,
        lambda ev: shard_of(ev, settings.shards or reader.worker_count),
    )
    batches = op.stateful(
        f"batch{suffix}",
        keyed,
        # A batch can never grow past what a worker may hold in flight: close it there, not
        # only at its maximum age.
        lambda _resume: MaxAgeBatcher(
            min(settings.batch_size, settings.concurrency), settings.batch_max_wait
        ),
    )
    op.output(f"commit{suffix}", batches, sink)


def _stop(signum: int, _frame: object) -> None:
    """First SIGTERM/Ctrl-C: stop reading and let the batches in flight commit and ack, then
    exit 0. A second one stops at once (entries in flight stay pending and are read again)."""
    if STOP_READING.is_set():
        raise KeyboardInterrupt
    log.info("%s: finishing the batches in flight, then stopping", signal.Signals(signum).name)
    STOP_READING.set()


def _setup() -> Settings:
    logs.setup(os.environ.get("INDEXER_LOG_FORMAT"))
    settings = Settings.from_env()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    observability.start(settings)  # metrics, traces, the start line
    return settings


def _build() -> Dataflow:
    try:
        return build_flow(_setup())
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        raise SystemExit(2) from None


flow = _build()
