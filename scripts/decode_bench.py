"""Micro-benchmark of the decode step alone: ``flows.index.decode_batch`` over stream entries.

The events are the realistic live mix of connectors/synthetic.py (the generator ``just bench``
uses), turned into entries exactly as the producers write them (``XADD stream * event <json>``,
read back by redis-py as ``{b"event": bytes}``). No Redis or Postgres is touched.

One stream of ``--rounds`` x ``--events`` events is generated and each round decodes the next
``--events`` of them in reads of ``--read`` entries: like a running indexer, a round meets values
seen in earlier rounds and new ones, so caches are neither cold nor unrealistically warm. Prints
the median µs/event (CPU time of the decoding thread) and events/s one core
decodes over the rounds, then one extra pass timing each entry by
(type, collection). ``--profile`` runs cProfile over one more round instead of the breakdown.

    python scripts/decode_bench.py [--events 10000] [--rounds 5] [--profile]
    just bench-decode [ARGS]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# flows.index builds its dataflow at import: no metrics port, and stream names of its own (never
# read here: nothing connects), so that importing it cannot touch anything shared; its start and
# stop log lines would only be noise here.
logging.disable(logging.INFO)
os.environ.setdefault("METRICS_PORT", "0")
for _name, _value in (
    ("INDEXER_STREAMS", "decode_bench_stream"),
    ("INDEXER_LABEL_STREAM", "decode_bench_labels"),
    ("INDEXER_GROUP", "decode_bench_group"),
    ("INDEXER_DEAD_LETTER_STREAM", "decode_bench_dead"),
):
    os.environ[_name] = _value

from connectors.redis_streams import Entry  # noqa: E402
from connectors.synthetic import generate  # noqa: E402
from flows.decode import decode_entry  # noqa: E402
from flows.index import decode_batch  # noqa: E402

STREAM = "firehose_live"  # only a label on the entries; nothing is read from Redis


def entries(n: int, dids: int, seed: int) -> list[Entry]:
    """n live-mix events as the reader hands them to decode_batch."""
    base_ms = 1_761_825_600_000
    return [
        (STREAM, f"{base_ms + i // 4}-{i % 4}", {b"event": orjson.dumps(ev)}, 1)
        for i, ev in enumerate(generate(n, dids, seed, "live"))
    ]


def kind_of(entry: Entry) -> str:
    ev = orjson.loads(entry[2][b"event"])  # type: ignore[index]
    return ev["type"] + (" " + ev["collection"] if "collection" in ev else "")


def run_round(chunk: list[Entry], read: int) -> tuple[float, float, int]:
    """CPU and wall seconds to decode chunk in reads of ``read`` entries, and how many came out
    bad. CPU time (this thread's) is the figure that counts: other work on a busy machine
    stretches wall time, not CPU time."""
    bad = 0
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(0, len(chunk), read):
        for ev in decode_batch(chunk[i : i + read]):
            bad += ev.error is not None
    return time.thread_time() - cpu, time.perf_counter() - wall, bad


def breakdown(chunk: list[Entry]) -> list[tuple[str, int, float]]:
    """(kind, count, median µs) per (type, collection), most frequent first."""
    times: dict[str, list[int]] = defaultdict(list)
    clock = time.perf_counter_ns
    for entry in chunk:
        stream, entry_id, fields, _ = entry
        t0 = clock()
        decode_entry(stream, entry_id, fields)  # type: ignore[arg-type]
        times[kind_of(entry)].append(clock() - t0)
    rows = [(k, len(v), statistics.median(v) / 1000) for k, v in times.items()]
    return sorted(rows, key=lambda r: -r[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10_000, help="events per round (10000)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (5)")
    p.add_argument("--dids", type=int, default=20_000, help="distinct accounts (20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--read", type=int, default=100, help="entries per decode_batch call (100)")
    p.add_argument("--profile", action="store_true", help="cProfile one more round")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-collection table")
    args = p.parse_args(argv)
    if args.events < 1 or args.rounds < 1 or args.read < 1:
        p.error("--events, --rounds and --read must be at least 1")

    started = time.perf_counter()
    extra = 1 if (args.profile or not args.no_breakdown) else 0
    all_entries = entries(args.events * (args.rounds + extra), args.dids, args.seed)
    chunks = [
        all_entries[i * args.events : (i + 1) * args.events] for i in range(args.rounds + extra)
    ]
    print(
        f"generated {len(all_entries)} live-mix events (seed {args.seed}, {args.dids} dids) "
        f"in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )

    per_event: list[float] = []
    for r in range(args.rounds):
        cpu, wall, bad = run_round(chunks[r], args.read)
        us = cpu / len(chunks[r]) * 1e6
        per_event.append(us)
        print(
            f"round {r + 1}: {us:6.2f} µs/event CPU, {1e6 / us:8,.0f} events/s a core "
            f"(wall {wall / len(chunks[r]) * 1e6:.2f} µs/event), {bad} bad"
        )
    med = statistics.median(per_event)
    print(
        f"median {med:.2f} µs/event CPU, {1e6 / med:,.0f} events/s a core "
        f"({args.rounds} rounds of {args.events}, min {min(per_event):.2f}, "
        f"max {max(per_event):.2f})"
    )

    last = chunks[-1]
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_round(last, args.read)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    elif not args.no_breakdown:
        print(f"\n{'kind':42} {'count':>6} {'median µs':>10}")
        for kind, n, us in breakdown(last):
            print(f"{kind:42} {n:6} {us:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
