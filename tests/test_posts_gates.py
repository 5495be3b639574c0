"""Posts and their gates: thread/post gate rows and flags, reply validity, threadgate rules,
hidden replies, embedding rules, quotes, gallery embeds and every reply notification upstream
writes, including out-of-order replies and the thread-mute filter.

Expected values follow upstream's plugins (``@atproto/bsky`` 0.0.280 indexing/plugins/post.js,
thread-gate.js, post-gate.js, processor.js) and ../shared/spec/indexing-semantics.md §4. The last
tests run the genuine upstream indexer on the same scenarios and compare the tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.decode import decode_entry
from sinks.postgres.pool import shared_pool
from sinks.postgres.schema import init_db, truncate_all
from sinks.postgres.segments import split
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexing import decode, index, rows, snapshot

ALICE, BOB, CAROL, DAN, ERIN = (f.did(n) for n in ("alice", "bob", "carol", "dan", "erin"))
U = f.event_uri


@pytest.fixture
def writer(db: psycopg.Connection, db_url: str) -> Iterator[PostgresWriter]:
    yield PostgresWriter(shared_pool(db_url, 4, 0))


def flags(db: psycopg.Connection, post: dict) -> tuple:
    got = rows(db, 'SELECT "hasThreadGate", "hasPostGate" FROM post WHERE uri = %s', U(post))
    assert got, "post not indexed"
    return got[0]


def validity(db: psycopg.Connection, post: dict) -> tuple:
    got = rows(
        db,
        'SELECT "invalidReplyRoot", "violatesThreadGate", "violatesEmbeddingRules" FROM post '
        "WHERE uri = %s",
        U(post),
    )
    assert got, "post not indexed"
    return got[0]


def notifs(db: psycopg.Connection) -> set[tuple]:
    """(recipient, reason, author, recordUri, reasonSubject) of every notification."""
    got = rows(db, 'SELECT did, reason, author, "recordUri", "reasonSubject" FROM notification')
    assert len(got) == len(set(got)), f"duplicate notifications: {got}"
    return set(got)


def reply_count(db: psycopg.Connection, post: dict) -> int | None:
    got = rows(db, 'SELECT "replyCount" FROM post_agg WHERE uri = %s', U(post))
    return got[0][0] if got else None


def reply(author: str, root: dict, parent: dict, text: str = "re", **fields: Any) -> dict:
    return f.post(author, text, reply={"root": f.ref(root), "parent": f.ref(parent)}, **fields)


def same_in_batches(db: psycopg.Connection, db_url: str, writer, events: list[dict]) -> None:
    """One batch leaves what one event at a time leaves."""
    truncate_all(db_url)
    index(writer, events, one_by_one=True)
    expected = snapshot(db)
    truncate_all(db_url)
    index(writer, events)
    assert snapshot(db) == expected


# --- thread and post gates ------------------------------------------------------------------


def test_gates_after_the_post_set_and_clear_its_flags(db, writer):
    p = f.post(ALICE)
    tg = f.threadgate(p, allow=[])
    pg = f.postgate(p)
    index(writer, [p, tg, pg])
    assert rows(
        db, 'SELECT uri, cid, creator, "postUri", "createdAt", "indexedAt" FROM thread_gate'
    ) == [(U(tg), tg["cid"], ALICE, U(p), "2025-10-30T11:59:59.000Z", "2025-10-30T12:00:00.123Z")]
    assert rows(db, 'SELECT uri, "postUri" FROM post_gate') == [(U(pg), U(p))]
    assert flags(db, p) == (True, True)
    assert {r[0] for r in rows(db, "SELECT uri FROM record")} == {U(p), U(tg), U(pg)}
    assert notifs(db) == set()

    index(writer, [f.update(tg, allow=[f.rule("mentionRule")])])  # delete + insert: still true
    assert flags(db, p) == (True, True)

    index(writer, [f.delete(tg), f.delete(pg)])
    assert flags(db, p) == (False, False)
    assert rows(db, "SELECT 1 FROM thread_gate UNION ALL SELECT 1 FROM post_gate") == []
    assert rows(db, "SELECT uri FROM record") == [(U(p),)]


@pytest.mark.parametrize("one_by_one", [True, False])
def test_gate_before_its_post_leaves_the_flag_null(db, writer, one_by_one):
    p = f.post(ALICE)
    tg, pg = f.threadgate(p, allow=[]), f.postgate(p)
    index(writer, [tg, pg, p], one_by_one=one_by_one)
    assert rows(db, 'SELECT "postUri" FROM thread_gate') == [(U(p),)]
    assert flags(db, p) == (None, None)
    # The gate still applies to replies: it is read from its record row.
    r = reply(BOB, p, p)
    index(writer, [r])
    assert validity(db, r) == (False, True, None)


def test_gate_created_again_sets_the_flag_although_its_row_exists(db, writer):
    """Upstream updates the post even when the gate's insert hit its existing row."""
    p = f.post(ALICE)
    tg = f.threadgate(p, allow=[])
    index(writer, [tg, p])
    assert flags(db, p) == (None, None)
    again = f.create(ALICE, tg["collection"], dict(tg["record"]), rkey=tg["rkey"])
    index(writer, [again])
    assert flags(db, p) == (True, None)


def test_post_update_resets_the_flags(db, writer):
    """An update re-inserts the post row; upstream does not look for its gates again."""
    p = f.post(ALICE)
    index(writer, [p, f.threadgate(p), f.postgate(p)])
    assert flags(db, p) == (True, True)
    index(writer, [f.update(p, text="edited")])
    assert flags(db, p) == (None, None)


def test_gate_must_name_the_authors_post_with_its_rkey(db, writer):
    p, other = f.post(ALICE), f.post(ALICE)
    bad_rkey = f.create(ALICE, "app.bsky.feed.threadgate", {"post": U(p)}, rkey=other["rkey"])
    bad_did = f.create(BOB, "app.bsky.feed.postgate", {"post": U(p)}, rkey=p["rkey"])
    decoded = [
        decode_entry("firehose_live", f"{n}-0", {b"event": orjson.dumps(ev)})
        for n, ev in enumerate([p, other, bad_rkey, bad_did], 1)
    ]
    assert [ev.ok for ev in decoded] == [True, True, False, False]
    assert "is not at://" in (decoded[2].error or "") and "is not at://" in (decoded[3].error or "")
    writer.write(decoded)
    assert rows(db, "SELECT 1 FROM thread_gate UNION ALL SELECT 1 FROM post_gate") == []
    assert len(rows(db, "SELECT uri FROM record")) == 2
    assert flags(db, p) == (None, None)
    # The commits still count for actor_sync, as upstream's do.
    assert rows(db, 'SELECT "repoRev" FROM actor_sync WHERE did = %s', BOB) == [(bad_did["rev"],)]


# --- reply validity -------------------------------------------------------------------------


def test_invalid_reply_root(db, writer):
    root = f.post(ALICE, "root")
    ok = reply(BOB, root, root)
    deeper = reply(CAROL, root, ok)
    other_root = f.post(DAN)
    wrong_root = reply(CAROL, other_root, ok)  # ok's root is root, not other_root
    reply_as_root = reply(DAN, ok, ok)  # claims ok is a root, but ok is a reply
    missing = reply(BOB, root, f.post(ERIN))  # parent never indexed
    transitive = reply(ERIN, root, wrong_root)  # parent is invalid
    index(writer, [root, ok, deeper, other_root, wrong_root, reply_as_root, missing, transitive])
    assert validity(db, ok) == (None, None, None)
    assert validity(db, deeper) == (None, None, None)
    for bad in (wrong_root, reply_as_root, missing, transitive):
        assert validity(db, bad) == (True, False, None)
    # Invalid replies still count and still notify (upstream checks neither).
    assert reply_count(db, ok) == 3  # deeper, wrong_root, reply_as_root
    assert (BOB, "reply", CAROL, U(wrong_root), U(ok)) in notifs(db)


def test_reply_to_a_record_that_is_not_a_post(db, writer):
    """The parent's record row exists but it has no post row (and no reply): valid shape."""
    alice_list = f.list_(ALICE)
    r = f.post(BOB, reply={"root": f.ref(alice_list), "parent": f.ref(alice_list)})
    index(writer, [alice_list, r])
    assert validity(db, r) == (None, None, None)


@pytest.mark.parametrize(
    ("allow", "setup", "violates"),
    [
        ([], [], True),
        (None, [], False),  # no allow field: anyone may reply
        ([f.rule("mentionRule")], [], True),
        ([f.rule("mentionRule")], ["mention"], False),
        ([f.rule("followerRule")], [], True),
        ([f.rule("followerRule")], ["bob follows alice"], False),
        ([f.rule("followerRule")], ["alice follows bob"], True),
        ([f.rule("followingRule")], ["alice follows bob"], False),
        ([f.rule("followingRule")], ["bob follows alice"], True),
        ([f.rule("listRule", list="LIST")], [], True),
        ([f.rule("listRule", list="LIST")], ["bob in list"], False),
        ([f.rule("listRule", list="LIST")], ["bob in other list"], True),
        ([f.rule("mentionRule"), f.rule("followingRule")], ["alice follows bob"], False),
        ([{"$type": "com.example.rule"}], [], True),  # an unknown rule allows no one
    ],
)
def test_threadgate_rules(db, writer, allow, setup, violates):
    lst, other = f.list_(ALICE), f.list_(ALICE)
    facets = [f.mention(BOB)] if "mention" in setup else []
    root = f.post(ALICE, "root", facets=facets)
    if allow is not None:
        allow = [{**r, "list": U(lst)} if r.get("list") == "LIST" else r for r in allow]
    events = [lst, other, root, f.threadgate(root, allow=allow)]
    if "bob follows alice" in setup:
        events.append(f.follow(BOB, ALICE))
    if "alice follows bob" in setup:
        events.append(f.follow(ALICE, BOB))
    if "bob in list" in setup:
        events.append(f.list_item(ALICE, lst, BOB))
    if "bob in other list" in setup:
        events.append(f.list_item(ALICE, other, BOB))
    r = reply(BOB, root, root)
    own = reply(ALICE, root, root)  # the thread's owner is never gated
    index(writer, [*events, r, own])
    assert validity(db, r) == ((False, True, None) if violates else (None, None, None))
    assert validity(db, own) == (None, None, None)
    # A violating reply notifies no one and is not counted, but its parent's counter row exists.
    assert ((ALICE, "reply", BOB, U(r), U(root)) in notifs(db)) is not violates
    assert reply_count(db, root) == (1 if violates else 2)


def test_gate_checks_see_follows_and_list_items_in_batch_order(db, db_url, writer):
    """A follow or list item written just before (or after) the reply in the same batch."""
    root = f.post(ALICE, "root")
    lst = f.list_(ALICE)
    gate = f.threadgate(root, allow=[f.rule("followerRule"), f.rule("listRule", list=U(lst))])
    follow = f.follow(BOB, ALICE)
    item = f.list_item(ALICE, lst, CAROL)
    r_bob, r_carol = reply(BOB, root, root), reply(CAROL, root, root)
    index(writer, [root, lst, gate, follow, item, r_bob, r_carol])
    assert validity(db, r_bob) == (None, None, None)
    assert validity(db, r_carol) == (None, None, None)

    late_bob, late_carol = reply(BOB, root, root), reply(CAROL, root, root)
    index(writer, [f.delete(follow), late_bob, f.delete(item), late_carol])
    assert validity(db, late_bob) == (False, True, None)
    assert validity(db, late_carol) == (False, True, None)

    before = [f.follow(BOB, ALICE), f.list_item(ALICE, lst, CAROL)]
    events = [root, lst, gate, reply(BOB, root, root), *before, reply(CAROL, root, root)]
    same_in_batches(db, db_url, writer, events)


def test_reply_is_cut_from_writes_its_gate_check_reads():
    """Creates earlier in the batch are seen by the gate check's SQL; removals are cut."""
    root = f.post(ALICE)
    r = reply(BOB, root, root)
    own = reply(ALICE, root, root)
    gone = f.delete

    def segments(events: list[dict]) -> list[int]:
        return [len(s) for s in split(decode(events))]

    assert segments([f.follow(BOB, ALICE), r, f.list_item(DAN, f.list_(DAN), BOB)]) == [3]
    assert segments([gone(f.follow(BOB, ALICE)), r]) == [1, 1]  # the replier's follows
    assert segments([r, gone(f.follow(ALICE, CAROL))]) == [1, 1]  # the owner's follows
    assert segments([f.update(f.follow(ALICE, CAROL), subject=BOB), r]) == [1, 1]
    assert segments([r, gone(f.list_item(DAN, f.list_(DAN), ERIN))]) == [1, 1]  # any list item
    assert segments([gone(f.follow(CAROL, DAN)), r]) == [2]  # follows the gate cannot ask about
    assert segments([gone(f.follow(BOB, ALICE)), own]) == [2]  # the owner's reply checks nothing
    assert segments([f.threadgate(root), r]) == [1, 1]
    assert segments([root, f.threadgate(root)]) == [2]  # the flag is set after the post step
    assert segments([root, gone(f.threadgate(root))]) == [1, 1]


# --- hidden replies and reply notifications -----------------------------------------------


def test_reply_notifications_reach_four_ancestors(db, writer):
    authors = [f.did(f"author{n}") for n in range(6)]
    chain = [f.post(authors[0], "root")]
    for a in authors[1:]:
        chain.append(reply(a, chain[0], chain[-1]))
    last = reply(ERIN, chain[0], chain[-1])
    index(writer, [*chain, last])
    got = {(n[0], n[4]) for n in notifs(db) if n[3] == U(last)}
    # Heights 1..4: authors 5, 4, 3, 2; author1 (height 5) and the root's author (6) are not.
    assert got == {(authors[k], U(chain[k])) for k in (5, 4, 3, 2)}


def test_one_notification_per_recipient_first_reason_wins(db, writer):
    root = f.post(ALICE, "root")
    mid = reply(BOB, root, root)
    # Alice is mentioned, quoted and an ancestor: one "mention"; Bob is parent and quoted author.
    last = reply(
        CAROL, root, mid, facets=[f.mention(ALICE), f.mention(CAROL)], embed=f.quote_embed(mid)
    )
    index(writer, [root, mid, last])
    mine = {n for n in notifs(db) if n[3] == U(last)}
    assert mine == {
        (ALICE, "mention", CAROL, U(last), None),
        (BOB, "quote", CAROL, U(last), U(mid)),
    }


def test_hidden_reply_stops_the_walk(db, writer):
    root = f.post(ALICE, "root")
    hidden = reply(BOB, root, root)
    gate = f.threadgate(root, hiddenReplies=[U(hidden)])
    below = reply(CAROL, root, hidden)
    deeper = reply(DAN, root, below)
    index(writer, [root, hidden, gate, below, deeper])
    assert {n[0] for n in notifs(db) if n[3] == U(below)} == {BOB}  # not Alice
    assert {n[0] for n in notifs(db) if n[3] == U(deeper)} == {CAROL, BOB}
    assert validity(db, below) == (None, None, None)  # hiding is not violating


def test_out_of_order_replies(db, writer):
    """A reply indexed before its parent: when the parent comes, upstream notifies the parent's
    ancestors on the descendant's behalf, but never twice per recipient and never the parent's
    author; so only ancestors the parent's own walk did not reach (above a hidden reply) get one."""
    root = f.post(ALICE, "root")
    mid = reply(BOB, root, root)
    late = reply(CAROL, root, mid)
    index(writer, [root, late])  # mid is missing: late is invalid and notifies no one
    assert validity(db, late) == (True, False, None)
    assert notifs(db) == set()
    index(writer, [mid])
    assert notifs(db) == {(ALICE, "reply", BOB, U(mid), U(root))}  # Alice once, Bob never


def test_out_of_order_replies_above_a_hidden_reply(db, writer):
    """The parent's own walk stops at the hidden reply; its descendants reach the root's author,
    who is notified once, as the author of the first descendant (earliest indexed)."""
    root = f.post(ALICE, "root")
    hidden = reply(BOB, root, root)
    gate = f.threadgate(root, hiddenReplies=[U(hidden)])
    x = reply(CAROL, root, hidden)
    d1 = f.create(DAN, "app.bsky.feed.post", x_reply(root, x), time="2025-10-30T12:00:01Z")
    d2 = f.create(ERIN, "app.bsky.feed.post", x_reply(root, x), time="2025-10-30T12:00:02Z")
    deep = reply(ERIN, root, d1)
    index(writer, [root, hidden, gate, d1, d2, deep])  # d1 first, though its URI sorts last
    before = notifs(db)
    index(writer, [x])
    assert notifs(db) - before == {
        (BOB, "reply", CAROL, U(x), U(hidden)),
        (ALICE, "reply", DAN, U(d1), U(root)),
    }


def x_reply(root: dict, parent: dict) -> dict:
    return {"text": "re", "reply": {"root": f.ref(root), "parent": f.ref(parent)}}


def test_out_of_order_in_one_batch_equals_one_by_one(db, db_url, writer):
    root = f.post(ALICE, "root")
    hidden = reply(BOB, root, root)
    gate = f.threadgate(root, hiddenReplies=[U(hidden)])
    x = reply(CAROL, root, hidden)
    d = reply(DAN, root, x)
    dd = reply(ERIN, root, d)
    for events in (
        [root, hidden, gate, dd, d, x],
        [root, hidden, gate, d, dd, x],
        [root, gate, dd, x, d, hidden],
        [root, hidden, x, d, dd, f.delete(x), gate],
        [root, hidden, gate, d, x, dd, f.update(x, text="edited"), f.delete(d)],
    ):
        same_in_batches(db, db_url, writer, events)


def test_thread_mute_filter(db, writer):
    root = f.post(ALICE, "root")
    mid = reply(BOB, root, root)
    ghost = f.post(CAROL)  # never indexed
    db.execute(
        'INSERT INTO thread_mute ("rootUri", "mutedByDid", "createdAt") VALUES '
        "(%s, %s, 'x'), (%s, %s, 'x'), (%s, %s, 'x')",
        (U(root), ALICE, U(root), BOB, U(ghost), CAROL),
    )
    last = reply(DAN, root, mid, facets=[f.mention(BOB)])
    like_ghost = f.like(DAN, ghost)
    index(writer, [root, mid, last, like_ghost, f.like(DAN, mid)])
    assert notifs(db) == {
        (BOB, "mention", DAN, U(last), None),  # a mention has no subject: never muted
        # The liked post is not indexed: nothing tells its thread, so nothing is muted.
        (CAROL, "like", DAN, U(like_ghost), U(ghost)),
    }


def test_thread_mute_sees_the_subject_as_it_was(db, db_url, writer):
    """A like of a reply in a muted thread, the reply deleted right after in the same batch: the
    like still saw the reply, so its notification is muted, as one event at a time."""
    root = f.post(ALICE, "root")
    r = reply(BOB, root, root)
    like = f.like(CAROL, r)
    for one_by_one in (True, False):
        truncate_all(db_url)
        db.execute(
            'INSERT INTO thread_mute ("rootUri", "mutedByDid", "createdAt") VALUES (%s, %s, %s)',
            (U(root), BOB, "x"),
        )
        index(writer, [root, r])
        index(writer, [like, f.delete(r)], one_by_one=one_by_one)
        assert notifs(db) == set()


def test_notifications_follow_updates_and_deletes(db, writer):
    root = f.post(ALICE, "root")
    r = reply(BOB, root, root, facets=[f.mention(CAROL)])
    answer = reply(ALICE, root, r)
    index(writer, [root, r, answer])
    assert notifs(db) == {
        (ALICE, "reply", BOB, U(r), U(root)),
        (CAROL, "mention", BOB, U(r), None),
        (BOB, "reply", ALICE, U(answer), U(r)),
    }
    index(writer, [f.update(r, facets=[f.mention(DAN)])])
    assert notifs(db) == {
        (ALICE, "reply", BOB, U(r), U(root)),
        (DAN, "mention", BOB, U(r), None),
        (BOB, "reply", ALICE, U(answer), U(r)),
    }
    index(writer, [f.delete(r)])
    # Only notifications *of* the deleted post go; the answer to it stays.
    assert notifs(db) == {(BOB, "reply", ALICE, U(answer), U(r))}
    assert reply_count(db, root) == 0


def test_replay_writes_nothing_twice(db, writer):
    root = f.post(ALICE, "root", facets=[f.mention(DAN)])
    hidden = reply(BOB, root, root)
    events = [
        root,
        hidden,
        f.threadgate(root, allow=[f.rule("followerRule")], hiddenReplies=[U(hidden)]),
        f.postgate(root),
        f.follow(CAROL, ALICE),
        reply(CAROL, root, hidden, embed=f.quote_embed(root, f.gallery("g1", "g2"))),
        reply(DAN, root, root),
    ]
    index(writer, events)
    before = snapshot(db)
    assert len(before["notification"]) == 4
    index(writer, events)
    index(writer, events, one_by_one=True)
    assert snapshot(db) == before


# --- quotes, embedding rules, gallery -------------------------------------------------------


def test_postgate_embedding_rules(db, writer):
    p = f.post(ALICE)
    gate = f.postgate(p)
    by_other = f.post(BOB, embed=f.quote_embed(p))
    by_author = f.post(ALICE, embed=f.quote_embed(p))
    with_media = f.post(CAROL, embed=f.quote_embed(p, f.gallery("m")))
    index(writer, [p, gate, by_other, by_author, with_media])
    assert validity(db, by_other) == (None, None, True)
    assert validity(db, with_media) == (None, None, True)
    assert validity(db, by_author) == (None, None, None)
    # The quote rows exist and count; only the notification is withheld.
    assert len(rows(db, "SELECT 1 FROM quote WHERE subject = %s", U(p))) == 3
    assert rows(db, 'SELECT "quoteCount" FROM post_agg WHERE uri = %s', U(p)) == [(3,)]
    assert {n for n in notifs(db) if n[1] == "quote"} == set()

    # Without a disable rule, or once the gate is gone, quoting is fine again.
    open_gate_post = f.post(ALICE)
    index(writer, [open_gate_post, f.postgate(open_gate_post, disable=False), f.delete(gate)])
    q1 = f.post(BOB, embed=f.quote_embed(open_gate_post))
    q2 = f.post(BOB, embed=f.quote_embed(p))
    index(writer, [q1, q2])
    assert validity(db, q1) == (None, None, None) and validity(db, q2) == (None, None, None)
    assert {n[3] for n in notifs(db) if n[1] == "quote"} == {U(q1), U(q2)}


def test_embedding_rules_apply_to_posts_only(db, writer):
    """A postgate at a feed generator's rkey does not gate embeds of the generator."""
    feed = f.feed_generator(ALICE, f.did("feed-service"))
    p = f.create(ALICE, "app.bsky.feed.post", {"text": "x"}, rkey=feed["rkey"])
    embed = f.post(BOB, embed=f.quote_embed(feed))
    index(writer, [feed, p, f.postgate(p), embed])
    assert validity(db, embed) == (None, None, None)
    assert rows(db, 'SELECT "embedUri" FROM post_embed_record') == [(U(feed),)]
    assert rows(db, "SELECT 1 FROM quote") == []  # not a post: no quote, no count


def test_quote_counting(db, writer):
    p = f.post(ALICE)
    q1 = f.post(BOB, embed=f.quote_embed(p))
    q2 = f.post(
        CAROL,
        embed=f.quote_embed(
            p,
            {
                "$type": "app.bsky.embed.external",
                "external": {"uri": "https://example.com", "title": "t", "description": "d"},
            },
        ),
    )
    index(writer, [p, q1, q2])
    assert rows(db, 'SELECT "quoteCount" FROM post_agg WHERE uri = %s', U(p)) == [(2,)]
    index(writer, [f.delete(q1)])
    assert rows(db, 'SELECT "quoteCount" FROM post_agg WHERE uri = %s', U(p)) == [(1,)]
    assert rows(db, "SELECT uri FROM quote") == [(U(q2),)]


def test_quote_and_quoted_deleted_in_one_batch(db, db_url, writer):
    """Deleting the quoted post first takes the quote row without a recount (upstream), so the
    order of the two deletes decides the counter, in a batch as one by one."""
    for first_quoted in (True, False):
        p = f.post(ALICE)
        q = f.post(BOB, embed=f.quote_embed(p))
        deletes = [f.delete(p), f.delete(q)] if first_quoted else [f.delete(q), f.delete(p)]
        same_in_batches(db, db_url, writer, [p, q, *deletes])
        assert rows(db, 'SELECT "quoteCount" FROM post_agg WHERE uri = %s', U(p)) == [
            (1 if first_quoted else 0,)
        ]


def test_gallery_embeds(db, writer):
    gallery = f.gallery("a", "b", "c")
    gallery["items"].insert(1, {"$type": "com.example.gallery#sticker", "name": "x"})
    plain = f.post(ALICE, embed=gallery)
    quoted = f.post(BOB)
    mixed = f.post(CAROL, embed=f.quote_embed(quoted, f.gallery("d")))
    index(writer, [plain, quoted, mixed])
    assert rows(
        db,
        'SELECT "postUri", position, "imageCid", alt FROM post_embed_gallery_image'
        ' ORDER BY "postUri", position',
    ) == sorted(
        [
            # an unknown item is skipped but keeps its position
            (U(plain), "0", f.blob_cid("a"), "a"),
            (U(plain), "2", f.blob_cid("b"), "b"),
            (U(plain), "3", f.blob_cid("c"), "c"),
            (U(mixed), "0", f.blob_cid("d"), "d"),
        ]
    )
    assert rows(db, "SELECT uri FROM quote") == [(U(mixed),)]
    assert rows(db, "SELECT 1 FROM post_embed_image") == []
    index(writer, [f.delete(plain), f.update(mixed, embed=f.quote_embed(quoted))])
    assert rows(db, "SELECT 1 FROM post_embed_gallery_image") == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda g: g["items"][0].pop("aspectRatio"), "aspectRatio is required"),
        (lambda g: g["items"][0].pop("$type"), "has no $type"),
        (lambda g: g["items"][0]["image"].update(size=2_000_001), "larger than 2000000"),
        (lambda g: g["items"][0]["image"].update(mimeType="video/mp4"), "is not accepted"),
        (lambda g: g.update(items=g["items"] * 21), "more than 20 items"),
        (lambda g: g.pop("items"), "items is required"),
    ],
)
def test_gallery_lexicon(change: Callable[[dict], Any], reason: str):
    gallery = f.gallery("a")
    change(gallery)
    for embed in (gallery, f.quote_embed(f.post(BOB), gallery)):
        raw = orjson.dumps(f.post(ALICE, embed=embed))
        ev = decode_entry("firehose_live", "1-0", {b"event": raw})
        assert not ev.ok and reason in (ev.error or ""), ev.error
    assert decode([f.post(ALICE, embed=f.gallery("a"))])[0].ok


# --- any order of thread events in one batch ------------------------------------------------


@st.composite
def threads(draw: st.DrawFn) -> list[dict]:
    """Threads over three authors with gates, hidden replies, follows, list items, out-of-order
    replies, quotes, updates and deletes."""
    dids = [ALICE, BOB, CAROL]
    lists = {d: f.list_(d) for d in dids}
    planned: list[dict] = []  # posts, in thread order
    for _ in range(draw(st.integers(1, 7))):
        author = draw(st.sampled_from(dids))
        if not planned or draw(st.booleans()):
            planned.append(f.post(author, facets=[f.mention(draw(st.sampled_from(dids)))]))
        else:
            parent = draw(st.sampled_from(planned))
            root = parent["record"].get("reply", {}).get("root") or f.ref(parent)
            embed = f.quote_embed(draw(st.sampled_from(planned))) if draw(st.booleans()) else None
            fields = {"embed": embed} if embed else {}
            planned.append(
                f.post(author, "re", reply={"root": root, "parent": f.ref(parent)}, **fields)
            )
    events: list[dict] = list(lists.values())
    for p in draw(st.permutations(planned)):  # any order: descendants before ancestors too
        events.append(p)
        extra = draw(st.sampled_from(["", "", "tg", "pg", "follow", "item", "upd", "del"]))
        author = p["did"]
        other = draw(st.sampled_from(dids))
        if extra == "tg":
            rules = [f.rule("followerRule"), f.rule("listRule", list=U(lists[author]))]
            hidden = [U(draw(st.sampled_from(planned)))]
            events.append(
                f.threadgate(p, allow=rules[: draw(st.integers(0, 2))], hiddenReplies=hidden)
            )
        elif extra == "pg":
            events.append(f.postgate(p))
        elif extra == "follow":
            events.append(f.follow(other, author))
        elif extra == "item":
            events.append(f.list_item(author, lists[author], other))
        elif extra == "upd":
            events.append(f.update(p, text="edited"))
        elif extra == "del":
            events.append(f.delete(p))
    return events


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=threads())
def test_thread_batches_equal_one_by_one(db: psycopg.Connection, db_url: str, events: list[dict]):
    writer = PostgresWriter(shared_pool(db_url, 4, 0))
    same_in_batches(db, db_url, writer, events)


# --- the genuine upstream indexer on the same scenarios -------------------------------------


def _scenarios() -> dict[str, list[dict]]:
    root = f.post(ALICE, "root", facets=[f.mention(BOB)])
    lst = f.list_(ALICE)
    hidden = reply(BOB, root, root)
    x = reply(CAROL, root, hidden)
    d1, d2 = reply(DAN, root, x), reply(DAN, root, x)
    gate = f.threadgate(root, allow=[f.rule("mentionRule"), f.rule("listRule", list=U(lst))])
    gated = f.post(BOB)
    ghost = f.post(ERIN)
    return {
        "gates_rules_and_quotes": [
            lst,
            gate,
            root,
            f.list_item(ALICE, lst, DAN),
            reply(BOB, root, root),  # mentioned
            reply(CAROL, root, root),  # violates
            reply(DAN, root, root),  # in the list
            gated,
            f.postgate(gated),
            f.post(ALICE, embed=f.quote_embed(gated)),
            f.post(BOB, embed=f.quote_embed(gated, f.gallery("a", "b"))),
            f.post(CAROL, embed=f.quote_embed(root)),
            f.update(gate, allow=[f.rule("followingRule")]),
            f.follow(ALICE, CAROL),
            reply(CAROL, root, root),  # followed by the owner now
            reply(ERIN, ghost, ghost),
        ],
        "hidden_and_out_of_order": [
            root,
            hidden,
            f.threadgate(root, hiddenReplies=[U(hidden)]),
            d1,
            d2,
            reply(ALICE, root, d1),
            x,
            f.update(x, text="edited"),
            f.delete(d2),
            reply(BOB, root, d1),
        ],
    }


def _table_rows(url: str, schema: str = "public") -> dict[str, Counter]:
    masked = {"notification": {"id"}}
    out: dict[str, Counter] = {}
    with psycopg.connect(url) as conn:
        conn.execute(f'SET search_path = "{schema}", public')
        for table in (
            "post",
            "thread_gate",
            "post_gate",
            "post_embed_gallery_image",
            "post_embed_record",
            "quote",
            "feed_item",
            "notification",
            "post_agg",
            "profile_agg",
            "record",
        ):
            cur = conn.execute(f'SELECT * FROM "{table}" LIMIT 0')
            cols = [d.name for d in cur.description or [] if d.name not in masked.get(table, ())]
            sql = f'SELECT {", ".join(f"{chr(34)}{c}{chr(34)}" for c in cols)} FROM "{table}"'
            out[table] = Counter(repr(r) for r in conn.execute(sql).fetchall())
    return out


@pytest.mark.timeout(900)
def test_scenarios_equal_upstream(
    upstream_package: Path, fresh_db: Callable[[], str], tmp_path: Path
) -> None:
    """Each scenario, applied by the genuine indexer event by event, and here one event at a
    time and as one batch: the post and gate tables are equal row for row."""
    from .upstream_node import apply_upstream

    scenarios = _scenarios()
    jobs = []
    for name, events in scenarios.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(ev) + b"\n" for ev in events))
        jobs.append((name, path))
    upstream_url = fresh_db()
    summaries = apply_upstream(upstream_url, jobs)
    assert [s["skipped"] for s in summaries] == [[]] * len(jobs)
    for name, events in scenarios.items():
        theirs = _table_rows(upstream_url, name)
        assert sum(theirs["notification"].values()) > 3
        for one_by_one in (True, False):
            ours_url = fresh_db()
            init_db(ours_url)
            writer = PostgresWriter(shared_pool(ours_url, 2, 0))
            index(writer, events, one_by_one=one_by_one)
            mine = _table_rows(ours_url)
            for table, want in theirs.items():
                assert mine[table] == want, (
                    f"{name}, {table}: only upstream {list((want - mine[table]).elements())}, "
                    f"only ours {list((mine[table] - want).elements())}"
                )
