"""What an operator sees of a running indexer: metrics (metrics.py), traces (tracing.py) and log
lines (logs.py). ``start`` sets all three up for the process from its Settings; the sink reports
each finished batch through ``batches.BatchReport``.
"""

from __future__ import annotations

import atexit
import time

from config.settings import Settings

from . import logs, metrics, tracing
from .batches import totals

_started_at: float | None = None
_sampler: metrics.StreamSampler | None = None


def start(settings: Settings) -> None:
    """Tracing (when an exporter is configured), the metrics endpoint and stream sampler (when
    METRICS_PORT is not 0), then the start line. Raises ConfigError on a bad OTEL_* value."""
    global _started_at, _sampler
    provider = tracing.provider_from_env(settings.consumer)
    tracing.use(provider)
    if settings.metrics_port and metrics.serve(settings.metrics_port):
        from connectors.redis_streams import client_for

        _sampler = metrics.StreamSampler(
            client_for(settings.redis_url), settings.stream_groups(), settings.metrics_interval
        )
        _sampler.start()
    _started_at = time.monotonic()
    summary = settings.summary()
    summary["tracing"] = "on" if provider is not None else "off"
    logs.started(summary)
    atexit.register(stop)


def stop() -> None:
    """The last lines (dead letters not yet written, totals) and the spans still buffered."""
    global _started_at
    if _started_at is None:
        return
    if _sampler is not None:
        _sampler.stop()
    logs.DEAD_LETTERS.flush()
    logs.stopped(totals(), time.monotonic() - _started_at)
    _started_at = None
    tracing.shutdown()
