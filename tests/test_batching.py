"""Batches leave by size or by the age of their oldest event, even under a steady trickle.

bytewax's own ``collect`` restarts its timeout with every item, so items every 30 ms with a
100 ms timeout would only be flushed at the end of the input; these tests fail with it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from flows.batching import MaxAgeBatcher, shard_of
from flows.events import Event


class _Trickle(StatelessSourcePartition[int]):
    def __init__(self, count: int, every: float):
        self.count, self.every, self.sent = count, every, 0
        self.awake = datetime.now(UTC)

    def next_batch(self) -> list[int]:
        if self.sent == self.count:
            _ENDED.append(time.monotonic())
            raise StopIteration()
        self.sent += 1
        self.awake = datetime.now(UTC) + timedelta(seconds=self.every)
        return [self.sent]

    def next_awake(self) -> datetime:
        return self.awake


class _TrickleSource(DynamicSource[int]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Trickle:
        return _Trickle(20, 0.03)


class _Stamp(StatelessSinkPartition[tuple[str, list[int]]]):
    def write_batch(self, items: list[tuple[str, list[int]]]) -> None:
        for _key, batch in items:
            _BATCHES.append((time.monotonic(), batch))


class _StampSink(DynamicSink[tuple[str, list[int]]]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Stamp:
        return _Stamp()


_BATCHES: list[tuple[float, list[int]]] = []
_ENDED: list[float] = []


def test_trickle_is_flushed_by_age_before_the_input_ends():
    _BATCHES.clear()
    _ENDED.clear()
    flow = Dataflow("trickle")
    items = op.input("in", flow, _TrickleSource())
    keyed = op.key_on("key", items, lambda _: "one")
    batches = op.stateful("batch", keyed, lambda _: MaxAgeBatcher(1000, 0.1))
    op.output("out", batches, _StampSink())
    run_main(flow)

    assert [i for _, batch in _BATCHES for i in batch] == list(range(1, 21))  # nothing lost
    before_end = [b for t, b in _BATCHES if t < _ENDED[0]]
    assert len(before_end) >= 3  # ~0.6 s of input, 0.1 s maximum age
    assert max(len(b) for _, b in _BATCHES) <= 6  # never far past 0.1 s worth of items


def test_deadline_is_set_by_the_first_item_and_size_flushes():
    batcher: MaxAgeBatcher[int] = MaxAgeBatcher(3, 10.0)
    assert batcher.notify_at() is None
    assert batcher.on_item(1) == ([], False)
    deadline = batcher.notify_at()
    assert deadline is not None
    time.sleep(0.01)
    batcher.on_item(2)
    assert batcher.notify_at() == deadline  # a later item does not push it back
    assert batcher.on_item(3) == ([[1, 2, 3]], True)
    batcher = MaxAgeBatcher(3, 10.0)
    batcher.on_item(4)
    assert batcher.on_notify() == ([[4]], True)
    assert batcher.on_eof() == ([], True)


def test_one_did_always_maps_to_one_shard():
    a = Event("s", "1-0", did="did:plc:aaaa")
    b = Event("s", "2-0", did="did:plc:aaaa")
    assert shard_of(a, 8) == shard_of(b, 8)
    assert {shard_of(Event("s", "x", did=f"did:plc:{n}"), 8) for n in range(100)} == {
        str(n) for n in range(8)
    }
