"""app.bsky.graph.verification → ``verification``; a duplicate verifies the same subject again.

Notifies the subject ``verified`` on the first insert, and ``unverified`` when the row goes: on
delete and, as upstream, on update too (which then sends no new ``verified``). Upstream stamps
``unverified`` with the wall clock; we use the event's time (docs/semantics.md).
"""

from __future__ import annotations

from typing import Any

from ._sql import FIRST_INSERT, record_duplicates, refused_updates, rows_of, update_duplicates

NSID = "app.bsky.graph.verification"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"],)


def reads(event: Any) -> tuple[str, ...]:
    return ()


_MATCH = "t.subject = e.record->>'subject'"

DELETE_SQL = f"""{update_duplicates(NSID, "verification", _MATCH)}
WITH gone AS (
  DELETE FROM verification t USING {rows_of(NSID, "'delete', 'update'")} AND t.uri = e.uri
  RETURNING t.uri, t.cid, t.creator, t.subject, e.op, e.idx, e.ts
), notif AS (
  INSERT INTO _notif (did, record_uri, record_cid, author, reason, reason_subject, sort_at, idx, ord)
  SELECT subject, uri, cid, creator, 'unverified', NULL, ts, idx, 0 FROM gone
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{NSID}', op, idx, false FROM gone;
"""

INSERT_SQL = f"""
WITH ins AS (
  INSERT INTO verification (uri, cid, rkey, creator, subject, handle, "displayName",
                            "createdAt", "indexedAt")
  SELECT e.uri, e.cid, e.rkey, e.did, e.record->>'subject', e.record->>'handle',
         e.record->>'displayName', e.c, e.ts
  FROM {rows_of(NSID, "'create', 'update', 'promote'")}
  ORDER BY e.idx
  ON CONFLICT DO NOTHING
  RETURNING uri, cid, creator, subject, "sortedAt"
), new AS (
  INSERT INTO _new (uri, collection) SELECT uri, '{NSID}' FROM ins
), notif AS (
  INSERT INTO _notif (did, record_uri, record_cid, author, reason, reason_subject, sort_at, idx, ord)
  SELECT i.subject, i.uri, i.cid, i.creator, 'verified', NULL, i."sortedAt", e.idx, 1
  FROM ins i JOIN _ev e ON e.uri = i.uri
  WHERE {FIRST_INSERT}
){record_duplicates(NSID, "verification", _MATCH)}"""

REFUSED_UPDATES = refused_updates(NSID, "verification", _MATCH)
