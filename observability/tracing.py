"""OpenTelemetry traces: one trace per committed batch, with child spans read, decode, write, ack.

A batch is formed downstream of the reads (events are keyed by DID shard and batched by size or
age), so the read and decode steps cannot open the batch's span themselves. Instead each event
carries its ``Origin`` (who read it, when the read and the decode of its entries began and
ended) through the shard exchange and the batcher to the worker that commits it; once the batch
is acked, ``record_batch`` builds the batch's span and its children from those timestamps and the
sink's own. An Origin is plain data, so it also crosses processes in a bytewax cluster.

Configured by the standard variables (``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` grpc or
http/protobuf, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``,
``OTEL_TRACES_SAMPLER``, ``OTEL_SDK_DISABLED``). With no exporter configured tracing is off and
``record_batch`` returns at its first line.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from config.settings import ConfigError

if TYPE_CHECKING:
    from flows.events import Event

DEFAULT_SERVICE_NAME = "bsky-indexer"
MAX_READ_SPANS = 8  # a batch gathered from many small reads shows the first few


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a group of events came from: one read by one consumer and its decode (ns since
    the epoch, so the times mean the same in every process)."""

    consumer: str
    entries: int
    read_start: int
    read_end: int
    decode_start: int
    decode_end: int


_last_read = threading.local()


def read_done(consumer: str, start_ns: int) -> None:
    """Called by the source after a read that returned entries. The decode step runs next on the
    same worker thread (no exchange between the two), so it picks the times up from here."""
    _last_read.value = (consumer, start_ns, time.time_ns())


def origin_of(entries: int, decode_start: int) -> Origin:
    """The Origin for entries just decoded on this thread."""
    now = time.time_ns()
    consumer, start, end = getattr(_last_read, "value", None) or ("", decode_start, decode_start)
    return Origin(consumer, entries, start, end, decode_start, now)


_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def use(provider: TracerProvider | None) -> None:
    """Trace with this provider (None: tracing off)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("bsky_indexer") if provider is not None else None


def shutdown() -> None:
    """Export what is buffered and stop; the process is about to end."""
    provider = _provider
    use(None)
    if provider is not None:
        provider.shutdown()


def provider_from_env(consumer: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A provider exporting as the OTEL_* variables say, or None when no exporter is configured.
    Unknown exporter or protocol names are a ConfigError."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if not (endpoint or "").strip():
            return None  # nothing configured: off
        names = ["otlp"]
    if names == ["none"]:
        return None
    exporters = [exporter_from_env(name, env) for name in names]
    provider = TracerProvider(resource=_resource(consumer))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def exporter_from_env(name: str, env: Mapping[str, str]) -> SpanExporter:
    """The exporter OTEL_TRACES_EXPORTER names (otlp: by the OTLP protocol variables)."""
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r}: expected otlp, console or none")
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    # The exporters read their endpoint, headers, timeout and TLS settings from the environment.
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: expected grpc or http/protobuf")


def _resource(consumer: str) -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; service.name defaults to bsky-indexer
    and the consumer name (INDEXER_CONSUMER) is always there."""
    resource = Resource.create({"indexer.consumer": consumer})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    if "service.instance.id" not in resource.attributes:
        resource = resource.merge(Resource({"service.instance.id": consumer}))
    return resource


@dataclass(slots=True)
class BatchTimes:
    """The sink's side of a batch (ns since the epoch)."""

    write_start: int
    write_end: int = 0
    ack_end: int = 0


def record_batch(
    events: Sequence[Event],
    times: BatchTimes,
    group: str,
    rows: Mapping[tuple[str, str], int],
    dead: int,
    write_retries: int,
    ack_retries: int,
) -> None:
    tracer = _tracer
    if tracer is None:
        return
    origins: dict[int, Origin] = {}
    last = None
    for ev in events:
        o = ev.origin
        if o is not last and o is not None:  # events of one read come one after another
            origins[id(o)] = last = o
    reads = sorted(origins.values(), key=lambda o: o.read_start)
    streams = {ev.stream for ev in events}
    start = min(reads[0].read_start, times.write_start) if reads else times.write_start
    stream_names = sorted(streams)
    root = tracer.start_span(
        "batch",
        start_time=start,
        attributes={
            "messaging.system": "redis",
            "messaging.consumer.group.name": group,
            "messaging.destination.name": stream_names,
            "messaging.batch.message_count": len(events),
            "indexer.dead_letters": dead,
            "indexer.reads": len(reads),
        },
    )
    parent = trace.set_span_in_context(root)
    for o in reads[:MAX_READ_SPANS]:
        attrs = {"indexer.consumer": o.consumer, "indexer.entries": o.entries}
        _span(tracer, "read", parent, o.read_start, o.read_end, attrs)
        _span(tracer, "decode", parent, o.decode_start, o.decode_end, attrs)
    write_attrs: dict[str, int] = {"indexer.events": len(events), "indexer.retries": write_retries}
    for (table, op), n in rows.items():
        write_attrs[f"indexer.rows.{table}.{op}"] = n
    _span(tracer, "write", parent, times.write_start, times.write_end, write_attrs)
    ack_attrs = {
        "messaging.batch.message_count": len(events),
        "indexer.dead_letters": dead,
        "indexer.retries": ack_retries,
    }
    _span(tracer, "ack", parent, times.write_end, times.ack_end, ack_attrs)
    root.end(end_time=times.ack_end)


def _span(
    tracer: trace.Tracer,
    name: str,
    parent: object,
    start: int,
    end: int,
    attributes: Mapping[str, object],
) -> None:
    span = tracer.start_span(name, context=parent, start_time=start, attributes=attributes)  # type: ignore[arg-type]
    span.end(end_time=end)
