"""What each collection's events leave in the AppView tables: rows, notifications, counters.

Expected values follow ../shared/spec/indexing-semantics.md (the upstream indexer's behaviour).
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import psycopg
import pytest

from flows.decode import decode_entry
from sinks.postgres.pool import shared_pool
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexing import index, rows

ALICE, BOB, CAROL, DAN = f.did("alice"), f.did("bob"), f.did("carol"), f.did("dan")


@pytest.fixture
def writer(db: psycopg.Connection, db_url: str) -> Iterator[PostgresWriter]:
    yield PostgresWriter(shared_pool(db_url, 4, 0))


def agg(db: psycopg.Connection, uri: str) -> tuple:
    got = rows(
        db,
        'SELECT "likeCount", "repostCount", "replyCount", "quoteCount" FROM post_agg '
        "WHERE uri = %s",
        uri,
    )
    return got[0] if got else (0, 0, 0, 0)


def pagg(db: psycopg.Connection, did: str) -> tuple:
    got = rows(
        db,
        'SELECT "followersCount", "followsCount", "postsCount" FROM profile_agg WHERE did = %s',
        did,
    )
    return got[0] if got else (0, 0, 0)


def notifs(db: psycopg.Connection) -> list[tuple]:
    return rows(db, 'SELECT did, reason, author, "reasonSubject" FROM notification ORDER BY id')


def test_like_create_duplicate_promote_delete(db, writer):
    p = f.post(ALICE)
    like1 = f.like(BOB, p)
    like2 = f.like(BOB, p)  # same creator and subject: a duplicate
    index(writer, [p, like1])
    assert rows(db, 'SELECT uri, subject, creator FROM "like"') == [
        (f.event_uri(like1), f.event_uri(p), BOB)
    ]
    assert agg(db, f.event_uri(p)) == (1, 0, 0, 0)
    assert notifs(db) == [(ALICE, "like", BOB, f.event_uri(p))]
    assert rows(db, 'SELECT "createdAt", "indexedAt" FROM "like"') == [
        ("2025-10-30T11:59:59.000Z", "2025-10-30T12:00:00.123Z")
    ]

    index(writer, [like2])
    assert rows(db, 'SELECT uri, "duplicateOf" FROM duplicate_record') == [
        (f.event_uri(like2), f.event_uri(like1))
    ]
    assert agg(db, f.event_uri(p)) == (1, 0, 0, 0)
    assert len(notifs(db)) == 1
    assert len(rows(db, "SELECT uri FROM record")) == 3

    # Deleting the original promotes the duplicate; its duplicate_record row stays (upstream).
    index(writer, [f.delete(like1)])
    assert rows(db, 'SELECT uri FROM "like"') == [(f.event_uri(like2),)]
    assert agg(db, f.event_uri(p)) == (1, 0, 0, 0)
    assert len(notifs(db)) == 1  # replaced: the old notification stays, no new one
    assert rows(db, "SELECT uri FROM duplicate_record") == [(f.event_uri(like2),)]

    index(writer, [f.delete(like2)])
    assert rows(db, 'SELECT uri FROM "like"') == []
    assert agg(db, f.event_uri(p)) == (0, 0, 0, 0)
    # Upstream deletes notifications by the deleted record's uri: the first like's stays behind.
    assert len(notifs(db)) == 1
    assert rows(db, "SELECT uri FROM record") == [(f.event_uri(p),)]


def test_self_like_does_not_notify_and_via_does(db, writer):
    p = f.post(ALICE)
    rp = f.repost(CAROL, p)
    index(writer, [p, rp, f.like(ALICE, p), f.like(BOB, p, via=f.ref(rp))])
    assert sorted(notifs(db)) == sorted(
        [
            (ALICE, "repost", CAROL, f.event_uri(p)),
            (ALICE, "like", BOB, f.event_uri(p)),
            (CAROL, "like-via-repost", BOB, f.event_uri(rp)),
        ]
    )
    assert agg(db, f.event_uri(p)) == (2, 1, 0, 0)


def test_like_update_keeps_notification_and_count(db, writer):
    p = f.post(ALICE)
    lk = f.like(BOB, p)
    index(writer, [p, lk])
    index(writer, [f.update(lk, createdAt="2025-10-30T11:00:00.000Z")])
    assert agg(db, f.event_uri(p)) == (1, 0, 0, 0)
    assert notifs(db) == [(ALICE, "like", BOB, f.event_uri(p))]
    assert rows(db, 'SELECT "createdAt" FROM "like"') == [("2025-10-30T11:00:00.000Z",)]


def test_repost_feed_items_and_duplicates(db, writer):
    p = f.post(ALICE)
    r1, r2 = f.repost(BOB, p), f.repost(BOB, p)
    index(writer, [p, r1, r2])
    assert rows(
        db, 'SELECT uri, type, "postUri", "originatorDid" FROM feed_item ORDER BY type, uri'
    ) == sorted(
        [
            (f.event_uri(p), "post", f.event_uri(p), ALICE),
            (f.event_uri(r1), "repost", f.event_uri(p), BOB),
            (f.event_uri(r2), "repost", f.event_uri(p), BOB),
        ],
        key=lambda r: (r[1], r[0]),
    )
    assert agg(db, f.event_uri(p)) == (0, 1, 0, 0)
    index(writer, [f.delete(r2)])
    assert len(rows(db, "SELECT 1 FROM feed_item WHERE type = 'repost'")) == 1
    assert agg(db, f.event_uri(p)) == (0, 1, 0, 0)
    index(writer, [f.delete(r1)])
    assert rows(db, "SELECT 1 FROM feed_item WHERE type = 'repost'") == []
    assert agg(db, f.event_uri(p)) == (0, 0, 0, 0)


def test_follow_counts_and_notifications(db, writer):
    fo = f.follow(BOB, ALICE)
    index(writer, [fo, f.follow(CAROL, ALICE), f.follow(BOB, ALICE)])  # third: duplicate
    assert pagg(db, ALICE) == (2, 0, 0)
    assert pagg(db, BOB) == (0, 1, 0)
    assert sorted(notifs(db)) == sorted(
        [(ALICE, "follow", BOB, None), (ALICE, "follow", CAROL, None)]
    )
    assert len(rows(db, "SELECT 1 FROM duplicate_record")) == 1
    index(writer, [f.delete(fo)])  # the duplicate takes its place
    assert pagg(db, ALICE) == (2, 0, 0)
    index(writer, [f.follow(DAN, DAN)])  # upstream notifies a self-follow
    assert (DAN, "follow", DAN, None) in notifs(db)


def test_block(db, writer):
    b = f.block(BOB, ALICE)
    index(writer, [b])
    assert rows(db, 'SELECT creator, "subjectDid" FROM actor_block') == [(BOB, ALICE)]
    assert notifs(db) == []
    index(writer, [f.delete(b)])
    assert rows(db, "SELECT 1 FROM actor_block") == []
    assert rows(db, "SELECT 1 FROM record") == []


def test_profile_create_update_and_other_rkeys(db, writer):
    pack = f.uri(CAROL, "app.bsky.graph.starterpack", f.tid())
    pr = f.profile(
        ALICE,
        displayName="Alice",
        avatar=f.blob("a"),
        joinedViaStarterPack={"uri": pack, "cid": f.cid("pack")},
    )
    index(writer, [pr])
    assert rows(
        db, 'SELECT "displayName", "avatarCid", "joinedViaStarterPackUri" FROM profile'
    ) == [("Alice", f.blob_cid("a"), pack)]
    assert notifs(db) == [(CAROL, "starterpack-joined", ALICE, pack)]
    index(writer, [f.update(pr, displayName="Alice B", avatar=f.blob("b"))])
    assert rows(db, 'SELECT "displayName", "avatarCid" FROM profile') == [
        ("Alice B", f.blob_cid("b"))
    ]
    assert len(notifs(db)) == 1  # only the first insert notifies
    other = f.create(BOB, "app.bsky.actor.profile", {"displayName": "x"}, rkey="other")
    index(writer, [other])
    assert rows(db, "SELECT count(*) FROM profile") == [(1,)]
    assert (f.event_uri(other),) in rows(db, "SELECT uri FROM record")
    index(writer, [f.delete(pr)])
    assert rows(db, "SELECT count(*) FROM profile") == [(0,)]


def test_post_replies_notifications_and_counts(db, writer):
    root = f.post(ALICE, "root")
    r1 = f.reply(BOB, root, root)
    r2 = f.reply(CAROL, root, r1)
    index(writer, [root, r1, r2])
    assert agg(db, f.event_uri(root)) == (0, 0, 1, 0)
    assert agg(db, f.event_uri(r1)) == (0, 0, 1, 0)
    assert pagg(db, ALICE) == (0, 0, 1)
    got = set(notifs(db))
    assert (ALICE, "reply", BOB, f.event_uri(root)) in got
    assert (BOB, "reply", CAROL, f.event_uri(r1)) in got
    assert (ALICE, "reply", CAROL, f.event_uri(root)) in got  # ancestor of height 2
    assert rows(
        db,
        'SELECT "invalidReplyRoot", "violatesThreadGate" FROM post WHERE uri = %s',
        f.event_uri(r2),
    ) == [(None, None)]
    # An OP reply is listed in op_thread_reply.
    op = f.reply(ALICE, root, r2)
    index(writer, [op])
    assert rows(db, 'SELECT "rootUri", uri FROM op_thread_reply') == [
        (f.event_uri(root), f.event_uri(op))
    ]

    index(writer, [f.delete(r2)])
    assert agg(db, f.event_uri(r1)) == (0, 0, 0, 0)
    assert not [n for n in notifs(db) if n[2] == CAROL]
    assert pagg(db, CAROL) == (0, 0, 0)


def test_reply_to_missing_parent_is_invalid(db, writer):
    ghost = f.post(ALICE)  # never indexed
    r = f.reply(BOB, ghost, ghost)
    index(writer, [r])
    assert rows(db, 'SELECT "invalidReplyRoot", "violatesThreadGate" FROM post') == [(True, False)]


def test_post_mentions_quotes_and_embeds(db, writer):
    quoted = f.post(ALICE, "quoted")
    q = f.post(
        BOB,
        "look @carol",
        facets=[f.mention(CAROL), f.mention(BOB)],
        embed={
            "$type": "app.bsky.embed.recordWithMedia",
            "record": {"$type": "app.bsky.embed.record", "record": f.ref(quoted)},
            "media": {
                "$type": "app.bsky.embed.images",
                "images": [
                    {"image": f.blob("i1"), "alt": "one"},
                    {"image": f.blob("i2"), "alt": "two"},
                ],
            },
        },
        langs=["en"],
    )
    ext = f.post(
        CAROL,
        "link",
        embed={
            "$type": "app.bsky.embed.external",
            "external": {
                "uri": "https://example.com",
                "title": "t",
                "description": "d",
                "thumb": f.blob("thumb"),
            },
        },
    )
    index(writer, [quoted, q, ext])
    assert sorted(notifs(db)) == sorted(
        [(CAROL, "mention", BOB, None), (ALICE, "quote", BOB, f.event_uri(quoted))]
    )
    assert rows(db, "SELECT uri, subject FROM quote") == [(f.event_uri(q), f.event_uri(quoted))]
    assert agg(db, f.event_uri(quoted)) == (0, 0, 0, 1)
    assert rows(db, 'SELECT position, "imageCid", alt FROM post_embed_image ORDER BY position') == [
        ("0", f.blob_cid("i1"), "one"),
        ("1", f.blob_cid("i2"), "two"),
    ]
    assert rows(db, 'SELECT "embedUri" FROM post_embed_record') == [(f.event_uri(quoted),)]
    assert rows(db, 'SELECT "thumbCid", title FROM post_embed_external') == [
        (f.blob_cid("thumb"), "t")
    ]
    assert rows(db, "SELECT langs FROM post WHERE uri = %s", f.event_uri(q)) == [(["en"],)]

    index(writer, [f.delete(q)])
    assert agg(db, f.event_uri(quoted)) == (0, 0, 0, 0)
    assert rows(db, "SELECT 1 FROM post_embed_image") == []
    assert rows(db, "SELECT 1 FROM quote") == []
    assert [n for n in notifs(db) if n[2] == BOB] == []


def test_actor_sync_keeps_the_last_commit(db, writer):
    a, b = f.post(ALICE), f.post(ALICE)
    index(writer, [a, b])
    assert rows(db, 'SELECT did, "commitCid", "repoRev" FROM actor_sync') == [
        (ALICE, b["commit"], b["rev"])
    ]


def test_replay_changes_nothing(db, writer):
    from .indexing import snapshot

    root = f.post(ALICE)
    events = [
        root,
        f.reply(BOB, root, root),
        f.like(CAROL, root),
        f.follow(CAROL, ALICE),
        f.repost(DAN, root),
        f.like(CAROL, root),
    ]
    index(writer, events)
    before = snapshot(db)
    index(writer, events)
    index(writer, events, one_by_one=True)
    assert snapshot(db) == before


@pytest.mark.parametrize("make", [f.like, f.repost], ids=["like", "repost"])
def test_update_of_like_or_repost_onto_another_of_its_creator_changes_nothing(db, writer, make):
    """Upstream refuses (rolls back) an update whose new subject another record of the creator
    already holds: the counters, notifications and rows stay; the event is dead-lettered."""
    p1, p2 = f.post(ALICE), f.post(ALICE)
    first, second = make(BOB, p1), make(BOB, p2)
    index(writer, [p1, p2, first, second])
    table = "like" if make is f.like else "repost"
    before = rows(db, f'SELECT uri, cid, subject FROM "{table}" ORDER BY uri')
    counted = (agg(db, f.event_uri(p1)), agg(db, f.event_uri(p2)), notifs(db))
    moved = f.update(second, subject=f.ref(p1))
    ev = decode_entry("s", "1-0", {b"event": orjson.dumps(moved)})
    writer.write([ev])
    assert ev.error == (
        f"update collides with another record: {f.event_uri(first)} of the same creator holds"
        " its key (upstream refuses such an update)"
    )
    assert rows(db, f'SELECT uri, cid, subject FROM "{table}" ORDER BY uri') == before
    assert (agg(db, f.event_uri(p1)), agg(db, f.event_uri(p2)), notifs(db)) == counted
    assert rows(db, "SELECT cid FROM record WHERE uri = %s", f.event_uri(second)) == [
        (second["cid"],)
    ]
    assert rows(db, "SELECT 1 FROM duplicate_record") == []


def test_like_duplicate_moved_to_a_free_post_counts_and_notifies(db, writer):
    """A duplicate has no row: upstream's update of it is a plain insert, with its notification."""
    p1, p2 = f.post(ALICE), f.post(CAROL)
    first, second = f.like(BOB, p1), f.like(BOB, p1)
    index(writer, [p1, p2, first, second])
    index(writer, [f.update(second, subject=f.ref(p2))])
    assert rows(db, "SELECT 1 FROM duplicate_record") == []
    assert (agg(db, f.event_uri(p1))[0], agg(db, f.event_uri(p2))[0]) == (1, 1)
    assert notifs(db) == [
        (ALICE, "like", BOB, f.event_uri(p1)),
        (CAROL, "like", BOB, f.event_uri(p2)),
    ]
