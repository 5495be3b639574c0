"""`just bench`: the real indexer on the firehose mix, against the physical limit, in one run.

Generates the live mix (connectors/synthetic.py), then for each run loads it into a fresh stream
and a fresh database on the local Redis and Postgres and runs `python -m bytewax.run flows.index`
until it stops by itself (INDEXER_STOP_WHEN_IDLE):

  backfill -w 1       the whole backlog flat out, one worker: throughput end to end (first read
                      to last ack), per stage, Postgres' share, peak RSS, connections, latency;
                      then the COPY limit of the same final rows, measured right after
  backfill -w 2       the same with two worker threads
  backfill 2 procs    the same with a bytewax cluster of two processes (-i/-a), one worker each
  live 1,000 ev/s     an empty stream fed at a steady rate while the indexer runs: XADD-to-commit
  resolving           (--resolution) backfill -w 1 again with DID resolution on, against local
                      PLC/DNS/well-known servers: its events/s over backfill -w 1's (issue 8)
  backlog N           (--backlog N) peak RSS with N entries waiting
  profile             (--profile) backfill -w 1 again under py-spy: where the time goes

Writes <out>/bench-<time>.json and .png (and latest.json/.png; with --docs also
docs/bench/latest.json/.png) and prints the table. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import pgstat  # noqa: E402
from benchlib.copylimit import copy_limit, row_counts  # noqa: E402
from benchlib.events import Producer, load, mix, write_events  # noqa: E402
from benchlib.identity import resolution_env, start_directory  # noqa: E402
from benchlib.indexer import BENCH_DEFAULTS, indexer_env, run_indexer  # noqa: E402
from benchlib.profile import summarize  # noqa: E402
from benchlib.report import derive, plot, table, targets  # noqa: E402
from benchlib.services import (  # noqa: E402
    fresh_database,
    machine,
    pg_url_from_env,
    redis_url_from_env,
)

from tests.names import Names  # noqa: E402

MAIN = "backfill -w 1"
RESOLVING = "backfill -w 1 resolving"
LIVE = "live 1,000 ev/s"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events in the backlog runs")
    p.add_argument("--dids", type=int, default=20_000, help="distinct accounts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-scaling", action="store_true", help="skip the -w 2 and 2-process runs")
    p.add_argument("--live-rate", type=float, default=1_000, help="offered events/s, live run")
    p.add_argument("--live-seconds", type=float, default=30, help="live run length; 0: none")
    p.add_argument("--backlog", type=int, default=0, help="also measure RSS with this backlog")
    p.add_argument("--profile", action="store_true", help="also run backfill -w 1 under py-spy")
    p.add_argument(
        "--resolution",
        action="store_true",
        help="also run backfill -w 1 with DID resolution on (local identity servers)",
    )
    p.add_argument(
        "--resolution-rounds",
        type=int,
        default=1,
        help="--resolution: off/on pairs, alternated (the ratio is of the medians)",
    )
    p.add_argument(
        "--resolution-latency",
        type=float,
        default=0.05,
        help="seconds each identity server takes to answer (--resolution)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"indexer setting for every run (bench defaults: {BENCH_DEFAULTS})",
    )
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="folder for the results")
    p.add_argument("--docs", action="store_true", help="also write docs/bench/latest.json/.png")
    p.add_argument("--redis-url", default=redis_url_from_env())
    p.add_argument("--pg-url", default=pg_url_from_env(), help="admin URL; bench DBs are made")
    p.add_argument(
        "--pg-options",
        default="",
        help="libpq options for the indexer's connections, e.g. '-c jit=off'",
    )
    p.add_argument("--keep-events", action="store_true", help="keep the generated JSONL files")
    args = p.parse_args(argv)
    if args.events < 1 or args.dids < 2:
        p.error("--events must be >= 1 and --dids >= 2")
    for item in args.env:
        if "=" not in item:
            p.error(f"--env {item!r}: expected NAME=VALUE")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.client = redis.Redis.from_url(args.redis_url)
        self.overrides = dict(item.split("=", 1) for item in args.env)
        self.runs: dict[str, dict[str, Any]] = {}
        self.copy: dict[str, Any] | None = None

    def env(self, streams: Names, db_url: str, overrides: dict[str, str]) -> dict[str, str]:
        if self.args.pg_options:
            db_url = make_conninfo(db_url, options=self.args.pg_options)
        return indexer_env(streams, self.args.redis_url, db_url, self.work, overrides)

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def backlog_run(
        self,
        name: str,
        events_file: Path,
        *,
        workers: int = 1,
        processes: int = 1,
        measure_copy: bool = False,
        profile: bool = False,
        overrides: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Load the whole file, then index it flat out."""
        streams = Names.new("bench")
        slug = name.replace(" ", "_").replace(",", "")
        try:
            with fresh_database(self.args.pg_url) as db_url:
                loaded, load_s = load(self.client, streams.live, events_file)
                self.log(f"{name}: loaded {loaded:,} entries in {load_s:.1f}s; indexing")
                statements = pgstat.enable(db_url)
                run = run_indexer(
                    workers=workers,
                    processes=processes,
                    env=self.env(streams, db_url, (overrides or {}) | self.overrides),
                    timings_dir=self.work / slug,
                    admin_url=self.args.pg_url,
                    dbname=conninfo_to_dict(db_url)["dbname"],
                    client=self.client,
                    stream=streams.live,
                    log_path=self.work / f"{slug}.log",
                    profile=self.work / f"{slug}.pyspy.txt" if profile else None,
                )
                run["loaded"] = loaded
                run["load_s"] = round(load_s, 2)
                if statements:
                    run["statements"] = pgstat.top_statements(db_url)
                self._finish(run, streams, db_url)
                if overrides:
                    run["handles"] = handle_counts(db_url)
                if measure_copy and run["derived"].get("ok"):
                    self.log(f"{name}: measuring the COPY limit of the same rows")
                    self.copy = copy_limit(self.args.pg_url, db_url)
        finally:
            streams.delete(self.client)
        if profile:
            run["profile"] = summarize(self.work / f"{slug}.pyspy.txt")
        self.runs[name] = run
        self._say(name, run)
        return run

    def live_run(self, events_file: Path, rate: float) -> dict[str, Any]:
        """An empty stream fed at ``rate`` events/s while the indexer runs."""
        streams = Names.new("bench")
        producer = Producer(self.client, streams.live, events_file, rate)
        overrides = {"INDEXER_STOP_WHEN_IDLE": "3", **self.overrides}

        def start_feeding() -> None:
            # Start once the indexer has made its group, so start-up is not counted as latency.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if any(
                        g["name"].decode() == streams.group
                        for g in self.client.xinfo_groups(streams.live)
                    ):
                        break
                except redis.ResponseError:
                    pass
                time.sleep(0.02)
            producer.start()

        try:
            with fresh_database(self.args.pg_url) as db_url:
                self.log(f"{LIVE}: feeding {len(producer.payloads):,} events at {rate:,.0f}/s")
                statements = pgstat.enable(db_url)
                run = run_indexer(
                    workers=1,
                    processes=1,
                    env=self.env(streams, db_url, overrides),
                    timings_dir=self.work / "live",
                    admin_url=self.args.pg_url,
                    dbname=conninfo_to_dict(db_url)["dbname"],
                    client=self.client,
                    stream=streams.live,
                    log_path=self.work / "live.log",
                    on_started=start_feeding,
                )
                producer.join()
                secs = producer.seconds
                run["offered"] = {
                    "events": producer.sent,
                    "seconds": round(secs, 2),
                    "rate": round(producer.sent / secs, 1) if secs else None,
                    "error": repr(producer.error) if producer.error else None,
                }
                if statements:
                    run["statements"] = pgstat.top_statements(db_url)
                self._finish(run, streams, db_url, events=producer.sent)
        finally:
            streams.delete(self.client)
        self.runs[LIVE] = run
        self._say(LIVE, run)
        return run

    def _finish(
        self, run: dict[str, Any], streams: Names, db_url: str, events: int | None = None
    ) -> None:
        run["left_in_stream"] = self.client.xlen(streams.live)
        run["dead_letters"] = self.client.xlen(streams.dead_letter)
        run["rows"] = row_counts(db_url)
        run["derived"] = derive(run, events if events is not None else run["loaded"])
        if run["left_in_stream"] or any(run["exit_codes"]):
            run["derived"]["ok"] = False

    def _say(self, name: str, run: dict[str, Any]) -> None:
        d = run["derived"]
        if not d.get("ok"):
            log = self.work / f"{name.replace(' ', '_').replace(',', '')}.log"
            self.log(f"{name}: FAILED (exit {run['exit_codes']}, see {log})")
            return
        self.log(
            f"{name}: {d['events_per_s']:,.0f} events/s end to end ({d['e2e_s']:.1f}s), "
            f"peak RSS {d['peak_rss_mb']} MB, {d['max_pg_connections']} PG connections"
        )


def handle_counts(db_url: str) -> dict[str, int]:
    """After a resolving run: actors, those with a handle, checks still queued."""
    with psycopg.connect(db_url) as conn:
        actors, handles = conn.execute("SELECT count(*), count(handle) FROM actor").fetchone()
        queued = conn.execute("SELECT count(*) FROM bsky_indexer.handle_check").fetchone()[0]
    return {"actors": actors, "with_handle": handles, "checks_left": queued}


def _rates(runs: dict[str, dict[str, Any]], prefix: str) -> list[float]:
    return [r["derived"]["events_per_s"] for k, r in runs.items() if k.startswith(prefix)]


def summary(bench: Bench, n: int) -> dict[str, Any]:
    runs = bench.runs
    main = runs.get(MAIN, {}).get("derived", {})
    out: dict[str, Any] = {"events_per_s": main.get("events_per_s")}
    one_process = [
        runs[k]["derived"].get("events_per_s") for k in (MAIN, "backfill -w 2") if k in runs
    ]
    out["one_process_events_per_s"] = max((v for v in one_process if v), default=None)
    if bench.copy and main.get("e2e_s"):
        out["copy_limit_events_per_s"] = round(n / bench.copy["seconds"], 1)
        out["fraction_of_copy_limit"] = round(bench.copy["seconds"] / main["e2e_s"], 3)
    measured = [r["derived"] for k, r in runs.items() if k != "profile" and r["derived"].get("ok")]
    out["peak_rss_mb"] = max((d["peak_rss_mb"] for d in measured), default=None)
    out["max_pg_connections"] = max((d["max_pg_connections"] for d in measured), default=None)
    live = runs.get(LIVE, {}).get("derived", {}).get("latency_ms", {}).get("xadd_to_commit", {})
    out["live_p50_ms"] = live.get("p50")
    out["live_p99_ms"] = live.get("p99")
    lat = main.get("latency_ms", {})
    for key, short in (("xadd_to_commit", "xadd"), ("read_to_commit", "read")):
        out[f"backfill_{short}_to_commit_p50_ms"] = lat.get(key, {}).get("p50")
        out[f"backfill_{short}_to_commit_p99_ms"] = lat.get(key, {}).get("p99")
    out["scaling_events_per_s"] = {
        k: r["derived"].get("events_per_s") for k, r in runs.items() if k.startswith("backfill")
    }
    out["stage_shares"] = {
        k: v["share_of_worker_time"] for k, v in main.get("stages", {}).items()
    } | {"engine/idle": main.get("other_share_of_worker_time")}
    out["postgres"] = main.get("postgres")
    out["backlog_peak_rss_mb"] = {
        str(r["loaded"]): r["derived"].get("peak_rss_mb")
        for k, r in runs.items()
        if k in (MAIN,) or k.startswith("backlog")
    }
    on = _rates(runs, RESOLVING)
    off = [main.get("events_per_s")] + _rates(runs, f"{MAIN} #")
    if on and all(off):
        out["resolution_ratio"] = round(statistics.median(on) / statistics.median(off), 3)
    out["targets"] = targets(out)
    return out


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so the fresh databases and streams are removed on SIGTERM too


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    out = Path(args.out)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    work = out / f"work-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, work)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(args.pg_url, bench.client),
        "config": {
            "events": args.events,
            "dids": args.dids,
            "seed": args.seed,
            "indexer_env": BENCH_DEFAULTS | bench.overrides,
            "pg_options": args.pg_options,
            "live_rate": args.live_rate,
            "live_seconds": args.live_seconds,
        },
    }
    bench.log(f"generating {args.events:,} events over {args.dids:,} DIDs")
    events_file = work / "events.jsonl"
    started = time.perf_counter()
    n = write_events(events_file, args.events, args.dids, args.seed)
    results["generate_s"] = round(time.perf_counter() - started, 2)
    results["mix"] = mix(events_file)

    bench.backlog_run(MAIN, events_file, measure_copy=True)
    if args.resolution:
        directory = start_directory(events_file, args.resolution_latency)
        try:
            for r in range(1, max(args.resolution_rounds, 1) + 1):
                if r > 1:  # the first "off" is backfill -w 1 itself
                    bench.backlog_run(f"{MAIN} #{r}", events_file)
                name = RESOLVING if r == 1 else f"{RESOLVING} #{r}"
                bench.backlog_run(name, events_file, overrides=resolution_env(directory))
        finally:
            directory.stop()
    if not args.no_scaling:
        bench.backlog_run("backfill -w 2", events_file, workers=2)
        bench.backlog_run("backfill 2 procs", events_file, processes=2)
    if args.live_seconds > 0:
        live_file = work / "live.jsonl"
        write_events(live_file, int(args.live_rate * args.live_seconds), args.dids, args.seed + 1)
        bench.live_run(live_file, args.live_rate)
    if args.backlog:
        bench.log(f"generating a backlog of {args.backlog:,} events")
        backlog_file = work / "backlog.jsonl"
        write_events(backlog_file, args.backlog, args.dids, args.seed + 2)
        bench.backlog_run(f"backlog {args.backlog:,}", backlog_file)
    if args.profile:
        bench.backlog_run("profile", events_file, profile=True)

    main_rows = bench.runs.get(MAIN, {}).get("rows")
    for name in ("backfill -w 2", "backfill 2 procs", "profile"):
        if main_rows and name in bench.runs:
            # The same events, so the same tables, whatever the worker count.
            bench.runs[name]["same_rows_as_main"] = bench.runs[name]["rows"] == main_rows
    results["runs"] = bench.runs
    results["copy_limit"] = bench.copy
    results["summary"] = summary(bench, n)

    base = out / f"bench-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    plot(results, str(base.with_suffix(".png")))
    shutil.copyfile(base.with_suffix(".json"), out / "latest.json")
    shutil.copyfile(base.with_suffix(".png"), out / "latest.png")
    if args.docs:
        docs = ROOT / "docs" / "bench"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base.with_suffix(".json"), docs / "latest.json")
        shutil.copyfile(base.with_suffix(".png"), docs / "latest.png")
    if not args.keep_events:
        for f in work.glob("*.jsonl"):
            f.unlink()
    print()
    print(table(results))
    print(f"\nresults: {base.with_suffix('.json')} and .png; logs in {work}")
    return 0 if all(r["derived"].get("ok") for r in bench.runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
