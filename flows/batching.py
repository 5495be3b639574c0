"""Batch events per shard by size or by a true maximum age.

bytewax's ``collect`` restarts its timeout on every item, so a steady trickle never flushes by
time. Here the deadline is set by the first item of a batch and never moves: a batch leaves when
it holds ``max_size`` events or when its oldest event has waited ``max_wait`` seconds.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from bytewax.operators import StatefulLogic

from .events import Event

V = TypeVar("V")


def shard_of(ev: Event, shards: int) -> str:
    """The batching key: one DID always maps to one shard (and so one worker, in order)."""
    key = ev.did or ev.entry_id
    return str(zlib.crc32(key.encode()) % shards)


class MaxAgeBatcher(StatefulLogic[V, list[V], None], Generic[V]):
    def __init__(self, max_size: int, max_wait: float):
        self.max_size = max_size
        self.max_wait = timedelta(seconds=max_wait)
        self.items: list[V] = []
        self.deadline: datetime | None = None

    def on_item(self, value: V) -> tuple[list[list[V]], bool]:
        if not self.items:
            self.deadline = datetime.now(UTC) + self.max_wait
        self.items.append(value)
        if len(self.items) >= self.max_size:
            return [self._flush()], StatefulLogic.DISCARD
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[list[V]], bool]:
        return ([self._flush()] if self.items else []), StatefulLogic.DISCARD

    def on_eof(self) -> tuple[list[list[V]], bool]:
        return ([self._flush()] if self.items else []), StatefulLogic.DISCARD

    def notify_at(self) -> datetime | None:
        return self.deadline

    def snapshot(self) -> None:
        # The consumer group's pending list is the durable state; nothing to recover here.
        return None

    def _flush(self) -> list[V]:
        items, self.items, self.deadline = self.items, [], None
        return items
