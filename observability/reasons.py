"""A dead letter's reason reduced to its kind: a short, bounded label for metrics and logs.

Reasons hold values from the entry ("invalid seq 'abc'"); a metric label must not, or every
bad entry would make a new time series. The kind is the reason's leading words, up to the first
value, colon or number: "invalid seq", "unknown type", "database rejected the event".
"""

from __future__ import annotations

import re
import threading

MAX_KINDS = 50  # beyond this many distinct kinds in one process, further ones count as "other"
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-.$]*")
_kinds: set[str] = set()
_lock = threading.Lock()


def reason_kind(reason: str) -> str:
    words = []
    for token in reason.split(":", 1)[0].split()[:6]:
        if not _WORD.fullmatch(token):
            break
        words.append(token)
    kind = " ".join(words) or "other"
    if kind in _kinds:
        return kind
    with _lock:
        if len(_kinds) >= MAX_KINDS:
            return "other"
        _kinds.add(kind)
    return kind
