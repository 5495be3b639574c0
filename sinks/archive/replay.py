"""An archive back into StreamEvents: ``bsky-indexer replay --parquet DIR --stream S``.

Order: the order the producers added the entries, i.e. by entry id (its milliseconds, then its
sequence number) and then by stream name. Within one stream that is exactly the original order;
two streams (live and backfill) interleave by the time their entries were added. Neither ``seq``
(-1 on every backfill event) nor ``time`` (milliseconds, often equal) could give that order.

Each Parquet file is sorted that way (parquet.py), so replay merges the files. A file is opened
only when the merge reaches its first entry (kept in the file's metadata), so the files open at
once are those that overlap in time, not the whole archive. An entry found twice (see parquet.py,
"What is left") is sent once.

Filters: ``--collection`` (repeatable; ``_repo``, ``_account``, ``_identity`` select those event
types), ``--since``/``--until`` (receive time, from inclusive, to exclusive; any timestamp form the
producers use), ``--did``. Collection and day prune whole folders before any file is read.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.replay import ReplayError
from flows.datamodel import normalize_time

from .parquet import FIRST_KEY, entry_order
from .schema import stream_event, time_text

Key = tuple[int, int, str]  # entry id milliseconds, entry id sequence, stream
READ_ROWS = 4096  # rows per file read at once: bounded memory however many files are open


@dataclass
class ArchiveSelection:
    root: Path
    collections: frozenset[str] = frozenset()
    since: str | None = None  # normalised receive time, inclusive
    until: str | None = None  # exclusive
    did: str | None = None
    files: list[Path] = field(default_factory=list)

    @classmethod
    def parse(
        cls,
        root: str | Path,
        collections: Iterable[str] = (),
        since: str | None = None,
        until: str | None = None,
        did: str | None = None,
    ) -> ArchiveSelection:
        path = Path(root)
        if not path.is_dir():
            raise ReplayError(f"{root} is not a folder")
        try:
            low = normalize_time(since) if since else None
            high = normalize_time(until) if until else None
        except ValueError as exc:
            raise ReplayError(f"--since/--until: {exc}") from None
        selection = cls(path, frozenset(collections), low, high, did)
        selection.files = selection._find_files()
        return selection

    def _find_files(self) -> list[Path]:
        files: list[Path] = []
        for folder in sorted(self.root.glob("collection=*/date=*")):
            collection = folder.parent.name.partition("=")[2]
            day = folder.name.partition("=")[2]
            if self.collections and collection not in self.collections:
                continue
            if (self.since and day < self.since[:10]) or (self.until and day > self.until[:10]):
                continue
            files += sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
        return files

    def events(self) -> Iterator[dict[str, Any]]:
        """The selected archived events as StreamEvents, in order, each entry once."""
        last: Key | None = None
        for key, row in self._merged():
            if key != last:
                last = key
                yield stream_event(row)

    def _merged(self) -> Iterator[tuple[Key, dict[str, Any]]]:
        starts = sorted((_first_key(path), str(path)) for path in self.files)
        heap: list[tuple[Key, int, dict[str, Any], Iterator[tuple[Key, dict[str, Any]]]]] = []
        opened = 0
        while heap or opened < len(starts):
            # Open every file whose first entry could come before the smallest one at hand.
            while opened < len(starts) and (not heap or starts[opened][0] <= heap[0][0]):
                rows = self._file_rows(Path(starts[opened][1]))
                first = next(rows, None)
                if first is not None:
                    heapq.heappush(heap, (first[0], opened, first[1], rows))
                opened += 1
            if not heap:
                continue
            key, n, row, rows = heapq.heappop(heap)
            yield key, row
            following = next(rows, None)
            if following is not None:
                heapq.heappush(heap, (following[0], n, following[1], rows))

    def _file_rows(self, path: Path) -> Iterator[tuple[Key, dict[str, Any]]]:
        try:
            with pq.ParquetFile(path) as parquet:
                for batch in parquet.iter_batches(batch_size=READ_ROWS):
                    table = pa.Table.from_batches([batch])
                    table = table.set_column(
                        table.schema.get_field_index("time"), "time", time_text(table["time"])
                    )
                    table = self._filtered(table)
                    for row in table.to_pylist():
                        yield (*entry_order(row["entryId"]), row["stream"]), row
        except (pa.ArrowException, OSError) as exc:
            raise ReplayError(f"{path}: {exc}") from exc

    def _filtered(self, table: pa.Table) -> pa.Table:
        masks = []
        if self.since:
            masks.append(pc.greater_equal(table["time"], self.since))
        if self.until:
            masks.append(pc.less(table["time"], self.until))
        if self.did:
            masks.append(pc.equal(table["did"], self.did))
        if not masks:
            return table
        keep = masks[0]
        for mask in masks[1:]:
            keep = pc.and_(keep, mask)
        return table.filter(keep)


def _first_key(path: Path) -> Key:
    """The file's first entry from its metadata; the very start when it has none."""
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise ReplayError(f"{path}: {exc}") from exc
    raw = meta.get(FIRST_KEY)
    if raw is None:
        return (-1, -1, "")
    ms, seq, stream = json.loads(raw)
    return (ms, seq, stream)
