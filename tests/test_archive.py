"""The Parquet archive (sinks/archive) and its replay, on real files, Redis, Postgres and indexers.

Crashes are real: a writer process kills itself with SIGKILL at the point under test (a torn
spool write, a roll cut short), or the indexer is killed with SIGKILL while it archives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import cli
from config.settings import ConfigError, Settings
from connectors.redis_streams import StreamAcker, StreamReader
from connectors.replay import load_events
from connectors.synthetic import generate
from flows.decode import decode_entry
from flows.events import Event
from flows.index import decode_batch
from sinks.archive.parquet import ArchiveWriter, convert_segment
from sinks.archive.replay import ArchiveSelection
from sinks.archive.schema import SCHEMA, to_batch
from sinks.archive.spool import SPOOL, read_segment, segment_id
from sinks.postgres.pool import shared_pool
from sinks.postgres.schema import init_db
from sinks.postgres.sink import BatchCommitter
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexer_runs import IndexerProcess, run_indexer, tables
from .indexing import rows as db_rows
from .test_flow import ROOT, indexer_env, pending
from .throwaway_servers import MISSING_REDIS, ThrowawayRedis

ALICE, BOB, CAROL = f.did("alice"), f.did("bob"), f.did("carol")
# One worker, one shard: the stream applied in order, so two runs leave the same tables.
IN_ORDER = {
    "INDEXER_SHARDS": "1",
    "INDEXER_BATCH_SIZE": "250",
    "INDEXER_CONCURRENCY": "1000",
    "INDEXER_STOP_WHEN_IDLE": "1",
}


def decoded(
    events: list[dict[str, Any]], stream: str = "firehose_live", start: int = 1
) -> list[Event]:
    """Entries number start, start + 1, ... of a stream, delivered for the first time."""
    out = []
    for n, ev in enumerate(events, start):
        item = decode_entry(stream, f"{1_761_825_600_000 + n}-0", {b"event": orjson.dumps(ev)})
        assert item.ok, item.error
        out.append(item)
    return out


def redelivered(events: list[Event]) -> list[Event]:
    """The same entries delivered once more (new Event objects, as a new read makes)."""
    return [replace(ev, deliveries=ev.deliveries + 1) for ev in events]


def at(event: dict[str, Any], time: str) -> dict[str, Any]:
    return {**event, "time": time}


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("collection=*/date=*/*") if not p.name.startswith("."))


def archive_rows(root: Path) -> list[dict[str, Any]]:
    """Every row of every Parquet file, each file read on its own (a corrupt one fails here)."""
    out: list[dict[str, Any]] = []
    for path in parquet_files(root):
        assert path.suffix == ".parquet", path
        out += pq.read_table(path).to_pylist()
    return out


def keys(rows: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((row["stream"], row["entryId"]) for row in rows)


def leftovers(root: Path) -> list[Path]:
    """Temporary files and spool segments still lying around."""
    tmp = list(root.glob("collection=*/date=*/.*"))
    return tmp + list((root / SPOOL).glob("*/seg-*.arrows"))


def test_archive_holds_the_indexed_events_typed_and_partitioned(tmp_path):
    events = list(generate(3000, n_dids=300, seed=3))
    p = at(f.post(ALICE, "next day", langs=["en", "fr"]), "2025-10-31T00:00:01.5Z")
    events += [
        f.account(BOB, False, "Takendown"),
        f.identity(CAROL, "Carol.Example.COM"),
        p,
        f.reply(BOB, p, p, "re"),
    ]
    good = decoded(events)
    bad = decode_entry("firehose_live", "1-0", {b"event": b"{not json"})
    rejected = decoded([f.like(CAROL, p)], start=len(events) + 1)[0]
    rejected.error = "database rejected the event: value too long"  # as the sink sets it
    writer = ArchiveWriter(tmp_path, roll_bytes=64 * 1024)
    batch = good + [bad, rejected]
    for n in range(0, len(batch), 250):
        writer.write(batch[n : n + 250])
    writer.close()

    rows = archive_rows(tmp_path)
    assert keys(rows) == Counter((ev.stream, ev.entry_id) for ev in good)
    assert not leftovers(tmp_path) and not list((tmp_path / SPOOL).glob("[!.]*"))
    for path in parquet_files(tmp_path):
        assert pq.read_schema(path).remove_metadata() == SCHEMA
        table = pq.read_table(path)
        collection = path.parent.parent.name.removeprefix("collection=")
        day = path.parent.name.removeprefix("date=")
        assert set(table["collection"].to_pylist()) == {collection}
        assert {t.strftime("%Y-%m-%d") for t in table["time"].to_pylist()} == {day}
    assert (tmp_path / "collection=app.bsky.feed.post" / "date=2025-10-31").is_dir()

    by_key = {(r["stream"], r["entryId"]): r for r in rows}
    seen = set()
    for ev in good:
        row = by_key[(ev.stream, ev.entry_id)]
        assert (row["op"], row["did"], row["seq"], row["rkey"], row["cid"]) == (
            ev.type,
            ev.did,
            ev.seq,
            ev.rkey,
            ev.cid,
        )
        record = ev.record or {}
        if ev.record is None:
            assert row["record"] is None and row["subject"] is row["subjectDid"] is None
        elif ev.collection in ("app.bsky.feed.like", "app.bsky.feed.repost"):
            assert (row["subject"], row["subjectCid"]) == (
                record["subject"]["uri"],
                record["subject"]["cid"],
            )
        elif ev.collection in ("app.bsky.graph.follow", "app.bsky.graph.block"):
            assert row["subjectDid"] == record["subject"]
        elif ev.collection == "app.bsky.feed.post":
            assert row["text"] == record["text"] and row["langs"] == record.get("langs")
            if "reply" in record:
                assert row["reply"]["parent"]["uri"] == record["reply"]["parent"]["uri"]
                seen.add("reply")
            if "embed" in record:
                assert orjson.loads(row["embed"]) == record["embed"]
                seen.add("embed")
        if ev.record is not None:
            assert orjson.loads(row["record"]) == ev.record
            seen.add(ev.collection)
        seen.add(ev.type)
    assert {"reply", "embed", "delete", "account", "identity"} <= seen
    account = next(r for r in rows if r["op"] == "account" and r["did"] == BOB)
    assert (account["collection"], account["active"], account["status"]) == (
        "_account",
        False,
        "takendown",
    )
    identity = next(r for r in rows if r["op"] == "identity" and r["did"] == CAROL)
    assert (identity["collection"], identity["handle"]) == ("_identity", "carol.example.com")


def test_replay_sends_the_producers_events_in_order_each_once(tmp_path, rds, names, redis_url):
    p = at(f.post(ALICE, "hi"), "2025-10-30T12:00:01Z")
    like = at(f.like(BOB, p), "2025-10-30T12:00:02Z")
    follow = at(f.follow(CAROL, ALICE), "2025-10-30T12:00:03Z")
    repost = at(f.repost(CAROL, p), "2025-10-30T12:00:04Z")
    # Two streams whose entries interleave in time, archived by two writers.
    live = decoded([p, like], stream="live")  # ids ...001-0, ...002-0
    backfill = decoded([follow, repost], stream="backfill", start=1)  # ...001-0 (tie), ...002-0
    backfill[1].entry_id = "1761825600001-5"  # between live's two entries
    first, second = ArchiveWriter(tmp_path, worker=0), ArchiveWriter(tmp_path, worker=1)
    first.write(live)
    second.write(backfill)
    second.write(live[1:])  # the same entry twice, by two live writers (see parquet.py)
    first.close()
    second.close()
    assert sum(keys(archive_rows(tmp_path)).values()) == 5

    out = f"{names.prefix}:replayed"
    assert (
        cli.main(["replay", "--parquet", str(tmp_path), "--stream", out, "--redis-url", redis_url])
        == 0
    )
    sent = [orjson.loads(fields[b"event"]) for _id, fields in rds.xrange(out)]
    # By entry id, then stream: backfill's ...001-0 ties with live's and comes first.
    assert [(e["type"], e.get("collection"), e["did"]) for e in sent] == [
        ("create", "app.bsky.graph.follow", CAROL),
        ("create", "app.bsky.feed.post", ALICE),
        ("create", "app.bsky.feed.repost", CAROL),
        ("create", "app.bsky.feed.like", BOB),
    ]
    # What the producers sent, up to the normalised time.
    for original, again in zip([follow, p, repost, like], sent, strict=True):
        assert {k: v for k, v in again.items() if k != "time"} == {
            k: v for k, v in original.items() if k != "time"
        }
        assert again["time"] == decode_entry("s", "1-0", {b"event": orjson.dumps(original)}).time

    def replay(*args: str) -> list[dict[str, Any]]:
        rds.delete(out)
        argv = ["replay", "--parquet", str(tmp_path), "--stream", out, "--redis-url", redis_url]
        assert cli.main([*argv, *args]) == 0
        return [orjson.loads(fields[b"event"]) for _id, fields in rds.xrange(out)]

    assert [e["collection"] for e in replay("--collection", "app.bsky.feed.like")] == [
        "app.bsky.feed.like"
    ]
    window = replay("--since", "2025-10-30T12:00:02Z", "--until", "2025-10-30 12:00:04 UTC")
    assert [e["collection"] for e in window] == ["app.bsky.graph.follow", "app.bsky.feed.like"]
    assert [e["did"] for e in replay("--did", CAROL)] == [CAROL, CAROL]
    assert cli.main(["replay", "--parquet", str(tmp_path / "nope"), "--stream", out]) == 1
    assert cli.main(["replay", "x.jsonl", "--parquet", str(tmp_path), "--stream", out]) == 2


def test_retried_batch_is_archived_once(tmp_path):
    events = decoded([f.post(ALICE), f.follow(BOB, ALICE), f.follow(CAROL, ALICE)])
    writer = ArchiveWriter(tmp_path)
    assert writer.write(events) == 3
    assert writer.write(events) == 0  # the committer retrying the same batch
    assert writer.write(redelivered(events)) == 0  # read again while in flight
    assert writer.write(events[:1] + events[:1] + decoded([f.like(BOB, f.post(BOB))], start=9)) == 1
    writer.close()
    assert set(keys(archive_rows(tmp_path)).values()) == {1}
    assert sum(keys(archive_rows(tmp_path)).values()) == 4


def _write_then_die(root: str, batches_file: str, mode: str) -> None:
    """Run in a child process: archive the batches, leave the crash point ``mode``, SIGKILL."""
    batches = [
        decoded(b["events"], start=b["start"])
        for b in orjson.loads(Path(batches_file).read_bytes())
    ]
    writer = ArchiveWriter(root, roll_bytes=1 << 30)
    for batch in batches[:-1]:
        writer.write(batch)
    (segment,) = (Path(root) / SPOOL / writer.name).glob("seg-*.arrows")
    if mode == "torn":
        # kill -9 in the middle of appending the last batch, and in the middle of a roll
        message = to_batch(batches[-1], 99).serialize().to_pybytes()
        with segment.open("ab") as out:
            out.write(message[: len(message) // 2])
        folder = Path(root) / "collection=app.bsky.graph.follow" / "date=2025-10-30"
        folder.mkdir(parents=True)
        (folder / f".part-{segment_id(segment)}.parquet.tmp").write_bytes(b"PAR1 half a file")
    elif mode == "rolled":
        # a roll renamed its files into place and was killed before removing the segment
        convert_segment(Path(root), segment_id(segment), read_segment(segment))
    os.kill(os.getpid(), signal.SIGKILL)


def crash_writer(root: Path, batches: list[list[dict[str, Any]]], mode: str) -> None:
    spec = root.parent / f"batches-{mode}.json"
    starts = first_numbers(batches)
    spec.write_bytes(
        orjson.dumps([{"events": b, "start": n} for b, n in zip(batches, starts, strict=True)])
    )
    code = (
        "from tests.test_archive import _write_then_die; "
        f"_write_then_die({str(root)!r}, {str(spec)!r}, {mode!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def first_numbers(batches: list[list[dict[str, Any]]]) -> list[int]:
    """Where each batch's entry numbers start when the batches follow each other in a stream."""
    return [1 + sum(len(b) for b in batches[:n]) for n in range(len(batches))]


def three_batches() -> list[list[dict[str, Any]]]:
    p = f.post(ALICE)
    return [
        [p, f.like(BOB, p)],
        [f.follow(BOB, ALICE), f.follow(CAROL, ALICE), f.repost(CAROL, p)],
        [f.follow(ALICE, BOB), f.block(ALICE, CAROL)],
    ]


@pytest.mark.parametrize("mode", ["written", "torn", "rolled"])
def test_crash_leaves_no_corrupt_file_and_no_duplicate(tmp_path, mode):
    """A writer archived batches 1 and 2 and was killed before batch 2's ack (in ``torn`` while
    appending batch 3, in ``rolled`` after a roll had renamed its files). Batch 2 comes again
    (delivered twice now), then batch 3: each event ends up in the archive once."""
    root = tmp_path / "archive"
    root.mkdir()
    batches = three_batches()
    crash_writer(root, batches, mode)
    first, second, third = (
        decoded(b, start=n) for b, n in zip(batches, first_numbers(batches), strict=True)
    )

    after = ArchiveWriter(root)  # recovers the dead writer's spool
    assert {(r["stream"], r["entryId"]) for r in archive_rows(root)} == {
        (ev.stream, ev.entry_id) for ev in first + second
    }
    assert not leftovers(root)
    assert after.write(redelivered(second)) == 0
    assert after.write(redelivered(third) if mode == "torn" else third) == 2
    # Another writer, started later, knows from the ledger too.
    other = ArchiveWriter(root, worker=1)
    assert other.write(redelivered(second)) == 0
    after.close()
    other.close()
    rows = archive_rows(root)
    assert keys(rows) == Counter((ev.stream, ev.entry_id) for ev in first + second + third)
    assert not leftovers(root)
    assert [e["did"] for e in ArchiveSelection.parse(root).events()] == [
        ev.did for ev in first + second + third
    ]


def test_segments_roll_by_size_and_by_time(tmp_path):
    now = [0.0]
    by_time = ArchiveWriter(tmp_path / "t", roll_seconds=60, clock=lambda: now[0])
    by_time.write(decoded([f.follow(ALICE, BOB)], start=1))
    now[0] = 30
    by_time.write(decoded([f.follow(ALICE, CAROL)], start=2))
    assert archive_rows(tmp_path / "t") == []  # still in the spool
    now[0] = 61
    by_time.write(decoded([f.follow(BOB, CAROL)], start=3))
    assert len(archive_rows(tmp_path / "t")) == 2  # rolled before the third batch
    by_time.close()
    assert len(archive_rows(tmp_path / "t")) == 3

    by_size = ArchiveWriter(tmp_path / "s", roll_bytes=1024)
    for n in range(1, 4):
        by_size.write(decoded([f.follow(ALICE, f.did(str(n)))], start=n))
    assert len(parquet_files(tmp_path / "s")) == 2  # one segment per batch; the last still open
    by_size.close()
    assert len(parquet_files(tmp_path / "s")) == 3


def test_archive_failure_holds_the_ack_until_it_succeeds(tmp_path, db, rds, names, db_url):
    p = f.post(ALICE)
    load_events(rds, names.live, [p, f.like(BOB, p)])
    reader = StreamReader(rds, [names.live], names.group, "c-0")
    reader.ensure_groups()
    events = decode_batch(reader.read(10))
    archive = ArchiveWriter(tmp_path)
    spool = tmp_path / SPOOL / archive.name
    for path in spool.iterdir():
        path.unlink()
    spool.rmdir()  # the disk lost the spool folder: every segment write fails
    seen = []

    def sleep(_seconds: float) -> None:
        posts = db_rows(db, "SELECT count(*) FROM post")[0][0]
        seen.append((pending(rds, names.live, names.group), posts))
        spool.mkdir()  # the disk is back

    settings = Settings(dead_letter_stream=names.dead_letter)
    committer = BatchCommitter(
        PostgresWriter(shared_pool(db_url, 2, 0)),
        StreamAcker(rds, names.group, settings),
        sleep=sleep,
        archive=archive,
    )
    committer.commit(events)
    assert seen == [(2, 1)]  # committed, not yet acked while the archive failed
    assert pending(rds, names.live, names.group) == 0
    archive.close()
    assert sum(keys(archive_rows(tmp_path)).values()) == 2


@pytest.mark.timeout(720)
def test_round_trip_through_the_indexer(db, rds, names, redis_url, db_url, fresh_db, tmp_path):
    """events -> indexer with the archive -> replay into a fresh stream -> indexer into a second
    database: the same tables, and the second archive replays to the same events."""
    events = list(generate(3000, n_dids=300, seed=11))
    load_events(rds, names.live, events)
    rds.xadd(names.live, {"event": b"{not json"})  # dead-lettered, so not archived
    first = tmp_path / "first"
    env = indexer_env(
        names,
        redis_url,
        db_url,
        INDEXER_ARCHIVE_DIR=str(first),
        INDEXER_ARCHIVE_ROLL_BYTES="65536",
        **IN_ORDER,
    )
    run_indexer(env, timeout=300)
    assert rds.xlen(names.dead_letter) == 1

    replayed = f"{names.prefix}:replayed"
    argv = ["replay", "--parquet", str(first), "--stream", replayed, "--redis-url", redis_url]
    assert cli.main(argv) == 0
    assert rds.xlen(replayed) == len(events)

    second_db = fresh_db()
    init_db(second_db)
    second = tmp_path / "second"
    env2 = indexer_env(
        names,
        redis_url,
        second_db,
        INDEXER_STREAMS=replayed,
        INDEXER_GROUP=f"{names.group}:2",
        INDEXER_ARCHIVE_DIR=str(second),
        **IN_ORDER,
    )
    run_indexer(env2, timeout=300)
    one, two = tables(db_url), tables(second_db)
    assert one["post"] and one["like"] and one["follow"]
    assert one == two
    again = [orjson.dumps(e) for e in ArchiveSelection.parse(second).events()]
    assert again == [orjson.dumps(e) for e in ArchiveSelection.parse(first).events()]
    assert len(again) == len(events)


@pytest.mark.timeout(480)
def test_indexer_killed_while_archiving_leaves_each_event_once(
    db, rds, names, redis_url, db_url, tmp_path
):
    events = list(generate(2000, n_dids=400, seed=5))
    load_events(rds, names.live, events)
    root = tmp_path / "archive"
    env = indexer_env(
        names,
        redis_url,
        db_url,
        INDEXER_ARCHIVE_DIR=str(root),
        INDEXER_ARCHIVE_ROLL_BYTES="32768",  # rolls all the time: kills land in rolls too
        INDEXER_BATCH_SIZE="100",
        # Above the events: a restarted consumer whose own pending entries fill its whole
        # window would not read them again (connectors/redis_streams.py counts them in flight).
        INDEXER_CONCURRENCY="5000",
        INDEXER_STOP_WHEN_IDLE="1",
    )
    proc = IndexerProcess(env, workers=2)
    deadline = time.monotonic() + 150
    while rds.xlen(names.live) > len(events) - 600 and time.monotonic() < deadline:
        assert proc.running(), proc.output()[-3000:]
        time.sleep(0.01)
    proc.send(signal.SIGKILL)
    proc.wait(30)
    assert rds.xlen(names.live) > 0, "the indexer finished before it was killed"
    run_indexer(env, workers=2, timeout=300)
    assert pending(rds, names.live, names.group) == 0 and rds.xlen(names.live) == 0

    counts = keys(archive_rows(root))  # every file readable
    assert sum(counts.values()) == len(events)
    assert set(counts.values()) == {1}
    assert not leftovers(root)
    assert len(list(ArchiveSelection.parse(root).events())) == len(events)


@pytest.mark.timeout(480)
def test_indexer_killed_between_archive_and_ack_archives_each_event_once(
    db, names, db_url, tmp_path
):
    """Redis pauses writes: the batches in flight commit, are archived and wait at their ack;
    then the indexer is killed. The restarted one gets them again and archives none twice."""
    if MISSING_REDIS:
        pytest.skip(MISSING_REDIS)
    server = ThrowawayRedis()  # paused below: not the shared one
    server.start()
    try:
        rds = server.client()
        events = list(generate(2000, n_dids=400, seed=9))
        load_events(rds, names.live, events)
        root = tmp_path / "archive"
        env = indexer_env(
            names,
            server.url,
            db_url,
            INDEXER_ARCHIVE_DIR=str(root),
            INDEXER_BATCH_SIZE="100",
            INDEXER_CONCURRENCY="5000",
            INDEXER_STOP_WHEN_IDLE="1",
        )
        proc = IndexerProcess(env, workers=2)
        deadline = time.monotonic() + 150
        while rds.xlen(names.live) > len(events) - 300 and time.monotonic() < deadline:
            assert proc.running(), proc.output()[-3000:]
            time.sleep(0.01)
        rds.execute_command("CLIENT", "PAUSE", "8000", "WRITE")  # XACK waits, XLEN does not
        time.sleep(3)
        proc.send(signal.SIGKILL)
        proc.wait(30)
        rds.execute_command("CLIENT", "UNPAUSE")
        assert rds.xlen(names.live) > 0, "the indexer finished before it was killed"
        out = run_indexer(env, workers=2, timeout=300)
        assert "archived already" in out  # the ledger was needed, and used
        assert rds.xlen(names.live) == 0
        counts = keys(archive_rows(root))
        assert sum(counts.values()) == len(events) and set(counts.values()) == {1}
        assert not leftovers(root)
    finally:
        server.stop()


def test_archive_settings_are_checked_at_start(tmp_path):
    (tmp_path / "file").write_text("")
    assert Settings.from_env({}).archive_dir is None
    s = Settings.from_env({"INDEXER_ARCHIVE_DIR": str(tmp_path / "new")})
    assert s.archive_dir == str(tmp_path / "new")
    assert (s.archive_roll_bytes, s.archive_roll_seconds) == (32 << 20, 600.0)
    for env in (
        {"INDEXER_ARCHIVE_DIR": str(tmp_path / "file")},
        {"INDEXER_ARCHIVE_DIR": str(tmp_path / "no" / "such")},
        {"INDEXER_ARCHIVE_ROLL_BYTES": "10"},
        {"INDEXER_ARCHIVE_ROLL_SECONDS": "0"},
    ):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Settings.from_env(env)


def test_readme_queries(tmp_path):
    """The README's DuckDB and pyarrow examples, on a small archive."""
    import duckdb

    p, q = f.post(ALICE), f.post(BOB)
    writer = ArchiveWriter(tmp_path)
    writer.write(
        decoded([p, q, f.like(BOB, p), f.like(CAROL, p), f.like(CAROL, q), f.follow(BOB, ALICE)])
    )
    writer.close()
    archive = str(tmp_path)
    top = duckdb.sql(
        f"""
        SELECT subject, count(*) AS likes
        FROM read_parquet('{archive}/collection=app.bsky.feed.like/*/*.parquet')
        WHERE op = 'create' AND date = DATE '2025-10-30'
        GROUP BY subject ORDER BY likes DESC LIMIT 10
        """
    ).fetchall()
    assert top == [(f.event_uri(p), 2), (f.event_uri(q), 1)]

    likes = ds.dataset(archive, partitioning="hive").to_table(
        filter=(ds.field("collection") == "app.bsky.feed.like") & (ds.field("op") == "create"),
        columns=["did", "subject", "time"],
    )
    assert sorted(likes["did"].to_pylist()) == sorted([BOB, CAROL, CAROL])
