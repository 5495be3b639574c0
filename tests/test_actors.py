"""Account and identity events: ``actor`` status and handle, and a deleted account's data removed
as upstream's ``deleteActor`` does, with every counter of the others left exact."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks.postgres.pool import shared_pool
from sinks.postgres.schema import truncate_all
from sinks.postgres.segments import split
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexing import decode, index, rows, snapshot
from .test_batch_equivalence import DIDS, sequences

ALICE, BOB, CAROL = f.did("alice"), f.did("bob"), f.did("carol")
LATER = "2025-10-30T13:00:00.5+00:00"


@pytest.fixture
def writer(db: psycopg.Connection, db_url: str) -> Iterator[PostgresWriter]:
    yield PostgresWriter(shared_pool(db_url, 4, 0))


def actor(db: psycopg.Connection, did: str) -> tuple | None:
    got = rows(db, 'SELECT handle, "upstreamStatus", "indexedAt" FROM actor WHERE did = %s', did)
    return got[0] if got else None


def assert_counters_exact(db: psycopg.Connection) -> None:
    """Every counter equals a recount of the rows it counts (what upstream's recount gives).
    Not ``quoteCount``: a post delete or update drops the quote rows *of* the post without a
    recount, on purpose (docs/semantics.md), and an account deletion keeps quote rows."""
    wrong = rows(
        db,
        """
        SELECT a.uri FROM post_agg a
        WHERE a."likeCount" <> (SELECT count(*) FROM "like" l WHERE l.subject = a.uri)
           OR a."repostCount" <> (SELECT count(*) FROM repost r WHERE r.subject = a.uri)
           OR a."replyCount" <> (SELECT count(*) FROM post p WHERE p."replyParent" = a.uri
                                 AND p."violatesThreadGate" IS NOT TRUE)
        UNION ALL
        SELECT a.did FROM profile_agg a
        WHERE a."followersCount" <> (SELECT count(*) FROM follow f WHERE f."subjectDid" = a.did)
           OR a."followsCount" <> (SELECT count(*) FROM follow f WHERE f.creator = a.did)
           OR a."postsCount" <> (SELECT count(*) FROM post p WHERE p.creator = a.did)
        """,
    )
    assert wrong == []


# Tables upstream's deleteActor empties of the actor's rows (by creator, by the creator's posts, or
# by did), and tables it leaves alone.
BY_CREATOR = (
    "profile",
    "follow",
    "repost",
    "like",
    "feed_generator",
    "labeler",
    "list_item",
    "reference_list_opt_out",
    "list",
    "actor_block",
    "list_block",
    "post",
    "thread_gate",
    "post_gate",
)
EMBEDS = (
    "post_embed_image",
    "post_embed_external",
    "post_embed_record",
    "post_embed_video",
    "post_embed_gallery_image",
)


def plant_unindexed(db: psycopg.Connection, did: str, post_uri: str) -> None:
    """Rows of collections the writer does not index (yet), written as their plugins would."""
    ts = "2025-10-30T12:00:00.000Z"

    def put(table: str, collection: str, cols: dict[str, str]) -> None:
        uri = f.uri(did, collection, f.tid())
        cid = f.cid(uri)
        names = ", ".join(f'"{c}"' for c in ["uri", "cid", "creator", *cols])
        marks = ", ".join(["%s"] * (3 + len(cols)))
        db.execute(
            f'INSERT INTO "{table}" ({names}, "createdAt", "indexedAt") VALUES ({marks}, %s, %s)',
            (uri, cid, did, *cols.values(), ts, ts),
        )
        db.execute(
            'INSERT INTO record (uri, cid, did, json, "indexedAt") VALUES (%s, %s, %s, %s, %s)',
            (uri, cid, did, "{}", ts),
        )

    lst = f.uri(did, "app.bsky.graph.list", "l1")
    put("feed_generator", "app.bsky.feed.generator", {"feedDid": "did:web:feed.example.com"})
    put("labeler", "app.bsky.labeler.service", {})
    put("list", "app.bsky.graph.list", {"name": "l", "purpose": "app.bsky.graph.defs#curatelist"})
    put("list_item", "app.bsky.graph.listitem", {"subjectDid": BOB, "listUri": lst})
    put("list_block", "app.bsky.graph.listblock", {"subjectUri": lst})
    put("reference_list_opt_out", "app.bsky.graph.referencelistoptout", {"subjectUri": lst})
    put("thread_gate", "app.bsky.feed.threadgate", {"postUri": post_uri})
    put("post_gate", "app.bsky.feed.postgate", {"postUri": post_uri})
    put("starter_pack", "app.bsky.graph.starterpack", {"name": "sp"})
    verification = {"subject": BOB, "handle": "bob.test", "displayName": "Bob", "rkey": "v1"}
    put("verification", "app.bsky.graph.verification", verification)
    db.execute(
        'INSERT INTO post_embed_gallery_image ("postUri", position, "imageCid", alt) '
        "VALUES (%s, '0', %s, '')",
        (post_uri, f.blob_cid("g")),
    )


def count(db: psycopg.Connection, table: str, where: str, *params: object) -> int:
    return rows(db, f'SELECT count(*) FROM "{table}" WHERE {where}', *params)[0][0]


# -- status ----------------------------------------------------------------------------------


def test_status_values_and_capitalisation(db, writer):
    index(writer, [f.identity(ALICE, "alice.test")])
    steps = [
        (f.account(ALICE, False, "Takendown"), "takendown"),
        (f.account(ALICE, True), None),
        (f.account(ALICE, False, "SUSPENDED"), "suspended"),
        (f.account(ALICE, False, "deactivated"), "deactivated"),
        # Statuses upstream's firehose parser drops, and an inactive event without a status
        # (upstream throws): nothing changes.
        (f.account(ALICE, False, "Desynchronized"), "deactivated"),
        (f.account(ALICE, True, "throttled"), "deactivated"),
        (f.account(ALICE, False), "deactivated"),
        # Active wins over the status word, even "deleted".
        (f.account(ALICE, True, "Deleted"), None),
    ]
    for event, expected in steps:
        index(writer, [event])
        assert actor(db, ALICE)[1] == expected, event
    assert actor(db, ALICE)[0] == "alice.test"


def test_status_of_an_unknown_actor_creates_no_row(db, writer):
    index(writer, [f.account(BOB, False, "takendown"), f.account(CAROL, True)])
    assert rows(db, "SELECT did FROM actor") == []


# -- identity --------------------------------------------------------------------------------


def test_handle_set_lower_cased_and_updated(db, writer):
    index(writer, [f.identity(ALICE, "Alice.Example.COM")])
    assert actor(db, ALICE) == ("alice.example.com", None, "2025-10-30T12:00:00.123Z")
    index(writer, [f.account(ALICE, False, "suspended"), f.identity(ALICE, "a2.test", LATER)])
    # The row is updated in place: the status stays, indexedAt moves to the event time.
    assert actor(db, ALICE) == ("a2.test", "suspended", "2025-10-30T13:00:00.500Z")


@pytest.mark.parametrize(
    "handle",
    [
        "handle.invalid",
        "Handle.INVALID",
        "not a handle",
        "-bad.example.com",
        "nodot",
        "a" * 64 + ".x",
    ],
)
def test_invalid_handle_is_null(db, writer, handle):
    index(writer, [f.identity(ALICE, "alice.test")])
    index(writer, [f.identity(ALICE, handle, LATER)])
    assert actor(db, ALICE) == (None, None, "2025-10-30T13:00:00.500Z")
    index(writer, [f.identity(BOB, handle)])
    assert actor(db, BOB) == (None, None, "2025-10-30T12:00:00.123Z")


def test_identity_without_handle_only_creates_a_missing_row(db, writer):
    index(writer, [f.identity(ALICE, "alice.test"), f.identity(BOB, None)])
    index(writer, [f.identity(ALICE, None, LATER)])
    assert actor(db, ALICE) == ("alice.test", None, "2025-10-30T12:00:00.123Z")
    assert actor(db, BOB) == (None, None, "2025-10-30T12:00:00.123Z")


def test_handle_moved_to_another_did_is_cleared_from_the_old_one(db, writer):
    index(writer, [f.identity(ALICE, "shared.test"), f.identity(CAROL, "carol.test")])
    index(writer, [f.identity(BOB, "SHARED.test")])
    assert actor(db, ALICE)[0] is None
    assert actor(db, BOB)[0] == "shared.test"
    assert actor(db, CAROL)[0] == "carol.test"


def test_handle_moves_within_one_batch_as_one_by_one(db, db_url, writer):
    # alice's handle goes to bob, who then moves on: the handle ends with nobody, alice keeps NULL.
    events = [
        f.identity(ALICE, "h.test"),
        f.identity(BOB, "h.test"),
        f.identity(BOB, "h2.test"),
        f.identity(CAROL, "h.test"),
        f.identity(ALICE, "h2.test"),
    ]
    index(writer, events, one_by_one=True)
    expected = snapshot(db)
    assert [actor(db, d)[0] for d in (ALICE, BOB, CAROL)] == ["h2.test", None, "h.test"]
    truncate_all(db_url)
    index(writer, events)
    assert snapshot(db) == expected


# -- deletion --------------------------------------------------------------------------------


def test_deleted_account_removes_what_upstream_removes(db, writer):
    bob_post = f.post(BOB, "bob's")
    carol_post = f.post(CAROL, "carol's")
    alice_post = f.post(
        ALICE,
        "alice's",
        facets=[f.mention(BOB)],
        embed={
            "$type": "app.bsky.embed.recordWithMedia",
            "record": {"$type": "app.bsky.embed.record", "record": f.ref(bob_post)},
            "media": {
                "$type": "app.bsky.embed.images",
                "images": [{"image": f.blob("i"), "alt": ""}],
            },
        },
    )
    alice_ext = f.post(
        ALICE,
        "link",
        embed={
            "$type": "app.bsky.embed.external",
            "external": {"uri": "https://example.com", "title": "t", "description": "d"},
        },
    )
    alice_video = f.post(
        ALICE, "v", embed={"$type": "app.bsky.embed.video", "video": f.blob("v", "video/mp4")}
    )
    alice_like = f.like(ALICE, bob_post)
    events = [
        f.identity(ALICE, "alice.test"),
        f.identity(BOB, "bob.test"),
        bob_post,
        carol_post,
        f.profile(ALICE, displayName="A"),
        alice_post,
        alice_ext,
        alice_video,
        f.reply(ALICE, bob_post, bob_post),
        alice_like,
        f.like(ALICE, bob_post),  # a duplicate of alice_like
        f.repost(ALICE, carol_post),
        f.follow(ALICE, BOB),
        f.follow(ALICE, CAROL),
        f.block(ALICE, CAROL),
        # The others' rows about alice stay.
        f.like(BOB, alice_post),
        f.repost(CAROL, alice_post),
        f.follow(BOB, ALICE),
        f.reply(BOB, alice_post, alice_post),
        f.like(CAROL, bob_post),
    ]
    index(writer, events)
    alice_post_uri = f.event_uri(alice_post)
    plant_unindexed(db, ALICE, alice_post_uri)
    db.execute("UPDATE actor SET \"upstreamStatus\" = 'deactivated' WHERE did = %s", (ALICE,))
    assert count(db, "duplicate_record", "true") == 1
    assert count(db, "notification", "author = %s OR did = %s", ALICE, ALICE) > 0
    feed_items = rows(db, "SELECT * FROM feed_item ORDER BY uri")
    quotes = rows(db, "SELECT * FROM quote ORDER BY uri")
    kept = {
        t: rows(db, f'SELECT * FROM "{t}" ORDER BY uri') for t in ("starter_pack", "verification")
    }
    actor_sync = rows(db, "SELECT * FROM actor_sync ORDER BY did")

    index(writer, [f.account(ALICE, False, "Deleted")])

    assert actor(db, ALICE) is None
    assert actor(db, BOB) == ("bob.test", None, "2025-10-30T12:00:00.123Z")
    for table in BY_CREATOR:
        assert count(db, table, "creator = %s", ALICE) == 0, table
    for table in EMBEDS:
        assert count(db, table, "\"postUri\" LIKE 'at://' || %s || '/%%'", ALICE) == 0, table
    assert count(db, "record", "did = %s", ALICE) == 0
    assert count(db, "duplicate_record", "true") == 0
    assert count(db, "notification", "author = %s OR did = %s", ALICE, ALICE) == 0
    # What upstream leaves: feed items (alice's posts and repost too), quotes, starter packs,
    # verifications, actor_sync; and the others' rows about alice.
    assert rows(db, "SELECT * FROM feed_item ORDER BY uri") == feed_items
    assert rows(db, "SELECT * FROM quote ORDER BY uri") == quotes
    for table, before in kept.items():
        assert rows(db, f'SELECT * FROM "{table}" ORDER BY uri') == before
    assert rows(db, "SELECT * FROM actor_sync ORDER BY did") == actor_sync
    assert count(db, "like", "creator = %s", BOB) == 1
    assert count(db, "follow", "creator = %s", BOB) == 1
    assert count(db, "post", "creator = %s", BOB) == 2
    # carol's like of bob's post notified bob and stays; her repost notified alice and went.
    assert rows(db, "SELECT did, reason FROM notification WHERE author = %s", CAROL) == [
        (BOB, "like")
    ]
    # Counters: the others' move with the rows that went; alice's own are recounted too.
    assert_counters_exact(db)
    got = rows(
        db,
        'SELECT uri, "likeCount", "repostCount", "replyCount", "quoteCount" FROM post_agg '
        "ORDER BY uri",
    )
    expected = {
        f.event_uri(bob_post): (1, 0, 0, 1),  # carol's like stays; alice's quote row stays
        f.event_uri(carol_post): (0, 0, 0, 0),
        alice_post_uri: (1, 1, 1, 0),
    }
    assert {u: tuple(r) for u, *r in got if u in expected} == expected
    profiles = dict(
        (d, tuple(r))
        for d, *r in rows(
            db, 'SELECT did, "followersCount", "followsCount", "postsCount" FROM profile_agg'
        )
    )
    assert profiles[ALICE] == (1, 0, 0)
    assert profiles[BOB] == (0, 1, 2)
    assert profiles[CAROL] == (0, 0, 1)


def test_deleting_again_or_an_unknown_actor_changes_nothing(db, writer):
    index(
        writer, [f.identity(ALICE, "alice.test"), f.post(ALICE), f.account(ALICE, False, "deleted")]
    )
    before = snapshot(db)
    index(writer, [f.account(ALICE, False, "deleted"), f.account(CAROL, False, "deleted")])
    assert snapshot(db) == before


def test_reactivation(db, writer):
    index(writer, [f.identity(ALICE, "alice.test"), f.account(ALICE, False, "deactivated")])
    index(writer, [f.account(ALICE, True)])
    assert actor(db, ALICE) == ("alice.test", None, "2025-10-30T12:00:00.123Z")
    index(writer, [f.post(ALICE), f.account(ALICE, False, "deleted")])
    # A deleted account that comes back: no row until an identity event, records index again.
    index(writer, [f.account(ALICE, True), f.post(ALICE, "again")])
    assert actor(db, ALICE) is None
    index(writer, [f.identity(ALICE, "alice.test", LATER)])
    assert actor(db, ALICE) == ("alice.test", None, "2025-10-30T13:00:00.500Z")
    assert rows(db, "SELECT text FROM post WHERE creator = %s", ALICE) == [("again",)]
    assert_counters_exact(db)


# -- order within a batch, replay ------------------------------------------------------------


def _mixed() -> list[dict]:
    bob_post = f.post(BOB, "bob's")
    alice_post = f.post(ALICE, "first", facets=[f.mention(BOB)])
    return [
        f.identity(ALICE, "alice.test"),
        bob_post,
        alice_post,
        f.like(ALICE, bob_post),
        f.like(BOB, alice_post),
        f.follow(BOB, ALICE),
        f.account(ALICE, False, "takendown"),
        f.account(ALICE, False, "deleted"),  # after records of alice and about alice
        f.post(ALICE, "second", facets=[f.mention(BOB)]),  # after the deletion
        f.like(ALICE, bob_post),
        f.like(BOB, alice_post),  # alice's first post is gone, the like is not
        f.identity(ALICE, "alice.test"),
        f.account(ALICE, False, "suspended"),
        f.reply(BOB, bob_post, bob_post),
        f.account(ALICE, False, "deleted"),
        f.post(ALICE, "third"),
    ]


def test_a_deletion_starts_a_segment_after_record_operations():
    post, like = f.post(ALICE), f.like(BOB, f.post(CAROL))
    evs = decode(
        [f.identity(ALICE, "a.test"), f.account(ALICE, False, "deleted"), post, like]
        + [f.account(BOB, False, "takendown"), f.account(ALICE, False, "deleted"), post]
    )
    assert [len(s) for s in split(evs)] == [5, 2]


def test_batch_with_deletions_equals_one_by_one(db, db_url, writer):
    events = _mixed()
    index(writer, events, one_by_one=True)
    expected = snapshot(db)
    assert rows(db, "SELECT text FROM post WHERE creator = %s", ALICE) == [("third",)]
    assert actor(db, ALICE) is None
    assert_counters_exact(db)
    truncate_all(db_url)
    index(writer, events)
    assert snapshot(db) == expected


def test_replay_changes_nothing(db, writer):
    events = _mixed()
    index(writer, events)
    before = snapshot(db)
    index(writer, events)
    assert snapshot(db) == before


def test_an_older_actor_event_delivered_again_is_dropped(db, writer):
    takedown = f.account(ALICE, False, "takendown")
    handle = f.identity(ALICE, "old.test")
    index(writer, [f.identity(ALICE, "alice.test"), takedown, handle])
    index(writer, [f.account(ALICE, True), f.identity(ALICE, "new.test")])
    index(writer, [takedown, handle])
    assert actor(db, ALICE)[:2] == ("new.test", None)
    # Same time, later seq: newer.
    index(writer, [{**takedown, "seq": 10**9}])
    assert actor(db, ALICE)[1] == "takendown"


def _actor_event(draw: st.DrawFn) -> dict:
    did = draw(st.sampled_from(DIDS))
    if draw(st.booleans()):
        handle = draw(st.sampled_from(["h1.test", "H2.test", "h3.test", "not a handle", None]))
        return f.identity(did, handle)
    active, status = draw(
        st.sampled_from(
            [(True, None), (False, "Deleted"), (False, "takendown"), (False, "deactivated")]
        )
    )
    return f.account(did, active, status)


@st.composite
def mixed_sequences(draw: st.DrawFn) -> list[dict]:
    events = draw(sequences())
    for _ in range(draw(st.integers(1, 5))):
        events.insert(draw(st.integers(0, len(events))), _actor_event(draw))
    for n, ev in enumerate(events):
        ev["seq"] = 1000 + n  # a stream's seq grows with its order
    return events


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=mixed_sequences())
def test_mixed_batch_equals_one_at_a_time(db: psycopg.Connection, db_url: str, events: list):
    writer = PostgresWriter(shared_pool(db_url, 4, 0))
    truncate_all(db_url)
    index(writer, events, one_by_one=True)
    expected = snapshot(db)
    assert_counters_exact(db)
    truncate_all(db_url)
    index(writer, events)
    assert snapshot(db) == expected
