"""app.bsky.feed.repost → ``repost`` and its ``feed_item``; notifies like a like does;
counts ``post_agg."repostCount"`` of the subject."""

from __future__ import annotations

from typing import Any

from ._sql import rows_of, subject_ref_collection

NSID = "app.bsky.feed.repost"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"]["uri"],)


def reads(event: Any) -> tuple[str, ...]:
    # The repost's rows do not depend on its subject existing; but a delete of the subject later
    # in the batch takes the repost's feed item with it, so that delete must see this repost.
    return ()


def watches(event: Any) -> tuple[str, ...]:
    return (event.record["subject"]["uri"],) if event.record else ()


_DELETE, _INSERT, REFUSED_UPDATES = subject_ref_collection(
    NSID, "repost", "repost", "repost-via-repost", "repostCount"
)

DELETE_SQL = (
    _DELETE
    + f"""
DELETE FROM feed_item f USING {rows_of(NSID, "'delete', 'update'")} AND f.uri = e.uri;
"""
)

# Upstream inserts the feed item even when the repost itself is a duplicate.
INSERT_SQL = (
    _INSERT
    + f"""
INSERT INTO feed_item (uri, cid, type, "postUri", "originatorDid", "sortAt")
SELECT e.uri, e.cid, 'repost', e.record->'subject'->>'uri', e.did, e.sort_at
FROM {rows_of(NSID, "'create', 'update', 'promote'")}
ORDER BY e.idx
ON CONFLICT DO NOTHING;
"""
)
