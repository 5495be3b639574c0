"""Nothing lost, nothing doubled: pending entries, claims, dead letters, the repo-revision guard,
backpressure, trimming, several consumers, hostile input and kill -9 (product.md, guarantees 1-4).

Server restarts and pgbouncer are in test_restarts.py.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import psycopg
import pytest
import redis
from bytewax.testing import run_main
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from config.settings import ConfigError, Settings
from connectors.redis_streams import DEAD_LETTER_LISTENERS, StreamAcker, StreamReader
from connectors.replay import load_events
from connectors.synthetic import generate
from flows.events import Event
from flows.index import build_flow
from sinks.postgres.pool import shared_pool
from sinks.postgres.schema import truncate_all
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexer_runs import IndexerProcess, clean_snapshot, order_free, run_indexer, tables
from .indexing import index, rows, snapshot
from .names import Names
from .test_batch_equivalence import sequences
from .test_flow import indexer_env, pending, settings_for

ALICE, BOB, CAROL = f.did("alice"), f.did("bob"), f.did("carol")


@pytest.fixture
def writer(db: psycopg.Connection, db_url: str) -> Iterator[PostgresWriter]:
    yield PostgresWriter(shared_pool(db_url, 4, 0))


def like_count(db: psycopg.Connection) -> int:
    got = rows(db, 'SELECT "likeCount" FROM post_agg')
    return got[0][0] if got else 0


def pending_by_consumer(rds, stream: str, group: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    try:
        entries = rds.xpending_range(stream, group, "-", "+", 100_000)
    except redis.ResponseError:  # no group yet
        return out
    for p in entries:
        out.setdefault(p["consumer"].decode(), []).append(p["message_id"].decode())
    return out


def stream_ids(rds, stream: str) -> list[str]:
    return [i.decode() for i, _ in rds.xrange(stream)]


# --- 1. pending entries: own first, claims, too many deliveries --------------------------------


@pytest.mark.timeout(30)
def test_own_pending_entries_first_then_new_ones_with_no_detour(rds, names):
    """A restarted consumer reads what it had not acked, then new entries at once: no empty read
    in between, no entry twice, and no loop over its pending entries while they are in flight."""
    load_events(rds, names.live, [f.follow(BOB, ALICE) for _ in range(3)])
    before = StreamReader(rds, [names.live], names.group, "c-0")
    before.ensure_groups()
    assert len(before.read(3)) == 3  # ... and the process died
    load_events(rds, names.live, [f.follow(CAROL, ALICE) for _ in range(5)])

    after = StreamReader(rds, [names.live], names.group, "c-0")
    reads = [after.read(2) for _ in range(6)]
    got = [e for r in reads for e in r]
    assert [e[1] for e in got] == stream_ids(rds, names.live)
    assert [len(r) for r in reads] == [2, 1, 2, 2, 1, 0]  # none empty before the end
    assert [e[3] for e in got] == [2, 2, 2, 1, 1, 1, 1, 1]  # delivery counts


@pytest.mark.timeout(60)
def test_entries_of_a_dead_consumer_are_claimed_and_indexed(db, rds, names, redis_url, db_url):
    """Another host read entries and died: after INDEXER_CLAIM_IDLE_MS our consumer claims them and
    indexes them (they are not acked unprocessed)."""
    p = f.post(ALICE)
    load_events(rds, names.live, [p] + [f.like(f.did(f"u{i}"), p) for i in range(30)])
    dead = StreamReader(rds, [names.live], names.group, "crashed-host-0")
    dead.ensure_groups()
    assert len(dead.read(20)) == 20
    time.sleep(0.3)

    run_main(build_flow(settings_for(names, redis_url, db_url, claim_idle_ms=200)))

    assert rows(db, "SELECT count(*) FROM post") == [(1,)]
    assert like_count(db) == 30
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.dead_letter) == 0


@pytest.mark.timeout(30)
def test_entries_in_flight_on_live_workers_are_not_claimed(rds, names):
    """Only other consumers' idle entries are claimed; a sibling worker of this process keeps its
    own even when they are idle long enough (they are in flight, not orphaned)."""
    load_events(rds, names.live, [f.follow(BOB, ALICE) for _ in range(4)])
    sibling = StreamReader(rds, [names.live], names.group, "me-1")
    sibling.ensure_groups()
    held = [e[1] for e in sibling.read(2)]
    foreign = StreamReader(rds, [names.live], names.group, "other-0")
    orphaned = [e[1] for e in foreign.read(1)]
    time.sleep(0.25)

    me = StreamReader(
        rds, [names.live], names.group, "me-0", claim_idle_ms=100, siblings=["me-0", "me-1"]
    )
    got = me.read(10) + me.read(10)
    assert [e[1] for e in got] == orphaned + stream_ids(rds, names.live)[3:]
    assert got[0][3] == 2  # the claimed entry's second delivery
    assert pending_by_consumer(rds, names.live, names.group)["me-1"] == held


@pytest.mark.timeout(60)
@pytest.mark.parametrize("holder", ["own", "other"])
def test_an_entry_delivered_too_often_is_dead_lettered_and_acked(
    holder, db, rds, names, redis_url, db_url
):
    """An entry that keeps killing its consumer (read, never acked, again and again) is
    dead-lettered with the reason and acked once it is delivered more than INDEXER_MAX_DELIVERIES
    times: on the restart of its own consumer as on a claim by another one."""
    p = f.post(ALICE)
    poison = orjson.dumps(f.like(BOB, p))
    rds.xadd(names.live, {"event": poison})
    (poison_id,) = stream_ids(rds, names.live)
    consumer = f"{names.consumer}-0" if holder == "own" else "crashed-host-0"
    for _ in range(3):  # three runs that died holding it
        reader = StreamReader(rds, [names.live], names.group, consumer)
        reader.ensure_groups()
        assert [e[1] for e in reader.read(10)] == [poison_id]
    load_events(rds, names.live, [p])
    counted = "indexer_dead_letters_total", {"reason": "delivered"}
    before = REGISTRY.get_sample_value(*counted) or 0

    run_main(build_flow(settings_for(names, redis_url, db_url, max_deliveries=3, claim_idle_ms=1)))

    assert rows(db, "SELECT count(*) FROM post") == [(1,)]
    assert like_count(db) == 0
    (dead,) = [fields for _id, fields in rds.xrange(names.dead_letter)]
    assert dead[b"payload"] == poison
    assert dead[b"id"] == poison_id.encode() and dead[b"stream"] == names.live.encode()
    assert dead[b"deliveries"] == b"4"
    assert b"delivered 4 times" in dead[b"reason"] and b"INDEXER_MAX_DELIVERIES" in dead[b"reason"]
    assert pending(rds, names.live, names.group) == 0
    assert REGISTRY.get_sample_value(*counted) == before + 1  # the metric counts it too


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INDEXER_CLAIM_IDLE_MS", "0"),
        ("INDEXER_CLAIM_IDLE_MS", "1m"),
        ("INDEXER_MAX_DELIVERIES", "0"),
    ],
)
def test_claim_and_delivery_settings_are_checked_at_start(variable, value):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


# --- 2. the dead-letter stream ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_dead_letter_stream_is_bounded_and_every_dead_letter_is_counted(rds, names):
    acker = StreamAcker(
        rds, names.group, Settings(dead_letter_stream=names.dead_letter, dead_letter_maxlen=100)
    )
    seen: list[Event] = []
    DEAD_LETTER_LISTENERS.append(seen.extend)
    try:
        for batch in range(10):
            acker.finish(
                [
                    Event(names.live, f"{batch + 1}-{n}", error=f"reason {n % 3}", payload=b"x")
                    for n in range(100)
                ]
            )
    finally:
        DEAD_LETTER_LISTENERS.remove(seen.extend)
    assert 100 <= rds.xlen(names.dead_letter) < 1000  # MAXLEN ~ 100: whole nodes are trimmed
    assert len(seen) == 1000
    assert {ev.error for ev in seen} == {"reason 0", "reason 1", "reason 2"}


# --- 6. ordering: the repo-revision guard -------------------------------------------------------


def test_an_older_operation_after_a_newer_one_does_not_undo_it(db, writer):
    p = f.post(ALICE, "gone")
    index(writer, [p, f.delete(p)])
    index(writer, [p])  # the create again: another consumer's, or delivered again after a crash
    assert rows(db, "SELECT count(*) FROM record") == [(0,)]
    assert rows(db, "SELECT count(*) FROM post") == [(0,)]
    assert rows(db, 'SELECT "postsCount" FROM profile_agg') in ([], [(0,)])

    prof = f.profile(ALICE, displayName="v1")
    v2, v3 = f.update(prof, displayName="v2"), f.update(prof, displayName="v3")
    index(writer, [prof])
    index(writer, [v3])
    index(writer, [v2])  # older than v3
    assert rows(db, 'SELECT "displayName" FROM profile') == [("v3",)]
    assert rows(db, 'SELECT "repoRev" FROM actor_sync') == [(v3["rev"],)]


def test_an_older_commit_does_not_move_actor_sync_back(db, writer):
    new, old = f.post(ALICE), f.post(ALICE)
    old["rev"], new["rev"] = sorted([old["rev"], new["rev"]])
    index(writer, [new])
    index(writer, [old])
    assert rows(db, 'SELECT "commitCid", "repoRev" FROM actor_sync') == [
        (new["commit"], new["rev"])
    ]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=sequences(), data=st.data())
def test_delivering_committed_events_again_changes_nothing(
    db: psycopg.Connection, db_url: str, events: list[dict], data: st.DataObject
):
    """Any part of what was committed, delivered again (in one batch, as after a crash before the
    ack), leaves every table as it was: no record back, no counter moved, no notification twice."""
    assume(events)
    writer = PostgresWriter(shared_pool(db_url, 4, 0))
    truncate_all(db_url)
    index(writer, events)
    expected = snapshot(db)
    start = data.draw(st.integers(0, len(events) - 1))
    end = data.draw(st.integers(start + 1, len(events)))
    index(writer, events[start:end])
    assert snapshot(db) == expected


# --- 7. backpressure ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_entries_in_flight_per_worker_never_exceed_the_concurrency(
    db, rds, names, redis_url, db_url
):
    load_events(rds, names.live, generate(1_500, n_dids=500, seed=7))
    s = settings_for(names, redis_url, db_url, concurrency=50, batch_size=500, shards=1)
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            by = pending_by_consumer(rds, names.live, names.group)
            seen.append(max((len(v) for v in by.values()), default=0))
            time.sleep(0.002)  # leave the indexer the GIL

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run_main(build_flow(s))
    finally:
        done.set()
        sampler.join()
    assert max(seen) > 0  # the sampling saw entries in flight
    assert max(seen) <= 50
    assert rds.xlen(names.live) == 0


@pytest.mark.timeout(60)
def test_a_restart_with_more_pending_than_the_concurrency_reads_them_again(
    db, rds, names, redis_url, db_url
):
    """A previous run's pending entries are not in flight: a consumer restarted with CONCURRENCY or
    more of them pending must still read them (it once waited forever for room)."""
    load_events(rds, names.live, generate(300, n_dids=100, seed=8))
    before = StreamReader(rds, [names.live], names.group, f"{names.consumer}-0")
    before.ensure_groups()
    assert len(before.read(200)) == 200  # ... and the process died
    s = settings_for(names, redis_url, db_url, concurrency=50, batch_size=20, shards=1)
    run_main(build_flow(s))
    assert pending_by_consumer(rds, names.live, names.group) == {}
    assert rds.xlen(names.live) == 0


# --- 5 and 8. trimming, and our consumers beside a foreign one ---------------------------------


@pytest.mark.timeout(60)
def test_only_our_acked_entries_are_deleted_and_a_foreign_consumers_stay(
    db, rds, names, redis_url, db_url
):
    """Another indexer in the same group holds entries: we index and delete only ours; its entries
    stay in the stream, pending on it, until it acks them itself."""
    p = f.post(ALICE)
    load_events(rds, names.live, [p] + [f.like(f.did(f"u{i}"), p) for i in range(20)])
    foreign = StreamReader(rds, [names.live], names.group, "typescript-indexer")
    foreign.ensure_groups()
    held = [e[1] for e in foreign.read(6)]  # the post and five likes

    run_main(build_flow(settings_for(names, redis_url, db_url)))

    assert stream_ids(rds, names.live) == held
    assert pending_by_consumer(rds, names.live, names.group) == {"typescript-indexer": held}
    assert like_count(db) == 15
    rds.xack(names.live, names.group, *held)
    assert pending(rds, names.live, names.group) == 0


@pytest.mark.timeout(240)
def test_two_processes_with_two_workers_each_leave_the_tables_of_one(
    db, rds, names, redis_url, db_url
):
    """Every entry indexed exactly once in effect by four consumers in two processes; each acks
    its own. The events are those whose outcome does not depend on the order across records
    (indexer_runs.order_free): what differs is only the order, and it must not show."""
    events = order_free(generate(6_000, n_dids=400, seed=11))
    expected = clean_snapshot(db_url, events)
    load_events(rds, names.live, events)
    procs = [
        IndexerProcess(
            indexer_env(
                names,
                redis_url,
                db_url,
                INDEXER_CONSUMER=f"{names.consumer}-host{n}",
                INDEXER_STOP_WHEN_IDLE="1",
                INDEXER_BATCH_SIZE="100",
                INDEXER_CONCURRENCY="300",
            ),
            workers=2,
        )
        for n in range(2)
    ]
    for proc in procs:
        assert proc.wait(180) == 0, proc.output()[-3000:]
    assert tables(db_url) == expected
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.dead_letter) == 0
    readers = {c["name"].decode() for c in rds.xinfo_consumers(names.live, names.group)}
    assert len(readers) >= 3  # the work was shared
    assert readers <= {f"{names.consumer}-host{n}-{w}" for n in range(2) for w in range(2)}


# --- 4. kill -9 ---------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_kill_9_and_sigterm_at_random_points_lose_and_double_nothing(
    db, rds, names, redis_url, db_url
):
    """Six kill -9 at random points of a 20,000-event run, a restart after each, then a SIGTERM:
    the tables equal a clean run's, counters and notifications included, and nothing is left
    pending. SIGTERM also exits 0 with nothing read left pending (nothing half-written: the rest
    is indexed by the next run and the tables still match).

    One worker and one shard apply the stream in order, so a clean run is exactly defined; what a
    kill leaves (a committed batch not yet acked, entries read and not committed) is delivered
    again on restart and must change nothing."""
    events = list(generate(20_000, n_dids=2_000, seed=5))
    expected = clean_snapshot(db_url, events, batch=2_000)
    total = load_events(rds, names.live, events)
    env = indexer_env(
        names,
        redis_url,
        db_url,
        INDEXER_SHARDS="1",
        INDEXER_BATCH_SIZE="500",
        INDEXER_CONCURRENCY="2000",
        INDEXER_STOP_WHEN_IDLE="1",
    )
    rng = random.Random()
    for stop in [signal.SIGKILL] * 6 + [signal.SIGTERM]:
        left = rds.xlen(names.live)
        proc = IndexerProcess(env)
        target = left - rng.randint(100, total // 10)
        deadline = time.monotonic() + 60
        while rds.xlen(names.live) > target and proc.running() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.2))
        assert proc.running(), "the run ended before it could be stopped: " + proc.output()[-2000:]
        proc.send(stop)
        code = proc.wait(60)
        assert 0 < rds.xlen(names.live) < left, "no progress, or no work left to interrupt"
    assert code == 0, proc.output()[-2000:]  # the SIGTERM
    assert pending(rds, names.live, names.group) == 0
    run_indexer(env, timeout=180)
    assert tables(db_url) == expected
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.dead_letter) == 0


# --- 10. hostile input --------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(
    [
        "'); DROP TABLE post; --",
        "Robert'); DELETE FROM record WHERE ('1'='1",
        "$1 %s %(x)s {0} \\x00 \\' \\\\",
        "E'\\\\x41' || chr(0) || 'x'",
        "\u202eevil\u200b\ufeff",
        "🦋 日本語 \U0010ffff",
        "COPY post FROM PROGRAM 'id'",
    ]
)


def _create(kind: str, text: str) -> dict:
    return f.post(ALICE, text) if kind == "post" else f.like(BOB, f.post(CAROL, text))


@st.composite
def bad_entries(draw: st.DrawFn) -> dict:
    """One entry of each kind of bad input in event-format.md, as the producers could send it."""
    kind = draw(
        st.sampled_from(
            [
                "bytes",
                "utf8",
                "missing",
                "type",
                "lexicon",
                "did",
                "uri",
                "nul",
                "huge",
                "time",
                "no_event",
                "listitem",
            ]
        )
    )
    ev = f.post(ALICE, draw(HOSTILE_TEXT))
    if kind == "bytes":
        raw = draw(st.binary(max_size=40).filter(lambda b: not b.strip().startswith(b"{")))
        return {"event": raw or b"!"}
    if kind == "utf8":
        return {"event": orjson.dumps(ev).replace(b"Z", b"\xff\xfeZ", 1)}
    if kind == "missing":
        field = draw(st.sampled_from(["did", "time", "commit", "rev", "collection", "rkey", "cid"]))
        del ev[field]
    elif kind == "type":
        ev["type"] = draw(st.text(max_size=10).filter(lambda t: t not in ("create", "update")))
    elif kind == "lexicon":
        ev["record"]["text"] = 12345
    elif kind == "did":
        ev["did"] = draw(st.sampled_from(["alice", "did:plc:", "did:web:'; DROP TABLE x;--"]))
    elif kind == "uri":
        ev = f.like(BOB, f.post(CAROL))
        ev["record"]["subject"]["uri"] = "at://'; DROP TABLE post; --"
    elif kind == "nul":
        ev["record"]["text"] = "before\u0000after"
    elif kind == "huge":
        ev["record"]["text"] = "x" * draw(st.integers(3_001, 2_000_000))
    elif kind == "time":
        ev["time"] = draw(st.sampled_from(["yesterday", "2025-13-45T99:99:99Z", ""]))
    elif kind == "no_event":
        return {"something": orjson.dumps(ev)}
    elif kind == "listitem":
        ev = f.create(
            ALICE,
            "app.bsky.graph.listitem",
            {"subject": BOB, "list": f"at://{CAROL}/app.bsky.graph.list/{f.tid()}"},
        )
    return {"event": orjson.dumps(ev)}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    entries=st.lists(
        st.one_of(
            st.tuples(st.just("good"), st.sampled_from(["post", "like"]), HOSTILE_TEXT),
            st.tuples(st.just("bad"), bad_entries()),
        ),
        min_size=1,
        max_size=25,
    ),
)
@pytest.mark.timeout(180)
def test_hostile_entries_are_dead_lettered_and_good_ones_indexed_verbatim(
    db: psycopg.Connection, rds, names: Names, redis_url: str, db_url: str, entries: list
):
    names = Names(f"{names.prefix}:{uuid.uuid4().hex[:8]}")  # streams of this example only
    truncate_all(db_url)
    bad_ids: set[str] = set()
    for entry in entries:
        if entry[0] == "bad":
            bad_ids.add(rds.xadd(names.live, entry[1]).decode())
        else:
            load_events(rds, names.live, [_create(entry[1], entry[2])])

    run_main(build_flow(settings_for(names, redis_url, db_url)))

    dead = {
        fields[b"id"].decode(): fields[b"reason"].decode()
        for _id, fields in rds.xrange(names.dead_letter)
    }
    assert set(dead) == bad_ids  # every bad one, with a reason, and no good one
    assert all(dead.values())
    good = [e for e in entries if e[0] == "good"]
    stored = sorted(t for (t,) in rows(db, "SELECT text FROM post"))
    assert stored == sorted(e[2] for e in good if e[1] == "post")  # byte for byte
    assert rows(db, 'SELECT count(*) FROM "like"') == [(sum(e[1] == "like" for e in good),)]
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.live) == 0
