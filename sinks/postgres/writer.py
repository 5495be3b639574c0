"""Apply one batch of decoded events to the AppView tables in one transaction.

Plain class, no bytewax: the sink adapter (sink.py) calls ``write`` and acks only after it returns.
First, with DID resolution on, queue the handle checks the batch asks for (handle_checks.py). Per
segment (segments.py): apply its account and identity events (actors.py), COPY the record
events into ``_ev``, take out the updates upstream refuses (dead-lettered once the batch commits)
and the events not newer than their record's last (ordering.py), run the delete step of every
collection present, promote duplicates of deleted rows, run the insert step; per batch: counters
and ``actor_sync``. A handful of round trips per segment, none per row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import psycopg

from flows.datamodel import normalize_datetime_always
from flows.events import COMMIT_OPS, CREATE, DELETE, RECORD_OPS, UPDATE, Event
from flows.lexicon import validate_record

from . import actors, handle_checks, ordering, staging
from .collections import BY_NSID, post
from .segments import split

PROMOTING = [nsid for nsid, m in BY_NSID.items() if m.PROMOTES]


@dataclass
class WriteStats:
    events: int = 0
    records: int = 0
    segments: int = 0
    promoted: int = 0
    # rows written per (table, op); a collection's own table is named by its NSID
    tables: Counter[tuple[str, str]] = field(default_factory=Counter)


def _sort_at(ts: str, c: str) -> str:
    # Upstream compares the two ISO strings as strings.
    return ts if ts < c else c


def _ev_row(idx: int, ev: Event) -> tuple:
    json = orjson.dumps(ev.record).decode() if ev.record is not None else None
    c = ev.created_at or (normalize_datetime_always(None) if ev.record is not None else None)
    return (
        idx,
        ev.type,
        ev.uri,
        ev.did,
        ev.collection,
        ev.rkey,
        ev.cid,
        json,
        ev.time,
        c,
        _sort_at(ev.time, c) if c else None,
        None,
    )


class PostgresWriter:
    """Writes batches through connections taken from a shared psycopg pool, one at a time."""

    def __init__(
        self,
        pool: psycopg.pool.ConnectionPool,  # type: ignore[name-defined]
        resolve_handles: bool = False,
    ):
        self.pool = pool
        # On: identity events only queue a handle check (handle_checks.py) instead of storing
        # their handle. The sink passes ENABLE_DID_RESOLUTION; off here for direct callers.
        self.resolve_handles = resolve_handles

    def write(self, events: Sequence[Event]) -> WriteStats:
        """Apply the good events of the batch; raises on failure, having changed nothing. Once
        committed, an update upstream refuses (it changed nothing) has its ``error`` set, for
        the sink to dead-letter."""
        stats = WriteStats(events=len(events))
        records = [
            ev
            for ev in events
            if ev.ok
            and (
                ev.type in actors.EVENT_TYPES
                or ev.type in RECORD_OPS
                and ev.collection in BY_NSID
                and (ev.type == "delete" or ev.record is not None)
            )
        ]
        stats.records = sum(ev.type in RECORD_OPS for ev in records)
        sync = _last_commit_per_did(events)
        refused: list[tuple[Event, str]] = []  # updates upstream refuses, with the reason
        ordering.ensure_table(self.pool)
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(staging.TEMP_TABLES)
            if self.resolve_handles:
                handle_checks.enqueue(cur, events)
            segments = split(records)
            stats.segments = len(segments)
            for n, segment in enumerate(segments):
                if n:
                    cur.execute(staging.NEW_SEGMENT)
                stats.promoted += self._apply_segment(cur, segment, stats.tables, refused)
            cur.execute(staging.APPLY_AGGREGATES)
            if sync:
                dids = sorted(sync)
                cur.execute(
                    staging.UPSERT_ACTOR_SYNC,
                    (
                        staging.text_array(dids),
                        staging.text_array(sync[d][0] for d in dids),
                        staging.text_array(sync[d][1] for d in dids),
                    ),
                )
                stats.tables["actor_sync", "upsert"] += cur.rowcount
        # Only now: a batch that failed and is written again must decide them again.
        for ev, reason in refused:
            ev.error = reason
        return stats

    def _apply_segment(
        self,
        cur: psycopg.Cursor,
        segment: list[Event],
        tables: Counter[tuple[str, str]],
        refused: list[tuple[Event, str]],
    ) -> int:
        # Account and identity events first (segments.py keeps that equal to stream order).
        actor_events = [ev for ev in segment if ev.type in actors.EVENT_TYPES]
        actors.apply(cur, actor_events, store_handles=not self.resolve_handles)
        staged = [ev for ev in segment if ev.type in RECORD_OPS]
        if not staged:
            return 0
        with cur.copy(staging.COPY_EV) as copy:
            for idx, ev in enumerate(staged):
                copy.write_row(_ev_row(idx, ev))
        # Refused before the revision guard claims them: a refused update changes nothing at
        # all, and delivered again it is refused (and dead-lettered) again.
        out: set[int] = set()
        if any(ev.type == UPDATE and ev.collection in staging.REFUSING for ev in staged):
            out = self._refuse(cur, staged, refused)
        kept = [ev for idx, ev in enumerate(staged) if idx not in out]
        fresh = {id(ev) for ev in ordering.fresh(cur, kept)}
        stale = [idx for idx, ev in enumerate(staged) if idx not in out and id(ev) not in fresh]
        if stale:
            cur.execute(staging.DROP_STAGED, (stale,))
        segment = [ev for ev in kept if id(ev) in fresh]
        if not segment:
            return 0
        changed = frozenset(ev.collection or "" for ev in segment if ev.type != CREATE)
        cur.execute(staging.delete_script(changed, any(ev.type == DELETE for ev in segment)))
        promoted: frozenset[str] = frozenset()
        count = 0
        if any(ev.type == DELETE and ev.collection in PROMOTING for ev in segment):
            count, promoted = self._promote(cur)
        written = [ev for ev in segment if ev.type != DELETE]
        position = {id(ev): idx for idx, ev in enumerate(staged)}
        script = staging.insert_script(
            frozenset(ev.collection or "" for ev in written) | promoted,
            staging.features(written),
            any(ev.type == UPDATE for ev in written),
            bool(changed),
            post.waves([(position[id(ev)], ev) for ev in written if ev.collection == post.NSID]),
        )
        cur.execute(script + staging.ROW_COUNTS)
        while cur.nextset():  # the counts are the script's last result
            pass
        for collection, op, n in cur.fetchall():
            tables[collection, op] += n
        return count

    def _refuse(
        self, cur: psycopg.Cursor, staged: list[Event], refused: list[tuple[Event, str]]
    ) -> set[int]:
        """Take the updates upstream refuses out of ``_ev`` into ``refused``; their positions."""
        updated = frozenset(ev.collection for ev in staged if ev.type == UPDATE)
        cur.execute(staging.refusal_script(updated & staging.REFUSING))
        while cur.nextset():  # the refused rows are the script's last result
            pass
        out = set()
        for idx, reason in cur.fetchall():
            refused.append((staged[idx], reason))
            out.add(idx)
        return out

    def _promote(self, cur: psycopg.Cursor) -> tuple[int, frozenset[str]]:
        """Stage the oldest duplicate of each deleted row as op 'promote', as upstream does."""
        cur.execute(staging.PROMOTION_CANDIDATES, (PROMOTING,))
        rows = cur.fetchall()
        staged = []
        for replaces, uri, cid, did, json, indexed_at, idx, collection in rows:
            record = orjson.loads(json)
            if validate_record(collection, record) is not None:
                continue  # upstream only promotes a duplicate that still matches its schema
            c = normalize_datetime_always(record.get("createdAt"))
            rkey = uri.rsplit("/", 1)[-1]
            staged.append(
                (
                    idx,
                    "promote",
                    uri,
                    did,
                    collection,
                    rkey,
                    cid,
                    json,
                    indexed_at,
                    c,
                    _sort_at(indexed_at, c),
                    replaces,
                )
            )
        if not staged:
            return 0, frozenset()
        with cur.copy(staging.COPY_EV) as copy:
            for row in staged:
                copy.write_row(row)
        cur.execute(staging.KEEP_NOTIFS_OF_REPLACED)
        return len(staged), frozenset(r[4] for r in staged)


def _last_commit_per_did(events: Sequence[Event]) -> dict[str, tuple[str, str]]:
    """actor_sync keeps the newest commit seen per repo; upstream records it even for an event
    whose record was rejected, so any event with a readable commit counts."""
    out: dict[str, tuple[str, str]] = {}
    for ev in events:
        if ev.type in COMMIT_OPS and ev.did and ev.commit and ev.rev:
            seen = out.get(ev.did)
            if seen is None or seen[1] <= ev.rev:
                out[ev.did] = (ev.commit, ev.rev)
    return out
