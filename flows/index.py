"""The indexer dataflow; only the wiring. Run it with ``python -m bytewax.run flows.index``.

    Redis streams ─► read (connectors/redis_streams.py) ─► decode (flows/decode.py)
      ─► key by DID shard ─► batch by size or age (flows/batching.py)
      ─► commit to Postgres, then XACK/XDEL (sinks/postgres/sink.py)

Bad entries travel the same path as good ones and are dead-lettered by the sink after the commit,
so every entry is acked exactly once, by the step after the database.
"""

from __future__ import annotations

import logging
import signal
import threading

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from config.settings import ConfigError, Settings
from connectors.redis_streams import STOP_READING, Entry, RedisStreamSource, entry_payload
from flows.batching import MaxAgeBatcher, shard_of
from flows.decode import decode_entry
from flows.events import Event
from sinks.postgres.sink import PostgresSink

log = logging.getLogger("bsky_indexer")


def decode_batch(entries: list[Entry]) -> list[Event]:
    out = []
    for stream, entry_id, fields in entries:
        if fields is None:
            out.append(
                Event(
                    stream,
                    entry_id,
                    error="entry was deleted from the stream before it was indexed",
                )
            )
            continue
        ev = decode_entry(stream, entry_id, fields)
        if ev.payload is None:
            ev.payload = entry_payload(fields)  # kept in case the database rejects it later
        out.append(ev)
    return out


def build_flow(settings: Settings) -> Dataflow:
    if settings.mode == "label":
        # Refuse rather than index the record streams under a mode that promises labels.
        raise ConfigError("INDEXER_MODE=label: label indexing is not in this version yet")
    flow = Dataflow("bsky_indexer")
    entries = op.input("read", flow, RedisStreamSource(settings))
    events = op.flat_map_batch("decode", entries, decode_batch)
    keyed = op.key_on("shard", events, lambda ev: shard_of(ev, settings.shards))
    batches = op.stateful(
        "batch",
        keyed,
        lambda _resume: MaxAgeBatcher(settings.batch_size, settings.batch_max_wait),
    )
    op.output("commit", batches, PostgresSink(settings))
    return flow


def _stop(signum: int, _frame: object) -> None:
    """First SIGTERM/Ctrl-C: stop reading and let the batches in flight commit and ack, then
    exit 0. A second one stops at once (entries in flight stay pending and are read again)."""
    if STOP_READING.is_set():
        raise KeyboardInterrupt
    log.info("%s: finishing the batches in flight, then stopping", signal.Signals(signum).name)
    STOP_READING.set()


def _setup() -> Settings:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    log.info("starting: %s", settings.summary())
    return settings


def _build() -> Dataflow:
    try:
        return build_flow(_setup())
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        raise SystemExit(2) from None


flow = _build()
