"""app.bsky.graph.listitem → ``list_item``; a duplicate is the same subject in the same list.

The list must belong to the item's creator: upstream's plugin throws otherwise, so decode
rejects such an item (flows/decode.py) and every item here has ``"listUri"`` under its creator.
"""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows, refused_updates

NSID = "app.bsky.graph.listitem"
PROMOTES = True


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return (record["list"], record["subject"])


def reads(event: Any) -> tuple[str, ...]:
    return ()


# Upstream matches on the list and subject only; the list is the creator's, so also on creator.
_MATCH = """t."listUri" = e.record->>'list' AND t."subjectDid" = e.record->>'subject'"""

DELETE_SQL = delete_rows(NSID, "list_item", duplicates=_MATCH)

INSERT_SQL = insert_rows(
    NSID,
    "list_item",
    {"subjectDid": "e.record->>'subject'", "listUri": "e.record->>'list'"},
    duplicates=_MATCH,
)

REFUSED_UPDATES = refused_updates(NSID, "list_item", _MATCH)
