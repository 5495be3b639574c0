"""app.bsky.feed.postgate → ``post_gate``, and ``post."hasPostGate"`` of its post. The rules are not
stored in columns: quotes of the post read them from the gate's ``record`` row (post.py).

The gate's post must have the gate's DID and rkey: upstream's plugin throws otherwise, so decode
rejects such a gate (flows/decode.py). Two gates therefore never share a post, so there are no
duplicates.
"""

from __future__ import annotations

from typing import Any

from ._sql import gate_collection

NSID = "app.bsky.feed.postgate"
PROMOTES = False


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return None


def reads(event: Any) -> tuple[str, ...]:
    # The flag lands only on a post already indexed.
    return (event.record["post"],)


def follows(event: Any) -> tuple[str, ...]:
    # A post created or updated before the gate in its segment is in when the flag is set: the
    # insert step runs the collections in NSID order, the post's before its gates'.
    return (event.record["post"],)


DELETE_SQL, INSERT_SQL = gate_collection(NSID, "post_gate", "hasPostGate")
