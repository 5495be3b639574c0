"""app.bsky.graph.block → ``actor_block``; no notifications, no counters."""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows, refused_updates

NSID = "app.bsky.graph.block"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"],)


def reads(event: Any) -> tuple[str, ...]:
    return ()


_MATCH = """t."subjectDid" = e.record->>'subject'"""

DELETE_SQL = delete_rows(NSID, "actor_block", duplicates=_MATCH)

INSERT_SQL = insert_rows(
    NSID, "actor_block", {"subjectDid": "e.record->>'subject'"}, duplicates=_MATCH
)

REFUSED_UPDATES = refused_updates(NSID, "actor_block", _MATCH)
