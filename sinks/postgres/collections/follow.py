"""app.bsky.graph.follow → ``follow``; notifies the followed actor (self-follows too, as upstream);
counts ``profile_agg`` followersCount of the subject and followsCount of the creator."""

from __future__ import annotations

from typing import Any

from ._sql import FIRST_INSERT, record_duplicates, refused_updates, rows_of, update_duplicates

NSID = "app.bsky.graph.follow"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"],)


def reads(event: Any) -> tuple[str, ...]:
    return ()


_MATCH = """t."subjectDid" = e.record->>'subject'"""

DELETE_SQL = f"""{update_duplicates(NSID, "follow", _MATCH)}
WITH gone AS (
  DELETE FROM follow t USING {rows_of(NSID, "'delete', 'update'")} AND t.uri = e.uri
  RETURNING t.uri, t.creator, t."subjectDid", e.op, e.idx
), agg AS (
  INSERT INTO _agg (tbl, col, key, delta)
  SELECT 'profile_agg', 'followersCount', "subjectDid", -1 FROM gone
  UNION ALL SELECT 'profile_agg', 'followsCount', creator, -1 FROM gone
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{NSID}', op, idx, op = 'delete' FROM gone;
"""

INSERT_SQL = f"""
WITH ins AS (
  INSERT INTO follow (uri, cid, creator, "subjectDid", "createdAt", "indexedAt")
  SELECT e.uri, e.cid, e.did, e.record->>'subject', e.c, e.ts
  FROM {rows_of(NSID, "'create', 'update', 'promote'")}
  ORDER BY e.idx
  ON CONFLICT DO NOTHING
  RETURNING uri, cid, creator, "subjectDid", "sortAt"
), agg AS (
  INSERT INTO _agg (tbl, col, key, delta)
  SELECT 'profile_agg', 'followersCount', "subjectDid", 1 FROM ins
  UNION ALL SELECT 'profile_agg', 'followsCount', creator, 1 FROM ins
), new AS (
  INSERT INTO _new (uri, collection) SELECT uri, '{NSID}' FROM ins
), notif AS (
  INSERT INTO _notif (did, record_uri, record_cid, author, reason, reason_subject, sort_at, idx, ord)
  SELECT i."subjectDid", i.uri, i.cid, i.creator, 'follow', NULL, i."sortAt", e.idx, 1
  FROM ins i JOIN _ev e ON e.uri = i.uri
  WHERE {FIRST_INSERT}
){record_duplicates(NSID, "follow", _MATCH)}"""

REFUSED_UPDATES = refused_updates(NSID, "follow", _MATCH)
