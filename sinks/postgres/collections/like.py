"""app.bsky.feed.like → ``like``; notifies the liked post's author (and the reposter it came via);
counts ``post_agg."likeCount"`` of the subject."""

from __future__ import annotations

from typing import Any

from ._sql import subject_ref_collection

NSID = "app.bsky.feed.like"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"]["uri"],)


def reads(event: Any) -> tuple[str, ...]:
    return ()


DELETE_SQL, INSERT_SQL, REFUSED_UPDATES = subject_ref_collection(
    NSID, "like", "like", "like-via-repost", "likeCount"
)
