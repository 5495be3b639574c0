"""The indexer keeps going through server restarts and works through pgbouncer (guarantee 5), and
never writes a password to its log (guarantee 6).

Every server a test breaks is its own throwaway one (tests/throwaway_servers.py), on a free port.
One worker and one shard apply the stream in order, so the tables must equal a clean run's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from connectors.replay import load_events
from connectors.synthetic import generate
from sinks.postgres.schema import init_db

from .indexer_runs import IndexerProcess, clean_snapshot, order_free, tables
from .test_flow import indexer_env, pending
from .throwaway_servers import (
    MISSING_PG,
    MISSING_PGBOUNCER,
    MISSING_REDIS,
    Pgbouncer,
    ThrowawayPostgres,
    ThrowawayRedis,
)

REDIS_PASSWORD = "redis-pw-Zq81xT"
PG_PASSWORD = "pg-pw-Hk27wL"
IN_ORDER = {
    "INDEXER_SHARDS": "1",
    "INDEXER_BATCH_SIZE": "250",
    "INDEXER_CONCURRENCY": "1000",
    "INDEXER_STOP_WHEN_IDLE": "1",
}


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    if MISSING_REDIS:
        pytest.skip(MISSING_REDIS)
    server = ThrowawayRedis(password=REDIS_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    if MISSING_PG:
        pytest.skip(MISSING_PG)
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.stop()


def with_password(conninfo: str) -> str:
    return f"{conninfo} password={PG_PASSWORD}"  # trust authentication ignores it


def wait_for_progress(rds, stream: str, below: int, proc: IndexerProcess) -> None:
    deadline = time.monotonic() + 90
    while rds.xlen(stream) > below and time.monotonic() < deadline:
        assert proc.running(), proc.output()[-3000:]
        time.sleep(0.01)


def finish(proc: IndexerProcess) -> str:
    code = proc.wait(180)
    out = proc.output()
    assert code == 0, out[-3000:]
    for secret in (REDIS_PASSWORD, PG_PASSWORD):
        assert secret not in out
    return out


@pytest.mark.timeout(240)
def test_redis_crash_and_restart_mid_run(db, names, db_url, throwaway_redis):
    """Redis is killed mid-run and comes back a second later (its append-only file keeps what it
    acknowledged): the indexer retries, catches up alone and leaves the tables of a clean run."""
    events = list(generate(4_000, n_dids=500, seed=21))
    expected = clean_snapshot(db_url, events)
    rds = throwaway_redis.client()
    total = load_events(rds, names.live, events)
    env = indexer_env(names, throwaway_redis.url, with_password(db_url), **IN_ORDER)
    proc = IndexerProcess(env)
    wait_for_progress(rds, names.live, total - 1_000, proc)
    throwaway_redis.crash()
    time.sleep(1.5)
    throwaway_redis.start()
    rds = throwaway_redis.client()
    assert 0 < rds.xlen(names.live) < total  # it did stop mid-run

    out = finish(proc)
    assert "redis" in out.lower() and "retry" in out.lower()  # it noticed, and retried
    assert tables(db_url) == expected
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.dead_letter) == 0


@pytest.mark.timeout(240)
def test_postgres_crash_and_restart_mid_run(rds, names, redis_url, db, db_url, throwaway_pg):
    """PostgreSQL stops at once (immediate shutdown, recovery on start) mid-run and restarts: the
    batches in flight fail, are retried with backoff, and the tables equal a clean run's."""
    events = list(generate(4_000, n_dids=500, seed=22))
    expected = clean_snapshot(db_url, events)
    target = throwaway_pg.create_database("bsky")
    init_db(target)
    total = load_events(rds, names.live, events)
    env = indexer_env(names, redis_url, with_password(target), **IN_ORDER)
    proc = IndexerProcess(env)
    wait_for_progress(rds, names.live, total - 1_000, proc)
    throwaway_pg.restart()
    assert 0 < rds.xlen(names.live) < total

    out = finish(proc)
    assert "retry" in out.lower()
    assert tables(target) == expected
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.dead_letter) == 0


@pytest.mark.timeout(180)
def test_through_pgbouncer_in_transaction_mode(rds, names, redis_url, db, db_url):
    """Two workers with four pooled connections share two server connections of pgbouncer in
    transaction mode: no prepared statement, temporary table or lock outlives a transaction."""
    if MISSING_PGBOUNCER:
        pytest.skip(MISSING_PGBOUNCER)
    events = order_free(generate(3_000, n_dids=400, seed=23))
    expected = clean_snapshot(db_url, events)
    load_events(rds, names.live, events)
    bouncer = Pgbouncer(db_url, pool_size=2)
    bouncer.start()
    try:
        env = indexer_env(
            names,
            redis_url,
            bouncer.url(db.info.dbname),
            INDEXER_STOP_WHEN_IDLE="1",
            INDEXER_BATCH_SIZE="100",
            INDEXER_CONCURRENCY="300",
            DB_POOL_MAX_SIZE="4",
            DB_POOL_MIN_IDLE="0",
        )
        proc = IndexerProcess(env, workers=2)
        finish(proc)
    finally:
        bouncer.stop()
    assert tables(db_url) == expected
    assert pending(rds, names.live, names.group) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.dead_letter) == 0
