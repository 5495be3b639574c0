"""The shape of a collection upstream indexes with a placeholder plugin: its records get their
``record`` row (the generic step writes it, for any rkey) and nothing else."""

from __future__ import annotations

from typing import Any

PROMOTES = False
DELETE_SQL = ""
INSERT_SQL = ""


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return None


def reads(event: Any) -> tuple[str, ...]:
    return ()
