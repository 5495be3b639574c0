"""The whole dataflow against real Redis and Postgres: read, decode, batch, commit, ack."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace

import orjson
import psycopg
import pytest
from bytewax.testing import run_main

from config.settings import Settings
from connectors.redis_streams import StreamAcker, StreamReader
from connectors.replay import load_events
from flows.index import build_flow, decode_batch
from sinks.postgres.pool import shared_pool
from sinks.postgres.sink import BatchCommitter
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexer_runs import ROOT, exit_of
from .indexing import rows

ALICE, BOB, CAROL = f.did("alice"), f.did("bob"), f.did("carol")


def settings_for(names, redis_url: str, db_url: str, **overrides) -> Settings:
    base = Settings(
        redis_url=redis_url,
        database_url=db_url,
        streams=(names.live, names.backfill),
        label_stream=names.labels,  # mode "all" reads labels too: never the shared label_live
        group=names.group,
        consumer=names.consumer,
        dead_letter_stream=names.dead_letter,
        stop_when_idle=0.3,
        batch_max_wait=0.05,
        db_pool_max_size=4,
        db_pool_min_idle=0,
        # Event handles stored as sent: no network here (tests/test_handle_resolution.py).
        enable_did_resolution=False,
    )
    return replace(base, **overrides)


def indexer_env(names, redis_url: str, db_url: str, **variables: str) -> dict[str, str]:
    """The environment for an indexer process on this test's private streams and database."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=db_url,
        INDEXER_STREAMS=names.live,
        INDEXER_LABEL_STREAM=names.labels,  # mode "all" reads labels too
        INDEXER_GROUP=names.group,
        INDEXER_CONSUMER=names.consumer,
        INDEXER_DEAD_LETTER_STREAM=names.dead_letter,
        ENABLE_DID_RESOLUTION="false",  # no network; tests/test_handle_resolution.py turns it on
    )
    env.update(variables)
    return env


def pending(rds, stream: str, group: str) -> int:
    try:
        return int(rds.xpending(stream, group)["pending"])
    except Exception:
        return 0


def test_flow_indexes_acks_deletes_and_dead_letters(db, rds, names, redis_url, db_url):
    p = f.post(ALICE, "hello")
    good = [p, f.like(BOB, p), f.follow(BOB, ALICE), f.repost(CAROL, p)]
    load_events(rds, names.live, good[:2])
    load_events(rds, names.backfill, good[2:])
    bad = [
        b"{not json",
        orjson.dumps({"type": "create", "did": ALICE}),  # fields missing
        orjson.dumps({**f.like(BOB, p), "record": {"$type": "app.bsky.feed.post"}}),
        orjson.dumps({**f.like(BOB, p), "type": "teleport"}),
    ]
    for payload in bad:
        rds.xadd(names.live, {"event": payload})
    rds.xadd(names.live, {"something": "else"})

    run_main(build_flow(settings_for(names, redis_url, db_url)))

    assert rows(db, "SELECT count(*) FROM post") == [(1,)]
    assert rows(db, 'SELECT "likeCount", "repostCount" FROM post_agg') == [(1, 1)]
    assert rows(db, 'SELECT "followersCount" FROM profile_agg WHERE did = %s', ALICE) == [(1,)]
    dead = rds.xrange(names.dead_letter)
    assert len(dead) == 5
    for _id, fields in dead:
        assert fields[b"reason"]
        assert fields[b"stream"] == names.live.encode()
        assert b"id" in fields and b"time" in fields and b"deliveries" in fields
    assert {fields[b"payload"] for _id, fields in dead} >= set(bad)
    # Everything acked, and deleted from the streams so producers are not held back.
    assert pending(rds, names.live, names.group) == 0
    assert pending(rds, names.backfill, names.group) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.backfill) == 0


def test_existing_group_is_used_and_own_pending_entries_come_first(
    db, rds, names, redis_url, db_url
):
    p = f.post(ALICE)
    first = [p, f.like(BOB, p)]
    load_events(rds, names.live, first)
    # A previous run of the same consumer read these and died before acking.
    reader = StreamReader(rds, [names.live], names.group, f"{names.consumer}-0")
    reader.ensure_groups()
    assert len(reader.read(10)) == 2
    assert pending(rds, names.live, names.group) == 2
    load_events(rds, names.live, [f.like(CAROL, p)])

    again = StreamReader(rds, [names.live], names.group, f"{names.consumer}-0")
    got = again.read(1)
    assert got[0][1] == rds.xrange(names.live)[0][0].decode()  # pending history first
    run_main(build_flow(settings_for(names, redis_url, db_url)))
    assert rows(db, 'SELECT "likeCount" FROM post_agg') == [(2,)]
    assert pending(rds, names.live, names.group) == 0


def test_live_is_served_before_backfill(rds, names):
    load_events(rds, names.backfill, [f.follow(BOB, ALICE) for _ in range(5)])
    load_events(rds, names.live, [f.follow(CAROL, ALICE) for _ in range(3)])
    reader = StreamReader(rds, [names.live, names.backfill], names.group, "c")
    reader.ensure_groups()
    got = reader.read(4)
    assert [s for s, _, _, _ in got] == [names.live] * 3 + [names.backfill]


def test_failed_transaction_acks_nothing_and_is_indexed_after(db, rds, names, db_url):
    """The like table is locked by another session: the writer's transaction fails (lock timeout),
    nothing is acked; once the lock goes, the same entries are indexed and acked."""
    p = f.post(ALICE)
    load_events(rds, names.live, [p, f.like(BOB, p)])
    reader = StreamReader(rds, [names.live], names.group, "c-0")
    reader.ensure_groups()
    events = decode_batch(reader.read(10))
    settings = Settings(dead_letter_stream=names.dead_letter)
    pool = shared_pool(db_url + " options='-c lock_timeout=200'", 2, 0)
    committer = BatchCommitter(
        PostgresWriter(pool),
        StreamAcker(rds, names.group, settings),
        sleep=lambda s: time.sleep(0.05),
    )
    with psycopg.connect(db_url) as locker:
        locker.execute('LOCK TABLE "like" IN ACCESS EXCLUSIVE MODE')
        worker = threading.Thread(target=committer.commit, args=(events,))
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive()  # retrying, not giving up
        assert pending(rds, names.live, names.group) == 2
        assert rows(db, "SELECT count(*) FROM post") == [(0,)]
        locker.rollback()
    worker.join(30)
    assert not worker.is_alive()
    assert rows(db, 'SELECT "likeCount" FROM post_agg') == [(1,)]
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.dead_letter) == 0


def test_value_the_database_rejects_is_dead_lettered_alone(db, rds, names, db_url):
    """A record the decoder accepts but Postgres cannot store costs only that record."""
    p = f.post(ALICE)
    huge = f.post(BOB, "x")
    huge["record"]["langs"] = ["en"]
    load_events(rds, names.live, [p, huge, f.like(CAROL, p)])
    reader = StreamReader(rds, [names.live], names.group, "c-0")
    reader.ensure_groups()
    events = decode_batch(reader.read(10))
    # Sabotage one event the way a surprise from the database would look: an incompressible
    # key too long for a btree index row.
    events[1].uri = f"at://{BOB}/app.bsky.feed.post/" + os.urandom(8000).hex()
    settings = Settings(dead_letter_stream=names.dead_letter)
    committer = BatchCommitter(
        PostgresWriter(shared_pool(db_url, 2, 0)), StreamAcker(rds, names.group, settings)
    )
    committer.commit(events)
    assert rows(db, "SELECT creator FROM post") == [(ALICE,)]
    assert rows(db, 'SELECT "likeCount" FROM post_agg') == [(1,)]
    dead = rds.xrange(names.dead_letter)
    assert len(dead) == 1 and b"database rejected" in dead[0][1][b"reason"]
    assert pending(rds, names.live, names.group) == 0


@pytest.mark.parametrize(
    "command",
    [["-m", "bytewax.run", "flows.index", "-w", "2"], ["-m", "cli", "run", "-w", "2"]],
    ids=["bytewax.run", "bsky-indexer run"],
)
def test_run_with_two_workers_stops_when_idle(command, db, rds, names, redis_url, db_url):
    """The real entry points (`python -m bytewax.run flows.index`, `bsky-indexer run`) with two
    workers index everything, ack it, and end by themselves with exit 0."""
    p = f.post(ALICE)
    events = [p] + [f.like(f.did(f"u{i}"), p) for i in range(200)]
    load_events(rds, names.live, events)
    env = indexer_env(
        names,
        redis_url,
        db_url,
        INDEXER_STREAMS=f"{names.live},{names.backfill}",
        INDEXER_STOP_WHEN_IDLE="0.5",
        INDEXER_BATCH_SIZE="50",
    )
    proc = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rows(db, 'SELECT "likeCount" FROM post_agg') == [(200,)]
    consumers = {c["name"].decode() for c in rds.xinfo_consumers(names.live, names.group)}
    assert consumers and consumers <= {f"{names.consumer}-0", f"{names.consumer}-1"}
    assert pending(rds, names.live, names.group) == 0


@pytest.mark.parametrize(
    ("variable", "value"), [("INDEXER_BATCH_SIZE", "lots"), ("INDEXER_MODE", "labels")]
)
def test_bad_configuration_is_a_clear_error_at_start(variable, value):
    code, out = exit_of(dict(os.environ, **{variable: value}), timeout=60)
    assert code == 2
    assert f"configuration error: {variable}" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_settings_reject_bad_values(value):
    from config.settings import ConfigError

    with pytest.raises(ConfigError, match="INDEXER_CONCURRENCY"):
        Settings.from_env({"INDEXER_CONCURRENCY": value})


def test_settings_redact_passwords():
    s = Settings.from_env(
        {"DATABASE_URL": "postgresql://u:hunter2@db/bsky", "REDIS_URL": "redis://:sekret@r:6379"}
    )
    text = repr(s.summary())
    assert "hunter2" not in text and "sekret" not in text


def test_reader_survives_redis_being_unreachable(names):
    """A read error is retried later; it neither raises into bytewax nor ends the reader."""
    import redis as redis_lib

    from connectors.redis_streams import RedisStreamSource

    dead = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    settings = Settings(streams=(names.live,), group=names.group, consumer=names.consumer)
    part = RedisStreamSource(settings).build("read", 0, 1)
    part.reader.client = dead
    for _ in range(3):
        assert part.next_batch() == []
        assert part.next_awake() is not None  # backing off, not spinning


def test_entries_stay_in_the_stream_when_delete_after_ack_is_off(rds, names):
    load_events(rds, names.live, [f.follow(BOB, ALICE)])
    reader = StreamReader(rds, [names.live], names.group, "c-0")
    reader.ensure_groups()
    events = decode_batch(reader.read(10))
    settings = Settings(dead_letter_stream=names.dead_letter, delete_after_ack=False)
    StreamAcker(rds, names.group, settings).finish(events)
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.live) == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_the_batches_in_flight_and_exits_0(
    workers, db, rds, names, redis_url, db_url
):
    """SIGTERM mid-run: reading stops, what was read commits and is acked, exit 0; nothing read is
    left pending and a restart indexes the rest."""
    import signal

    from connectors.synthetic import generate

    events = list(generate(20_000, n_dids=2_000, seed=3))
    total = load_events(rds, names.live, events)
    env = indexer_env(
        names,
        redis_url,
        db_url,
        INDEXER_STOP_WHEN_IDLE="0.5",
        INDEXER_CONCURRENCY="1000",
    )
    cmd = [sys.executable, "-m", "bytewax.run", "flows.index", "-w", workers]
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: a full pipe would stall the indexer
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=log, text=True)
    deadline = time.monotonic() + 60
    while rds.xlen(names.live) > total - 2_000 and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until it is well under way
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    log.seek(0)
    assert proc.returncode == 0, log.read()[-2000:]
    left = rds.xlen(names.live)
    assert 0 < left < total  # stopped mid-run
    assert pending(rds, names.live, names.group) == 0
    # Everything acked was committed: the rest is indexed by a restart, and nothing is lost.
    proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=120, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rds.xlen(names.live) == 0 and rds.xlen(names.dead_letter) == 0
    if workers == "1":
        # One consumer keeps each DID's order, so the record rows are exactly the live records.
        assert {u for (u,) in rows(db, "SELECT uri FROM record")} == _live_record_uris(events)


def _live_record_uris(events: list[dict]) -> set[str]:
    from sinks.postgres.collections import BY_NSID

    alive: set[str] = set()
    for ev in events:
        if ev["type"] == "account" and not ev["active"] and ev["status"] in ("deleted", "Deleted"):
            # the account's records go (sinks/postgres/actors.py)
            alive = {u for u in alive if not u.startswith(f"at://{ev['did']}/")}
        if ev.get("collection") not in BY_NSID:
            continue
        uri = f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
        if ev["type"] in ("create", "update"):
            alive.add(uri)
        elif ev["type"] == "delete":
            alive.discard(uri)
    return alive


def test_connections_never_exceed_the_pool_size_across_workers(db, rds, names, redis_url, db_url):
    """Four workers share one pool of DB_POOL_MAX_SIZE=2: never more than 2 connections."""
    from connectors.synthetic import generate

    load_events(rds, names.live, generate(8_000, n_dids=1_000, seed=4))
    env = indexer_env(
        names,
        redis_url,
        db_url,
        INDEXER_STOP_WHEN_IDLE="0.5",
        INDEXER_BATCH_SIZE="100",
        DB_POOL_MAX_SIZE="2",
        DB_POOL_MIN_IDLE="0",
    )
    from sinks.postgres.pool import close_all

    close_all()  # this test process's own pools would be counted too
    dbname = db.info.dbname
    # Earlier tests' indexers may still be closing: count only backends opened after launch.
    (started,) = db.execute("SELECT clock_timestamp()").fetchone()
    seen: list[int] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.index", "-w", "4"],
        cwd=ROOT,
        env=env,
        stderr=(log := tempfile.TemporaryFile(mode="w+")),  # a full pipe would stall the indexer
        text=True,
    )
    while proc.poll() is None:
        (n,) = db.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'bsky-indexer' AND backend_start >= %s",
            (dbname, started),
        ).fetchone()
        seen.append(n)
        time.sleep(0.01)
    log.seek(0)
    assert proc.returncode == 0, log.read()[-2000:]
    assert max(seen) >= 1  # the sampling saw the indexer at work
    assert max(seen) <= 2
    assert rds.xlen(names.live) == 0
