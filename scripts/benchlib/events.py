"""The event mix: generated once into a JSONL file, loaded into streams, or offered at a rate."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import redis

from connectors.replay import StreamLoader
from connectors.synthetic import generate, write_jsonl


def write_events(path: Path, n: int, dids: int, seed: int) -> int:
    """n live-mix events for dids accounts into path, one JSON per line."""
    with open(path, "wb") as out:
        return write_jsonl(generate(n, dids, seed, "live"), out)


def lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield line.rstrip(b"\n")


def load(client: redis.Redis, stream: str, path: Path) -> tuple[int, float]:
    """XADD every line of path to stream (pipelined); (entries, seconds)."""
    started = time.perf_counter()
    loader = StreamLoader(client, stream, chunk=1000)
    for payload in lines(path):
        loader.add(payload)
    loader.flush()
    return loader.loaded, time.perf_counter() - started


def mix(path: Path) -> dict[str, float]:
    """Share of each (type, collection) in the file, e.g. ``create app.bsky.feed.like``."""
    kinds: Counter[str] = Counter()
    for payload in lines(path):
        ev = orjson.loads(payload)
        kind = ev["type"]
        if "collection" in ev:
            kind += " " + ev["collection"]
        kinds[kind] += 1
    total = sum(kinds.values()) or 1
    return {k: round(n / total, 5) for k, n in kinds.most_common()}


class Producer(threading.Thread):
    """XADDs the lines of a file at a steady rate (every few ms, what is due), like a live feed."""

    def __init__(self, client: redis.Redis, stream: str, path: Path, rate: float):
        super().__init__(name="bench-producer", daemon=True)
        self.client = client
        self.stream = stream
        self.payloads = list(lines(path))
        self.rate = rate
        self.sent = 0
        self.seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the bench
            self.error = exc

    def _run(self) -> None:
        started = time.perf_counter()
        total = len(self.payloads)
        while self.sent < total:
            due = min(total, int((time.perf_counter() - started) * self.rate) + 1)
            if due > self.sent:
                pipe = self.client.pipeline(transaction=False)
                for payload in self.payloads[self.sent : due]:
                    pipe.xadd(self.stream, {"event": payload})
                pipe.execute()
                self.sent = due
            time.sleep(0.002)
        self.seconds = time.perf_counter() - started
