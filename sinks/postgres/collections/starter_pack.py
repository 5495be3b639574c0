"""app.bsky.graph.starterpack → ``starter_pack`` (its name only); no duplicates, notifications
or counters."""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows

NSID = "app.bsky.graph.starterpack"
PROMOTES = False


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return None


def reads(event: Any) -> tuple[str, ...]:
    return ()


DELETE_SQL = delete_rows(NSID, "starter_pack")

INSERT_SQL = insert_rows(NSID, "starter_pack", {"name": "e.record->>'name'"})
