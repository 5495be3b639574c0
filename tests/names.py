"""Stream, group and consumer names private to one test or one benchmark run.

Every name starts with a fresh prefix, so nothing another test, run or indexer uses is touched,
and ``delete`` removes every key under the prefix. No pytest here: the benchmark uses it too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis


@dataclass(frozen=True)
class Names:
    prefix: str

    @classmethod
    def new(cls, kind: str) -> Names:
        return cls(f"{kind}-{uuid.uuid4().hex[:12]}")

    @property
    def live(self) -> str:
        return f"{self.prefix}:firehose_live"

    @property
    def backfill(self) -> str:
        return f"{self.prefix}:firehose_backfill"

    @property
    def labels(self) -> str:
        return f"{self.prefix}:label_live"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}:dead_letter"

    @property
    def group(self) -> str:
        return f"{self.prefix}:group"

    @property
    def consumer(self) -> str:
        return f"{self.prefix}:consumer"

    def delete(self, client: redis.Redis) -> None:
        keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
