"""Verified handles (issue 8): the batch queues checks, the worker resolves them, ``actor`` gets
only handles that resolve both ways. Real Postgres, the real local PLC/well-known/DNS servers of
tests/identity_servers.py, the real writer and worker, and the real flow for the end-to-end runs.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY

from connectors.redis_streams import Backlog
from connectors.replay import load_events
from resolution.resolver import Resolver
from resolution.worker import HandleWorker
from sinks.postgres.handle_checks import Check, claim, record
from sinks.postgres.pool import shared_pool
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .identity_servers import PLC, WELL_KNOWN, IdentityDirectory
from .indexer_runs import IndexerProcess, run_indexer
from .indexing import index, rows
from .test_flow import indexer_env

ALICE, BOB, CAROL = f.did("alice"), f.did("bob"), f.did("carol")
EVENT_TIME = "2025-10-30T12:00:00.123Z"  # factory.TIME as decode normalises it


@pytest.fixture
def writer(db: psycopg.Connection, db_url: str) -> PostgresWriter:
    return PostgresWriter(shared_pool(db_url, 4, 0), resolve_handles=True)


def actor(db: psycopg.Connection, did: str) -> tuple | None:
    got = rows(db, 'SELECT handle, "indexedAt" FROM actor WHERE did = %s', did)
    return got[0] if got else None


def checks(db: psycopg.Connection) -> dict[str, tuple]:
    """did → (ts, forced, attempts, last_error, seconds until due)."""
    got = rows(
        db,
        "SELECT did, ts, forced, attempts, last_error, extract(epoch FROM due - now())::float"
        " FROM bsky_indexer.handle_check",
    )
    return {r[0]: r[1:] for r in got}


def worker_for(
    db_url: str, directory: IdentityDirectory, timeout: float = 2.0, **options: Any
) -> HandleWorker:
    resolver = Resolver(timeout=timeout, **directory.resolver_options())
    options = {"poll_interval": 0.05, "lease": 30.0, **options}
    return HandleWorker(shared_pool(db_url, 4, 0), resolver, **options)


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def resolve_all(db: psycopg.Connection, db_url: str, identity_directory: IdentityDirectory):
    """Runs a worker until the queue is empty."""
    started: list[HandleWorker] = []

    def run(timeout: float = 30.0, **options: Any) -> None:
        worker = worker_for(db_url, identity_directory, **options)
        started.append(worker)
        worker.start()
        try:
            wait_for(lambda: not checks(db), timeout, "the handle checks to be done")
        finally:
            worker.stop()

    yield run
    for worker in started:
        worker.stop()


# -- the outcome of a check ---------------------------------------------------------------------


def test_a_handle_the_did_does_not_control_is_not_stored(
    db, writer, identity_directory, resolve_all
):
    # ALICE's PDS claims bsky.app, and so does her DID document; bsky.app resolves to BOB.
    identity_directory.set_plc_document(ALICE, "bsky.app")
    identity_directory.add_identity(BOB, "bsky.app")
    index(writer, [f.identity(ALICE, "bsky.app")])
    assert actor(db, ALICE) is None  # the batch only queued the check
    assert checks(db)[ALICE][:3] == (EVENT_TIME, True, 0)
    resolve_all()
    assert actor(db, ALICE) == (None, EVENT_TIME)


def test_a_genuine_handle_is_stored_lower_cased_whatever_the_event_says(
    db, writer, identity_directory, resolve_all
):
    identity_directory.add_identity(ALICE, "Alice.Example.COM")
    identity_directory.add_identity(BOB, "bob.example.com", via="http")
    index(writer, [f.identity(ALICE, "someone-else.com"), f.identity(BOB, None)])
    resolve_all()
    assert actor(db, ALICE) == ("alice.example.com", EVENT_TIME)
    assert actor(db, BOB) == ("bob.example.com", EVENT_TIME)


def test_a_document_or_handle_that_does_not_resolve_gives_null(
    db, writer, identity_directory, resolve_all
):
    identity_directory.set_plc_document(ALICE, "nowhere.example.com")  # no DNS, no well-known
    identity_directory.set_plc_document(BOB, None)  # no document at all
    identity_directory.set_plc_document(CAROL, "carol.example.com")
    identity_directory.set_dns("carol.example.com", CAROL)
    identity_directory.set_http("carol.example.com", BOB)  # DNS wins
    index(writer, [f.identity(ALICE, "x.com"), f.identity(BOB, "y.com"), f.identity(CAROL, None)])
    resolve_all()
    assert actor(db, ALICE) == (None, EVENT_TIME)
    assert actor(db, BOB) == (None, EVENT_TIME)
    assert actor(db, CAROL) == ("carol.example.com", EVENT_TIME)


def test_a_handle_moving_to_another_did_is_cleared_from_the_old_one(
    db, writer, identity_directory, resolve_all
):
    identity_directory.add_identity(ALICE, "shared.example.com")
    index(writer, [f.identity(ALICE, "shared.example.com")])
    resolve_all()
    assert actor(db, ALICE)[0] == "shared.example.com"
    # The handle moves to BOB; ALICE's document still claims it, but it no longer maps back.
    later = "2025-10-30T13:00:00.000Z"
    identity_directory.add_identity(BOB, "shared.example.com")
    index(writer, [f.identity(BOB, "shared.example.com", time=later)])
    resolve_all()
    assert actor(db, BOB) == ("shared.example.com", later)
    assert actor(db, ALICE) == (None, EVENT_TIME)


def test_a_did_web_is_resolved_through_its_host(db, writer, identity_directory, resolve_all):
    web = identity_directory.web_did()
    identity_directory.add_identity(web, "web.example.com")
    index(writer, [f.identity(web, "web.example.com")])
    resolve_all()
    assert actor(db, web) == ("web.example.com", EVENT_TIME)
    assert identity_directory.count(f"web:localhost:{identity_directory.http_port}") == 1


def test_a_flood_of_identity_events_for_one_did_is_resolved_once(
    db, writer, identity_directory, resolve_all
):
    identity_directory.add_identity(ALICE, "alice.example.com")
    last = ""
    for batch in range(10):
        events = []
        for n in range(50):
            last = f"2025-10-30T12:{batch:02d}:{n:02d}.000Z"
            events.append(f.identity(ALICE, "alice.example.com", time=last))
        index(writer, events)
    assert checks(db)[ALICE][:3] == (last, True, 0)
    resolve_all()
    assert identity_directory.count(f"plc:{ALICE}") == 1
    assert identity_directory.count("dns:alice.example.com") == 1
    assert actor(db, ALICE) == ("alice.example.com", last)


def test_an_identity_event_delivered_again_queues_nothing(db, writer, identity_directory):
    ev = f.identity(ALICE, "alice.example.com")
    index(writer, [ev])
    db.execute("DELETE FROM bsky_indexer.handle_check")
    index(writer, [ev])  # a replay of a committed batch
    assert checks(db) == {}
    index(writer, [f.identity(ALICE, "alice.example.com")])  # a new one (next seq)
    assert list(checks(db)) == [ALICE]


# -- which record events ask for a check (upstream's needsHandleReindex) -------------------------


def test_commits_of_a_new_did_create_its_actor_row_after_resolution(
    db, writer, identity_directory, resolve_all
):
    identity_directory.add_identity(ALICE, "alice.example.com")
    p = f.post(ALICE, "first post")
    index(writer, [p, f.like(ALICE, p)])
    assert actor(db, ALICE) is None
    assert checks(db)[ALICE][:3] == (EVENT_TIME, False, 0)
    resolve_all()
    assert actor(db, ALICE) == ("alice.example.com", EVENT_TIME)
    # Recently checked now: more commits queue nothing.
    index(writer, [f.post(ALICE, "second post"), f.profile(ALICE, displayName="Alice")])
    assert checks(db) == {}


@pytest.mark.parametrize(
    ("handle", "indexed_at", "queued"),
    [
        ("alice.example.com", "2025-10-29T12:00:00.124Z", False),  # less than a day before
        ("alice.example.com", "2025-10-29T12:00:00.122Z", True),  # more than a day
        (None, "2025-10-30T11:00:00.124Z", False),  # NULL handle: less than an hour
        (None, "2025-10-30T11:00:00.122Z", True),  # more than an hour
        ("alice.example.com", "2025-10-31T00:00:00.000Z", False),  # indexed after the event
    ],
)
def test_an_actor_is_checked_again_once_its_check_is_stale(db, writer, handle, indexed_at, queued):
    db.execute(
        'INSERT INTO actor (did, handle, "indexedAt") VALUES (%s, %s, %s)',
        (ALICE, handle, indexed_at),
    )
    index(writer, [f.post(ALICE, "hi")])
    assert (ALICE in checks(db)) is queued


def test_an_account_event_queues_nothing_and_keeps_its_behaviour(db, writer):
    db.execute(
        'INSERT INTO actor (did, handle, "indexedAt") VALUES (%s, %s, %s)',
        (ALICE, "alice.example.com", EVENT_TIME),
    )
    index(writer, [f.account(ALICE, False, "suspended")])
    assert checks(db) == {}
    assert rows(db, 'SELECT "upstreamStatus" FROM actor') == [("suspended",)]


def test_without_resolution_event_handles_are_stored_and_nothing_is_queued(db, db_url):
    index(PostgresWriter(shared_pool(db_url, 4, 0)), [f.identity(ALICE, "Alice.Example.com")])
    assert actor(db, ALICE) == ("alice.example.com", EVENT_TIME)
    assert checks(db) == {}


# -- leases, retries ----------------------------------------------------------------------------


def test_an_event_during_a_lease_is_checked_again_after_it(db, db_url, writer):
    index(writer, [f.identity(ALICE, None), f.post(BOB, "hi")])
    with psycopg.connect(db_url) as conn:
        leased = {c.did: c for c in claim(conn, 10, 60.0)}
    assert set(leased) == {ALICE, BOB} and checks(db)[ALICE][4] > 50
    later = "2025-10-30T12:30:00.000Z"
    index(writer, [f.identity(ALICE, None, time=later), f.post(BOB, "again", time=later)])
    left = checks(db)
    assert left[ALICE][:2] == (later, True) and left[ALICE][4] > 50  # the lease holds
    assert left[BOB][0] == EVENT_TIME  # a commit of a DID already queued changes nothing
    with psycopg.connect(db_url) as conn:
        # A lease that is not ours (any more) records nothing.
        stale = Check(CAROL, EVENT_TIME, True, 0, leased[BOB].lease)
        outcomes = [(leased[ALICE], "alice.example.com"), (leased[BOB], None), (stale, "c.com")]
        assert record(conn, outcomes) == 2
    assert actor(db, ALICE) == ("alice.example.com", EVENT_TIME)
    left = checks(db)
    assert list(left) == [ALICE] and left[ALICE][:3] == (later, True, 0) and left[ALICE][4] <= 0


def test_an_identity_event_ends_a_backoff(db, db_url, writer, identity_directory, resolve_all):
    """A check backing off after failures is due again, its tries counted anew, once the account
    says its identity changed; a commit does not hurry it."""
    index(writer, [f.identity(ALICE, None)])
    db.execute(
        "UPDATE bsky_indexer.handle_check SET attempts = 5, last_error = 'x',"
        " due = now() + interval '1 hour'"
    )
    index(writer, [f.post(ALICE, "hi", time="2025-10-30T12:10:00.000Z")])
    assert checks(db)[ALICE][2] == 5 and checks(db)[ALICE][4] > 3000  # still backing off
    later = "2025-10-30T12:30:00.000Z"
    index(writer, [f.identity(ALICE, None, time=later)])
    _ts, _forced, attempts, _error, due_in = checks(db)[ALICE]
    assert attempts == 0 and due_in <= 0
    identity_directory.add_identity(ALICE, "alice.example.com")
    resolve_all(timeout=10.0)
    assert actor(db, ALICE) == ("alice.example.com", later)


def test_outcomes_recorded_together_give_each_handle_to_one_did(db, db_url, writer):
    db.execute(
        'INSERT INTO actor (did, handle, "indexedAt") VALUES (%s, %s, %s), (%s, %s, %s)',
        (ALICE, "one.example.com", EVENT_TIME, BOB, "two.example.com", EVENT_TIME),
    )
    index(writer, [f.identity(ALICE, None, time="2025-10-30T12:00:02.000Z")])
    index(writer, [f.identity(BOB, None, time="2025-10-30T12:00:01.000Z")])
    index(writer, [f.identity(CAROL, None, time="2025-10-30T12:00:03.000Z")])
    with psycopg.connect(db_url) as conn:
        leased = {c.did: c for c in claim(conn, 10, 60.0)}
        # ALICE and BOB swap handles; CAROL and BOB both verified "one": CAROL's check is newer.
        swap = [(leased[ALICE], "two.example.com"), (leased[BOB], "one.example.com")]
        assert record(conn, [*swap, (leased[CAROL], "one.example.com")]) == 3
    assert rows(db, "SELECT did, handle FROM actor ORDER BY did") == sorted(
        [(ALICE, "two.example.com"), (BOB, None), (CAROL, "one.example.com")]
    )
    assert checks(db) == {}


def test_a_timeout_is_retried_with_backoff_then_stored(
    db, db_url, writer, identity_directory, resolve_all
):
    identity_directory.add_identity(ALICE, "alice.example.com")
    identity_directory.set_delay(1.0, PLC)
    index(writer, [f.identity(ALICE, "alice.example.com")])
    worker = worker_for(db_url, identity_directory, timeout=0.3, retry_max=600.0)
    worker.start()
    try:
        wait_for(lambda: checks(db).get(ALICE, (0, 0, 0))[2] >= 1, what="a failed attempt")
        worker.sample()
    finally:
        worker.stop()
    _ts, _forced, attempts, error, due_in = checks(db)[ALICE]
    assert attempts == 1 and error  # the reason is kept
    assert 0.5 < due_in <= 2.0  # 2 s for the first retry, jittered down to half
    gauge = {
        state: REGISTRY.get_sample_value("indexer_handle_checks", {"state": state})
        for state in ("due", "leased", "retrying")
    }
    assert gauge == {"due": 0, "leased": 0, "retrying": 1}
    assert actor(db, ALICE) is None
    identity_directory.set_delay(0.0)
    resolve_all(timeout=10.0, retry_max=600.0)
    assert actor(db, ALICE) == ("alice.example.com", EVENT_TIME)


def test_resolution_down_for_a_while_then_back(db, writer, identity_directory, resolve_all, caplog):
    identity_directory.add_identity(ALICE, "alice.example.com")
    identity_directory.add_identity(BOB, "bob.example.com")
    identity_directory.set_down(True)
    index(writer, [f.identity(ALICE, None), f.post(BOB, "hi")])
    started = time.monotonic()
    attempts_seen: list[int] = []
    stop = threading.Event()

    def back_after_two_failures() -> None:
        while not stop.wait(0.05):
            attempts_seen.append(min((c[2] for c in checks(db).values()), default=0))
            if attempts_seen[-1] >= 2:
                identity_directory.set_down(False)

    watcher = threading.Thread(target=back_after_two_failures, daemon=True)
    watcher.start()
    try:
        resolve_all(timeout=30.0, retry_max=2.0)
    finally:
        stop.set()
        watcher.join()
    assert max(attempts_seen) >= 2  # each retried at least twice while down
    # Logged once per DID, not once per retry.
    deferred = [r for r in caplog.records if "handle checks deferred" in r.getMessage()]
    assert sum(int(r.args[0]) for r in deferred) == 2
    assert time.monotonic() - started > 1.0  # with backoff, not in a tight loop
    assert identity_directory.count(f"plc:{ALICE}") <= 6
    assert actor(db, ALICE) == ("alice.example.com", EVENT_TIME)
    assert actor(db, BOB) == ("bob.example.com", EVENT_TIME)


def test_a_handle_whose_host_never_answers_ends_null_after_its_tries(
    db, db_url, writer, identity_directory
):
    """The DID document is found but its handle's host keeps answering 503: retried with
    backoff, then recorded as not resolving (NULL), not retried forever; a PLC outage is not
    given up on."""
    identity_directory.add_identity(ALICE, "alice.example.com", via=WELL_KNOWN)
    identity_directory.add_identity(BOB, "bob.example.com")
    identity_directory.set_down(True, WELL_KNOWN)
    index(writer, [f.identity(ALICE, None)])
    worker = worker_for(db_url, identity_directory, timeout=0.3, retry_max=1.0, give_up_attempts=3)
    worker.start()
    try:
        wait_for(lambda: ALICE not in checks(db), what="the check to end")
        assert identity_directory.count("http:alice.example.com") == 3
        assert actor(db, ALICE) == (None, EVENT_TIME)
        identity_directory.set_down(True, PLC)
        index(writer, [f.identity(BOB, None)])
        wait_for(lambda: checks(db).get(BOB, (0, 0, 0))[2] >= 3, what="three failed attempts")
        assert BOB in checks(db) and actor(db, BOB) is None  # still queued
    finally:
        worker.stop()


def test_a_backlog_leaves_most_of_the_cpu_to_indexing(
    db, db_url, writer, identity_directory, monkeypatch
):
    dids = [f.did(f"user{n}") for n in range(8)]
    identity_directory.set_delay(30.0)  # every resolution stays in flight
    index(writer, [f.post(did, "hi") for did in dids])
    monkeypatch.setattr(Backlog, "seen_at", time.monotonic() + 3600)  # reads keep coming full
    worker = worker_for(db_url, identity_directory, timeout=3.0, concurrency=8)
    worker.start()
    try:
        wait_for(lambda: sum(c[4] > 5 for c in checks(db).values()) >= 1, what="claims")
        time.sleep(0.3)
        assert sum(c[4] > 5 for c in checks(db).values()) == 1  # an eighth of 8
        monkeypatch.setattr(Backlog, "seen_at", float("-inf"))  # caught up
        wait_for(lambda: sum(c[4] > 5 for c in checks(db).values()) == 8, what="all claimed")
    finally:
        identity_directory.set_delay(0.0)
        worker.stop()


# -- the real flow ------------------------------------------------------------------------------


def resolving_env(names, redis_url: str, db_url: str, directory: IdentityDirectory, **more: str):
    variables = {
        "ENABLE_DID_RESOLUTION": "true",
        "PLC_URL": directory.plc_url,
        "DID_RESOLUTION_DNS_SERVERS": directory.dns_server,
        "DID_RESOLUTION_HTTP_ADDRESS": directory.http_address,
        "INDEXER_STOP_WHEN_IDLE": "0.5",
    }
    return indexer_env(names, redis_url, db_url, **{**variables, **more})


def test_the_flow_stores_only_verified_handles_and_stops_when_all_are_checked(
    db, rds, names, redis_url, db_url, identity_directory
):
    identity_directory.add_identity(ALICE, "alice.example.com")
    identity_directory.set_plc_document(BOB, "bsky.app")  # claims a handle it does not control
    identity_directory.add_identity(CAROL, "carol.example.com", via="http")
    identity_directory.set_delay(0.3)  # resolution is slower than indexing
    p = f.post(CAROL, "hello")
    events = [f.identity(ALICE, "alice.example.com"), f.identity(BOB, "bsky.app"), p]
    events += [f.like(CAROL, p), f.follow(CAROL, ALICE)]
    load_events(rds, names.live, events)
    # One resolution at a time: the run must wait for the queued ones, not only those in flight.
    env = resolving_env(
        names, redis_url, db_url, identity_directory, DID_RESOLUTION_CONCURRENCY="1"
    )
    run_indexer(env)
    assert checks(db) == {}
    assert rows(db, 'SELECT did, handle, "indexedAt" FROM actor ORDER BY did') == sorted(
        [
            (ALICE, "alice.example.com", EVENT_TIME),
            (BOB, None, EVENT_TIME),
            (CAROL, "carol.example.com", EVENT_TIME),
        ]
    )
    assert rows(db, "SELECT count(*) FROM post") == [(1,)]


def test_the_flow_without_resolution_stores_event_handles(
    db, rds, names, redis_url, db_url, identity_directory
):
    load_events(rds, names.live, [f.identity(ALICE, "Bsky.App"), f.post(BOB, "hi")])
    env = resolving_env(names, redis_url, db_url, identity_directory, ENABLE_DID_RESOLUTION="0")
    run_indexer(env)
    assert rows(db, "SELECT did, handle FROM actor") == [(ALICE, "bsky.app")]
    assert checks(db) == {}
    assert identity_directory.total_requests() == 0


def test_checks_leased_by_a_killed_indexer_are_done_after_restart(
    db, rds, names, redis_url, db_url, identity_directory
):
    dids = [f.did(f"user{n}") for n in range(5)]
    for n, did in enumerate(dids):
        identity_directory.add_identity(did, f"user{n}.example.com")
    identity_directory.set_delay(30.0, PLC)  # every resolution hangs until its timeout
    load_events(rds, names.live, [f.identity(did, None) for did in dids])
    env = resolving_env(names, redis_url, db_url, identity_directory, DID_RESOLUTION_TIMEOUT="2")
    env.pop("INDEXER_STOP_WHEN_IDLE")
    proc = IndexerProcess(env)
    try:
        wait_for(
            lambda: len(checks(db)) == 5 and all(c[4] > 5 for c in checks(db).values()),
            what="the checks to be leased",
        )
        proc.send(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.running():
            proc.send(signal.SIGKILL)
    assert all(c[2] == 0 for c in checks(db).values())  # leased, not failed: still queued
    assert rows(db, "SELECT count(*) FROM actor") == [(0,)]
    identity_directory.set_delay(0.0)
    env["INDEXER_STOP_WHEN_IDLE"] = "0.5"
    run_indexer(env, timeout=60)  # holds on until the dead process's leases run out
    assert checks(db) == {}
    assert rows(db, "SELECT did, handle FROM actor ORDER BY did") == sorted(
        (did, f"user{n}.example.com") for n, did in enumerate(dids)
    )
