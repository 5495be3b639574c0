"""Batch events per shard by size or by a true maximum age.

bytewax's ``collect`` restarts its timeout on every item, so a steady trickle never flushes by
time. Here the deadline is set by the first item of a batch and never moves: a batch leaves when
it holds ``max_size`` events or when its oldest event has waited ``max_wait`` seconds.

Shard keys are chosen for bytewax's routing: it sends a keyed item to worker
``siphash13(key + 0xff) % worker_count`` (Rust's DefaultHasher: SipHash-1-3, zero keys, over the
key's bytes and a 0xff), so plain keys "0", "1", ... can all land on one worker (with two workers
"0" to "3" do) and leave the others nothing to write. Shard *i*'s key hashes to *i* modulo 840,
so with any worker count that divides 840 (1 to 8, 10, 12, 14, 15, 20, 24, ...) shard *i* is
written by worker *i* mod the count.
"""

from __future__ import annotations

import functools
import zlib
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from bytewax.operators import StatefulLogic

from .events import Event

V = TypeVar("V")


ROUTING_PERIOD = 840  # the least common multiple of 1..8
_MASK = (1 << 64) - 1


def shard_of(ev: Event, shards: int) -> str:
    """The batching key: one DID always maps to one shard (and so one worker, in order)."""
    key = ev.did or ev.entry_id
    return shard_keys(shards)[zlib.crc32(key.encode()) % shards]


@functools.cache
def shard_keys(shards: int) -> tuple[str, ...]:
    """Key of each shard: ``"i.j"`` with the first ``j`` that routes it to residue ``i`` (about
    840 tries, 6 ms, per shard, once); past 840 shards, residues repeat and plain keys do."""
    return tuple(_routed_key(i) if i < ROUTING_PERIOD else str(i) for i in range(shards))


def _routed_key(i: int) -> str:
    j = 0
    while routing_hash(f"{i}.{j}") % ROUTING_PERIOD != i:
        j += 1
    return f"{i}.{j}"


def routing_hash(key: str) -> int:
    """What bytewax 0.21 hashes a key with to pick its worker (see the module docstring)."""
    data = key.encode() + b"\xff"
    v0, v1 = 0x736F6D6570736575, 0x646F72616E646F6D
    v2, v3 = 0x6C7967656E657261, 0x7465646279746573
    n = len(data)
    tail = n - n % 8
    words = [int.from_bytes(data[i : i + 8], "little") for i in range(0, tail, 8)]
    words.append(((n & 0xFF) << 56) | int.from_bytes(data[tail:], "little"))
    for m in words:
        v3 ^= m
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def _sip_round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _MASK
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _MASK
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _MASK
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _MASK
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


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
