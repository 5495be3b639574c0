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


def delete_rows(nsid: str, table: str, duplicates: str = "") -> str:
    """DELETE_SQL of a collection whose delete neither notifies nor counts: the rows go, listed
    in ``_gone`` with their notifications kept. ``duplicates``: as for insert_rows."""
    head = update_duplicates(nsid, table, duplicates) if duplicates else ""
    return f"""{head}
WITH gone AS (
  DELETE FROM "{table}" t USING {rows_of(nsid, "'delete', 'update'")} AND t.uri = e.uri
  RETURNING t.uri, e.op, e.idx
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{nsid}', op, idx, false FROM gone;
"""


def insert_rows(
    nsid: str, table: str, values: dict[str, str], where: str = "", duplicates: str = ""
) -> str:
    """INSERT_SQL of a collection whose insert neither notifies nor counts. ``values`` maps the
    table's own columns to SQL over ``e`` (the common ones are added here), ``where`` narrows the
    rows that get one, and ``duplicates`` (the UNIQUE key match, see record_duplicates) records
    a collision as a duplicate."""
    cols = "".join(f', "{c}"' for c in values)
    exprs = "".join(f", {v}" for v in values.values())
    new = f"INSERT INTO _new (uri, collection) SELECT uri, '{nsid}' FROM ins"
    tail = (
        f"), new AS (\n  {new}\n){record_duplicates(nsid, table, duplicates)}"
        if duplicates
        else f")\n{new};\n"
    )
    return f"""
WITH ins AS (
  INSERT INTO "{table}" (uri, cid, creator{cols}, "createdAt", "indexedAt")
  SELECT e.uri, e.cid, e.did{exprs}, e.c, e.ts
  FROM {rows_of(nsid, "'create', 'update', 'promote'")}{where}
  ORDER BY e.idx
  ON CONFLICT DO NOTHING
  RETURNING uri
{tail}"""


def json_text(field: str) -> str:
    """A record field as JSON text the way upstream's ``JSON.stringify`` writes it: compact, keys
    in record order (the ``json`` column is compact; the ``jsonb`` one would reorder and space)."""
    return f"((e.json::json)->'{field}')::text"


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


def update_duplicates(nsid: str, table: str, match: str) -> str:
    """The first statements of a delete step: the duplicate_record row of an updated record, as
    upstream's update leaves it. Upstream looks for a row with the new key *before* removing the
    record's own row: when one exists (another record's, or the record's own when its key is
    unchanged: a promoted duplicate keeps its row, docs/semantics.md) the duplicate_record row,
    if any, is pointed at it with the new cid and time; otherwise it goes. A new collision is then
    recorded by the insert step (record_duplicates), as upstream's insert does."""
    updates = f"e.collection = '{nsid}' AND e.op = 'update' AND d.uri = e.uri"
    return f"""
UPDATE duplicate_record d SET cid = e.cid, "duplicateOf" = t.uri, "indexedAt" = e.ts
FROM _ev e JOIN "{table}" t ON t.creator = e.did AND {match}
WHERE {updates};
DELETE FROM duplicate_record d USING _ev e WHERE {updates}
  AND NOT EXISTS (SELECT 1 FROM "{table}" t WHERE t.creator = e.did AND {match});
"""


def refused_updates(nsid: str, table: str, match: str, insertable: str = "") -> str:
    """A SELECT (idx, reason) of the collection's staged updates upstream refuses.

    Upstream updates a record that has a row by removing the row and inserting the new one; when
    the new one cannot go in (another row of the creator holds its key, or ``insertable``, SQL
    over ``e``, is false) it throws "removed from index but could not be replaced" and the whole
    event is rolled back. A segment holds no other event of the creator in the collection
    (segments.py), so the table as it stands decides."""
    refused = "t.uri IS NOT NULL"
    # The kind of reason (observability/reasons.py) is what comes before the colon.
    reason = (
        "'update collides with another record: ' || t.uri"
        " || ' of the same creator holds its key (upstream refuses such an update)'"
    )
    if insertable:
        refused += f" OR NOT ({insertable})"
        gets_none = (
            "'update leaves the record no row: upstream removes its row, cannot replace it"
            " and refuses the update'"
        )
        reason = f"CASE WHEN t.uri IS NULL THEN {gets_none} ELSE {reason} END"
    return f"""
SELECT e.idx, {reason}
FROM _ev e
JOIN "{table}" own ON own.uri = e.uri
LEFT JOIN "{table}" t ON t.creator = e.did AND {match} AND t.uri <> e.uri
WHERE e.collection = '{nsid}' AND e.op = 'update' AND ({refused})"""


SUBJECT_REF_MATCH = "t.subject = e.record->'subject'->>'uri'"


def subject_ref_collection(
    nsid: str, table: str, notif_reason: str, via_reason: str, agg_col: str
) -> tuple[str, str, str]:
    """DELETE_SQL, INSERT_SQL and REFUSED_UPDATES for a record whose subject is a strongRef (like,
    repost)."""
    delete_sql = f"""{update_duplicates(nsid, table, SUBJECT_REF_MATCH)}
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
){record_duplicates(nsid, table, SUBJECT_REF_MATCH)}"""
    return delete_sql, insert_sql, refused_updates(nsid, table, SUBJECT_REF_MATCH)


def posts_seen_at(idx: str, cond: str) -> str:
    """The ``post`` rows matching ``cond`` (over alias ``v``) that the event at segment position
    ``idx`` would see if the segment were applied event by event: posts inserted later in the
    segment (``_post``) are not there yet, posts deleted later (``_post_gone``) still are."""
    cols = 'v.uri, v.cid, v.creator, v."replyRoot", v."replyParent", v."sortAt", v."indexedAt"'
    return f"""(
    SELECT {cols} FROM post v
    WHERE {cond}
      AND NOT EXISTS (SELECT 1 FROM _post later WHERE later.uri = v.uri AND later.idx > {idx})
    UNION ALL
    SELECT {cols} FROM _post_gone v WHERE {cond} AND v.idx > {idx})"""


def gate_collection(nsid: str, table: str, flag: str) -> tuple[str, str]:
    """DELETE_SQL and INSERT_SQL of a thread or post gate: its row, and its post's ``flag``
    column set on insert (even when the gate row already existed; a post indexed later keeps
    NULL) and cleared on delete, as upstream does. No notifications, no counters."""
    delete_sql = f"""
WITH gone AS (
  DELETE FROM "{table}" t USING {rows_of(nsid, "'delete', 'update'")} AND t.uri = e.uri
  RETURNING t.uri, t."postUri", e.op, e.idx
), flag AS (
  UPDATE post p SET "{flag}" = false FROM gone g WHERE p.uri = g."postUri"
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{nsid}', op, idx, false FROM gone;
"""
    insert_sql = f"""
WITH ins AS (
  INSERT INTO "{table}" (uri, cid, creator, "postUri", "createdAt", "indexedAt")
  SELECT e.uri, e.cid, e.did, e.record->>'post', e.c, e.ts
  FROM {rows_of(nsid, "'create', 'update'")}
  ORDER BY e.idx
  ON CONFLICT DO NOTHING
  RETURNING uri
)
INSERT INTO _new (uri, collection) SELECT uri, '{nsid}' FROM ins;
UPDATE post p SET "{flag}" = true
FROM {rows_of(nsid, "'create', 'update'")} AND p.uri = e.record->>'post';
"""
    return delete_sql, insert_sql
