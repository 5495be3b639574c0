"""A reply or quote of a post written earlier in its segment is not cut from it (segments.py):
the post step inserts such replies in waves after their parents (collections/post.py), and the
insert script leaves out the statements no record of the segment needs (staging.py). Nor is a
gate created after its post, nor a create of what an earlier record only watches; a gate deleted
after its post still is. Each case is written as one batch and one event at a time; the tables
must be equal, with fewer segments than the old one-cut-per-dependency rule gave.
"""

from __future__ import annotations

import psycopg
import pytest

from sinks.postgres.pool import shared_pool
from sinks.postgres.schema import truncate_all
from sinks.postgres.writer import PostgresWriter

from . import factory as f
from .indexing import decode, index, rows, snapshot

A, B, C = (f.did(n) for n in ("a", "b", "c"))


def _chain() -> list[dict]:
    root = f.post(A, "root", facets=[f.mention(C)])
    parent = f.reply(B, root, root)
    child = f.reply(C, root, parent)
    grandchild = f.reply(A, root, child)
    quote = f.post(B, "q", embed=f.quote_embed(child, f.gallery("g1", "g2")))
    like = f.like(C, quote)
    return [root, parent, child, grandchild, quote, like]


def _invalid_parent() -> list[dict]:
    # The parent replies to a post never indexed, so its root is invalid; its reply inherits
    # that from the parent's post row, written in the same segment.
    ghost = f.post(A, "never indexed")
    parent = f.reply(B, ghost, ghost)
    return [parent, f.reply(C, ghost, parent)]


def _updated_parent() -> list[dict]:
    root = f.post(A, "root")
    return [
        root,
        f.update(root, text="edited", createdAt="2025-10-30T10:00:00.000Z"),
        f.reply(B, root, root),
        f.post(C, "q", embed=f.quote_embed(root)),
    ]


def _gates_after_post() -> list[dict]:
    # Gates created after their post set its flags after the post step; a repost before its
    # subject only watches it (only a delete or update of the subject would cut).
    updated = f.post(B, "to edit")
    root = f.post(A, "root")
    return [
        updated,
        f.repost(C, root),
        root,
        f.threadgate(root, allow=[f.rule("followerRule")]),
        f.postgate(root),
        f.update(updated, text="edited"),
        f.threadgate(updated, allow=[]),
    ]


@pytest.mark.parametrize(
    ("events", "segments"),
    [(_chain(), 1), (_invalid_parent(), 1), (_updated_parent(), 2), (_gates_after_post(), 2)],
    ids=["chain", "invalid-parent", "updated-parent", "gates-after-post"],
)
def test_in_segment_replies_equal_one_at_a_time(
    db: psycopg.Connection, db_url: str, events: list[dict], segments: int
) -> None:
    writer = PostgresWriter(shared_pool(db_url, 4, 0))
    truncate_all(db_url)
    index(writer, events, one_by_one=True)
    expected = snapshot(db)
    truncate_all(db_url)
    stats = writer.write(decode(events))
    assert stats.segments == segments
    assert snapshot(db) == expected


def test_reply_to_invalid_parent_in_segment_is_invalid(db: psycopg.Connection, db_url: str) -> None:
    events = _invalid_parent()
    PostgresWriter(shared_pool(db_url, 4, 0)).write(decode(events))
    assert rows(db, 'SELECT "invalidReplyRoot" FROM post') == [(True,), (True,)]


def test_gate_removed_after_its_post_still_cuts(db: psycopg.Connection, db_url: str) -> None:
    # Deleting a gate clears its post's flag: in one segment the delete step would run before
    # the post is in, and the flag would stay NULL instead of false.
    writer = PostgresWriter(shared_pool(db_url, 4, 0))
    root = f.post(A, "root")
    gates = [f.threadgate(root, allow=[]), f.postgate(root)]
    batch = [root, *(f.delete(g) for g in gates)]
    truncate_all(db_url)
    index(writer, gates)
    index(writer, batch, one_by_one=True)
    expected = snapshot(db)
    assert rows(db, 'SELECT "hasThreadGate", "hasPostGate" FROM post') == [(False, False)]
    truncate_all(db_url)
    index(writer, gates)
    assert writer.write(decode(batch)).segments == 2
    assert snapshot(db) == expected
