"""Account and identity events → ``actor``; a deleted account's indexed data goes.

What upstream (``subscription.ts``, ``indexing/index.ts``) does with them, and what we do:

* **account**: the firehose parser drops an event whose status is not one of takendown,
  suspended, deleted, deactivated; ``active=false`` with ``deleted`` runs ``deleteActor``;
  anything else is ``updateActorStatus``: active → ``"upstreamStatus"`` NULL; deactivated,
  suspended, takendown → that word; inactive without a status throws. It is a plain UPDATE:
  nothing happens to an actor without a row. Statuses arrive in any capitalisation; decode
  lower-cases them.
* **deleteActor** removes the actor row, what ``unindexActor`` removes (the did's rows in the
  record tables listed below, the notifications it authored, the ``duplicate_record`` rows of its
  records, its ``record`` rows) and the notifications it received. Upstream first asks the DID's
  PDS whether the repo is really gone; we cannot, and trust the event. Unlike upstream, which
  leaves counters stale until its next recount of each, the counters the removed rows counted
  move with them (``_agg``), so they stay exact.
* **identity**: upstream resolves the DID document and keeps the handle only if it resolves back
  to the DID (NULL otherwise), and sets ``"indexedAt"`` = the event time, creating the row when
  missing. With ENABLE_DID_RESOLUTION (the default) we do the same, off the batch: the writer
  queues a check (handle_checks.py) and nothing here touches ``actor``. With it off we take
  the handle from the event instead (decode lower-cases it and marks an invalid one, stored as
  NULL); another actor holding the same handle loses it (``handle`` is UNIQUE). An event
  without a handle tells nothing about it: it only creates a missing row. ``SET_HANDLE`` is also
  how a resolved handle is stored.

Within a segment (segments.py) the actor events run first, in stream order, before the segment's
record operations; an account deletion always starts a new segment, so no record operation that
precedes it in the stream runs after it.

Replays: account and identity events carry no repo revision, so the (time, seq) of the last one
applied per DID is kept in ``bsky_indexer.actor_event``, and one that is not newer is dropped, as
ordering.py drops record operations. Without it a batch delivered again would re-run a deletion
whose later records the revision guard then refuses to restore.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from flows.events import ACCOUNT, IDENTITY, INVALID_HANDLE, Event

from .schema import PRIVATE_SCHEMA

EVENT_TYPES = (ACCOUNT, IDENTITY)
STORED_STATUSES = frozenset(("deactivated", "suspended", "takendown"))
DELETED = "deleted"
_KNOWN_STATUSES = STORED_STATUSES | {DELETED}

# Kinds of effect: consecutive events of one kind share a statement.
_STATUS, _HANDLE, _DELETE = "status", "handle", "delete"

_LAST = sql.SQL("SELECT did, time, seq FROM {} WHERE did = ANY(%s) ORDER BY did FOR UPDATE").format(
    sql.Identifier(PRIVATE_SCHEMA, "actor_event")
)
_CLAIM = sql.SQL(
    "INSERT INTO {} AS a (did, time, seq)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) ORDER BY 1"
    " ON CONFLICT (did) DO UPDATE SET time = excluded.time, seq = excluded.seq"
    " WHERE (a.time, a.seq) < (excluded.time, excluded.seq)"
).format(sql.Identifier(PRIVATE_SCHEMA, "actor_event"))

SET_STATUS = 'UPDATE actor SET "upstreamStatus" = %s WHERE did = %s'

# The CTE is read before the insert, so the handle is freed before the row claiming it is written.
SET_HANDLE = """
WITH cleared AS (
  UPDATE actor SET handle = NULL
  WHERE %(handle)s::varchar IS NOT NULL AND handle = %(handle)s AND did <> %(did)s
  RETURNING did
)
INSERT INTO actor (did, handle, "indexedAt")
SELECT %(did)s, %(handle)s, %(ts)s FROM (SELECT count(*) FROM cleared) freed
ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, "indexedAt" = excluded."indexedAt"
WHERE NOT %(absent)s
"""

_BY_CREATOR = "creator = ANY({dids})"
_POSTS = f'"postUri" IN (SELECT uri FROM post WHERE {_BY_CREATOR})'

# upstream's deleteActor, table by table; feed_item, quote, op_thread_reply, starter_pack,
# verification, the aggregate rows and actor_sync are not in its list and stay.
DELETE_ACTORS = f"""
DELETE FROM actor WHERE did = ANY({{dids}});
DELETE FROM profile WHERE {_BY_CREATOR};
WITH gone AS (DELETE FROM follow WHERE {_BY_CREATOR} RETURNING creator, "subjectDid")
INSERT INTO _agg (tbl, col, key, delta)
SELECT 'profile_agg', 'followersCount', "subjectDid", -1 FROM gone
UNION ALL SELECT 'profile_agg', 'followsCount', creator, -1 FROM gone;
WITH gone AS (DELETE FROM repost WHERE {_BY_CREATOR} RETURNING subject)
INSERT INTO _agg (tbl, col, key, delta) SELECT 'post_agg', 'repostCount', subject, -1 FROM gone;
WITH gone AS (DELETE FROM "like" WHERE {_BY_CREATOR} RETURNING subject)
INSERT INTO _agg (tbl, col, key, delta) SELECT 'post_agg', 'likeCount', subject, -1 FROM gone;
DELETE FROM feed_generator WHERE {_BY_CREATOR};
DELETE FROM labeler WHERE {_BY_CREATOR};
DELETE FROM list_item WHERE {_BY_CREATOR};
DELETE FROM reference_list_opt_out WHERE {_BY_CREATOR};
DELETE FROM list WHERE {_BY_CREATOR};
DELETE FROM actor_block WHERE {_BY_CREATOR};
DELETE FROM list_block WHERE {_BY_CREATOR};
DELETE FROM post_embed_image WHERE {_POSTS};
DELETE FROM post_embed_external WHERE {_POSTS};
DELETE FROM post_embed_record WHERE {_POSTS};
DELETE FROM post_embed_video WHERE {_POSTS};
DELETE FROM post_embed_gallery_image WHERE {_POSTS};
-- Counted as collections/post.py counts a post delete; its quote rows stay, so do their counts.
WITH gone AS (
  DELETE FROM post WHERE {_BY_CREATOR}
  RETURNING creator, "replyParent", "violatesThreadGate"
)
INSERT INTO _agg (tbl, col, key, delta)
SELECT 'profile_agg', 'postsCount', creator, -1 FROM gone
UNION ALL
SELECT 'post_agg', 'replyCount', "replyParent", -1 FROM gone
WHERE "replyParent" IS NOT NULL AND "violatesThreadGate" IS NOT TRUE;
DELETE FROM thread_gate WHERE {_BY_CREATOR};
DELETE FROM post_gate WHERE {_BY_CREATOR};
DELETE FROM notification WHERE author = ANY({{dids}});
DELETE FROM duplicate_record
WHERE "duplicateOf" IN (SELECT uri FROM record WHERE did = ANY({{dids}}));
DELETE FROM record WHERE did = ANY({{dids}});
DELETE FROM notification WHERE did = ANY({{dids}});
"""


def deletes_actor(ev: Event) -> bool:
    """An account event that removes the actor's indexed data."""
    return ev.type == ACCOUNT and ev.active is False and ev.status == DELETED


def _effect(ev: Event, store_handles: bool) -> tuple[str, tuple] | None:
    """What one event does: (kind, parameters), or None when upstream ignores it (or when its
    handle is left to DID resolution)."""
    if ev.type == IDENTITY:
        if not store_handles:
            return None
        handle = None if ev.handle == INVALID_HANDLE else ev.handle
        absent = ev.handle is None
        return _HANDLE, ({"did": ev.did, "handle": handle, "ts": ev.time, "absent": absent},)
    if ev.type != ACCOUNT or (ev.status is not None and ev.status not in _KNOWN_STATUSES):
        return None
    if deletes_actor(ev):
        return _DELETE, (ev.did,)
    if ev.active:
        return _STATUS, ((None, ev.did),)
    if ev.status in STORED_STATUSES:
        return _STATUS, ((ev.status, ev.did),)
    return None  # inactive without a stored status: upstream throws and writes nothing


def fresh(cur: psycopg.Cursor, events: Sequence[Event]) -> list[Event]:
    """The events newer, per DID, than the last one applied; recorded as applied."""
    if not events:
        return []
    cur.execute(_LAST, (sorted({ev.did for ev in events}),))
    last: dict[str, tuple[str, int]] = {did: (t, s) for did, t, s in cur.fetchall()}
    out = []
    for ev in events:
        key = (ev.time, ev.seq)
        if ev.did in last and key <= last[ev.did]:
            continue
        last[ev.did] = key
        out.append(ev)
    if out:
        dids = sorted({ev.did for ev in out})
        cur.execute(_CLAIM, (dids, [last[d][0] for d in dids], [last[d][1] for d in dids]))
    return out


def apply(cur: psycopg.Cursor, events: Sequence[Event], store_handles: bool = True) -> None:
    """Apply the fresh account and identity events in order; consecutive events of one kind
    share a statement (pipelined), which gives the same rows as one at a time. Without
    ``store_handles`` identity events are only recorded as applied (for the replay guard)."""
    kind: str | None = None
    run: list = []
    for ev in fresh(cur, events):
        effect = _effect(ev, store_handles)
        if effect is None:
            continue
        if effect[0] != kind:
            _flush(cur, kind, run)
            kind, run = effect[0], []
        run.extend(effect[1])
    _flush(cur, kind, run)


def _flush(cur: psycopg.Cursor, kind: str | None, run: list) -> None:
    if not run:
        return
    if kind == _STATUS:
        cur.executemany(SET_STATUS, run)
    elif kind == _HANDLE:
        cur.executemany(SET_HANDLE, run)
    elif kind == _DELETE:
        # A literal, not a parameter: a script of several statements takes no parameters.
        dids = sql.Literal(sorted(set(run)))
        cur.execute(sql.SQL(DELETE_ACTORS).format(dids=dids))
