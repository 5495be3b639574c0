"""SQL fragments shared by the collection modules."""

from __future__ import annotations


def rows_of(nsid: str, ops: str) -> str:
    """The staging rows of one collection with one of the given ops (a SQL list literal)."""
    return f"_ev e WHERE e.collection = '{nsid}' AND e.op IN ({ops})"


def did_of(uri_sql: str) -> str:
    """The authority (DID) of an at:// URI expression."""
    return f"split_part({uri_sql}, '/', 3)"


# A create, or an update of a record that had no row (upstream then runs a plain insert):
# the only inserts that notify for likes, reposts, follows and profiles.
FIRST_INSERT = "(e.op = 'create' OR (e.op = 'update' AND NOT EXISTS (SELECT 1 FROM _gone g WHERE g.uri = e.uri)))"


def record_duplicates(nsid: str, table: str, match: str) -> str:
    """The final statement of an insert step: a create that collided with another row of the same
    creator on ``match`` (the UNIQUE key) is recorded in duplicate_record, pointing at that row."""
    return f"""
INSERT INTO duplicate_record (uri, cid, "duplicateOf", "indexedAt")
SELECT e.uri, e.cid, t.uri, e.ts
FROM _ev e
JOIN "{table}" t ON t.creator = e.did AND {match} AND t.uri <> e.uri
WHERE e.collection = '{nsid}' AND e.op IN ('create', 'update')
  AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.uri = e.uri)
ON CONFLICT DO NOTHING;
"""


def subject_ref_collection(
    nsid: str, table: str, notif_reason: str, via_reason: str, agg_col: str
) -> tuple[str, str]:
    """DELETE_SQL and INSERT_SQL for a record whose subject is a strongRef (like, repost)."""
    delete_sql = f"""
WITH gone AS (
  DELETE FROM "{table}" t USING _ev e
  WHERE e.collection = '{nsid}' AND e.op IN ('delete', 'update') AND t.uri = e.uri
  RETURNING t.uri, t.subject, e.op, e.idx
), agg AS (
  INSERT INTO _agg (tbl, col, key, delta) SELECT 'post_agg', '{agg_col}', subject, -1 FROM gone
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{nsid}', op, idx, op = 'delete' FROM gone;
"""
    via = ""
    if via_reason:
        via = f"""
  UNION ALL
  SELECT {did_of("i.via")}, i.uri, i.cid, i.creator, '{via_reason}', i.via, i."sortAt", e.idx, 2
  FROM ins i JOIN _ev e ON e.uri = i.uri
  WHERE {FIRST_INSERT} AND i.via IS NOT NULL
    AND {did_of("i.subject")} <> i.creator AND {did_of("i.via")} <> i.creator"""
    insert_sql = f"""
WITH ins AS (
  INSERT INTO "{table}" (uri, cid, creator, subject, "subjectCid", via, "viaCid",
                         "createdAt", "indexedAt")
  SELECT e.uri, e.cid, e.did, e.record->'subject'->>'uri', e.record->'subject'->>'cid',
         e.record->'via'->>'uri', e.record->'via'->>'cid', e.c, e.ts
  FROM {rows_of(nsid, "'create', 'update', 'promote'")}
  ORDER BY e.idx
  ON CONFLICT DO NOTHING
  RETURNING uri, cid, creator, subject, via, "sortAt"
), agg AS (
  INSERT INTO _agg (tbl, col, key, delta) SELECT 'post_agg', '{agg_col}', subject, 1 FROM ins
), new AS (
  INSERT INTO _new (uri, collection) SELECT uri, '{nsid}' FROM ins
), notif AS (
  INSERT INTO _notif (did, record_uri, record_cid, author, reason, reason_subject, sort_at, idx, ord)
  SELECT {did_of("i.subject")}, i.uri, i.cid, i.creator, '{notif_reason}', i.subject, i."sortAt",
         e.idx, 1
  FROM ins i JOIN _ev e ON e.uri = i.uri
  WHERE {FIRST_INSERT} AND {did_of("i.subject")} <> i.creator{via}
){record_duplicates(nsid, table, "t.subject = e.record->'subject'->>'uri'")}"""
    return delete_sql, insert_sql
