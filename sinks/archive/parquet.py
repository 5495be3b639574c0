"""The archive sink: every committed batch's indexed events, appended to Parquet files.

On only when INDEXER_ARCHIVE_DIR is set. Files, one per segment and partition::

    DIR/collection=app.bsky.feed.like/date=2025-10-30/part-<writer>-<segment>.parquet

(schema: schema.py; ``date`` is the UTC day of the event's receive time; repo, account and
identity events are under ``collection=_repo``, ``_account`` and ``_identity``).

Where it runs. ``BatchCommitter`` (sinks/postgres/sink.py) calls ``ArchiveWriter.write(batch)``
after the batch's Postgres commit and before its ack, and retries it with backoff until it
succeeds, as it does the ack: an entry is acked only once it is both indexed and archived, so a
full or broken archive disk stops acks (loudly) rather than losing events. Dead-lettered events
are not archived, nor is the label stream.

Durable first, Parquet later. Parquet files cannot be appended to, so each writer (one per
bytewax worker) appends every batch as one Arrow IPC message to its spool segment
(DIR/_spool/<writer>/seg-<n>.arrows, spool.py) with one write and one fdatasync. A segment is
rolled into Parquet when it reaches INDEXER_ARCHIVE_ROLL_BYTES (Arrow bytes, before compression)
or INDEXER_ARCHIVE_ROLL_SECONDS, checked at the start of the writer's next batch, and at shutdown.
Rolling writes one file per (collection, day) of the segment, each sorted by entry id (the order
replay needs), under a temporary name in its own folder (``.part-….parquet.tmp``, which DuckDB's
``*.parquet`` and pyarrow's datasets skip), fsyncs it, renames it and fsyncs the folder; only then
is the segment removed. A file's name comes from its segment, so a roll cut short by a crash is
redone at recovery without a second copy: files that exist are complete, and are kept.

Exactly once, also across a crash between the archive write and the ack. Each row carries
(stream, entry id), and a writer skips an entry it has archived before:

* A batch is acked before its writer handles the next one, and a segment is only rolled at the
  start of a batch or at shutdown. So every entry a writer has archived without acking is in its
  spool, in its last batch; every row in a Parquet file written by a live writer is acked.
* Within a process, the writer remembers the last RECENT entry ids it archived: a batch retried
  or an entry read again while in flight is archived once.
* A writer that is gone (killed, crashed) leaves its spool folder unlocked. The next writer to
  start, or to see an entry delivered more than once, recovers it under the archive-wide lock:
  its segments become Parquet files and the ids of its last batch go to a small durable ledger
  (DIR/_spool/_ledger/<writer>.json) before the segments are removed. An entry delivered again
  (``deliveries > 1``: only those can have been archived already) is skipped when its id is in the
  ledger. Entries delivered once, almost all of them, cost no look-up.

This was chosen over keeping duplicates and removing them on read (with a compaction step): the
files stay exact for every reader (DuckDB, pyarrow, replay), and the price is paid only when an
entry is delivered again. tests/test_archive.py kills writers and indexers at each of these points.

What is left: two live consumers holding the same entry at once (one stalled past
INDEXER_CLAIM_IDLE_MS, and another one claimed its entries) can both archive it; replay drops
such copies by (stream, entry id), and so should a query that must count each event once.
The spool, the ledger and the locks assume DIR is on a local filesystem (flock, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.events import Event

from .schema import BATCH, archived, dates, to_batch
from .spool import (
    SPOOL,
    Ledger,
    Segment,
    SpoolDir,
    fsync_dir,
    make_dirs,
    read_segment,
    recover_orphans,
    segment_id,
)

log = logging.getLogger(__name__)

DEFAULT_ROLL_BYTES = 32 * 1024 * 1024  # memory at a roll grows with it
DEFAULT_ROLL_SECONDS = 600.0
RECENT = 100_000  # entry ids a writer remembers; many times what can be in flight at once
FIRST_KEY = b"bsky_indexer.first_entry"  # file metadata: the sort key of its first row


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id's place in its stream: ``1761825600123-4`` -> (1761825600123, 4)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write atomically: a temporary name in the same folder, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        pq.write_table(table, out, compression="zstd")
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def convert_segment(root: Path, segment: str, rows: pa.Table) -> int:
    """A segment's rows as one Parquet file per (collection, day), sorted by (entry id, stream);
    a file already there (an earlier try of the same roll) is kept. Returns files written."""
    if not rows.num_rows:
        return 0
    # Sort only the keys, then copy one partition at a time: memory stays near the segment's
    # own size (mapped from the spool) plus its largest partition.
    parts = pc.split_pattern(rows["entryId"], "-", max_splits=1)
    keys = pa.table(
        {
            "collection": rows["collection"],
            "date": dates(rows["time"]),
            "ms": pc.cast(pc.list_element(parts, 0), pa.int64()),
            "seq": pc.cast(pc.list_element(parts, 1), pa.int64()),
            "stream": rows["stream"],
        }
    )
    order = pc.sort_indices(keys, [(name, "ascending") for name in keys.column_names])
    keys = keys.take(order)
    partitions = pc.binary_join_element_wise(keys["collection"], keys["date"], "/").to_pylist()
    rows = rows.drop_columns([BATCH])
    written = start = 0
    while start < len(partitions):
        end = start
        while end < len(partitions) and partitions[end] == partitions[start]:
            end += 1
        collection, day = partitions[start].split("/")
        path = root / f"collection={collection}" / f"date={day}" / f"part-{segment}.parquet"
        if not path.exists():
            first = [keys["ms"][start].as_py(), keys["seq"][start].as_py()]
            meta = {FIRST_KEY: json.dumps([*first, keys["stream"][start].as_py()])}
            part = rows.take(order[start:end]).replace_schema_metadata(meta)
            make_dirs(path.parent)
            write_parquet(part, path)
            written += 1
        start = end
    return written


class ArchiveWriter:
    """One worker's archive: ``write(batch)`` after each commit (raises OSError, to be retried),
    ``close()`` at shutdown."""

    def __init__(
        self,
        root: str | Path,
        *,
        roll_bytes: int = DEFAULT_ROLL_BYTES,
        roll_seconds: float = DEFAULT_ROLL_SECONDS,
        worker: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.root = Path(root)
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self.clock = clock
        make_dirs(self.root / SPOOL)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.name = f"{stamp}-w{worker}-{secrets.token_hex(3)}"
        self.spool = SpoolDir(self.root, self.name)
        self.ledger = Ledger(self.root)
        self._open: Segment | None = None
        self._opened_at = 0.0
        self._sealed: list[Segment] = []
        self._segments = 0
        self._batch_no = 0
        self._recent: dict[tuple[str, str], None] = {}  # insertion-ordered: oldest first
        recover_orphans(self.root, self._convert)  # what writers before a crash left behind

    def write(self, events: Sequence[Event]) -> int:
        """Archive the batch's indexed events not archived before; how many were new."""
        self._roll_due()
        new = self._unseen(events)
        if not new:
            return 0
        batch = self._batch(new)
        if not batch.num_rows:
            return 0
        segment = self._open or self._start()
        try:
            segment.append(batch)
        except OSError:
            self._seal()  # a retry starts a new segment; this one keeps its good part
            raise
        self._batch_no += 1
        recent = self._recent
        for ev in new:
            recent[(ev.stream, ev.entry_id)] = None
        while len(recent) > RECENT:
            del recent[next(iter(recent))]
        return len(new)

    def close(self) -> None:
        """Roll everything (all acked by now) and let go of the spool folder."""
        self._seal()
        self._roll_sealed()
        self.spool.release()

    def _unseen(self, events: Sequence[Event]) -> list[Event]:
        new: list[Event] = []
        keys: set[tuple[str, str]] = set()
        again = False
        for ev in events:
            if not archived(ev):
                continue
            key = (ev.stream, ev.entry_id)
            if key in keys or key in self._recent:
                continue
            keys.add(key)
            new.append(ev)
            again = again or ev.deliveries > 1
        if again:
            # Delivered before: maybe archived by a writer that died before its ack.
            recover_orphans(self.root, self._convert)
            known = self.ledger.refresh()
            before = len(new)
            new = [ev for ev in new if ev.deliveries == 1 or (ev.stream, ev.entry_id) not in known]
            if len(new) < before:
                log.info("archive: %d redelivered entries were archived already", before - len(new))
        return new

    def _batch(self, events: list[Event]) -> pa.RecordBatch:
        try:
            return to_batch(events, self._batch_no)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        # One event the schema cannot hold (a seq past int64, say): keep the others, and say
        # which one it was; it is indexed, so it is not a dead letter.
        kept = []
        for ev in events:
            try:
                to_batch([ev], self._batch_no)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                log.error("archive: %s %s cannot be archived: %s", ev.stream, ev.entry_id, exc)
                continue
            kept.append(ev)
        events[:] = kept
        return to_batch(kept, self._batch_no)

    def _start(self) -> Segment:
        segment = self.spool.segment(self._segments)
        self._segments += 1
        self._open, self._opened_at = segment, self.clock()
        return segment

    def _seal(self) -> None:
        if self._open is not None:
            self._open.close()
            self._sealed.append(self._open)
            self._open = None

    def _roll_due(self) -> None:
        segment = self._open
        if segment is not None and (
            segment.good >= self.roll_bytes or self.clock() - self._opened_at >= self.roll_seconds
        ):
            self._seal()
        self._roll_sealed()

    def _roll_sealed(self) -> None:
        while self._sealed:
            segment = self._sealed[0]
            rows = read_segment(segment.path, segment.good)
            self._convert(segment_id(segment.path), rows)
            segment.path.unlink()
            fsync_dir(segment.path.parent)
            self._sealed.pop(0)

    def _convert(self, segment: str, rows: pa.Table) -> None:
        files = convert_segment(self.root, segment, rows)
        log.debug("archive: segment %s: %d rows into %d files", segment, rows.num_rows, files)
