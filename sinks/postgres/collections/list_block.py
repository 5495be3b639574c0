"""app.bsky.graph.listblock → ``list_block``; a duplicate blocks the same list again."""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows

NSID = "app.bsky.graph.listblock"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"],)


def reads(event: Any) -> tuple[str, ...]:
    return ()


DELETE_SQL = delete_rows(NSID, "list_block")

INSERT_SQL = insert_rows(
    NSID,
    "list_block",
    {"subjectUri": "e.record->>'subject'"},
    duplicates="""t."subjectUri" = e.record->>'subject'""",
)
