"""app.bsky.graph.block → ``actor_block``; no notifications, no counters."""

from __future__ import annotations

from typing import Any

from ._sql import record_duplicates, rows_of

NSID = "app.bsky.graph.block"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"],)


def reads(event: Any) -> tuple[str, ...]:
    return ()


_DUPLICATES = record_duplicates(NSID, "actor_block", """t."subjectDid" = e.record->>'subject'""")

DELETE_SQL = f"""
WITH gone AS (
  DELETE FROM actor_block t USING {rows_of(NSID, "'delete', 'update'")} AND t.uri = e.uri
  RETURNING t.uri, e.op, e.idx
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{NSID}', op, idx, false FROM gone;
"""

INSERT_SQL = f"""
WITH ins AS (
  INSERT INTO actor_block (uri, cid, creator, "subjectDid", "createdAt", "indexedAt")
  SELECT e.uri, e.cid, e.did, e.record->>'subject', e.c, e.ts
  FROM {rows_of(NSID, "'create', 'update', 'promote'")}
  ORDER BY e.idx
  ON CONFLICT DO NOTHING
  RETURNING uri
), new AS (
  INSERT INTO _new (uri, collection) SELECT uri, '{NSID}' FROM ins
){_DUPLICATES}"""
