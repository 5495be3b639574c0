"""Log lines for a human: human-readable by default, JSON lines with INDEXER_LOG_FORMAT=json.

One line per thing worth attention (start with the redacted settings, retries, dead letters, stop),
never one per message: dead letters are summed per reason and written at most once every
``DEAD_LETTER_LOG_INTERVAL`` seconds (the first at once, so a new problem shows without delay).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from .reasons import reason_kind

log = logging.getLogger("bsky_indexer")

DEAD_LETTER_LOG_INTERVAL = 10.0

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is data.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # default=str: a value json cannot encode is still written, never dropped with the line
        return json.dumps(out, default=str, ensure_ascii=False)


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is written (test runners swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup(log_format: str | None) -> None:
    """Send every logger's lines to stderr in the chosen format (an unknown name means text;
    Settings rejects it right after, and that error is then written as text)."""
    handler = _StderrHandler()
    if (log_format or "").strip().lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def started(summary: dict[str, object]) -> None:
    text = " ".join(f"{k}={_show(v)}" for k, v in summary.items())
    log.info("starting: %s", text, extra={"event": "start", "config": summary})


def stopped(totals: dict[str, int], uptime: float) -> None:
    text = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in totals.items())
    log.info(
        "stopped after %.1fs: %s",
        uptime,
        text,
        extra={"event": "stop", "uptime_seconds": round(uptime, 3), **totals},
    )


def _show(value: object) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


class DeadLetterLog:
    """Counts dead letters per kind of reason and writes one line per interval, not one per
    entry; each kind is shown with one full reason as an example."""

    def __init__(
        self,
        interval: float = DEAD_LETTER_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ):
        self.interval = interval
        self.clock = clock
        self.logger = logger
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._examples: dict[str, str] = {}
        self._last: float | None = None

    def add(self, reasons: Iterable[str]) -> None:
        with self._lock:
            for reason in reasons:
                kind = reason_kind(reason)
                self._counts[kind] += 1
                self._examples.setdefault(kind, reason)
            now = self.clock()
            if self._last is not None and now - self._last < self.interval:
                return
            self._emit(now)

    def flush(self) -> None:
        with self._lock:
            self._emit(self.clock())

    def _emit(self, now: float) -> None:
        if not self._counts:
            return
        total = sum(self._counts.values())
        top = self._counts.most_common(5)
        text = "; ".join(f"{kind} x{n} (e.g. {_clip(self._examples[kind])})" for kind, n in top)
        if len(self._counts) > len(top):
            text += f"; {len(self._counts) - len(top)} other kinds"
        since = "" if self._last is None else f" in the last {now - self._last:.0f}s"
        self.logger.warning(
            "dead-lettered %d entries%s: %s",
            total,
            since,
            text,
            extra={"event": "dead_letters", "count": total, "reasons": dict(top)},
        )
        self._counts.clear()
        self._examples.clear()
        self._last = now


def _clip(text: str, size: int = 120) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."


DEAD_LETTERS = DeadLetterLog()
