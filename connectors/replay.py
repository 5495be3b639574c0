"""Load StreamEvents into a Redis stream exactly as the producers write them.

``bsky-indexer replay FILE --stream S`` takes either

* a JSONL file of StreamEvents (one JSON object per line, blank lines skipped), or ``-`` for stdin;
* a repo CAR file (recognised by its CARv1 header, or a ``.car`` name): the commit at its root is
  read, the MST walked, and every record sent the way the repo backfiller sends it: one
  ``create`` event per record with ``seq`` -1, and a ``repo`` event after each chunk of 500
  records and at the end.

``bsky-indexer replay --parquet DIR --stream S`` loads an archive (INDEXER_ARCHIVE_DIR) instead,
in the producers' original order, optionally only some collections, a time range or one DID
(sinks/archive/replay.py).

Each event becomes ``XADD S * event <json text>``, pipelined in chunks (no transaction).

The Python API (tests, the demo and the benchmarks use it):

* ``load_events(client, stream, events, chunk=500) -> int``: events are dicts (serialised with
  orjson) or ready JSON text (str or bytes, sent as is);
* ``car_events(data, time=None) -> Iterator[dict]``: the backfiller's events for a repo CAR;
* ``read_car(data) -> CarRepo``: the commit and its records, with what the CAR was missing;
* ``to_lex_json(value)``: a decoded DAG-CBOR value in the atproto JSON data model.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time as _time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import libipld
import orjson

BACKFILL_CHUNK = 500  # records between two `repo` events, as the backfiller sends them
DEFAULT_CHUNK = 500  # XADDs per pipeline round trip


class ReplayError(Exception):
    """The input cannot be loaded (bad line, bad CAR, wrong DID)."""


# --- the atproto JSON data model ----------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the unsigned LEB128 varint at pos; ValueError if truncated."""
    value = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def is_cid_bytes(data: bytes) -> bool:
    """True when data is exactly one binary CIDv1 (version, codec, multihash code, length, digest).

    libipld hands DAG-CBOR links (tag 42) over as these bytes with the 0x00 multibase prefix
    removed, the same Python type as a byte string; a byte string that happens to have this exact
    structure, length included, is not something real records contain.
    """
    if len(data) < 4 or data[0] != 0x01:
        return False
    try:
        _, pos = _varint(data, 1)  # codec
        _, pos = _varint(data, pos)  # multihash function
        size, pos = _varint(data, pos)
    except ValueError:
        return False
    return size > 0 and pos + size == len(data)


def cid_str(raw: bytes) -> str:
    """The base32 string form (``bafy…``) of a binary CID."""
    return libipld.encode_cid(raw)


def to_lex_json(value: Any) -> Any:
    """A decoded DAG-CBOR value in the atproto JSON data model.

    Links become ``{"$link": "bafy…"}``, other byte strings ``{"$bytes": <base64, no padding>}``;
    blobs keep their shape, so their ``ref`` becomes a ``$link``.
    """
    if isinstance(value, dict):
        return {k: to_lex_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_lex_json(v) for v in value]
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if is_cid_bytes(raw):
            try:
                return {"$link": cid_str(raw)}
            except ValueError:
                pass
        return {"$bytes": base64.b64encode(raw).decode("ascii").rstrip("=")}
    return value


# --- repo CAR files ----------------------------------------------------------------------------

_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def tid_from_micros(micros: int, clock_id: int = 0) -> str:
    """A TID (13 chars, base32-sortable) for a time in microseconds since the epoch."""
    n = ((micros & ((1 << 53) - 1)) << 10) | (clock_id & 0x3FF)
    out = []
    for _ in range(13):
        out.append(_TID_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))


def now_time() -> str:
    """The ingesters' receive time format: ``2025-10-30T12:00:00.123456+00:00``."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _parse_time(value: str) -> datetime:
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python accepts at most 6 fraction digits: cut the rest.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def looks_like_car(head: bytes) -> bool:
    """True when head (the first bytes of a file) starts with a CARv1 header."""
    try:
        length, pos = _varint(head, 0)
    except ValueError:
        return False
    if not 8 <= length <= 1 << 16 or pos >= len(head):
        return False
    header = head[pos : pos + length]
    # A DAG-CBOR map of two keys, "roots" and "version" (sorted by length: "roots" first).
    return header[:1] == b"\xa2" and b"roots" in header[:8]


@dataclass
class CarRepo:
    """A repo read from a CAR: its commit and the records of the commit's MST, in key order."""

    did: str
    commit: str  # root CID string
    rev: str | None  # None for a commit v2, which has none
    version: int
    records: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    # (collection, rkey, record cid, record as decoded DAG-CBOR)
    missing_nodes: int = 0  # MST nodes the CAR does not hold (a partial export or a slice)
    missing_records: int = 0  # MST entries whose record block is not in the CAR
    skipped: int = 0  # MST entries with a key that is not collection/rkey, or a non-map record


def read_car(data: bytes) -> CarRepo:
    """The commit at the CAR's root and every record its MST holds (missing blocks counted)."""
    try:
        header, blocks = libipld.decode_car(data)
    except Exception as exc:  # libipld raises ValueError and friends
        raise ReplayError(f"not a readable CAR file: {exc}") from exc
    roots = header.get("roots") or []
    if not roots:
        raise ReplayError("the CAR header names no root")
    root = roots[0]
    commit = blocks.get(root)
    if not isinstance(commit, dict) or "did" not in commit or "data" not in commit:
        raise ReplayError("the CAR's root block is not a repo commit (did, data, version)")
    version = commit.get("version")
    if version not in (2, 3):
        raise ReplayError(f"unsupported repo commit version {version!r} (expected 2 or 3)")
    repo = CarRepo(
        did=str(commit["did"]),
        commit=cid_str(root),
        rev=commit.get("rev") or None,
        version=version,
    )
    for key, value_cid in _walk_mst(blocks, commit["data"], repo):
        collection, sep, rkey = key.partition("/")
        record = blocks.get(value_cid)
        if not sep or not collection or not rkey:
            repo.skipped += 1
        elif record is None:
            repo.missing_records += 1
        elif not isinstance(record, dict):
            repo.skipped += 1
        else:
            repo.records.append((collection, rkey, cid_str(value_cid), record))
    return repo


def _walk_mst(blocks: dict[bytes, Any], root: bytes, repo: CarRepo) -> Iterator[tuple[str, bytes]]:
    """(key, value CID) of every MST entry under root, in key order.

    A node is ``{"l": left subtree or null, "e": [{"p": prefix length shared with the previous key,
    "k": key suffix, "v": value CID, "t": right subtree or null}]}``.
    """
    # Explicit stack of pending work: ("node", cid) expands a node, ("entry", key, cid) yields.
    stack: list[tuple[Any, ...]] = [("node", root)]
    while stack:
        item = stack.pop()
        if item[0] == "entry":
            yield item[1], item[2]
            continue
        node = blocks.get(item[1])
        if not isinstance(node, dict):
            repo.missing_nodes += 1
            continue
        work: list[tuple[Any, ...]] = []
        if node.get("l"):
            work.append(("node", node["l"]))
        prev = b""
        for entry in node.get("e") or []:
            key = prev[: entry.get("p", 0)] + entry["k"]
            prev = key
            work.append(("entry", key.decode("utf-8", "replace"), entry["v"]))
            if entry.get("t"):
                work.append(("node", entry["t"]))
        stack.extend(reversed(work))


def car_events(
    data: bytes,
    time: str | None = None,
    *,
    repo: CarRepo | None = None,
    chunk: int = BACKFILL_CHUNK,
) -> Iterator[dict[str, Any]]:
    """What the repo backfiller sends for this CAR: creates with seq -1, a repo event per chunk.

    ``time`` is every event's receive time (now when None). A commit v2 has no rev: the rev sent
    is then a TID for that time, as a PDS that had migrated the repo to v3 would give it.
    ``repo`` is the result of ``read_car(data)`` when the caller already has it.
    """
    repo = repo if repo is not None else read_car(data)
    when = time or now_time()
    rev = repo.rev
    if rev is None:
        stamp = _parse_time(when)
        rev = tid_from_micros(int(stamp.timestamp()) * 1_000_000 + stamp.microsecond)

    def repo_event() -> dict[str, Any]:
        return {
            "type": "repo",
            "seq": -1,
            "time": when,
            "did": repo.did,
            "commit": repo.commit,
            "rev": rev,
        }

    pending = 0
    for collection, rkey, cid, record in repo.records:
        yield {
            "type": "create",
            "seq": -1,
            "time": when,
            "did": repo.did,
            "commit": repo.commit,
            "rev": rev,
            "collection": collection,
            "rkey": rkey,
            "cid": cid,
            "record": to_lex_json(record),
        }
        pending += 1
        if pending == chunk:
            yield repo_event()
            pending = 0
    if pending or not repo.records:
        yield repo_event()


# --- loading into Redis -------------------------------------------------------------------------


class StreamLoader:
    """Pipelined ``XADD stream * event <json>``; ``loaded`` counts what Redis has accepted."""

    def __init__(self, client: Any, stream: str, chunk: int = DEFAULT_CHUNK, high_water: int = 0):
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.client = client
        self.stream = stream
        self.chunk = chunk
        self.high_water = high_water  # wait while XLEN >= this before each flush; 0: never
        self.loaded = 0
        self._pipe = client.pipeline(transaction=False)
        self._pending = 0

    def add(self, event: dict[str, Any] | str | bytes) -> None:
        payload = event if isinstance(event, str | bytes) else orjson.dumps(event)
        self._pipe.xadd(self.stream, {"event": payload})
        self._pending += 1
        if self._pending >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        if self.high_water:
            while self.client.xlen(self.stream) >= self.high_water:
                _time.sleep(0.1)
        self._pipe.execute()
        self.loaded += self._pending
        self._pending = 0


def load_events(
    client: Any,
    stream: str,
    events: Iterable[dict[str, Any] | str | bytes],
    chunk: int = DEFAULT_CHUNK,
) -> int:
    """XADD every event to stream in order (field ``event``); the number loaded.

    If the iterable raises, the events it gave before are still loaded, then the error propagates.
    """
    loader = StreamLoader(client, stream, chunk)
    _load(loader, events)
    return loader.loaded


def _load(loader: StreamLoader, events: Iterable[dict[str, Any] | str | bytes]) -> None:
    it = iter(events)
    while True:
        try:
            event = next(it)
        except StopIteration:
            break
        except BaseException:
            loader.flush()
            raise
        loader.add(event)
    loader.flush()


def jsonl_events(lines: Iterable[bytes], did: str | None = None) -> Iterator[bytes]:
    """The JSON text of every non-blank line, checked; ReplayError names the first bad line."""
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ReplayError(f"line {number}: not valid JSON ({exc})") from None
        if not isinstance(event, dict):
            raise ReplayError(f"line {number}: not a JSON object")
        if did is not None and event.get("did") != did:
            continue
        yield text


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", help="JSONL of StreamEvents, a repo .car file, or - for stdin"
    )
    parser.add_argument(
        "--parquet",
        metavar="DIR",
        help="instead of FILE: an archive (INDEXER_ARCHIVE_DIR), in its original order",
    )
    parser.add_argument("--stream", required=True, help="the stream to XADD to")
    parser.add_argument("--redis-url", help="defaults to REDIS_URL")
    parser.add_argument(
        "--did",
        help="JSONL, archive: load only this DID's events; CAR: refuse another DID's repo",
    )
    parser.add_argument(
        "--collection",
        action="append",
        default=[],
        help="archive: only this collection (repeatable; _repo, _account, _identity: those events)",
    )
    parser.add_argument("--since", help="archive: events received at or after this time")
    parser.add_argument("--until", help="archive: events received before this time")
    parser.add_argument(
        "--time", help="CAR: receive time for every event (default: now, the backfiller's way)"
    )
    parser.add_argument(
        "--chunk", type=int, default=DEFAULT_CHUNK, help="XADDs per pipeline round trip"
    )
    parser.add_argument(
        "--high-water",
        type=int,
        default=0,
        help="pause while the stream holds this many entries, as producers do (0: never)",
    )


def run(args: argparse.Namespace, settings: Any) -> int:
    import redis

    if args.chunk < 1:
        print("bsky-indexer replay: --chunk must be at least 1", file=sys.stderr)
        return 2
    if (args.file is None) == (args.parquet is None):
        print("bsky-indexer replay: give either FILE or --parquet DIR", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(args.redis_url or settings.redis_url)
    loader = StreamLoader(client, args.stream, args.chunk, max(args.high_water, 0))
    source = args.parquet or ("stdin" if args.file == "-" else args.file)
    try:
        if args.parquet is not None:
            return _replay_archive(args, loader)
        with _open(args.file) as handle:
            head = handle.peek(64)[:64] if hasattr(handle, "peek") else b""
            if looks_like_car(head) or source.lower().endswith(".car"):
                return _replay_car(handle.read(), args, loader, source)
            _load(loader, jsonl_events(handle, args.did))
    except ReplayError as exc:
        loader_note = _loaded_note(loader, args.stream)
        print(f"bsky-indexer replay: {source}: {exc}; {loader_note}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bsky-indexer replay: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"loaded {loader.loaded} events from {source} into {args.stream}")
    return 0


def _replay_archive(args: argparse.Namespace, loader: StreamLoader) -> int:
    from sinks.archive.replay import ArchiveSelection

    selection = ArchiveSelection.parse(
        args.parquet, args.collection, args.since, args.until, args.did
    )
    _load(loader, selection.events())
    print(
        f"loaded {loader.loaded} events from {len(selection.files)} files of {args.parquet} "
        f"into {args.stream}"
    )
    return 0


def _replay_car(data: bytes, args: argparse.Namespace, loader: StreamLoader, source: str) -> int:
    repo = read_car(data)
    if args.did is not None and repo.did != args.did:
        raise ReplayError(f"the repo belongs to {repo.did}, not {args.did}")
    _load(loader, car_events(data, args.time, repo=repo))
    notes = []
    if repo.missing_nodes or repo.missing_records:
        notes.append(
            f"the CAR lacks {repo.missing_nodes} MST nodes and {repo.missing_records} record "
            "blocks (a partial export): those records were not sent"
        )
    if repo.skipped:
        notes.append(f"{repo.skipped} MST entries were not records and were skipped")
    for note in notes:
        print(f"bsky-indexer replay: {source}: {note}", file=sys.stderr)
    print(
        f"loaded {loader.loaded} events ({len(repo.records)} records of {repo.did}, "
        f"commit v{repo.version}) from {source} into {args.stream}"
    )
    return 0


def _loaded_note(loader: StreamLoader, stream: str) -> str:
    if loader.loaded:
        return f"the {loader.loaded} events before it were loaded into {stream}"
    return f"nothing was loaded into {stream}"


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return _NoClose(sys.stdin.buffer)
    return Path(path).open("rb")


class _NoClose:
    """stdin in a with-block, left open."""

    def __init__(self, stream: IO[bytes]):
        self._stream = stream

    def __enter__(self) -> IO[bytes]:
        return self._stream

    def __exit__(self, *exc: object) -> None:
        return None
