"""app.bsky.feed.generator → ``feed_generator``; no duplicates, notifications or counters."""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows, json_text

NSID = "app.bsky.feed.generator"
PROMOTES = False


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return None


def reads(event: Any) -> tuple[str, ...]:
    return ()


DELETE_SQL = delete_rows(NSID, "feed_generator")

INSERT_SQL = insert_rows(
    NSID,
    "feed_generator",
    {
        "feedDid": "e.record->>'did'",
        "displayName": "e.record->>'displayName'",
        "description": "e.record->>'description'",
        "descriptionFacets": json_text("descriptionFacets"),
        "avatarCid": "e.record->'avatar'->'ref'->>'$link'",
    },
)
