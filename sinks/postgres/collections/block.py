"""app.bsky.graph.block → ``actor_block``; no notifications, no counters."""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows

NSID = "app.bsky.graph.block"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["subject"],)


def reads(event: Any) -> tuple[str, ...]:
    return ()


DELETE_SQL = delete_rows(NSID, "actor_block")

INSERT_SQL = insert_rows(
    NSID,
    "actor_block",
    {"subjectDid": "e.record->>'subject'"},
    duplicates="""t."subjectDid" = e.record->>'subject'""",
)
