"""app.bsky.graph.listblock → ``list_block``; a duplicate blocks the same list again."""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows, refused_updates

NSID = "app.bsky.graph.listblock"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"],)


def reads(event: Any) -> tuple[str, ...]:
    return ()


_MATCH = """t."subjectUri" = e.record->>'subject'"""

DELETE_SQL = delete_rows(NSID, "list_block", duplicates=_MATCH)

INSERT_SQL = insert_rows(
    NSID, "list_block", {"subjectUri": "e.record->>'subject'"}, duplicates=_MATCH
)

REFUSED_UPDATES = refused_updates(NSID, "list_block", _MATCH)
