"""app.bsky.labeler.service → ``labeler`` (rkey ``self`` only; other rkeys keep just their
``record`` row); its policies are not stored."""

from __future__ import annotations

from typing import Any

from ._sql import delete_rows, insert_rows

NSID = "app.bsky.labeler.service"
PROMOTES = False


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return None


def reads(event: Any) -> tuple[str, ...]:
    return ()


DELETE_SQL = delete_rows(NSID, "labeler")

INSERT_SQL = insert_rows(NSID, "labeler", {}, where=" AND e.rkey = 'self'")
