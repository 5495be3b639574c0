"""The durable queue of handle checks: ``bsky_indexer.handle_check``, one row per DID. All its SQL.

Upstream's ``indexHandle`` resolves a DID inline for every event; we only queue the check inside
the batch's transaction (``enqueue``), and resolution/worker.py resolves it later, off the hot
path: ``claim`` leases due checks, ``record`` writes the outcome to ``actor`` as upstream's steps
3-4 do, ``defer`` puts a check whose resolution was unavailable back with a backoff. A check is
deleted only in the transaction that records its outcome, so a crash at any point leaves it
queued (a lease simply runs out).

Columns: ``ts`` the event time the check is for (becomes ``actor."indexedAt"``): that of the
commit that queued it, or of the newest identity event; ``forced`` an identity event asked
(upstream's ``force``: resolve even when recently checked, bypassing caches); ``due`` when a
worker may take it: now, the end of a lease, or the end of a backoff; ``attempts`` resolutions
found unavailable in a row; ``last_error`` the last reason.

Which events ask (upstream's ``indexHandle`` calls, ``needsHandleReindex``): an identity event
always (forced), unless it is a replay (not newer than the last account/identity event applied,
``bsky_indexer.actor_event``); a record operation or repo event only when the DID has no actor
row, or its ``"indexedAt"`` is more than a day before the event time (an hour when its handle is
NULL). Events of one DID are coalesced: one row per DID, per batch and in the table. (Upstream
stores each commit's time; a queued check keeping its first one only makes the DID's next check
come a little sooner.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import psycopg
from psycopg import sql

from flows.events import COMMIT_OPS, IDENTITY, Event

from .schema import PRIVATE_SCHEMA

TABLE = sql.Identifier(PRIVATE_SCHEMA, "handle_check")

# ``needsHandleReindex``: an actor indexed more than this before the event is checked again.
RECHECK = timedelta(days=1)
RECHECK_NULL = timedelta(hours=1)  # ... and this when its handle is NULL

# Runs first in the batch's transaction, so actor_event and actor are as they were before it (the
# batch never changes "indexedAt" or the handle while resolution is on). Rows are locked in DID
# order, before any actor row, as the worker's record() does: no deadlock between them. A queued
# check keeps its due (a lease in progress is not cut short by more events), except that an
# identity event ends a backoff and starts its count of tries anew: the account says its
# identity changed (say, its handle's DNS was fixed), so the old failures say nothing. A commit
# of a DID already queued changes nothing (not even a lock: this is the hot path, and a new
# account's every commit would rewrite its row); an identity event makes the check forced and
# newer, which also tells a worker holding it to run it again.
# The checks already queued are looked up by key (= ANY), never by a scan of the table. The
# columns come as newline-separated text (none of their values holds one): psycopg takes ~1 ms
# to adapt a list of 500 strings, and this runs for every batch.
_ENQUEUE = sql.SQL(
    """
WITH queued AS (SELECT did FROM {checks} WHERE did = ANY(string_to_array(%s, E'\\n')))
INSERT INTO {checks} AS c (did, ts, forced)
SELECT e.did, max(e.ts), bool_or(e.forced)
FROM unnest(
  string_to_array(%s, E'\\n'), string_to_array(%s, E'\\n'),
  string_to_array(%s, E'\\n')::bigint[], string_to_array(%s, E'\\n')::bool[],
  string_to_array(%s, E'\\n'), string_to_array(%s, E'\\n')
) AS e(did, ts, seq, forced, day_before, hour_before)
LEFT JOIN {events} l ON e.forced AND l.did = e.did
LEFT JOIN actor a ON NOT e.forced AND a.did = e.did
WHERE CASE WHEN e.forced THEN l.did IS NULL OR (l.time, l.seq) < (e.ts, e.seq)
      ELSE (a.did IS NULL OR a."indexedAt" COLLATE "C" < e.day_before
            OR (a.handle IS NULL AND a."indexedAt" COLLATE "C" < e.hour_before))
           AND e.did NOT IN (SELECT did FROM queued) END
GROUP BY e.did
ORDER BY e.did
ON CONFLICT (did) DO UPDATE
SET ts = greatest(c.ts, excluded.ts), forced = true,
    due = CASE WHEN c.attempts > 0 THEN least(c.due, now()) ELSE c.due END, attempts = 0
WHERE excluded.forced AND (c.ts < excluded.ts OR NOT c.forced)
"""
).format(checks=TABLE, events=sql.Identifier(PRIVATE_SCHEMA, "actor_event"))

# The oldest due checks not locked by a batch or another worker; their due moves to the end of
# the lease in the same statement, committed at once, so a crashed worker's checks come back.
_CLAIM = sql.SQL(
    """
UPDATE {checks} c SET due = now() + make_interval(secs => %s)
FROM (
  SELECT did FROM {checks} WHERE due <= now() ORDER BY due LIMIT %s FOR UPDATE SKIP LOCKED
) d
WHERE c.did = d.did
RETURNING c.did, c.ts, c.forced, c.attempts, c.due
"""
).format(checks=TABLE)

# A check is ours while its due is still the lease we set (a lease that ran out and was claimed
# by another worker is not: that worker records it). Locked in DID order, as enqueue locks.
_MINE = sql.SQL(
    "SELECT c.did, c.ts, c.forced, c.due FROM {} c"
    " JOIN unnest(%s::text[], %s::timestamptz[]) AS r(did, due) ON c.did = r.did AND c.due = r.due"
    " ORDER BY c.did FOR UPDATE OF c"
).format(TABLE)
# upstream's indexHandle steps 3-4 for many DIDs at once (actors.SET_HANDLE does one per
# statement): whoever else holds a handle being given loses it, then each DID's row is written.
# The handles given are distinct (record() sees to it), so the insert cannot collide.
_CLEAR = """
UPDATE actor a SET handle = NULL FROM unnest(%s::text[], %s::varchar[]) AS r(did, handle)
WHERE a.handle = r.handle AND a.did <> r.did
"""
_STORE = """
INSERT INTO actor (did, handle, "indexedAt")
SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[]) ORDER BY 1
ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, "indexedAt" = excluded."indexedAt"
"""
_DONE = sql.SQL("DELETE FROM {} WHERE did = ANY(%s)").format(TABLE)
_AGAIN = sql.SQL(
    "UPDATE {} SET due = now(), attempts = 0, last_error = NULL WHERE did = ANY(%s)"
).format(TABLE)
_DEFER = sql.SQL(
    "UPDATE {} c SET attempts = c.attempts + 1, due = now() + make_interval(secs => r.delay),"
    " last_error = r.error"
    " FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::text[])"
    "   AS r(did, lease, delay, error)"
    " WHERE c.did = r.did AND c.due = r.lease"
).format(TABLE)
_RELEASE = sql.SQL(
    "UPDATE {} c SET due = now() FROM unnest(%s::text[], %s::timestamptz[]) AS r(did, due)"
    " WHERE c.did = r.did AND c.due = r.due"
).format(TABLE)

# Work that should hold a stopping-when-idle process: due now, or never failed (queued or leased,
# perhaps by a process that died: its lease runs out). Checks backing off stay for the next run.
_OUTSTANDING = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM {} WHERE due <= now() OR attempts = 0)"
).format(TABLE)
_COUNTS = sql.SQL(
    "SELECT count(*) FILTER (WHERE due <= now()),"
    " count(*) FILTER (WHERE due > now() AND attempts = 0),"
    " count(*) FILTER (WHERE due > now() AND attempts > 0) FROM {}"
).format(TABLE)


@dataclass(frozen=True)
class Check:
    """A claimed check; ``lease`` (its due as claimed) proves it is still ours."""

    did: str
    ts: str
    forced: bool
    attempts: int
    lease: datetime


def _before(ts: str, delta: timedelta) -> str:
    """``ts`` (decode's ``YYYY-MM-DDTHH:MM:SS.mmmZ``) less ``delta`` (whole seconds), in the same
    form, so it compares with ``"indexedAt"`` as a string (as upstream writes and compares it).
    "" at the edge of the calendar: never more than anything."""
    second = _second_before(ts[:19], delta)
    return second + ts[19:] if second else ""


@lru_cache(maxsize=4096)
def _second_before(second: str, delta: timedelta) -> str:
    # Events of a batch share few seconds: each is worked out once.
    try:
        return (datetime.fromisoformat(second) - delta).isoformat()
    except (ValueError, OverflowError):
        return ""


def enqueue(cur: psycopg.Cursor, events: Sequence[Event]) -> int:
    """Queue the checks the batch's events ask for: one statement, whatever the batch. Returns
    how many checks were queued or moved on. Call it before the batch's actor events apply."""
    identity: dict[str, tuple[str, int]] = {}  # per DID, the newest (time, seq)
    commits: dict[str, str] = {}  # per DID, the newest time
    for ev in events:
        if ev.type == IDENTITY and ev.ok:
            key = (ev.time, ev.seq)
            if key > identity.get(ev.did, ("", -1)):
                identity[ev.did] = key
        # Upstream checks the handle of a commit's DID even when its record is refused.
        elif ev.type in COMMIT_OPS and ev.did and ev.time and ev.time > commits.get(ev.did, ""):
            commits[ev.did] = ev.time
    if not identity and not commits:
        return 0
    # upstream's needsHandleReindex: an actor indexed before these is checked again
    day = [_before(t, RECHECK) for t in commits.values()]
    hour = [_before(t, RECHECK_NULL) for t in commits.values()]
    n = len(identity)
    params = (
        commits,
        [*identity, *commits],
        [t for t, _ in identity.values()] + list(commits.values()),
        [str(seq) for _, seq in identity.values()] + ["0"] * len(commits),
        ["t"] * n + ["f"] * len(commits),
        [""] * n + day,
        [""] * n + hour,
    )
    cur.execute(_ENQUEUE, ["\n".join(column) for column in params])
    return cur.rowcount


def claim(conn: psycopg.Connection, limit: int, lease: float) -> list[Check]:
    """Lease up to ``limit`` due checks for ``lease`` seconds (committed before returning)."""
    with conn.transaction():
        rows = conn.execute(_CLAIM, (lease, limit)).fetchall()
    return [Check(*row) for row in rows]


def record(conn: psycopg.Connection, outcomes: Sequence[tuple[Check, str | None]]) -> int:
    """Store resolutions' outcomes (the handle verified, or None) as upstream's indexHandle steps
    3-4: another actor holding the handle loses it, and ``actor`` gets (did, handle,
    ``"indexedAt"`` = the check's ts); of two DIDs given one handle, the one with the later ts
    keeps it (as if stored in order). Each check is then deleted, unless an identity event
    arrived during the lease (the check is newer or became forced): then it is due again. One
    transaction, a few statements whatever the count. Returns how many were ours (a check whose
    lease was lost is left to its new owner, unwritten)."""
    if not outcomes:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_MINE, ([c.did for c, _ in outcomes], [c.lease for c, _ in outcomes]))
        now = {did: (ts, forced, due) for did, ts, forced, due in cur.fetchall()}
        mine = sorted(
            ((c, h) for c, h in outcomes if c.did in now and now[c.did][2] == c.lease),
            key=lambda o: o[0].ts,
        )
        if not mine:
            return 0
        owner = {handle: c.did for c, handle in mine if handle is not None}  # the latest wins
        handles = [h if h is not None and owner[h] == c.did else None for c, h in mine]
        dids = [c.did for c, _ in mine]
        cur.execute(_CLEAR, (dids, handles))
        cur.execute(_STORE, (dids, handles, [c.ts for c, _ in mine]))
        done, again = [], []
        for c, _handle in mine:
            ts, forced, _due = now[c.did]
            (again if ts > c.ts or forced > c.forced else done).append(c.did)
        if done:
            cur.execute(_DONE, (done,))
        if again:
            cur.execute(_AGAIN, (again,))
    return len(mine)


def defer(conn: psycopg.Connection, failures: Sequence[tuple[Check, float, str]]) -> int:
    """Resolutions that were unavailable: each is tried again after its delay (seconds), its
    attempt counted and the reason kept. One transaction. Returns how many were still ours."""
    if not failures:
        return 0
    with conn.transaction():
        cur = conn.execute(
            _DEFER,
            (
                [c.did for c, _, _ in failures],
                [c.lease for c, _, _ in failures],
                [delay for _, delay, _ in failures],
                [error[:1000] for _, _, error in failures],
            ),
        )
        return cur.rowcount


def release(conn: psycopg.Connection, checks: Sequence[Check]) -> None:
    """Hand back leased checks unresolved (stopping): due at once for the next worker."""
    if checks:
        with conn.transaction():
            conn.execute(_RELEASE, ([c.did for c in checks], [c.lease for c in checks]))


def outstanding(conn: psycopg.Connection) -> bool:
    """Whether a check is due now or has not failed yet (queued or leased)."""
    return bool(conn.execute(_OUTSTANDING).fetchone()[0])


def counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    """Queued checks: (due now, leased, backing off)."""
    return tuple(conn.execute(_COUNTS).fetchone())  # type: ignore[return-value]
