"""The per-transaction scratch tables the collection SQL works over, and the generic steps.

``_ev`` holds one segment of a batch (see segments.py): one row per record operation, with the
record as text (for ``record.json``, byte for byte as decoded) and as jsonb (for the columns).
The collection modules fill ``_gone``, ``_new``, ``_notif`` and ``_agg``; the steps here do what
upstream's generic record processor does around them. Temporary tables are created once per
server connection and emptied on commit, which also works through pgbouncer in transaction mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from flows.events import Event

from .collections import BY_NSID, post
from .collections._sql import posts_seen_at

# Run at the start of every batch's transaction. JIT off: the planner's guesses over the small
# staging tables (recursive thread walks especially) cross jit_above_cost, and compiling then
# takes far longer than running; set-based statements over a few hundred rows never gain from it.
# SET LOCAL lasts for the batch's transaction only, so it also works through pgbouncer.
TEMP_TABLES = """
SET LOCAL jit = off;
CREATE TEMP TABLE IF NOT EXISTS _ev (
  idx int, op text, uri text, did text, collection text, rkey text, cid text, json text,
  ts text, c text, sort_at text, replaces text,
  record jsonb GENERATED ALWAYS AS (json::jsonb) STORED
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _gone (
  uri text, collection text, op text, idx int, drop_notifs bool
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _new (uri text, collection text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _notif (
  did text, record_uri text, record_cid text, author text, reason text, reason_subject text,
  sort_at text, idx int, ord bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _agg (tbl text, col text, key text, delta int)
  ON COMMIT DELETE ROWS;
-- Newly inserted posts with their embed parts (collections/post.py).
CREATE TEMP TABLE IF NOT EXISTS _post (
  idx int, uri text, cid text, did text, r jsonb, c text, ts text, media jsonb, quoted jsonb
) ON COMMIT DELETE ROWS;
-- Posts deleted (or replaced by an update) in the segment, as they were (posts_seen_at).
CREATE TEMP TABLE IF NOT EXISTS _post_gone (
  idx int, uri text, cid text, creator text, "replyRoot" text, "replyParent" text, "sortAt" text,
  "indexedAt" text
) ON COMMIT DELETE ROWS;
"""

EV_COLUMNS = (
    "idx",
    "op",
    "uri",
    "did",
    "collection",
    "rkey",
    "cid",
    "json",
    "ts",
    "c",
    "sort_at",
    "replaces",
)
COPY_EV = f"COPY _ev ({', '.join(EV_COLUMNS)}) FROM STDIN"

# Staged events the revision guard dropped (ordering.py).
DROP_STAGED = "DELETE FROM _ev WHERE idx = ANY(%s)"

NEW_SEGMENT = (
    "DELETE FROM _ev; DELETE FROM _gone; DELETE FROM _new; DELETE FROM _notif; DELETE FROM _post;"
    " DELETE FROM _post_gone;"
)

# Fresh statistics for the staged rows: without them the planner guesses the temp table's size
# and may hash-join it against a whole AppView table instead of probing its index per row. Only
# the columns statements filter or join on: sampling the JSON took 6 times as long.
_ANALYZE_EV = "ANALYZE _ev (idx, op, uri, did, collection, rkey);\n"
# An update's duplicate_record row is the business of its collection (_sql.update_duplicates):
# only collections with duplicates have such rows.
_DELETE_RECORDS = """
DELETE FROM record r USING _ev e WHERE e.op = 'delete' AND r.uri = e.uri;
DELETE FROM duplicate_record d USING _ev e WHERE e.op = 'delete' AND d.uri = e.uri;
"""

_INSERT_RECORDS = """
INSERT INTO record (uri, cid, did, json, "indexedAt")
SELECT uri, cid, did, json, ts FROM _ev WHERE op = 'create' ORDER BY idx
ON CONFLICT DO NOTHING;
"""
_UPDATE_RECORDS = """
INSERT INTO record (uri, cid, did, json, "indexedAt")
SELECT uri, cid, did, json, ts FROM _ev WHERE op = 'update' ORDER BY idx
ON CONFLICT (uri) DO UPDATE SET cid = excluded.cid, json = excluded.json,
  "indexedAt" = excluded."indexedAt";
"""

# A notification is dropped when its subject is a post (as its event saw the table) whose thread
# the recipient muted; a subject that is not an indexed post mutes nothing (upstream). One whose
# record is deleted later in the segment would have gone with it (a post notifies on behalf of
# its descendants).
_DROP_NOTIFICATIONS = """
-- = ANY(array): _gone is not analysed, and a join made the planner scan all of notification.
DELETE FROM notification n WHERE n."recordUri" = ANY(ARRAY(SELECT uri FROM _gone WHERE drop_notifs));
"""
_NOTIFICATIONS = f"""
INSERT INTO notification (did, "recordUri", "recordCid", author, reason, "reasonSubject", "sortAt")
SELECT n.did, n.record_uri, n.record_cid, n.author, n.reason, n.reason_subject, n.sort_at
FROM _notif n
WHERE NOT EXISTS (
  SELECT 1 FROM _gone g WHERE g.drop_notifs AND g.uri = n.record_uri AND g.idx > n.idx)
AND NOT EXISTS (
  SELECT 1 FROM {posts_seen_at("n.idx", "v.uri = n.reason_subject")} p
  JOIN thread_mute tm ON tm."mutedByDid" = n.did AND tm."rootUri" = coalesce(p."replyRoot", p.uri))
ORDER BY n.idx, n.ord;
"""

# Oldest duplicate of each deleted row, to be indexed in its place.
PROMOTION_CANDIDATES = """
SELECT DISTINCT ON (d."duplicateOf") d."duplicateOf", d.uri, d.cid, r.did, r.json,
       d."indexedAt", g.idx, g.collection
FROM _gone g
JOIN duplicate_record d ON d."duplicateOf" = g.uri
JOIN record r ON r.uri = d.uri
WHERE g.op = 'delete' AND g.collection = ANY(%s)
ORDER BY d."duplicateOf", d."indexedAt", d.uri
"""

KEEP_NOTIFS_OF_REPLACED = """
UPDATE _gone g SET drop_notifs = false FROM _ev e WHERE e.op = 'promote' AND e.replaces = g.uri;
"""


# Counters move by the batch's summed deltas, one upsert per table in key order (rows are locked
# in one order by every worker). Clamped at 0: a counter never goes negative even on a table
# another writer left short. An existing row gets greatest(count + delta, 0); a fresh row starts
# at 0, as upstream's first recount would leave it, so it takes its summed deltas, and the few
# fresh rows a delete could take below 0 are clamped after (rows this transaction holds already).
def _apply_aggregates(table: str, key: str, cols: Sequence[str]) -> str:
    sums = ",\n".join(f"       coalesce(sum(delta) FILTER (WHERE col = '{c}'), 0)" for c in cols)
    quoted = ", ".join(f'"{c}"' for c in cols)
    added = ",\n".join(f'  "{c}" = greatest(a."{c}" + excluded."{c}", 0)' for c in cols)
    clamped = ", ".join(f'"{c}" = greatest("{c}", 0)' for c in cols)
    negative = " OR ".join(f'"{c}" < 0' for c in cols)
    return f"""
INSERT INTO {table} AS a ({key}, {quoted})
SELECT key,
{sums}
FROM _agg WHERE tbl = '{table}' GROUP BY key ORDER BY key
ON CONFLICT ({key}) DO UPDATE SET
{added};
UPDATE {table} SET {clamped}
WHERE {key} = ANY(ARRAY(SELECT key FROM _agg WHERE tbl = '{table}' AND delta < 0))
  AND ({negative});
"""


APPLY_AGGREGATES = _apply_aggregates(
    "post_agg", "uri", ("likeCount", "repostCount", "replyCount", "quoteCount")
) + _apply_aggregates("profile_agg", "did", ("followersCount", "followsCount", "postsCount"))

# Rows the segment wrote to (or removed from) each collection's own table, from what its steps
# listed in _new and _gone: counts for the metrics and traces, appended to the insert script so
# they cost no round trip.
ROW_COUNTS = """;
SELECT collection, 'insert', count(*) FROM _new GROUP BY collection
UNION ALL
SELECT collection, 'delete', count(*) FROM _gone WHERE op = 'delete' GROUP BY collection
"""

# Only forward: a commit older than the one recorded (another consumer's, or one delivered again
# after a crash) does not move a repo back (docs/semantics.md).
UPSERT_ACTOR_SYNC = """
INSERT INTO actor_sync AS s (did, "commitCid", "repoRev")
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])
ON CONFLICT (did) DO UPDATE SET "commitCid" = excluded."commitCid", "repoRev" = excluded."repoRev"
WHERE s."repoRev" IS NULL OR s."repoRev" <= excluded."repoRev"
"""


def text_array(values: Iterable[str]) -> str:
    """A ``text[]`` literal of the strings, for a ``%s::text[]`` parameter: psycopg's list dumper
    takes about 2 µs an element in Python, this a tenth of that (every element quoted)."""
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


# Collections some of whose updates upstream refuses (a module's REFUSED_UPDATES).
REFUSING = frozenset(nsid for nsid, m in BY_NSID.items() if hasattr(m, "REFUSED_UPDATES"))


@lru_cache(maxsize=256)
def refusal_script(collections: frozenset[str]) -> str:
    """Takes the staged updates upstream refuses out of ``_ev``; returns their (idx, reason)."""
    selects = "\nUNION ALL".join(BY_NSID[c].REFUSED_UPDATES for c in sorted(collections))
    return f"""
ANALYZE _ev;
WITH refused (idx, reason) AS ({selects}
)
DELETE FROM _ev e USING refused r WHERE e.idx = r.idx RETURNING e.idx, r.reason
"""


def features(events: Iterable[Event]) -> frozenset[tuple[str, str]]:
    """(collection, feature) of the events' records, for the modules that have ``features``."""
    out: set[tuple[str, str]] = set()
    for ev in events:
        of = getattr(BY_NSID[ev.collection or ""], "features", None)
        if of is not None:
            out.update((ev.collection or "", f) for f in of(ev))
    return frozenset(out)


# The scripts hold only the statements that can touch a row of the segment: each statement is
# parsed and planned on every run (no prepared statements, for pgbouncer), so one that would
# find no row still costs about as much as one that writes hundreds.
@lru_cache(maxsize=1024)
def delete_script(changed: frozenset[str], deletes: bool) -> str:
    """The delete step of the collections with a delete or update in the segment (``changed``);
    ``deletes``: whether any record is deleted (not only updated)."""
    parts = [_ANALYZE_EV] + ([_DELETE_RECORDS] if deletes else [])
    return "\n".join(parts + [BY_NSID[c].DELETE_SQL for c in sorted(changed)])


def insert_script(
    inserted: frozenset[str],
    features: frozenset[tuple[str, str]],
    updates: bool,
    removed: bool,
    waves: Sequence[Sequence[int]] = (),
) -> str:
    """The insert step of the collections with a create, update or promotion in the segment;
    ``features``: the (collection, feature) pairs its records have (a module's ``features``),
    ``updates``: whether a record is updated, ``removed``: whether any row was deleted or
    replaced (its notifications may go), ``waves``: post.waves() of its posts."""
    script = _insert_script(inserted, features, updates, removed)
    if len(waves) > 1:
        posts = "".join(post.insert_posts(wave) for wave in waves)
        script = script.replace(post.INSERT_POSTS, posts, 1)
    return script


@lru_cache(maxsize=1024)
def _insert_script(
    inserted: frozenset[str], features: frozenset[tuple[str, str]], updates: bool, removed: bool
) -> str:
    parts = [_INSERT_RECORDS] + ([_UPDATE_RECORDS] if updates else [])
    for c in sorted(inserted):
        module = BY_NSID[c]
        optional = getattr(module, "INSERT_PARTS", None)
        if optional is None:
            parts.append(module.INSERT_SQL)
        else:
            parts += [sql for f, sql in optional if f is None or (c, f) in features]
    if removed:
        parts.append(_DROP_NOTIFICATIONS)
    return "\n".join(parts + [_NOTIFICATIONS])
