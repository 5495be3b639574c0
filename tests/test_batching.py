"""Batches leave by size or by the age of their oldest event, even under a steady trickle.

bytewax's own ``collect`` restarts its timeout with every item, so items every 30 ms with a
100 ms timeout would only be flushed at the end of the input; these tests fail with it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main, run_main

from flows.batching import MaxAgeBatcher, routing_hash, shard_keys, shard_of
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
    assert {shard_of(Event("s", "x", did=f"did:plc:{n}"), 8) for n in range(100)} == set(
        shard_keys(8)
    )


class _WorkerOf(StatelessSinkPartition[tuple[str, str]]):
    def __init__(self, worker: int):
        self.worker = worker

    def write_batch(self, items: list[tuple[str, str]]) -> None:
        _PLACED.extend((key, self.worker) for key, _ in items)


class _WorkerOfSink(DynamicSink[tuple[str, str]]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WorkerOf:
        return _WorkerOf(worker_index)


_PLACED: list[tuple[str, int]] = []


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_each_shard_is_written_by_its_own_worker(workers):
    """bytewax routes keys by hash: plain "0", "1" can share a worker (with two workers, "0" to
    "3" do). The shard keys put shard i on worker i mod the worker count, so every worker
    writes, one shard each when there are as many shards as workers."""
    _PLACED.clear()
    keys = shard_keys(2 * workers)
    flow = Dataflow("routing")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(keys)), lambda k: k)
    op.output("out", op.stateful_map("batch", keyed, lambda _s, v: (None, v)), _WorkerOfSink())
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert sorted(_PLACED) == sorted((key, i % workers) for i, key in enumerate(keys))


def test_the_routing_hash_is_bytewaxs():
    """Plain keys as bytewax placed them on two and four workers (observed with the probe above)."""
    assert [routing_hash(str(i)) % 2 for i in range(8)] == [1, 1, 1, 1, 0, 0, 1, 1]
    assert [routing_hash(str(i)) % 4 for i in range(8)] == [1, 3, 3, 3, 2, 2, 3, 3]
