"""Labels: both stream shapes decoded, the label table written as indexing-semantics §7 says,
bad entries dead-lettered, and the whole dataflow in label mode and in all mode."""

from __future__ import annotations

import itertools
import os
from dataclasses import replace

import orjson
import pytest
from bytewax.testing import run_main

from config.settings import ConfigError, Settings
from connectors.redis_streams import StreamAcker, StreamReader
from connectors.replay import load_events
from flows.decode_labels import decode_label_entry
from flows.events import LABEL, Event, Label
from flows.index import build_flow, decode_label_batch
from sinks.postgres.labels import LabelWriter
from sinks.postgres.pool import shared_pool
from sinks.postgres.sink import BatchCommitter

from . import factory as f
from .indexer_runs import run_indexer
from .indexing import rows, snapshot
from .test_flow import indexer_env, pending, settings_for

LABELER = f.did("labeler")
OTHER_LABELER = f.did("other-labeler")
ALICE = f.did("alice")
POST_URI = f.uri(ALICE, "app.bsky.feed.post", "3m4glqtatds2k")
POST_CID = f.cid("post")
T1 = "2025-10-30T12:00:00.100Z"
T2 = "2025-10-30T12:00:00.200Z"
T3 = "2025-10-30T12:00:00.300Z"


def label(val: str = "spam", **fields: object) -> dict:
    out: dict = {"src": LABELER, "uri": POST_URI, "cid": POST_CID, "val": val, "cts": T1}
    out.update(fields)
    return out


def batch_entry(*labels: dict, seq: int = 7) -> dict[bytes, bytes]:
    """The ``labels`` shape: a batch of labels under one seq."""
    return {b"labels": orjson.dumps({"seq": seq, "labels": list(labels)})}


def event_entry(one: dict) -> dict[bytes, bytes]:
    """The ``event`` shape: one label."""
    return {b"event": orjson.dumps({"type": "label", "label": one})}


def decoded(fields: dict[bytes, bytes], entry_id: str = "1-0") -> Event:
    return decode_label_entry("label_live", entry_id, fields)


def good(*labels: dict) -> list[Event]:
    """One event-shaped entry per label, decoded and checked."""
    out = [decoded(event_entry(lb), f"{n + 1}-0") for n, lb in enumerate(labels)]
    for ev in out:
        assert ev.ok, ev.error
    return out


@pytest.fixture
def writer(db_url: str) -> LabelWriter:
    return LabelWriter(shared_pool(db_url, 2, 0))


def label_rows(db) -> list[tuple]:
    return rows(db, "SELECT src, uri, cid, val, neg, cts, exp FROM label ORDER BY src, uri, val")


# -- decode ---------------------------------------------------------------------------------


def test_both_shapes_decode_to_the_same_labels():
    one = label(neg=None, cts="2025-10-30 12:00:00.123 UTC", exp="2025-11-30T00:00:00+01:00")
    two = label("nudity", cid=None, neg=True)
    batch = decoded(batch_entry(one, two, seq=123))
    assert batch.ok and batch.type == LABEL and batch.seq == 123
    singles = [decoded(event_entry(one)), decoded(event_entry(two))]
    assert [lb for ev in singles for lb in ev.labels] == batch.labels
    assert batch.labels == [
        Label(
            LABELER,
            POST_URI,
            POST_CID,
            "spam",
            False,
            "2025-10-30T12:00:00.123Z",
            "2025-11-29T23:00:00.000Z",
        ),
        Label(LABELER, POST_URI, "", "nudity", True, T1, None),
    ]
    assert batch.payload is None


def test_labels_on_accounts_links_and_empty_batches():
    on_account = decoded(event_entry(label(uri=ALICE, cid=None)))
    assert on_account.labels == [Label(LABELER, ALICE, "", "spam", False, T1, None)]
    link = decoded(event_entry(label(cid={"$link": POST_CID})))
    assert link.labels[0].cid == POST_CID
    absent = {k: v for k, v in label().items() if k != "cid"}
    assert decoded(event_entry(absent)).labels[0].cid == ""
    empty = decoded(batch_entry())
    assert empty.ok and empty.labels == []
    # Redis may hand over str values too.
    as_text = decode_label_entry(
        "s", "1-0", {"event": orjson.dumps({"type": "label", "label": label()}).decode()}
    )
    assert as_text.ok and as_text.labels == link.labels


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"something": b"else"}, "missing field 'labels' or 'event'"),
        ({b"labels": b"{not json"}, "invalid JSON"),
        ({b"labels": b"\xff\xfe"}, "invalid UTF-8"),
        ({b"labels": b"[1]"}, "not an object"),
        ({b"labels": orjson.dumps({"seq": 1})}, "missing field 'labels'"),
        ({b"labels": orjson.dumps({"labels": "spam"})}, "invalid labels"),
        ({b"labels": orjson.dumps({"seq": "x", "labels": []})}, "invalid seq"),
        ({b"event": orjson.dumps({"type": "create", "label": label()})}, "unknown type 'create'"),
        ({b"event": orjson.dumps({"label": label()})}, "missing field 'type'"),
        ({b"event": orjson.dumps({"type": "label"})}, "missing field 'label'"),
        (event_entry({**label(), "src": None}), "missing field 'src'"),
        (event_entry(label(src="labeler")), "invalid src"),
        (event_entry(label(uri="https://example.com/x")), "invalid uri"),
        (event_entry(label(uri=None)), "missing field 'uri'"),
        (event_entry(label(cid="not a cid!")), "invalid cid"),
        (event_entry(label(val="")), "invalid val"),
        (event_entry(label(val=7)), "invalid val"),
        (event_entry(label(val="x" * 129)), "val longer than 128 bytes"),
        (event_entry(label(val="sp\x00am")), "NUL byte"),
        (event_entry(label(neg="yes")), "invalid neg"),
        (event_entry(label(cts=None)), "missing field 'cts'"),
        (event_entry(label(cts="yesterday")), "invalid cts"),
        (event_entry(label(exp="2025-02-30T00:00:00Z")), "invalid exp"),
        (event_entry(label(exp="0000-01-01T00:00:00Z")), "invalid exp"),
        (event_entry("spam"), "label is not an object"),
    ],
)
def test_bad_label_entries_have_a_reason_and_keep_their_payload(fields, reason):
    ev = decoded(fields)
    assert not ev.ok and reason in ev.error
    assert ev.labels is None
    assert ev.payload  # kept for the dead letter


def test_one_bad_label_makes_the_whole_entry_a_dead_letter_naming_it():
    fields = batch_entry(label(), label(src="nope"), label("x"))
    ev = decoded(fields)
    assert ev.error == "label 2 of 3: invalid src 'nope'"
    assert ev.payload == fields[b"labels"]


# -- the label table --------------------------------------------------------------------------


def test_label_negation_and_reapplication_are_one_row(db, writer):
    writer.write(good(label(cid=None)))
    assert label_rows(db) == [(LABELER, POST_URI, "", "spam", False, T1, None)]
    writer.write(good(label(cid=None, neg=True, cts=T2)))
    assert label_rows(db) == [(LABELER, POST_URI, "", "spam", True, T2, None)]
    writer.write(good(label(cid=None, cts=T3)))
    assert label_rows(db) == [(LABELER, POST_URI, "", "spam", False, T3, None)]


def test_labels_with_and_without_cid_and_from_other_labelers_are_separate_rows(db, writer):
    writer.write(good(label(), label(cid=None), label(src=OTHER_LABELER), label("porn")))
    assert len(label_rows(db)) == 4


def test_expiry_is_stored_and_a_newer_label_replaces_it(db, writer):
    writer.write(good(label(exp="2026-01-01T00:00:00Z")))
    assert label_rows(db)[0][6] == "2026-01-01T00:00:00.000Z"
    # What the AppView's getLabels filters on must work on what we store.
    (live,) = db.execute(
        "SELECT count(*) FROM label WHERE exp::timestamp > '2025-12-31'"
    ).fetchone()
    assert live == 1
    writer.write(good(label(cts=T2)))  # re-labelled without an expiry
    assert label_rows(db)[0][5:] == (T2, None)


def test_an_older_label_never_overwrites_a_newer_one(db, writer):
    writer.write(good(label(cts=T2)))
    writer.write(good(label(neg=True, cts=T1)))  # an older negation, arriving late
    writer.write(good(label(cts=T1, exp="2025-11-01T00:00:00Z")))
    assert label_rows(db) == [(LABELER, POST_URI, POST_CID, "spam", False, T2, None)]


def test_replay_changes_nothing(db, writer):
    events = good(
        label(), label(neg=True, cts=T2), label("porn", cts=T3, exp="2026-01-01T00:00:00Z")
    )
    writer.write(events)
    before = snapshot(db)
    stats = writer.write(events)
    assert stats.rows == 0  # nothing updated, not even to the same values
    for ev in events:
        writer.write([ev])
    assert snapshot(db) == before


def test_any_order_and_any_batching_give_the_same_table(db, writer):
    """Labels on one key in every arrival order, in one batch or one by one: the newest wins,
    and at equal cts a negation wins over an assertion."""
    versions = [
        label(cts=T1),
        label(neg=True, cts=T2),
        label(cts=T2),
        label(cts=T2, exp="2026-01-01T00:00:00Z"),
    ]
    expected = [(LABELER, POST_URI, POST_CID, "spam", True, T2, None)]
    for order in itertools.permutations(versions):
        for one_by_one in (False, True):
            db.execute("TRUNCATE label")
            events = good(*order)
            if one_by_one:
                for ev in events:
                    writer.write([ev])
            else:
                writer.write(events)
            assert label_rows(db) == expected, (order, one_by_one)


def test_a_bad_label_is_dead_lettered_and_the_rest_indexed(db, rds, names, db_url):
    load = [
        batch_entry(label(), label("porn", cid=None)),
        event_entry(label(uri="not a uri")),
        {b"labels": b"{oops"},
        event_entry(label("gore", neg=True)),
    ]
    for fields in load:
        rds.xadd(names.labels, fields)
    reader = StreamReader(rds, [names.labels], names.group, "c-0")
    reader.ensure_groups()
    events = decode_label_batch(reader.read(10))
    committer = BatchCommitter(
        LabelWriter(shared_pool(db_url, 2, 0)),
        StreamAcker(rds, names.group, Settings(dead_letter_stream=names.dead_letter)),
    )
    committer.commit(events)
    assert [r[3:5] for r in label_rows(db)] == [("gore", True), ("porn", False), ("spam", False)]
    dead = rds.xrange(names.dead_letter)
    reasons = [d[b"reason"].decode() for _id, d in dead]
    assert reasons[0] == "invalid uri 'not a uri'" and reasons[1].startswith("invalid JSON")
    assert [d[b"payload"] for _id, d in dead] == [load[1][b"event"], b"{oops"]
    assert {d[b"stream"] for _id, d in dead} == {names.labels.encode()}
    assert pending(rds, names.labels, names.group) == 0
    assert rds.xlen(names.labels) == 0


def test_a_label_the_database_rejects_costs_only_its_entry(db, rds, names, db_url):
    """A value the decoder accepts but the label index cannot hold: that entry is dead-lettered
    with the database's message, the other labels of the batch are written."""
    for val in ("spam", "huge", "x"):
        rds.xadd(names.labels, event_entry(label(val)))
    reader = StreamReader(rds, [names.labels], names.group, "c-0")
    reader.ensure_groups()
    events = decode_label_batch(reader.read(10))
    # Sabotage one the way a surprise from the database would look: an incompressible key too
    # long for a btree index row.
    events[1].labels = [events[1].labels[0]._replace(uri=POST_URI + os.urandom(4000).hex())]
    committer = BatchCommitter(
        LabelWriter(shared_pool(db_url, 2, 0)),
        StreamAcker(rds, names.group, Settings(dead_letter_stream=names.dead_letter)),
    )
    committer.commit(events)
    assert [r[3] for r in label_rows(db)] == ["spam", "x"]
    dead = rds.xrange(names.dead_letter)
    assert len(dead) == 1 and dead[0][1][b"reason"].startswith(b"database rejected the event")
    assert pending(rds, names.labels, names.group) == 0


# -- the dataflow -----------------------------------------------------------------------------


def label_settings(names, redis_url: str, db_url: str, **overrides) -> Settings:
    labels = {"mode": "label", "label_stream": names.labels, "label_group": f"{names.group}:labels"}
    return settings_for(names, redis_url, db_url, **{**labels, **overrides})


def test_label_mode_indexes_the_label_stream_end_to_end(db, rds, names, redis_url, db_url):
    rds.xadd(names.labels, batch_entry(label(), label("porn", uri=ALICE, cid=None)))
    rds.xadd(names.labels, event_entry(label(neg=True, cts=T2)))
    rds.xadd(names.labels, event_entry(label("gore", cts="when?")))
    load_events(rds, names.live, [f.post(ALICE)])  # not read in label mode

    settings = label_settings(names, redis_url, db_url)
    run_main(build_flow(settings))

    assert sorted(label_rows(db)) == [
        (LABELER, POST_URI, POST_CID, "spam", True, T2, None),
        (LABELER, ALICE, "", "porn", False, T1, None),
    ]
    dead = rds.xrange(names.dead_letter)
    assert [d[b"reason"] for _id, d in dead] == [b"invalid cts 'when?'"]
    assert pending(rds, names.labels, settings.label_group) == 0
    assert rds.xlen(names.labels) == 0
    # Its own group on the label stream; the record streams untouched.
    assert [g["name"].decode() for g in rds.xinfo_groups(names.labels)] == [settings.label_group]
    assert rds.xlen(names.live) == 1 and not rds.xinfo_groups(names.live)
    assert rows(db, "SELECT count(*) FROM post") == [(0,)]

    # Replaying the same entries changes nothing.
    before = snapshot(db)
    rds.xadd(names.labels, batch_entry(label(), label("porn", uri=ALICE, cid=None)))
    rds.xadd(names.labels, event_entry(label(neg=True, cts=T2)))
    run_main(build_flow(settings))
    assert snapshot(db) == before


def test_all_mode_reads_records_and_labels_side_by_side(db, rds, names, redis_url, db_url):
    p = f.post(ALICE)
    load_events(rds, names.live, [p, f.like(f.did("bob"), p)])
    rds.xadd(names.labels, event_entry(label(uri=f.event_uri(p), cid=p["cid"])))

    settings = label_settings(names, redis_url, db_url, mode="all")
    run_main(build_flow(settings))

    assert rows(db, 'SELECT "likeCount" FROM post_agg') == [(1,)]
    assert rows(db, "SELECT uri, cid, val FROM label") == [(f.event_uri(p), p["cid"], "spam")]
    assert pending(rds, names.live, names.group) == 0
    assert pending(rds, names.labels, settings.label_group) == 0
    assert rds.xlen(names.live) == 0 and rds.xlen(names.labels) == 0
    assert rds.xlen(names.dead_letter) == 0


def test_label_settings_are_checked_at_start():
    assert Settings.from_env({"INDEXER_MODE": "label"}).mode == "label"
    env = {"INDEXER_LABEL_GROUP": "labels"}
    assert Settings.from_env(env).label_group == "labels"
    assert Settings.from_env({"INDEXER_GROUP": "g"}).label_group == "g"
    with pytest.raises(ConfigError, match="INDEXER_LABEL_STREAM"):
        Settings.from_env({"INDEXER_LABEL_STREAM": "firehose_live"})
    with pytest.raises(ConfigError, match="INDEXER_LABEL_STREAM"):
        Settings.from_env({"INDEXER_LABEL_STREAM": "dl", "INDEXER_DEAD_LETTER_STREAM": "dl"})
    # Only checked when labels are read at all.
    stream_only = {"INDEXER_MODE": "stream", "INDEXER_LABEL_STREAM": "firehose_live"}
    assert Settings.from_env(stream_only).mode == "stream"


def test_stream_mode_leaves_the_label_stream_alone(db, rds, names, redis_url, db_url):
    rds.xadd(names.labels, event_entry(label()))
    run_main(build_flow(replace(label_settings(names, redis_url, db_url), mode="stream")))
    assert rds.xlen(names.labels) == 1 and not rds.xinfo_groups(names.labels)
    assert label_rows(db) == []


def test_label_mode_through_the_entry_point(db, rds, names, redis_url, db_url):
    """`INDEXER_MODE=label python -m bytewax.run flows.index -w 2` starts (it used to refuse),
    indexes the label stream and stops when idle with exit 0."""
    for n in range(40):
        rds.xadd(names.labels, batch_entry(label(f"v{n}"), label(f"v{n}", cid=None, neg=True)))
    env = indexer_env(
        names,
        redis_url,
        db_url,
        INDEXER_MODE="label",
        INDEXER_LABEL_STREAM=names.labels,
        INDEXER_STOP_WHEN_IDLE="0.5",
        INDEXER_BATCH_SIZE="16",
    )
    run_indexer(env, workers=2)
    assert rows(db, "SELECT neg, count(*) FROM label GROUP BY neg ORDER BY neg") == [
        (False, 40),
        (True, 40),
    ]
    assert pending(rds, names.labels, names.group) == 0 and rds.xlen(names.labels) == 0
