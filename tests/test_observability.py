"""Traces, metrics and logs of the indexer, against real Redis and Postgres.

The end-to-end tests run a real indexer process: its spans go to an OTLP/HTTP receiver started
here, its /metrics endpoint is scraped, its JSON log lines are parsed one by one, and none of
them may show the passwords in REDIS_URL and DATABASE_URL.
"""

from __future__ import annotations

import http.server
import json
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator

import orjson
import pytest
from bytewax.testing import run_main
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from config.settings import ConfigError, Settings
from connectors.redis_streams import RedisStreamSource, StreamReader
from connectors.replay import load_events
from flows.index import build_flow
from observability import logs, metrics, tracing
from observability.metrics import StreamSampler
from observability.reasons import reason_kind

from . import factory as f
from .indexer_runs import exit_of, run_indexer
from .test_flow import ROOT, indexer_env, settings_for

ALICE, BOB, CAROL = f.did("alice"), f.did("bob"), f.did("carol")
PASSWORD = "s3cret-Pw0rd"
POST, LIKE, FOLLOW = "app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"


def load_mix(rds, stream: str) -> int:
    """Three good events (post, like, follow) and two bad entries; returns the entry count."""
    p = f.post(ALICE, "hello")
    load_events(rds, stream, [p, f.like(BOB, p), f.follow(CAROL, ALICE)])
    rds.xadd(stream, {"event": b"{not json"})
    rds.xadd(stream, {"event": orjson.dumps({**f.follow(BOB, ALICE), "type": "teleport"})})
    return 5


def secret_env(names, redis_url: str, db_url: str, **variables: str) -> dict[str, str]:
    """The indexer's environment with a password in both connection strings (the test servers
    do not check it: Redis' default user has none, Postgres trusts local connections)."""
    assert redis_url.startswith("redis://") and "@" not in redis_url
    secret_redis = redis_url.replace("redis://", f"redis://default:{PASSWORD}@", 1)
    secret_db = f"{db_url} password={PASSWORD}"
    return indexer_env(names, secret_redis, secret_db, **variables)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- traces -------------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=tracing._resource("test-consumer"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def test_each_batch_is_a_trace_with_read_decode_write_ack(spans, db, rds, names, redis_url, db_url):
    entries = load_mix(rds, names.live)
    run_main(build_flow(settings_for(names, redis_url, db_url, shards=1)))

    finished = spans.get_finished_spans()
    batches = [s for s in finished if s.name == "batch"]
    assert batches and all(s.parent is None for s in batches)
    children: dict[int, list] = defaultdict(list)
    for s in finished:
        if s.parent is not None:
            children[s.parent.span_id].append(s)
    assert len(finished) == len(batches) + sum(len(children[b.context.span_id]) for b in batches)
    rows: dict[str, int] = defaultdict(int)
    for batch in batches:
        kids = children[batch.context.span_id]
        assert sorted({k.name for k in kids}) == ["ack", "decode", "read", "write"]
        for kid in kids:
            assert kid.context.trace_id == batch.context.trace_id
            assert batch.start_time <= kid.start_time <= kid.end_time <= batch.end_time
        (write,) = [k for k in kids if k.name == "write"]
        for key, value in write.attributes.items():
            if key.startswith("indexer.rows."):
                rows[key] += value
        assert batch.resource.attributes["service.name"] == "bsky-indexer"
        assert batch.resource.attributes["indexer.consumer"] == "test-consumer"
        assert batch.attributes["messaging.consumer.group.name"] == names.group
    assert sum(b.attributes["messaging.batch.message_count"] for b in batches) == entries
    assert sum(b.attributes["indexer.dead_letters"] for b in batches) == 2
    assert rows[f"indexer.rows.{POST}.insert"] == 1
    assert rows[f"indexer.rows.{LIKE}.insert"] == 1
    assert rows[f"indexer.rows.{FOLLOW}.insert"] == 1
    assert rows["indexer.rows.actor_sync.upsert"] == 3
    reads = [s for s in finished if s.name == "read"]
    assert {s.attributes["indexer.consumer"] for s in reads} == {f"{names.consumer}-0"}


def test_tracing_is_off_unless_an_exporter_is_configured(monkeypatch):
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert tracing.provider_from_env("c", {}) is None
    assert tracing.provider_from_env("c", {"OTEL_SERVICE_NAME": "x"}) is None
    assert tracing.provider_from_env("c", {**endpoint, "OTEL_TRACES_EXPORTER": "none"}) is None
    assert tracing.provider_from_env("c", {**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    for env in (endpoint, {"OTEL_TRACES_EXPORTER": "otlp"}):
        provider = tracing.provider_from_env("c", env)
        assert provider is not None
        provider.shutdown()

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    assert isinstance(tracing.exporter_from_env("otlp", {}), HttpExporter)
    grpc = tracing.exporter_from_env("otlp", {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
    assert isinstance(grpc, GrpcExporter)
    grpc.shutdown()
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        tracing.provider_from_env("c", {"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing.provider_from_env("c", {**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})

    monkeypatch.setenv("OTEL_SERVICE_NAME", "indexer-eu-1")
    assert tracing._resource("c").attributes["service.name"] == "indexer-eu-1"


class _OtlpReceiver(http.server.ThreadingHTTPServer):
    """A tiny OTLP/HTTP trace receiver: keeps every request it decodes."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.requests: list[tuple[str, bytes, ExportTraceServiceRequest]] = []


class _OtlpHandler(http.server.BaseHTTPRequestHandler):
    server: _OtlpReceiver

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append((self.path, body, request))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


def test_indexer_process_exports_its_spans_over_otlp_http(db, rds, names, redis_url, db_url):
    receiver = _OtlpReceiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        entries = load_mix(rds, names.live)
        env = secret_env(
            names,
            redis_url,
            db_url,
            INDEXER_STOP_WHEN_IDLE="0.5",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_port}",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        env.pop("OTEL_TRACES_EXPORTER", None)
        run_indexer(env)
    finally:
        receiver.shutdown()
        receiver.server_close()

    assert receiver.requests
    assert {path for path, _, _ in receiver.requests} == {"/v1/traces"}
    spans = []
    for _, body, request in receiver.requests:
        assert PASSWORD.encode() not in body
        for rs in request.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert resource["service.name"] == "bsky-indexer"
            assert resource["indexer.consumer"] == names.consumer
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    batches = [s for s in spans if s.name == "batch"]
    assert batches and all(not s.parent_span_id for s in batches)
    for batch in batches:
        kids = [s for s in spans if s.parent_span_id == batch.span_id]
        assert sorted({k.name for k in kids}) == ["ack", "decode", "read", "write"]
        assert all(k.trace_id == batch.trace_id for k in kids)

    def attr(span, key):
        return next(a.value.int_value for a in span.attributes if a.key == key)

    assert sum(attr(b, "messaging.batch.message_count") for b in batches) == entries


# -- metrics ------------------------------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_running_indexer_serves_metrics_and_writes_json_logs(db, rds, names, redis_url, db_url):
    entries = load_mix(rds, names.live)
    port = free_port()
    env = secret_env(
        names,
        redis_url,
        db_url,
        METRICS_PORT=str(port),
        INDEXER_METRICS_INTERVAL="0.1",
        INDEXER_LOG_FORMAT="json",
        DB_POOL_MAX_SIZE="3",
        DB_POOL_MIN_IDLE="1",
    )
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: a full pipe would stall the indexer
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.index", "-w", "2"],
        cwd=ROOT,
        env=env,
        stderr=log,
        text=True,
    )
    try:
        live, group = names.live, names.group
        deadline = time.monotonic() + 60
        found: dict = {}
        while time.monotonic() < deadline:
            try:
                text = scrape(port)
            except OSError:
                time.sleep(0.1)
                continue
            found = samples(text)
            done = value(found, "indexer_batch_size_sum") == entries
            if done and value(found, "indexer_pending", stream=live, group=group) == 0:
                break
            time.sleep(0.1)
        assert PASSWORD not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    log.seek(0)
    lines = log.read().splitlines()
    assert proc.returncode == 0, "\n".join(lines[-20:])

    events = "indexer_events_total"
    assert value(found, events, stream=live, type="create", collection=POST) == 1
    assert value(found, events, stream=live, type="create", collection=LIKE) == 1
    assert value(found, events, stream=live, type="create", collection=FOLLOW) == 1
    assert value(found, events, stream=live, type="undecodable", collection="") == 2  # both bad
    written = "indexer_rows_written_total"
    assert value(found, written, table=POST, op="insert") == 1
    assert value(found, written, table=FOLLOW, op="insert") == 1
    assert value(found, written, table="actor_sync", op="upsert") == 3
    assert value(found, "indexer_dead_letters_total", reason="invalid JSON") == 1
    assert value(found, "indexer_dead_letters_total", reason="unknown type") == 1
    assert value(found, "indexer_batch_size_count") >= 1
    assert value(found, "indexer_batch_latency_seconds_count") >= 1
    assert value(found, "indexer_batch_write_seconds_count") >= 1
    assert value(found, "indexer_acked_entry_age_seconds", stream=live) >= 0
    # sampled: everything was acked and deleted
    assert value(found, "indexer_stream_length", stream=live) == 0
    assert value(found, "indexer_group_lag", stream=live, group=group) == 0
    assert value(found, "indexer_oldest_pending_age_seconds", stream=live, group=group) == 0
    assert value(found, "indexer_db_pool_max") == 3
    assert value(found, "indexer_db_pool_connections", state="in_use") == 0
    assert value(found, "indexer_db_pool_connections", state="idle") >= 1

    # Every line is JSON; start, dead letters and stop are there; no password anywhere.
    assert lines and all(PASSWORD not in line for line in lines)
    records = [json.loads(line) for line in lines]
    kinds = [r.get("event") for r in records]
    assert kinds.count("start") == 1 and kinds.count("stop") == 1
    start = records[kinds.index("start")]
    assert start["config"]["streams"] == [live] and "***" in start["config"]["database_url"]
    dead = [r for r in records if r.get("event") == "dead_letters"]
    assert sum(r["count"] for r in dead) == 2
    stop = records[kinds.index("stop")]
    assert stop["events"] == entries and stop["dead_letters"] == 2
    assert len(records) < 20  # lines per thing worth attention, not per entry


def test_sampler_reports_length_lag_pending_and_oldest_pending_age(rds, names):
    load_events(rds, names.live, [f.follow(BOB, ALICE) for _ in range(5)])
    reader = StreamReader(rds, [names.live], names.group, "c-0")
    reader.ensure_groups()
    assert len(reader.read(2)) == 2  # two delivered, not acked; three not delivered yet
    time.sleep(0.05)
    StreamSampler(rds, [(names.live, names.group), (names.backfill, names.group)], 1).sample()

    def gauge(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    live, group = names.live, names.group
    assert gauge("indexer_stream_length", stream=live) == 5
    assert gauge("indexer_group_lag", stream=live, group=group) == 3
    assert gauge("indexer_pending", stream=live, group=group) == 2
    age = gauge("indexer_oldest_pending_age_seconds", stream=live, group=group)
    assert 0.05 <= age < 60
    assert gauge("indexer_stream_length", stream=names.backfill) == 0  # no such stream yet
    assert gauge("indexer_pending", stream=names.backfill, group=group) is None


def test_a_taken_metrics_port_is_logged_and_indexing_goes_on(caplog):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        with caplog.at_level(logging.ERROR):
            assert metrics.serve(taken.getsockname()[1]) is False
    assert "metrics endpoint not started" in caplog.text


def test_read_retries_are_counted(names):
    import redis as redis_lib

    labels = {"target": "redis", "step": "read"}
    before = REGISTRY.get_sample_value("indexer_retries_total", labels) or 0
    settings = Settings(streams=(names.live,), group=names.group, consumer=names.consumer)
    part = RedisStreamSource(settings).build("read", 0, 1)
    part.reader.client = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    for _ in range(2):
        assert part.next_batch() == []
    assert REGISTRY.get_sample_value("indexer_retries_total", labels) == before + 2


# -- logs ---------------------------------------------------------------------------------------


def test_log_format_is_validated():
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"INDEXER_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="INDEXER_LOG_FORMAT"):
        Settings.from_env({"INDEXER_LOG_FORMAT": "xml"})


def test_bad_observability_settings_stop_the_start_with_a_clear_error(names):
    env = indexer_env(names, "redis://127.0.0.1:1", "postgresql://127.0.0.1:1/x")
    env.update(OTEL_TRACES_EXPORTER="zipkin", INDEXER_LOG_FORMAT="json")
    code, out = exit_of(env, timeout=60)
    assert code == 2
    (line,) = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert line["level"] == "error" and "OTEL_TRACES_EXPORTER" in line["message"]


def test_text_logs_are_one_readable_line_each(capsys):
    logs.setup("text")
    logs.started(Settings(database_url=f"postgresql://u:{PASSWORD}@h/db").summary())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INFO bsky_indexer starting: " in err
    assert "database_url=postgresql://u:***@h/db" in err and PASSWORD not in err


def test_dead_letters_are_logged_in_sums_not_one_line_each(caplog):
    now = [0.0]
    dead = logs.DeadLetterLog(interval=10, clock=lambda: now[0], logger=logging.getLogger("dl"))
    with caplog.at_level(logging.WARNING, logger="dl"):
        dead.add(["invalid seq 'a'"])  # the first one at once
        for n in range(100):
            now[0] += 0.05
            dead.add([f"invalid seq '{n}'", "unknown type 'teleport'"])
        assert len(caplog.records) == 1
        now[0] += 10
        dead.add(["invalid JSON: line 1"])
        dead.flush()  # nothing left: no line
    assert len(caplog.records) == 2
    second = caplog.records[1]
    assert second.count == 201
    assert second.reasons == {"invalid seq": 100, "unknown type": 100, "invalid JSON": 1}
    assert "e.g. invalid seq '0'" in second.getMessage()


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("invalid seq 'abc'", "invalid seq"),
        ("unknown type 'teleport'", "unknown type"),
        ("missing field 'event'", "missing field"),
        ("invalid JSON: unexpected character", "invalid JSON"),
        ("invalid UTF-8 at byte 12", "invalid UTF-8 at byte"),
        ("record: text is longer than 3000 graphemes", "record"),
        (
            "database rejected the event: index row too big",
            "database rejected the event",
        ),
        ("'quoted' first", "other"),
    ],
)
def test_reasons_reduce_to_bounded_kinds(reason, kind):
    assert reason_kind(reason) == kind
