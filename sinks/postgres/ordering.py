"""The repo-revision guard: an operation older than one already applied to its record is dropped.

Two consumers of one stream can hand an older operation on a record to the database after a newer
one, and a batch that committed just before a crash is delivered again after it. Every record
operation carries its repo's revision (a TID, so revisions compare as strings); the last one
applied per record URI is kept in ``bsky_indexer.record_rev``, deletes included (as tombstones).
Inside the batch's transaction each segment's record operations claim their URI's row: an
operation whose revision is not newer than the stored one (an older one, or the same one
delivered again) is dropped before the collection steps run, so it changes nothing at all: no
row, no counter, no notification. The upsert locks the URI's row until the batch commits, so
two transactions racing on one record are ordered too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from flows.events import Event

from .schema import PRIVATE_SCHEMA, create_private
from .staging import text_array

TABLE = sql.Identifier(PRIVATE_SCHEMA, "record_rev")

# In URI order, so concurrent batches lock shared rows in one order.
_CLAIM = sql.SQL(
    "INSERT INTO {} AS r (uri, rev)"
    " SELECT * FROM unnest(%s::text[], %s::text[]) ORDER BY 1"
    " ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev WHERE r.rev < excluded.rev"
    " RETURNING uri"
).format(TABLE)

_ready: set[str] = set()  # databases (by connection string) known to have the table
_ready_lock = threading.Lock()


def ensure_table(pool: ConnectionPool) -> None:
    """Create our tables once per process and database when missing, in their own transaction.

    A database that refuses (no CREATE privilege) is reported as a connection-level failure, so
    the sink keeps retrying with backoff until an operator grants it or runs ``bsky-indexer db
    init``, instead of dead-lettering good events."""
    key = pool.conninfo
    if key in _ready:
        return
    with _ready_lock:
        if key in _ready:
            return
        try:
            with pool.connection() as conn, conn.transaction():
                create_private(conn)
        except psycopg.Error as exc:
            if exc.sqlstate is None or exc.sqlstate[:2] in ("08", "40", "53", "57"):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise psycopg.OperationalError(
                f"cannot create the {PRIVATE_SCHEMA} tables ({exc.sqlstate}: {first}); grant "
                "CREATE on the database to the indexer's user or run `bsky-indexer db init`"
            ) from exc
        _ready.add(key)


def fresh(cur: psycopg.Cursor, segment: Sequence[Event]) -> list[Event]:
    """The segment's events newer than what was applied to their records, recorded as applied.

    A segment holds each URI at most once (segments.py), so one statement decides them all."""
    guarded = [ev for ev in segment if ev.uri and ev.rev]
    if not guarded:
        return list(segment)
    uris = text_array(ev.uri or "" for ev in guarded)
    cur.execute(_CLAIM, (uris, text_array(ev.rev or "" for ev in guarded)))
    won = {uri for (uri,) in cur.fetchall()}
    return [ev for ev in segment if not (ev.uri and ev.rev) or ev.uri in won]
