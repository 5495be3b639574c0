"""Counters (``post_agg``, ``profile_agg``) move by a batch's summed deltas in one upsert per
table (sinks/postgres/staging.py): an existing row adds them, a fresh row starts at 0, and no
counter goes below 0, also when a delete meets a row another writer left short or missing.
"""

from __future__ import annotations

import psycopg

from sinks.postgres.pool import shared_pool
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexing import index, rows

ALICE, BOB, CAROL = f.did("alice"), f.did("bob"), f.did("carol")

POST_AGG = 'SELECT "likeCount", "repostCount", "replyCount", "quoteCount" FROM post_agg'
PROFILE_AGG = 'SELECT did, "followersCount", "followsCount", "postsCount" FROM profile_agg'


def test_deltas_add_to_existing_rows_and_start_fresh_ones_at_zero(
    db: psycopg.Connection, db_url: str
) -> None:
    writer = PostgresWriter(shared_pool(db_url, 4, 0))
    post = f.post(ALICE)
    like = f.like(BOB, post)
    index(writer, [post, like])
    index(writer, [f.like(CAROL, post), f.repost(CAROL, post), f.delete(like)])
    assert rows(db, POST_AGG) == [(1, 1, 0, 0)]


def test_a_delete_never_takes_a_counter_below_zero(db: psycopg.Connection, db_url: str) -> None:
    writer = PostgresWriter(shared_pool(db_url, 4, 0))
    post = f.post(ALICE)
    like = f.like(BOB, post)
    follow = f.follow(BOB, CAROL)
    index(writer, [post, like, follow])
    # Rows another writer left missing (post_agg) or short (profile_agg).
    db.execute("DELETE FROM post_agg")
    db.execute('UPDATE profile_agg SET "followersCount" = 0, "followsCount" = 0')
    # A fresh post_agg row whose likes go -1 while its reposts go +1 in the same batch.
    index(writer, [f.delete(like), f.repost(CAROL, post), f.delete(follow)])
    assert rows(db, POST_AGG) == [(0, 1, 0, 0)]
    assert sorted(rows(db, PROFILE_AGG)) == sorted(
        [(ALICE, 0, 0, 1), (BOB, 0, 0, 0), (CAROL, 0, 0, 0)]
    )
