"""Run the real indexer (`python -m bytewax.run flows.index`) as subprocesses and watch it.

A sampler thread polls, every ``interval`` seconds: each indexer process's RSS, the Postgres
backends it holds (pg_stat_activity, by database and application name) and their CPU time from
/proc, and how many entries are left in the stream. The indexer itself writes its per-stage
timings and latency histograms at exit (INDEXER_STAGE_TIMINGS, flows/stage_timings.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

from tests.names import Names

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
APPLICATION_NAME = "bsky-indexer"  # what sinks/postgres/pool.py names its connections

# What the bench runs the indexer with unless --env says otherwise (see docs/benchmarks.md).
BENCH_DEFAULTS = {
    "INDEXER_STOP_WHEN_IDLE": "1",
    "INDEXER_CONCURRENCY": "4000",
    "METRICS_PORT": "0",
    # No network: resolution on is measured with --env pointing at local identity servers.
    "ENABLE_DID_RESOLUTION": "false",
}


def indexer_env(
    streams: Names,
    redis_url: str,
    db_url: str,
    timings: Path,
    overrides: dict[str, str],
) -> dict[str, str]:
    """The environment for an indexer on the bench's private streams and database only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INDEXER_", "DB_POOL_"))}
    env.update(BENCH_DEFAULTS)
    env.update(overrides)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=db_url,
        INDEXER_STREAMS=streams.live,
        INDEXER_LABEL_STREAM=streams.labels,
        INDEXER_GROUP=streams.group,
        INDEXER_LABEL_GROUP=f"{streams.group}:labels",
        INDEXER_CONSUMER=streams.consumer,
        INDEXER_DEAD_LETTER_STREAM=streams.dead_letter,
        INDEXER_STAGE_TIMINGS=str(timings),
        PYTHONUNBUFFERED="1",
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(workers: int, processes: int) -> list[list[str]]:
    """One command per process: -w N in one process, or a bytewax cluster (-i/-a) of them."""
    base = [sys.executable, "-m", "bytewax.run", "flows.index", "-w", str(workers)]
    if processes == 1:
        return [base]
    addresses = ";".join(f"127.0.0.1:{_free_port()}" for _ in range(processes))
    return [base + ["-i", str(i), "-a", addresses] for i in range(processes)]


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Sampler:
    pids: list[int]
    admin_url: str
    dbname: str
    client: redis.Redis
    stream: str
    interval: float = 0.1
    started: float = field(default_factory=time.monotonic)
    peak_rss: dict[int, int] = field(default_factory=dict)
    max_connections: int = 0
    backend_cpu: dict[int, float] = field(default_factory=dict)  # pid -> latest CPU seconds
    series: dict[str, list[float]] = field(
        default_factory=lambda: {"t": [], "remaining": [], "rss_mb": [], "connections": []}
    )
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        procs = {pid: psutil.Process(pid) for pid in self.pids}
        try:
            conn = psycopg.connect(self.admin_url, autocommit=True)
        except psycopg.Error as exc:
            self.errors.append(f"no Postgres connection for sampling: {exc}")
            conn = None
        while not self._stop.is_set():
            rss_total = 0
            for pid, proc in procs.items():
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                rss_total += rss
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)
            held = 0
            if conn is not None:
                try:
                    held = self._sample_backends(conn)
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
            try:
                remaining = self.client.xlen(self.stream)
            except redis.RedisError:
                remaining = -1
            s = self.series
            s["t"].append(round(time.monotonic() - self.started, 3))
            s["remaining"].append(remaining)
            s["rss_mb"].append(round(rss_total / 2**20, 1))
            s["connections"].append(held)
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()

    def _sample_backends(self, conn: psycopg.Connection) -> int:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (self.dbname, APPLICATION_NAME),
        ).fetchall()
        self.max_connections = max(self.max_connections, len(rows))
        for (pid,) in rows:
            cpu = _proc_cpu_seconds(pid)
            if cpu is None:
                continue
            self.backend_cpu[pid] = cpu
        return len(rows)

    def backend_cpu_seconds(self) -> float | None:
        """CPU the indexer's Postgres backends used while sampled (None: not visible here)."""
        # Every backend is opened by the indexer after the sampler started: all its CPU counts.
        # What it used after the last sample (at most one interval) is missed.
        return sum(self.backend_cpu.values()) if self.backend_cpu else None


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _busy(times: Any) -> float:
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


def run_indexer(
    *,
    workers: int,
    processes: int,
    env: dict[str, str],
    timings_dir: Path,
    admin_url: str,
    dbname: str,
    client: redis.Redis,
    stream: str,
    log_path: Path,
    profile: Path | None = None,
    on_started: Any = None,
    timeout: float = 3600,
) -> dict[str, Any]:
    """Run the indexer until it stops by itself (INDEXER_STOP_WHEN_IDLE); what was measured."""
    timings_dir.mkdir(parents=True, exist_ok=True)
    cmds = commands(workers, processes)
    me = psutil.Process()
    cpu_before = psutil.cpu_times()
    me_before = me.cpu_times()
    redis_before = _redis_cpu(client)
    launched = time.time()
    procs: list[subprocess.Popen[bytes]] = []
    spies: list[subprocess.Popen[bytes]] = []
    with open(log_path, "ab") as log:
        for i, cmd in enumerate(cmds):
            penv = dict(env, INDEXER_STAGE_TIMINGS=str(timings_dir / f"timings-{i}.json"))
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=penv, stdout=log, stderr=log))
        if profile is not None:
            # Attached from outside (ptrace), so the measured process runs unchanged.
            spies.append(
                subprocess.Popen(
                    [_py_spy(), "record", "--pid", str(procs[0].pid), "--rate", "100", "--idle"]
                    + ["--threads", "--format", "raw", "--output", str(profile)],
                    stdout=log,
                    stderr=log,
                )
            )
        sampler = Sampler([p.pid for p in procs], admin_url, dbname, client, stream)
        sampler.start()
        if on_started is not None:
            on_started()
        try:
            codes = [p.wait(timeout=timeout) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            sampler.stop()
            for s in spies:
                s.wait(timeout=60)
    exited = time.time()
    cpu_after = psutil.cpu_times()
    me_after = me.cpu_times()
    timings = [_read_json(timings_dir / f"timings-{i}.json") for i in range(len(cmds))]
    indexer_cpu = sum(t["cpu_user_s"] + t["cpu_system_s"] for t in timings if t)
    pg_cpu = sampler.backend_cpu_seconds()
    redis_cpu = _redis_cpu(client) - redis_before
    bench_cpu = (me_after.user + me_after.system) - (me_before.user + me_before.system)
    machine_busy = _busy(cpu_after) - _busy(cpu_before)
    return {
        "workers": workers,
        "processes": processes,
        "commands": [" ".join(c) for c in cmds],
        "exit_codes": codes,
        "launched": launched,
        "wall_s": exited - launched,
        "timings": timings,
        "peak_rss_mb": [round(sampler.peak_rss.get(p.pid, 0) / 2**20, 1) for p in procs],
        "max_pg_connections": sampler.max_connections,
        "cpu_s": {
            "indexer": round(indexer_cpu, 2),
            "postgres_backends": None if pg_cpu is None else round(pg_cpu, 2),
            "redis_server": round(redis_cpu, 2),
            "bench": round(bench_cpu, 2),
            "machine_busy": round(machine_busy, 2),
            "other": round(machine_busy - indexer_cpu - (pg_cpu or 0) - redis_cpu - bench_cpu, 2),
            "cores": os.cpu_count(),
        },
        "series": sampler.series,
        "sampler_errors": sampler.errors[:5],
    }


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
