"""Numbers from the raw measurements, the targets of issue 5, the printed table and the plot."""

from __future__ import annotations

from typing import Any

from flows.stage_timings import percentile

TARGETS = {
    "one_process_events_per_s": ("events/s, one process (best of -w 1, -w 2)", ">=", 10_000),
    "fraction_of_copy_limit": ("share of the COPY limit", ">=", 0.5),
    "peak_rss_mb": ("peak RSS per process, MB", "<=", 200),
    "live_p99_ms": ("p99 XADD-to-commit at 1,000 ev/s, ms", "<=", 1_000),
    "resolution_ratio": ("events/s with DID resolution on / off", ">=", 0.9),
}
STAGE_ORDER = ("read", "decode", "write", "ack")


def _merge_hist(timings: list[dict[str, Any]], key: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in timings:
        for k, n in (t.get(key) or {}).items():
            out[int(k)] = out.get(int(k), 0) + n
    return out


def _latency(hist: dict[int, int]) -> dict[str, float | None]:
    return {
        "p50": percentile(hist, 50),
        "p99": percentile(hist, 99),
        "max": float(max(hist)) if hist else None,
        "count": sum(hist.values()),
    }


def derive(run: dict[str, Any], events: int) -> dict[str, Any]:
    """Throughput, stages, latency and resources of one indexer run."""
    timings = [t for t in run["timings"] if t]
    out: dict[str, Any] = {"events": events, "ok": bool(timings) and not any(run["exit_codes"])}
    firsts = [t["first_read"] for t in timings if t.get("first_read")]
    lasts = [t["last_ack"] for t in timings if t.get("last_ack")]
    if not firsts or not lasts:
        out["ok"] = False
        return out
    e2e = max(lasts) - min(firsts)
    threads = run["workers"] * run["processes"]
    out["e2e_s"] = round(e2e, 3)
    out["wall_s"] = round(run["wall_s"], 3)
    out["events_per_s"] = round(events / e2e, 1) if e2e > 0 else None
    out["startup_s"] = round(min(firsts) - run["launched"], 3)
    stages: dict[str, dict[str, float]] = {}
    for t in timings:
        for name, s in t["stages"].items():
            acc = stages.setdefault(name, {"seconds": 0.0, "calls": 0, "items": 0})
            for k in acc:
                acc[k] += s[k]
    worker_time = e2e * threads
    for s in stages.values():
        s["seconds"] = round(s["seconds"], 3)
        s["share_of_worker_time"] = round(s["seconds"] / worker_time, 4) if worker_time else None
        s["items_per_s"] = round(s["items"] / s["seconds"], 1) if s["seconds"] else None
    busy = sum(stages[n]["seconds"] for n in STAGE_ORDER if n in stages)
    out["stages"] = stages
    out["other_share_of_worker_time"] = round(1 - busy / worker_time, 4) if worker_time else None
    cpu = run["cpu_s"]
    pg_cpu = cpu.get("postgres_backends")
    ours = cpu["indexer"] + (pg_cpu or 0) + cpu["redis_server"]
    out["postgres"] = {
        "write_share_of_worker_time": stages.get("write", {}).get("share_of_worker_time"),
        "backend_cpu_s": pg_cpu,
        "backend_cpu_share_of_pipeline_cpu": round(pg_cpu / ours, 3) if pg_cpu and ours else None,
    }
    if run.get("statements"):
        stats = run["statements"]
        out["postgres"]["exec_s"] = stats["total_exec_s"]
        out["postgres"]["exec_share_of_e2e"] = round(stats["total_exec_s"] / e2e, 3)
    out["cpu_s"] = cpu
    peaks = list(run["peak_rss_mb"])
    for i, t in enumerate(run["timings"]):
        if t and t.get("max_rss_kb") and i < len(peaks):
            peaks[i] = max(peaks[i], round(t["max_rss_kb"] / 1024, 1))
    out["peak_rss_mb"] = max(peaks)
    out["peak_rss_mb_per_process"] = peaks
    out["max_pg_connections"] = run["max_pg_connections"]
    out["latency_ms"] = {
        "xadd_to_commit": _latency(_merge_hist(timings, "xadd_to_commit_ms")),
        "read_to_commit": _latency(_merge_hist(timings, "read_to_commit_ms")),
    }
    return out


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, (label, op, goal) in TARGETS.items():
        value = summary.get(key)
        if value is None:
            out[key] = {"label": label, "target": f"{op} {goal}", "measured": None, "met": None}
            continue
        met = value >= goal if op == ">=" else value <= goal
        # How far off: the factor to gain (>=) or to cut (<=).
        factor = goal / value if op == ">=" else value / goal
        out[key] = {
            "label": label,
            "target": f"{op} {goal}",
            "measured": value,
            "met": met,
            "factor_to_go": None if met else round(factor, 2),
        }
    return out


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{v}{unit}"


def table(results: dict[str, Any]) -> str:
    """The report, as printed at the end of a run."""
    s = results["summary"]
    runs = results["runs"]
    lines = [
        f"bsky-indexer benchmark: {results['config']['events']:,} events over "
        f"{results['config']['dids']:,} DIDs, {results['machine']['cores']} cores, "
        f"PostgreSQL {results['machine']['postgres']}, Redis {results['machine']['redis']}",
        "",
        f"{'run':<24}{'events/s':>10}{'e2e s':>8}{'peak RSS MB':>13}{'PG conns':>10}"
        f"{'p50 ms':>11}{'p99 ms':>11}",
    ]
    for name, r in runs.items():
        d = r["derived"]
        lat = d.get("latency_ms", {}).get("xadd_to_commit", {})
        lines.append(
            f"{name:<24}{_fmt(d.get('events_per_s')):>10}{_fmt(d.get('e2e_s')):>8}"
            f"{_fmt(d.get('peak_rss_mb')):>13}{_fmt(d.get('max_pg_connections')):>10}"
            f" {_fmt(lat.get('p50')):>10} {_fmt(lat.get('p99')):>10}"
        )
    limit = results.get("copy_limit")
    if limit:
        lines += [
            "",
            f"COPY limit: {limit['rows']:,} rows in {limit['seconds']:.2f}s = "
            f"{_fmt(s.get('copy_limit_events_per_s'))} events/s; "
            f"we reach {_fmt(s.get('fraction_of_copy_limit'))} of it",
        ]
    main = runs.get("backfill -w 1", {}).get("derived", {})
    if main.get("stages"):
        parts = [
            f"{n} {main['stages'][n]['share_of_worker_time']:.0%}"
            for n in STAGE_ORDER
            if n in main["stages"]
        ]
        parts.append(f"engine/idle {main['other_share_of_worker_time']:.0%}")
        lines += ["", "worker time (backfill -w 1): " + ", ".join(parts)]
        pg = main["postgres"]
        cpu = main["cpu_s"]
        lines.append(
            f"CPU s: indexer {cpu['indexer']}, postgres {cpu['postgres_backends']}, redis "
            f"{cpu['redis_server']}, others on the machine {cpu['other']} "
            f"(over {main['wall_s']:.0f}s x {cpu['cores']} cores); Postgres' share of the "
            f"pipeline's CPU: {_fmt(pg.get('backend_cpu_share_of_pipeline_cpu'))}"
        )
        rtc = main["latency_ms"]["read_to_commit"]
        lines.append(
            f"flat out, read-to-commit p50/p99 ms: {_fmt(rtc['p50'])}/{_fmt(rtc['p99'])} "
            "(XADD-to-commit above includes the wait in the backlog)"
        )
    lines += ["", "targets:"]
    for t in s["targets"].values():
        verdict = "met" if t["met"] else ("n/a" if t["met"] is None else "NOT met")
        extra = f", x{t['factor_to_go']} to go" if t.get("factor_to_go") else ""
        lines.append(f"  {t['label']:<42} {t['target']:>9}: {_fmt(t['measured'])} {verdict}{extra}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
    """Four panels: throughput vs the COPY limit, stage shares, the main run over time, and
    the live latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    s = results["summary"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    fig.suptitle(
        f"bsky-indexer: {results['config']['events']:,} events, {results['machine']['cores']} "
        f"cores, {results['started'][:16]}",
        fontsize=11,
    )

    ax = axes[0][0]
    names = [n for n in runs if n.startswith("backfill") and runs[n]["derived"].get("events_per_s")]
    values = [runs[n]["derived"]["events_per_s"] for n in names]
    if s.get("copy_limit_events_per_s"):
        names.append("COPY limit")
        values.append(s["copy_limit_events_per_s"])
    bars = ax.bar(names, values, color=["#4c72b0"] * (len(names) - 1) + ["#999999"])
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
    ax.axhline(10_000, color="#c44e52", linestyle="--", linewidth=1, label="target 10,000")
    ax.set_ylabel("events/s")
    ax.set_title("throughput, end to end", fontsize=10)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)

    ax = axes[0][1]
    main = runs.get("backfill -w 1", {}).get("derived", {})
    if main.get("stages"):
        labels = [n for n in STAGE_ORDER if n in main["stages"]] + ["engine/idle"]
        shares = [main["stages"][n]["share_of_worker_time"] for n in labels[:-1]]
        shares.append(max(main["other_share_of_worker_time"], 0))
        ax.barh(labels, shares, color="#55a868")
        for i, v in enumerate(shares):
            ax.text(v, i, f" {v:.0%}", va="center", fontsize=8)
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
    ax.set_title("worker time by stage (backfill -w 1)", fontsize=10)

    ax = axes[1][0]
    series = runs.get("backfill -w 1", {}).get("series")
    if series and series["t"]:
        ax.plot(series["t"], series["remaining"], color="#4c72b0", label="entries in the stream")
        ax.set_xlabel("seconds since launch")
        ax.set_ylabel("entries left", color="#4c72b0")
        ax2 = ax.twinx()
        ax2.plot(series["t"], series["rss_mb"], color="#dd8452", label="RSS MB")
        ax2.axhline(200, color="#dd8452", linestyle=":", linewidth=1)
        ax2.set_ylabel("RSS MB (target 200)", color="#dd8452")
    ax.set_title("backfill -w 1 over time", fontsize=10)

    ax = axes[1][1]
    for name, colour in (("live 1,000 ev/s", "#8172b2"), ("backfill -w 1", "#937860")):
        run = runs.get(name)
        if not run:
            continue
        key = "xadd_to_commit_ms" if name.startswith("live") else "read_to_commit_ms"
        hist = _merge_hist([t for t in run["timings"] if t], key)
        if not hist:
            continue
        xs = sorted(hist)
        total = sum(hist.values())
        acc = 0
        ys = []
        for x in xs:
            acc += hist[x]
            ys.append(acc / total)
        label = "live: XADD to commit" if key.startswith("xadd") else "backfill: read to commit"
        ax.plot(xs, ys, color=colour, label=label)
    ax.axvline(1000, color="#c44e52", linestyle="--", linewidth=1, label="p99 target 1 s")
    ax.axhline(0.99, color="#999999", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("ms")
    ax.set_ylabel("share of events")
    ax.set_title("latency, cumulative", fontsize=10)
    ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
