"""Where the indexer's worker thread spends its time, from a py-spy raw profile.

py-spy samples every thread (``--idle --threads``); with ``-w 1`` bytewax runs the whole dataflow
on the main thread, so only its samples count: a share of samples is a share of wall time. Samples
in Rust (bytewax's engine, or waiting for the next wake-up) show as the bytewax.run module itself.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

# The first matching frame in a stack names its stage.
STAGES = (
    ("StreamAcker.finish", "ack"),
    ("PostgresWriter.write", "write"),
    ("LabelWriter.write", "write (labels)"),
    ("decode_batch", "decode"),
    ("decode_label_batch", "decode"),
    ("_ReaderPartition.next_batch", "read"),
    ("MaxAgeBatcher", "batch"),
    ("shard_of", "shard key"),
    ("_find_and_load", "start-up"),
)
PROJECT = ("flows/", "connectors/", "sinks/", "config/")
_LINE = re.compile(r":\d+\)$")


def _frame(f: str) -> str:
    return _LINE.sub(")", f)


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    stages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in frames[1:]]
        stage = "other"
        if frames and frames[-1].startswith("<module> (run.py"):
            stage = "engine or idle (in Rust)"
        for pattern, name in STAGES:
            if any(pattern in f for f in frames):
                stage = name
                break
        stages[stage] += n
        for f in set(frames):
            inclusive[f] += n
        if frames:
            own[frames[-1]] += n
    if not total:
        return {"samples": 0}

    def share(c: Counter[str], keep: Any = lambda _f: True) -> list[list[Any]]:
        return [[f, round(n / total, 4)] for f, n in c.most_common() if keep(f)][:top]

    return {
        "samples": total,
        "stages": {k: round(n / total, 4) for k, n in stages.most_common()},
        "top_self": share(own),
        "top_inclusive_project": share(inclusive, lambda f: any(p in f for p in PROJECT)),
    }
