"""Lists, list items/blocks, reference-list opt-outs, feed generators, starter packs, labelers,
verifications, actor status and declarations: what their events leave in the AppView tables.

Expected values follow upstream's plugins (``@atproto/bsky`` 0.0.280 indexing/plugins/*.js) and
../shared/spec/indexing-semantics.md §4.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import psycopg
import pytest

from config.settings import Settings
from connectors.redis_streams import StreamAcker, StreamReader
from connectors.replay import load_events
from flows.decode import decode_entry
from sinks.postgres.pool import shared_pool
from sinks.postgres.schema import truncate_all
from sinks.postgres.sink import BatchCommitter
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexing import index, rows, snapshot

ALICE, BOB, CAROL = f.did("alice"), f.did("bob"), f.did("carol")


@pytest.fixture
def writer(db: psycopg.Connection, db_url: str) -> Iterator[PostgresWriter]:
    yield PostgresWriter(shared_pool(db_url, 4, 0))


def notifs(db: psycopg.Connection) -> list[tuple]:
    return rows(
        db,
        'SELECT did, reason, author, "recordUri", "reasonSubject", "sortAt" FROM notification '
        "ORDER BY id",
    )


def records(db: psycopg.Connection) -> list[str]:
    return [r[0] for r in rows(db, "SELECT uri FROM record ORDER BY uri")]


def duplicates(db: psycopg.Connection) -> list[tuple]:
    return rows(db, 'SELECT uri, "duplicateOf" FROM duplicate_record ORDER BY uri')


def assert_batch_equals_one_by_one(db, db_url, writer, events) -> None:
    """The whole sequence in one batch leaves the tables it leaves one event at a time."""
    index(writer, events, one_by_one=True)
    one_by_one = snapshot(db)
    truncate_all(db_url)
    index(writer, events)
    assert snapshot(db) == one_by_one


def test_list_create_update_delete(db, writer):
    lst = f.list_(
        ALICE,
        "Friends",
        description="people I know",
        descriptionFacets=f.FACETS,
        avatar=f.blob("av", "image/png"),
    )
    index(writer, [lst])
    assert rows(
        db,
        'SELECT creator, name, purpose, description, "descriptionFacets", "avatarCid", '
        '"createdAt", "indexedAt" FROM list',
    ) == [
        (
            ALICE,
            "Friends",
            "app.bsky.graph.defs#curatelist",
            "people I know",
            # JSON.stringify of the record's facets: compact, in record order.
            orjson.dumps(f.FACETS).decode(),
            f.blob_cid("av"),
            f.CREATED,
            "2025-10-30T12:00:00.123Z",
        )
    ]
    index(writer, [f.update(lst, name="Best friends")])
    assert rows(db, "SELECT name, description FROM list") == [("Best friends", "people I know")]
    bare = f.list_(BOB, purpose="app.bsky.graph.defs#modlist")
    index(writer, [bare])
    assert rows(
        db, 'SELECT description, "descriptionFacets", "avatarCid" FROM list WHERE creator = %s', BOB
    ) == [(None, None, None)]
    index(writer, [f.delete(lst), f.delete(bare)])
    assert rows(db, "SELECT 1 FROM list") == []
    assert records(db) == []
    assert notifs(db) == []


def test_list_item_duplicates_promotion_and_owner(db, writer):
    lst = f.list_(ALICE)
    item1 = f.list_item(ALICE, lst, BOB)
    item2 = f.list_item(ALICE, lst, BOB)  # same subject in the same list: a duplicate
    index(writer, [lst, item1, item2])
    assert rows(db, 'SELECT uri, creator, "subjectDid", "listUri" FROM list_item') == [
        (f.event_uri(item1), ALICE, BOB, f.event_uri(lst))
    ]
    assert duplicates(db) == [(f.event_uri(item2), f.event_uri(item1))]

    # Deleting the original promotes the duplicate; its duplicate_record row stays (upstream).
    index(writer, [f.delete(item1)])
    assert rows(db, 'SELECT uri, "indexedAt" FROM list_item') == [
        (f.event_uri(item2), "2025-10-30T12:00:00.123Z")
    ]
    assert duplicates(db) == [(f.event_uri(item2), f.event_uri(item1))]
    index(writer, [f.delete(item2)])
    assert rows(db, "SELECT 1 FROM list_item") == []
    assert records(db) == [f.event_uri(lst)]

    # An item on someone else's list is rejected whole (upstream's plugin throws): no record row.
    foreign = decode_entry("s", "1-0", {b"event": orjson.dumps(f.list_item(BOB, lst, CAROL))})
    assert foreign.error is not None and f"belongs to {ALICE}" in foreign.error
    writer.write([foreign])
    assert records(db) == [f.event_uri(lst)]
    assert rows(db, "SELECT did FROM actor_sync WHERE did = %s", BOB) == [(BOB,)]


def test_list_item_delete_and_duplicate_in_one_batch(db, db_url, writer):
    """A duplicate created before the original's delete in the same batch is promoted by it,
    exactly as one event at a time."""
    lst = f.list_(ALICE)
    item1 = f.list_item(ALICE, lst, BOB)
    item2 = f.list_item(ALICE, lst, BOB)
    other = f.list_item(ALICE, lst, CAROL)
    assert_batch_equals_one_by_one(db, db_url, writer, [lst, item1, other, item2, f.delete(item1)])
    assert rows(db, 'SELECT uri FROM list_item WHERE "subjectDid" = %s', BOB) == [
        (f.event_uri(item2),)
    ]


def test_list_block_duplicates_and_promotion(db, writer):
    lst = f.list_(BOB, purpose="app.bsky.graph.defs#modlist")
    b1, b2 = f.list_block(ALICE, lst), f.list_block(ALICE, lst)
    index(writer, [b1, b2, f.list_block(CAROL, lst)])
    assert sorted(rows(db, 'SELECT creator, "subjectUri" FROM list_block')) == sorted(
        [(ALICE, f.event_uri(lst)), (CAROL, f.event_uri(lst))]
    )
    assert duplicates(db) == [(f.event_uri(b2), f.event_uri(b1))]
    index(writer, [f.delete(b1)])
    assert rows(db, "SELECT uri FROM list_block WHERE creator = %s", ALICE) == [(f.event_uri(b2),)]
    assert notifs(db) == []


def test_reference_list_opt_out(db, writer):
    lst = f.list_(BOB, purpose="app.bsky.graph.defs#referencelist")
    o1, o2 = f.list_opt_out(ALICE, lst), f.list_opt_out(ALICE, lst)
    index(writer, [o1, o2])
    assert rows(db, 'SELECT uri, creator, "subjectUri" FROM reference_list_opt_out') == [
        (f.event_uri(o1), ALICE, f.event_uri(lst))
    ]
    assert duplicates(db) == [(f.event_uri(o2), f.event_uri(o1))]
    # Upstream never promotes an opt-out's duplicate: the row goes, the duplicate stays one.
    index(writer, [f.delete(o1)])
    assert rows(db, "SELECT 1 FROM reference_list_opt_out") == []
    assert duplicates(db) == [(f.event_uri(o2), f.event_uri(o1))]
    o3 = f.list_opt_out(ALICE, lst)
    index(writer, [o3])
    assert rows(db, "SELECT uri FROM reference_list_opt_out") == [(f.event_uri(o3),)]


@pytest.mark.parametrize(
    "subject",
    [
        f"at://{BOB}/app.bsky.feed.post/3k",  # not a list
        f"at://{BOB}/app.bsky.graph.list",  # no rkey
        f"at://{BOB}/app.bsky.graph.list/3k#/name",  # a fragment
        "at://bob.example.com/app.bsky.graph.list/3k",  # a handle, not a DID
        "at://did:web:a_b.example.com/app.bsky.graph.list/3k",  # AtUri's parser refuses the _
    ],
)
def test_reference_list_opt_out_of_a_non_list_keeps_only_its_record(db, writer, subject):
    o1, o2 = f.list_opt_out(ALICE, subject), f.list_opt_out(ALICE, subject)
    index(writer, [o1, o2])
    assert rows(db, "SELECT 1 FROM reference_list_opt_out") == []
    assert duplicates(db) == []  # nothing to be a duplicate of
    assert records(db) == sorted([f.event_uri(o1), f.event_uri(o2)])


def test_reference_list_opt_out_duplicate_then_delete_in_one_batch(db, db_url, writer):
    """No promotion, yet a create colliding with a row deleted later in the same batch must
    still end as a duplicate: the batch is cut between them."""
    lst = f.list_(BOB, purpose="app.bsky.graph.defs#referencelist")
    o1, o2 = f.list_opt_out(ALICE, lst), f.list_opt_out(ALICE, lst)
    index(writer, [o1])
    events = [o2, f.delete(o1), f.list_opt_out(CAROL, lst)]
    index(writer, events)
    assert rows(db, "SELECT creator FROM reference_list_opt_out") == [(CAROL,)]
    assert duplicates(db) == [(f.event_uri(o2), f.event_uri(o1))]
    assert_batch_equals_one_by_one(db, db_url, writer, [o1, *events])


def test_feed_generator(db, writer):
    gen = f.feed_generator(
        ALICE,
        "did:web:feeds.example.com",
        "Cats",
        description="only cats",
        descriptionFacets=f.FACETS,
        avatar=f.blob("cat"),
        acceptsInteractions=True,
        createdAt="2025-10-30T13:00:00+01:00",
    )
    index(writer, [gen])
    assert rows(
        db,
        'SELECT creator, "feedDid", "displayName", description, "descriptionFacets", '
        '"avatarCid", "createdAt", "sortAt" FROM feed_generator',
    ) == [
        (
            ALICE,
            "did:web:feeds.example.com",
            "Cats",
            "only cats",
            orjson.dumps(f.FACETS).decode(),
            f.blob_cid("cat"),
            "2025-10-30T12:00:00.000Z",  # normalised to UTC
            "2025-10-30T12:00:00.000Z",
        )
    ]
    index(writer, [f.update(gen, displayName="Dogs")])
    assert rows(db, 'SELECT "displayName" FROM feed_generator') == [("Dogs",)]
    # Any rkey is fine for a feed generator.
    named = f.create(
        BOB, "app.bsky.feed.generator", {"did": BOB, "displayName": "x"}, rkey="whats-hot"
    )
    index(writer, [named, f.delete(gen)])
    assert rows(db, "SELECT uri FROM feed_generator") == [(f.event_uri(named),)]


def test_starter_pack(db, writer):
    lst = f.list_(ALICE)
    pack = f.starter_pack(ALICE, lst, "Newcomers", feeds=[{"uri": f"at://{BOB}/x.y.z/1"}])
    index(writer, [lst, pack])
    assert rows(db, 'SELECT creator, name, "createdAt" FROM starter_pack') == [
        (ALICE, "Newcomers", f.CREATED)
    ]
    index(writer, [f.update(pack, name="Old hands")])
    assert rows(db, "SELECT name FROM starter_pack") == [("Old hands",)]
    index(writer, [f.delete(pack)])
    assert rows(db, "SELECT 1 FROM starter_pack") == []


def test_labeler_self_only(db, writer):
    svc = f.labeler(ALICE)
    other = f.labeler(BOB, rkey="3jzfcijpj2z2a")
    index(writer, [svc, other])
    assert rows(db, 'SELECT uri, creator, "createdAt" FROM labeler') == [
        (f.event_uri(svc), ALICE, f.CREATED)
    ]
    assert records(db) == sorted([f.event_uri(svc), f.event_uri(other)])
    index(writer, [f.update(svc, createdAt="2025-10-30T10:00:00.000Z")])
    assert rows(db, 'SELECT "createdAt" FROM labeler') == [("2025-10-30T10:00:00.000Z",)]
    index(writer, [f.delete(svc), f.delete(other)])
    assert rows(db, "SELECT 1 FROM labeler") == []
    assert records(db) == []


def test_verification_notifications(db, writer):
    v1 = f.verification(ALICE, BOB, "bob.example.com", "Bob")
    v2 = f.verification(ALICE, BOB, "bob.example.com", "Bob")  # a duplicate
    index(writer, [v1, v2])
    assert rows(
        db,
        'SELECT uri, rkey, creator, subject, handle, "displayName", "sortedAt" FROM verification',
    ) == [(f.event_uri(v1), v1["rkey"], ALICE, BOB, "bob.example.com", "Bob", f.CREATED)]
    assert duplicates(db) == [(f.event_uri(v2), f.event_uri(v1))]
    verified = (BOB, "verified", ALICE, f.event_uri(v1), None, f.CREATED)
    assert notifs(db) == [verified]

    # An update sends "unverified" (stamped with the event's time) and no new "verified".
    later = "2025-10-30T14:00:00.000Z"
    upd = f.update(v1, displayName="Robert")
    upd["time"] = later
    index(writer, [upd])
    assert rows(db, 'SELECT "displayName" FROM verification') == [("Robert",)]
    unverified = (BOB, "unverified", ALICE, f.event_uri(v1), None, later)
    assert notifs(db) == [verified, unverified]

    # A delete notifies again; the duplicate is promoted without a "verified" of its own.
    index(writer, [f.delete(v1)])
    assert rows(db, "SELECT uri FROM verification") == [(f.event_uri(v2),)]
    assert [n[1] for n in notifs(db)] == ["verified", "unverified", "unverified"]
    # Deleting what is only a duplicate record changes no notification.
    v3 = f.verification(ALICE, BOB, "bob.example.com")
    index(writer, [v3, f.delete(v3)])
    assert len(notifs(db)) == 3
    index(writer, [f.verification(CAROL, CAROL, "carol.example.com")])  # self: notified too
    assert notifs(db)[-1][:3] == (CAROL, "verified", CAROL)


def test_verification_sequence_in_one_batch(db, db_url, writer):
    v1 = f.verification(ALICE, BOB, "bob.example.com")
    v2 = f.verification(ALICE, BOB, "bob.example.com")
    v3 = f.verification(CAROL, BOB, "bob.example.com")
    events = [v1, v2, v3, f.update(v3, handle="robert.example.com"), f.delete(v1), f.delete(v3)]
    assert_batch_equals_one_by_one(db, db_url, writer, events)
    assert [n[1] for n in notifs(db)] == ["verified", "verified", "unverified", "unverified"] + [
        "unverified"
    ]


@pytest.mark.parametrize(
    ("collection", "record"),
    [
        ("app.bsky.actor.status", {"status": "app.bsky.actor.status#live", "durationMinutes": 5}),
        ("chat.bsky.actor.declaration", {"allowIncoming": "following"}),
        ("com.germnetwork.declaration", {"version": "1.0.0", "currentKey": {"$bytes": "AAEC"}}),
        ("app.bsky.notification.declaration", {"allowSubscriptions": "followers"}),
    ],
)
def test_record_only_collections(db, writer, collection, record):
    own = f.create(ALICE, collection, record, rkey="self")
    other = f.create(BOB, collection, record, rkey="3jzfcijpj2z2a")  # any rkey gets its record
    index(writer, [own, other])
    assert records(db) == sorted([f.event_uri(own), f.event_uri(other)])
    assert rows(db, "SELECT cid FROM record WHERE uri = %s", f.event_uri(own)) == [(own["cid"],)]
    before = snapshot(db)
    assert [t for t, r in before.items() if r and t not in ("record", "actor_sync")] == []
    index(writer, [f.delete(own), f.delete(other)])
    assert records(db) == []


def test_chat_declaration_is_not_validated_like_upstream(db, writer):
    """Upstream switches validation off for chat declarations: even a wrong $type is indexed."""
    odd = f.create(ALICE, "chat.bsky.actor.declaration", {"allowIncoming": 5}, rkey="self")
    odd["record"]["$type"] = "app.bsky.feed.like"
    index(writer, [odd])
    assert records(db) == [f.event_uri(odd)]


def test_replay_changes_nothing(db, writer):
    lst = f.list_(ALICE)
    events = [
        lst,
        f.list_item(ALICE, lst, BOB),
        f.list_item(ALICE, lst, BOB),
        f.list_block(BOB, lst),
        f.list_opt_out(CAROL, lst),
        f.feed_generator(ALICE, ALICE),
        f.starter_pack(ALICE, lst),
        f.labeler(BOB),
        f.verification(ALICE, BOB, "bob.example.com"),
        f.verification(ALICE, BOB, "bob.example.com"),
        f.actor_status(CAROL),
    ]
    index(writer, events)
    before = snapshot(db)
    index(writer, events)
    index(writer, events, one_by_one=True)
    assert snapshot(db) == before


INVALID = [
    (f.list_(ALICE, name=""), "name is shorter than 1 bytes"),
    (f.list_item(ALICE, f"at://{ALICE}/app.bsky.graph.list/3k", "bob"), "subject is not a DID"),
    (f.list_block(ALICE, "https://example.com/list"), "subject is not an AT-URI"),
    (f.list_opt_out(ALICE, "at://x"), "subject is not an AT-URI"),
    (f.feed_generator(ALICE, ALICE, "x" * 25), "displayName is longer than 24 graphemes"),
    (f.starter_pack(ALICE, f.list_(ALICE), feeds=[{"uri": "x"}]), "feeds[0].uri is not an AT-URI"),
    (f.labeler(ALICE, policies={}), "policies.labelValues is required"),
    (f.verification(ALICE, BOB, "not a handle"), "handle is not a handle"),
    (f.actor_status(ALICE, durationMinutes=0), "durationMinutes must be at least 1"),
    (
        f.create(ALICE, "app.bsky.notification.declaration", {}, rkey="self"),
        "allowSubscriptions is required",
    ),
]


def test_invalid_records_are_dead_lettered_with_their_reason(db, writer, rds, names):
    load_events(rds, names.live, [ev for ev, _ in INVALID])
    reader = StreamReader(rds, [names.live], names.group, "c-0")
    reader.ensure_groups()
    events = [decode_entry(s, i, fields) for s, i, fields, _ in reader.read(100)]
    BatchCommitter(
        writer, StreamAcker(rds, names.group, Settings(dead_letter_stream=names.dead_letter))
    ).commit(events)
    dead = [d[b"reason"].decode() for _, d in rds.xrange(names.dead_letter)]
    assert len(dead) == len(INVALID)
    for reason, (_, want) in zip(dead, INVALID, strict=True):
        assert reason.startswith("record: ") and want in reason, (reason, want)
    assert records(db) == []
    assert rows(db, "SELECT count(*) FROM actor_sync") == [(1,)]  # the commits still count


# Every collection with duplicates: make(author, key) and the update that moves a record to key.
KEYED = {
    "follow": (lambda a, k: f.follow(a, k), lambda ev, k: f.update(ev, subject=k)),
    "block": (lambda a, k: f.block(a, k), lambda ev, k: f.update(ev, subject=k)),
    "verification": (
        lambda a, k: f.verification(a, k, "someone.test"),
        lambda ev, k: f.update(ev, subject=k),
    ),
    "listitem": (
        lambda a, k: f.list_item(a, f"at://{a}/app.bsky.graph.list/3kaaaaaaaaaa2", k),
        lambda ev, k: f.update(ev, subject=k),
    ),
    "listblock": (
        lambda a, k: f.list_block(a, f"at://{k}/app.bsky.graph.list/3kaaaaaaaaaa2"),
        lambda ev, k: f.update(ev, subject=f"at://{k}/app.bsky.graph.list/3kaaaaaaaaaa2"),
    ),
    "referencelistoptout": (
        lambda a, k: f.list_opt_out(a, f"at://{k}/app.bsky.graph.list/3kaaaaaaaaaa2"),
        lambda ev, k: f.update(ev, subject=f"at://{k}/app.bsky.graph.list/3kaaaaaaaaaa2"),
    ),
}


def dead_letters_of(writer, rds, names, events: list[dict]) -> list[str]:
    """Commit the events as one batch through the sink's committer; the dead letters' reasons."""
    load_events(rds, names.live, events)
    reader = StreamReader(rds, [names.live], names.group, "c-0")
    reader.ensure_groups()
    decoded = [decode_entry(s, i, fields) for s, i, fields, _ in reader.read(100)]
    BatchCommitter(
        writer, StreamAcker(rds, names.group, Settings(dead_letter_stream=names.dead_letter))
    ).commit(decoded)
    return [d[b"reason"].decode() for _, d in rds.xrange(names.dead_letter)]


@pytest.mark.parametrize("kind", sorted(KEYED))
def test_update_onto_another_record_is_refused_whole(db, writer, rds, names, kind):
    """Upstream removes the updated record's row, cannot insert the new one (another row of the
    creator holds its key), throws and rolls back: the update changes nothing, and we dead-letter
    it. Its commit still counts (actor_sync)."""
    make, move = KEYED[kind]
    first, second = make(ALICE, BOB), make(ALICE, CAROL)
    index(writer, [first, second])
    before = snapshot(db)
    moved = move(second, BOB)
    assert dead_letters_of(writer, rds, names, [moved]) == [
        f"update collides with another record: {f.event_uri(first)} of the same creator holds"
        " its key (upstream refuses such an update)"
    ]
    after = snapshot(db)
    assert after.pop("actor_sync") != before.pop("actor_sync")
    assert after == before
    # Refused before the revision guard: delivered again, it is refused again.
    again = decode_entry("s", "9-0", {b"event": orjson.dumps(moved)})
    writer.write([again])
    assert again.error is not None and "collides" in again.error


def test_opt_out_update_to_a_non_list_is_refused(db, writer, rds, names):
    """An opt-out with a row updated to a subject upstream's insert declines: refused too. One
    without a row (a subject that is not a list) moves freely, both ways."""
    lst = f"at://{BOB}/app.bsky.graph.list/3kaaaaaaaaaa2"
    post_uri = f"at://{BOB}/app.bsky.feed.post/3kaaaaaaaaaa2"
    kept, declined = f.list_opt_out(ALICE, lst), f.list_opt_out(CAROL, post_uri)
    index(writer, [kept, declined])
    before = snapshot(db)
    reasons = dead_letters_of(writer, rds, names, [f.update(kept, subject=post_uri)])
    assert reasons == [
        "update leaves the record no row: upstream removes its row, cannot replace it and"
        " refuses the update"
    ]
    after = snapshot(db)
    assert after.pop("actor_sync") != before.pop("actor_sync")
    assert after == before
    index(writer, [f.update(declined, subject=lst)])
    assert rows(db, "SELECT uri FROM reference_list_opt_out WHERE creator = %s", CAROL) == [
        (f.event_uri(declined),)
    ]


@pytest.mark.parametrize("kind", sorted(KEYED))
def test_update_of_a_duplicate_follows_upstream(db, db_url, writer, kind):
    """Upstream's update looks for a row with the new key before removing the record's own: a
    duplicate updated in place stays one (new cid); moved to a free key it gets its row."""
    make, move = KEYED[kind]
    first, second = make(ALICE, BOB), make(ALICE, BOB)
    touched = f.update(second, createdAt="2025-10-30T11:00:00.000Z")
    index(writer, [first, second, touched])
    assert rows(db, 'SELECT uri, cid, "duplicateOf" FROM duplicate_record') == [
        (f.event_uri(second), touched["cid"], f.event_uri(first))
    ]
    index(writer, [move(second, CAROL)])
    assert duplicates(db) == []
    assert len(rows(db, "SELECT 1 FROM record")) == 2
    truncate_all(db_url)
    assert_batch_equals_one_by_one(
        db, db_url, writer, [first, second, touched, move(second, CAROL)]
    )


@pytest.mark.parametrize("kind", sorted(set(KEYED) - {"referencelistoptout"}))
def test_update_of_a_promoted_duplicate_points_its_row_at_itself(db, db_url, writer, kind):
    """A promoted duplicate keeps its duplicate_record row; updated with its key unchanged,
    upstream's lookup finds the record's own row, so the row ends pointing at the record itself
    (new cid and time). Moved to a free key, the row goes."""
    make, move = KEYED[kind]
    first, second = make(ALICE, BOB), make(ALICE, BOB)
    later = "2025-10-30T12:05:00.000000+00:00"
    touched = f.update(second, createdAt="2025-10-30T11:00:00.000Z")
    touched["time"] = later
    events = [first, second, f.delete(first), touched]
    index(writer, events)
    assert rows(db, 'SELECT uri, cid, "duplicateOf", "indexedAt" FROM duplicate_record') == [
        (f.event_uri(second), touched["cid"], f.event_uri(second), "2025-10-30T12:05:00.000Z")
    ]
    index(writer, [move(second, CAROL)])
    assert duplicates(db) == []
    truncate_all(db_url)
    assert_batch_equals_one_by_one(db, db_url, writer, [*events, move(second, CAROL)])
