"""app.bsky.actor.profile → ``profile`` (rkey ``self`` only; other rkeys keep just their ``record``
row); notifies the starter pack's creator on the first insert when joined via a starter pack."""

from __future__ import annotations

from typing import Any

from ._sql import FIRST_INSERT, did_of, rows_of

NSID = "app.bsky.actor.profile"
PROMOTES = False


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return None


def reads(event: Any) -> tuple[str, ...]:
    return ()


DELETE_SQL = f"""
WITH gone AS (
  DELETE FROM profile t USING {rows_of(NSID, "'delete', 'update'")} AND t.uri = e.uri
  RETURNING t.uri, e.op, e.idx
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{NSID}', op, idx, false FROM gone;
"""

# "createdAt" is stored as the record has it (upstream does not normalise it); when absent,
# upstream takes the wall clock and we take the event time, which is replay-stable.
INSERT_SQL = f"""
WITH ins AS (
  INSERT INTO profile (uri, cid, creator, "displayName", description, "avatarCid", "bannerCid",
                       "joinedViaStarterPackUri", "createdAt", "indexedAt")
  SELECT e.uri, e.cid, e.did, e.record->>'displayName', e.record->>'description',
         e.record->'avatar'->'ref'->>'$link', e.record->'banner'->'ref'->>'$link',
         e.record->'joinedViaStarterPack'->>'uri', coalesce(e.record->>'createdAt', e.ts), e.ts
  FROM {rows_of(NSID, "'create', 'update'")} AND e.rkey = 'self'
  ORDER BY e.idx
  ON CONFLICT DO NOTHING
  RETURNING uri, cid, creator, "joinedViaStarterPackUri", "indexedAt"
), new AS (
  INSERT INTO _new (uri, collection) SELECT uri, '{NSID}' FROM ins
)
INSERT INTO _notif (did, record_uri, record_cid, author, reason, reason_subject, sort_at, idx, ord)
SELECT {did_of('i."joinedViaStarterPackUri"')}, i.uri, i.cid, i.creator, 'starterpack-joined',
       i."joinedViaStarterPackUri", i."indexedAt", e.idx, 1
FROM ins i JOIN _ev e ON e.uri = i.uri
WHERE {FIRST_INSERT} AND i."joinedViaStarterPackUri" IS NOT NULL;
"""
