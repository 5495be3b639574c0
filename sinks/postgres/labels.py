"""Apply one batch of label-stream events to the ``label`` table in one transaction.

The same shape as writer.py's PostgresWriter (``write(events)``, raises having changed nothing), so
the sink's retries, bisection and ack-after-commit serve labels unchanged.

Semantics (spec/indexing-semantics.md §7): one row per (src, uri, cid, val), cid '' when the
label has none; a negation is the same row with ``neg`` true, and re-applying the label turns it
back. A label only replaces the row when it is newer: by ``cts``, then (at equal ``cts``) a
negation over an assertion, then the later ``exp`` (none counts as latest). That order is total, so
the result does not depend on the order labels arrive in, and a replay changes nothing.
Timestamps are compared as strings in the "C" collation: ours are normalised ISO strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from flows.events import LABEL, Event

TEMP_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS _label (
  src text, uri text, cid text, val text, neg bool, cts text, exp text
) ON COMMIT DELETE ROWS;
"""

COPY_LABELS = "COPY _label (src, uri, cid, val, neg, cts, exp) FROM STDIN"

# The newest of each key within the batch (one INSERT cannot update a row twice), then the same
# "newer" rule against the row already stored.
_NEWEST_FIRST = 'cts COLLATE "C" DESC, neg DESC, coalesce(exp, \'~\') COLLATE "C" DESC'
UPSERT_LABELS = f"""
INSERT INTO label (src, uri, cid, val, neg, cts, exp)
SELECT DISTINCT ON (src, uri, cid, val) src, uri, cid, val, neg, cts, exp
FROM _label
ORDER BY src, uri, cid, val, {_NEWEST_FIRST}
ON CONFLICT (src, uri, cid, val) DO UPDATE
SET neg = excluded.neg, cts = excluded.cts, exp = excluded.exp
WHERE (excluded.cts COLLATE "C", excluded.neg, coalesce(excluded.exp, '~') COLLATE "C")
    > (label.cts COLLATE "C", label.neg, coalesce(label.exp, '~') COLLATE "C")
"""


@dataclass
class LabelWriteStats:
    events: int = 0
    labels: int = 0  # labels in the batch's good entries
    rows: int = 0  # label rows inserted or changed

    @property
    def tables(self) -> dict[tuple[str, str], int]:
        """Rows by (table, op), as the metrics and traces count them."""
        return {("label", "upsert"): self.rows}


class LabelWriter:
    """Writes label batches through connections taken from the shared pool, one at a time."""

    def __init__(self, pool: psycopg.pool.ConnectionPool):  # type: ignore[name-defined]
        self.pool = pool

    def write(self, events: Sequence[Event]) -> LabelWriteStats:
        """Apply the labels of the good events; raises on failure, having changed nothing."""
        labels = [lb for ev in events if ev.ok and ev.type == LABEL for lb in ev.labels or ()]
        stats = LabelWriteStats(events=len(events), labels=len(labels))
        if not labels:
            return stats
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(TEMP_TABLE)
            with cur.copy(COPY_LABELS) as copy:
                for label in labels:
                    copy.write_row(label)
            cur.execute(UPSERT_LABELS)
            stats.rows = cur.rowcount
        return stats
