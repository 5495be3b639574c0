"""app.bsky.graph.listitem → ``list_item``; a duplicate is the same subject in the same list.

The list must belong to the item's creator: upstream's plugin throws otherwise, so decode
rejects such an item (flows/decode.py) and every item here has ``"listUri"`` under its creator.
"""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows

NSID = "app.bsky.graph.listitem"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["list"], record["subject"])


def reads(event: Any) -> tuple[str, ...]:
    return ()


DELETE_SQL = delete_rows(NSID, "list_item")

INSERT_SQL = insert_rows(
    NSID,
    "list_item",
    {"subjectDid": "e.record->>'subject'", "listUri": "e.record->>'list'"},
    duplicates="""t."listUri" = e.record->>'list' AND t."subjectDid" = e.record->>'subject'""",
)
