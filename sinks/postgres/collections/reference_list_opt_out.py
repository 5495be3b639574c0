"""app.bsky.graph.referencelistoptout → ``reference_list_opt_out``.

Only a subject that is exactly a list's canonical ``at://did/app.bsky.graph.list/rkey`` gets a
row (any other keeps just its ``record`` row), as upstream's plugin decides by parsing it with
``AtUri``: a DID authority its parser accepts (no ``_``, not both ``.`` and ``%``), no fragment.
Duplicates are recorded but never promoted when the original goes.
"""

from __future__ import annotations

import re
from typing import Any

from ._sql import delete_rows, insert_rows, refused_updates

NSID = "app.bsky.graph.referencelistoptout"
PROMOTES = False
DUPLICATES = True  # recorded in duplicate_record although never promoted

# The subject has passed the at-uri format check, so its rkey is valid and it has no query.
LIST_URI = r"^at://did:([a-zA-Z0-9:%-]+|[a-zA-Z0-9.:-]+)/app\.bsky\.graph\.list/[^/#]+$"
_LIST_URI = re.compile(LIST_URI)


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    subject = record["subject"]
    return (subject,) if _LIST_URI.match(subject) else None


def reads(event: Any) -> tuple[str, ...]:
    return ()


_VALID = f"e.record->>'subject' ~ '{LIST_URI}'"
_MATCH = f"""t."subjectUri" = e.record->>'subject' AND {_VALID}"""

DELETE_SQL = delete_rows(NSID, "reference_list_opt_out", duplicates=_MATCH)

INSERT_SQL = insert_rows(
    NSID,
    "reference_list_opt_out",
    {"subjectUri": "e.record->>'subject'"},
    where=f" AND {_VALID}",
    duplicates=_MATCH,
)

# An update of an opt-out that has a row to a subject that is not a list: upstream removes the
# row, its insert declines the new one, and the update is refused.
REFUSED_UPDATES = refused_updates(NSID, "reference_list_opt_out", _MATCH, insertable=_VALID)
