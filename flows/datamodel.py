"""atproto data-model helpers for the decode hot path: timestamps, lex-JSON records, syntax checks.

Everything here is pure and cheap: precompiled regexes, no per-call allocation when a value is
already in canonical form, and no exceptions on the common path.

Timestamps
    ``normalize_time`` is for timestamps written by our own producers (the ingesters' receive
    time, label ``cts``/``exp``); ``normalize_datetime_always`` reproduces upstream's
    ``normalizeDatetimeAlways`` for record ``createdAt`` values. Both return
    ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds truncated, never rounded).

Records
    ``normalize_record`` turns whatever shape a producer used for links, bytes and blobs into the
    lex-JSON form upstream writes into ``record.json``; see its docstring for the rules.

Syntax checks
    ``is_did``, ``is_handle``, ``is_nsid``, ``is_record_key``, ``is_tid``, ``is_at_uri``,
    ``is_cid``, ``is_datetime``, ``is_language``, ``is_uri`` follow the atproto specs and are
    checked against the atproto interop test vectors (tests/test_datamodel.py). The costlier
    checks of values that repeat from event to event (handles, NSIDs, languages, AT-URIs, strict
    CIDs: a popular post's strongRef) remember their answers (``remembered``): bounded, per
    process. DIDs and datetimes are not remembered: a look-up costs about what their regex does.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

import libipld

EPOCH = "1970-01-01T00:00:00.000Z"

# --------------------------------------------------------------------------------------------
# Syntax checks
# --------------------------------------------------------------------------------------------

_DID_RE = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
_HANDLE_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
# Reversed domain (first label starts with a letter) + a name of letters/digits starting with a
# letter, at least three labels.
_NSID_RE = re.compile(
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)
_RKEY_RE = re.compile(r"[a-zA-Z0-9_~.:-]{1,512}")
_TID_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
_CID_SYNTAX_RE = re.compile(r"[a-zA-Z0-9+=]{8,256}")
# The canonical string forms upstream's CID parser round-trips: CIDv1 in base32 (lower case,
# multibase prefix "b") or a base58btc CIDv0 ("Qm…").
_CID_CANONICAL_RE = re.compile(r"b[a-z2-7]{8,}|Qm[1-9A-HJ-NP-Za-km-z]{44}")
_AT_URI_FRAGMENT_RE = re.compile(r"/[a-zA-Z0-9._~:@!$&')(*+,;=%\[\]/-]*")
_URI_RE = re.compile(r"[a-zA-Z0-9_]+:(?://)?[^\s/][^\s]*")  # JS \w is ASCII, \s is Unicode
# BCP 47 (RFC 5646, section 2.1) well-formedness.
_LANGUAGE_RE = re.compile(
    r"(?:"
    r"(?:en-GB-oed|i-(?:ami|bnn|default|enochian|hak|klingon|lux|mingo|navajo|pwn|tao|tay|tsu)"
    r"|sgn-(?:BE-FR|BE-NL|CH-DE))"
    r"|(?:art-lojban|cel-gaulish|no-bok|no-nyn|zh-(?:guoyu|hakka|min|min-nan|xiang))"
    r"|(?:(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}(?:-[A-Za-z]{3}){0,2})?|[A-Za-z]{4}|[A-Za-z]{5,8})"
    r"(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*"
    r"(?:-[xX](?:-[A-Za-z0-9]{1,8})+)?)"
    r"|[xX](?:-[A-Za-z0-9]{1,8})+"
    r")"
)


def remembered(size: int, max_len: int) -> Callable[[Callable[[str], bool]], Callable[[Any], bool]]:
    """Decorator for a pure test of a string: its answers for up to ``size`` values of at most
    ``max_len`` characters are remembered (longer ones, rare, are tested every time, so no large
    string is kept); when full, it starts again empty. A value that is not a ``str`` is False
    without a look-up. The test must depend on the string alone: an answer is only ever reused
    for an equal string. A dict, not lru_cache: a look-up is cheaper than the regex it saves
    only when it is a bare ``dict.get``."""

    def wrap(test: Callable[[str], bool]) -> Callable[[Any], bool]:
        seen: dict[str, bool] = {}

        @wraps(test)
        def check(s: Any) -> bool:
            if type(s) is not str:
                return False
            r = seen.get(s)
            if r is None:
                r = test(s)
                if len(s) <= max_len:
                    if len(seen) >= size:
                        seen.clear()
                    seen[s] = r
            return r

        check.remembered = seen  # type: ignore[attr-defined]
        return check

    return wrap


def is_did(s: Any) -> bool:
    return type(s) is str and len(s) <= 2048 and _DID_RE.fullmatch(s) is not None


@remembered(4096, 253)
def is_handle(s: str) -> bool:
    return len(s) <= 253 and _HANDLE_RE.fullmatch(s) is not None


@remembered(1024, 317)
def is_nsid(s: str) -> bool:
    return len(s) <= 317 and _NSID_RE.fullmatch(s) is not None


def is_record_key(s: Any) -> bool:
    if type(s) is not str:
        return False
    if s.isalnum() and s.isascii():  # [a-zA-Z0-9]+, as nearly every key (TIDs, "self") is
        return len(s) <= 512
    return _RKEY_RE.fullmatch(s) is not None and s != "." and s != ".."


def is_tid(s: Any) -> bool:
    return type(s) is str and _TID_RE.fullmatch(s) is not None


def is_cid(s: Any) -> bool:
    """atproto CID *syntax* (the interop vectors): a loose base-encoding check, no CIDv0."""
    if type(s) is not str:
        return False
    if s.isalnum() and s.isascii():  # [a-zA-Z0-9]+: the regex only adds '+' and '='
        return 8 <= len(s) <= 256 and not s.startswith("Qmb")
    return _CID_SYNTAX_RE.fullmatch(s) is not None and not s.startswith("Qmb")


@remembered(8192, 128)
def is_cid_strict(s: str) -> bool:
    """A CID string that parses and is in canonical form, as upstream's ``cid`` format requires."""
    return _CID_CANONICAL_RE.fullmatch(s) is not None and cid_parts(s) is not None


def cid_parts(s: str) -> tuple[int, int, int] | None:
    """(version, codec, multihash code) of a CID string that parses, else None."""
    try:
        d = libipld.decode_cid(s)
    except ValueError:
        return None
    return d["version"], d["codec"], d["hash"]["code"]


def is_at_identifier(s: Any) -> bool:
    if type(s) is not str:
        return False
    return is_did(s) if s.startswith("did:") else is_handle(s)


@remembered(8192, 256)
def is_at_uri(s: str) -> bool:
    """``at://AUTHORITY[/NSID[/RKEY]][#/json-pointer]``, at most 8 KiB."""
    if len(s) > 8192 or not s.startswith("at://"):
        return False
    base, hash_, fragment = s.partition("#")
    if hash_ and ("#" in fragment or _AT_URI_FRAGMENT_RE.fullmatch(fragment) is None):
        return False
    parts = base[5:].split("/")
    n = len(parts)
    if n > 3 or not is_at_identifier(parts[0]):
        return False
    if n >= 2 and not is_nsid(parts[1]):
        return False
    return n < 3 or is_record_key(parts[2])


def is_uri(s: Any) -> bool:
    return type(s) is str and len(s) <= 8192 and _URI_RE.fullmatch(s) is not None


_GRANDFATHERED = frozenset(
    "en-GB-oed i-ami i-bnn i-default i-enochian i-hak i-klingon i-lux i-mingo i-navajo i-pwn i-tao"
    " i-tay i-tsu sgn-BE-FR sgn-BE-NL sgn-CH-DE art-lojban cel-gaulish no-bok no-nyn zh-guoyu"
    " zh-hakka zh-min zh-min-nan zh-xiang".split()
)
_PRIMARY_RE = re.compile(r"[a-z]{2,3}")
_EXTLANG_RE = re.compile(r"[A-Za-z]{3}")
_SCRIPT_RE = re.compile(r"[A-Za-z]{4}")
_REGION_RE = re.compile(r"[A-Za-z]{2}|[0-9]{3}")
_VARIANT_RE = re.compile(r"[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}")
_SINGLETON_RE = re.compile(r"[0-9A-WYZa-wyz]")
_EXTENSION_RE = re.compile(r"[A-Za-z0-9]{2,8}")


def _repeats_variant_or_singleton(tags: list[str]) -> bool:
    """RFC 5646 §4.1: a variant or an extension singleton may not appear twice (upstream's
    strict language format checks this after the syntax)."""
    i = 1
    while i < len(tags) and i <= 3 and _EXTLANG_RE.fullmatch(tags[i]):
        i += 1
    if i < len(tags) and _SCRIPT_RE.fullmatch(tags[i]):
        i += 1
    if i < len(tags) and _REGION_RE.fullmatch(tags[i]):
        i += 1
    seen: set[str] = set()
    while i < len(tags) and _VARIANT_RE.fullmatch(tags[i]):
        if (v := tags[i].lower()) in seen:
            return True
        seen.add(v)
        i += 1
    seen = set()
    while i < len(tags) and _SINGLETON_RE.fullmatch(tags[i]):
        if (v := tags[i].lower()) in seen:
            return True
        seen.add(v)
        i += 1
        while i < len(tags) and _EXTENSION_RE.fullmatch(tags[i]):
            i += 1
    return False


@remembered(1024, 128)
def is_language(s: str) -> bool:
    """A BCP-47 tag as upstream's strict ``language`` format takes it: well-formed, and unless
    grandfathered or private use, a lower-case 2-3 letter primary subtag and no repeated
    variant or extension singleton."""
    if len(s) > 128 or _LANGUAGE_RE.fullmatch(s) is None:
        return False
    if s in _GRANDFATHERED or s[0] in "xX":
        return True
    tags = s.split("-")
    return _PRIMARY_RE.fullmatch(tags[0]) is not None and not _repeats_variant_or_singleton(tags)


# --------------------------------------------------------------------------------------------
# Calendar arithmetic (proleptic Gregorian, days since 1970-01-01), as JS Date does it.
# --------------------------------------------------------------------------------------------

_MS_PER_DAY = 86_400_000
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since the epoch; ``d`` may exceed the month's length (it rolls over, like JS)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


_MS_YEAR_0 = _days_from_civil(0, 1, 1) * _MS_PER_DAY
_MS_YEAR_10 = _days_from_civil(10, 1, 1) * _MS_PER_DAY
_MS_YEAR_10000 = _days_from_civil(10000, 1, 1) * _MS_PER_DAY


def _iso_from_ms(ms: int) -> str:
    days, rem = divmod(ms, _MS_PER_DAY)
    y, mo, d = _civil_from_days(days)
    h, rem = divmod(rem, 3_600_000)
    mi, rem = divmod(rem, 60_000)
    s, milli = divmod(rem, 1000)
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{milli:03d}Z"


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _ms3(frac: str | None) -> int:
    """First three fraction digits as milliseconds (truncated)."""
    if not frac:
        return 0
    return int((frac + "00")[:3])


# --------------------------------------------------------------------------------------------
# normalize_time: our producers' receive timestamps
# --------------------------------------------------------------------------------------------

# 2025-10-30T12:00:00.123456789+00:00 | …Z | …+0100 | 2025-10-30 12:00:00.123 UTC | no zone (UTC)
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,30}))?"
    r" ?(?:([Zz]|UTC|GMT|utc|gmt)|([+-])(\d{2})(?::?(\d{2}))?)?",
    re.ASCII,
)


# The live ingester's form, already UTC with at least millisecond precision.
_TIME_FAST_RE = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3,30}"
    r"(?:Z|\+00:00)",
    re.ASCII,
)


# Every "MM-DD" of a year but 02-29.
_MONTH_DAYS = frozenset(
    f"{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, _DAYS_IN_MONTH[m] + 1)
) - {"02-29"}


def _date_exists(s: str) -> bool:
    """Whether the date ``YYYY-MM-DD`` that ``s`` starts with exists, for a string a regex above
    has matched (month 01–12, day 01–31)."""
    md = s[5:10]
    return md in _MONTH_DAYS or (md == "02-29" and _is_leap(int(s[:4])))


def normalize_time(s: str) -> str:
    """A producer timestamp as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, ms truncated).

    Accepts ``YYYY-MM-DD[T| ]HH:MM:SS[.fraction]`` with any fraction length, followed by ``Z``,
    ``UTC``/``GMT`` (optionally after a space), an offset ``±HH:MM``/``±HHMM``/``±HH``, or
    nothing (taken as UTC). The date must exist (no Feb 30), seconds 00–59. Raises ValueError
    otherwise, and when the UTC result is outside years 0000–9999.
    """
    if type(s) is not str:
        raise ValueError(f"timestamp is not a string: {type(s).__name__}")
    if _TIME_FAST_RE.fullmatch(s) is not None and _date_exists(s):
        return s[:23] + "Z"
    m = _TIME_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"unparseable timestamp {s[:64]!r}")
    ys, mos, ds, hs, mis, ss, frac, _zone, sign, oh, om = m.groups()
    y, mo, d, h, mi, sec = int(ys), int(mos), int(ds), int(hs), int(mis), int(ss)
    if not (1 <= mo <= 12 and 1 <= d <= _DAYS_IN_MONTH[mo] and h < 24 and mi < 60 and sec < 60):
        raise ValueError(f"timestamp out of range {s[:64]!r}")
    if mo == 2 and d == 29 and not _is_leap(y):
        raise ValueError(f"timestamp out of range {s[:64]!r}")
    offset = 0
    if sign is not None:
        offset = int(oh) * 60 + (int(om) if om else 0)
        if int(oh) > 23 or (om and int(om) > 59):
            raise ValueError(f"timestamp offset out of range {s[:64]!r}")
    if offset == 0:
        # Already UTC: pure string assembly.
        f3 = (frac + "00")[:3] if frac else "000"
        return f"{ys}-{mos}-{ds}T{hs}:{mis}:{ss}.{f3}Z"
    ms = _days_from_civil(y, mo, d) * _MS_PER_DAY + ((h * 60 + mi) * 60 + sec) * 1000 + _ms3(frac)
    ms += -offset * 60_000 if sign == "+" else offset * 60_000
    if not (_MS_YEAR_0 <= ms < _MS_YEAR_10000):
        raise ValueError(f"timestamp out of range {s[:64]!r}")
    return _iso_from_ms(ms)


# --------------------------------------------------------------------------------------------
# atproto datetime + normalize_datetime_always (upstream normalizeDatetimeAlways)
# --------------------------------------------------------------------------------------------

# The Lexicon ``datetime`` syntax: RFC 3339 ∩ ISO 8601, upper-case T and Z, seconds required,
# zone required, 1–20 fraction digits. Days up to 31 in any month: like upstream (which relies on
# JS Date) 2024-02-30 is accepted and rolls over to March 1.
_DATETIME_RE = re.compile(
    r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)"
    r"(?:\.(\d{1,20}))?(Z|([+-])([01]\d|2[0-3]):([0-5]\d))",
    re.ASCII,
)

# Strings JS Date parses through its ES5 ISO path: [±YYYYYY|YYYY][-MM[-DD]][THH:MM[:SS[.f]]][zone]
_JS_ISO_RE = re.compile(
    r"([+-]\d{6}|\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
    r"(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"([Zz]|([+-])(\d{2}):?(\d{2}))?",
    re.ASCII,
)
# The one non-ISO form V8's fallback parser accepts that is common in the wild:
# "YYYY-MM-DD HH:MM[:SS[.f]]" with an optional "Z", " UTC"/" GMT" or numeric offset.
_JS_SPACE_RE = re.compile(
    r"([1-9]\d{3})-(\d{2})-(\d{2}) +(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(?: *([Zz])| +(?i:UTC|GMT)| *([+-])(\d{2}):?(\d{2}))?",
    re.ASCII,
)
# normalizeDatetime's test for "this string already ends in a timezone".
_HAS_ZONE_RE = re.compile(r"(?:[+-]\d\d:?\d\d|[a-zA-Z])\Z", re.ASCII)


def _datetime_ms(s: str) -> int | None:
    """Epoch ms of a Lexicon datetime string, or None if ``s`` is not one."""
    if len(s) > 64:
        return None
    m = _DATETIME_RE.fullmatch(s)
    if m is None or s.endswith("-00:00"):
        return None
    ys, mos, ds, hs, mis, ss, frac, _zone, sign, oh, om = m.groups()
    ms = (
        _days_from_civil(int(ys), int(mos), int(ds)) * _MS_PER_DAY
        + ((int(hs) * 60 + int(mis)) * 60 + int(ss)) * 1000
        + _ms3(frac)
    )
    if sign is not None:
        off = (int(oh) * 60 + int(om)) * 60_000
        ms += -off if sign == "+" else off
    return ms


# The shape nearly every createdAt has: "YYYY-MM-DDTHH:MM:SS.mmmZ". It is already canonical when
# the year is at least 0010 and the day exists in its month (no roll-over).
_CANONICAL_DT_RE = re.compile(
    r"(?!000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z",
    re.ASCII,
)


def _is_canonical_datetime(s: str) -> bool:
    return len(s) == 24 and _CANONICAL_DT_RE.fullmatch(s) is not None and _date_exists(s)


def is_datetime(s: Any) -> bool:
    """The atproto Lexicon datetime syntax (interop vectors; years 0000–9999 allowed)."""
    return type(s) is str and _datetime_ms(s) is not None


def is_lex_datetime(s: Any) -> bool:
    """``is_datetime`` plus upstream's range rule: the UTC year must be within 0010–9999."""
    if type(s) is not str:
        return False
    if _is_canonical_datetime(s):
        return True
    ms = _datetime_ms(s)
    return ms is not None and _MS_YEAR_10 <= ms < _MS_YEAR_10000


def _js_fields_ms(
    y: int,
    mo: int,
    d: int,
    h: int,
    mi: int,
    sec: int,
    frac: str | None,
    sign: str | None,
    oh: str | None,
    om: str | None,
) -> int | None:
    if not (1 <= mo <= 12 and 1 <= d <= 31 and mi < 60 and sec < 60):
        return None
    if h > 24 or (h == 24 and (mi or sec or _ms3(frac))):
        return None
    ms = _days_from_civil(y, mo, d) * _MS_PER_DAY + ((h * 60 + mi) * 60 + sec) * 1000 + _ms3(frac)
    if sign is not None:
        ohi, omi = int(oh), int(om) if om else 0
        if ohi > 23 or omi > 59:
            return None
        off = (ohi * 60 + omi) * 60_000
        ms += -off if sign == "+" else off
    return ms


class _NotEmulated(Exception):
    """JS Date would read this string in a way we do not reproduce."""


def _js_date_ms(s: str) -> int | None:
    """``new Date(s).getTime()`` for the subset of inputs documented on normalize_datetime_always,
    with a local time zone of UTC; None where JS gives an Invalid Date (or we do not emulate)."""
    m = _JS_ISO_RE.fullmatch(s)
    if m is not None:
        ys, mos, ds, hs, mis, ss, frac, zone, sign, oh, om = m.groups()
        if ys == "-000000":
            return None
        if hs is None and zone is not None:
            if sign is not None:
                return None  # V8 rejects a numeric offset after a date-only value
            if ys[0] in "0+-":
                # "YYYY[-MM[-DD]]Z" goes through V8's fallback parser, which reads years below
                # 1000 with two-digit-year heuristics ("0010-01-01Z" is 2001-10-01): not emulated.
                raise _NotEmulated
        return _js_fields_ms(
            int(ys),
            int(mos) if mos else 1,
            int(ds) if ds else 1,
            int(hs) if hs else 0,
            int(mis) if mis else 0,
            int(ss) if ss else 0,
            frac,
            sign,
            oh,
            om,
        )
    m = _JS_SPACE_RE.fullmatch(s)
    if m is not None:
        ys, mos, ds, hs, mis, ss, frac, _z, sign, oh, om = m.groups()
        return _js_fields_ms(
            int(ys), int(mos), int(ds), int(hs), int(mis), int(ss or 0), frac, sign, oh, om
        )
    return None


def normalize_datetime_always(s: Any) -> str:
    """Upstream's ``normalizeDatetimeAlways`` (``@atproto/syntax``), for record ``createdAt``.

    Same three steps as upstream:

    1. a valid Lexicon datetime (``is_datetime``) is converted to UTC;
    2. otherwise, a string that does not end in a zone is parsed as if it ended in ``Z``;
    3. otherwise the string is parsed as JS ``new Date(s)`` would.

    The result must fall within years 0010–9999 (UTC), upstream's range (upstream rejects years
    below 10, not just negative ones); anything else, and any non-string, gives
    ``1970-01-01T00:00:00.000Z``.

    What "parsed as JS Date would" covers here (a local time zone of UTC, as on our servers):

    * the ES5 ISO form ``[±YYYYYY|YYYY][-MM[-DD]][(T|t)HH:MM[:SS[.fraction]]][Z|z|±HH:MM|±HHMM]``:
      date-only values are UTC, a missing zone means UTC, lower-case ``t``/``z`` are accepted,
      any number of fraction digits (truncated to ms), ``24:00[:00[.000]]`` is the next
      midnight, days up to 31 roll over (``2023-02-29`` → March 1), month 01–12, zone ≤ 23:59;
    * ``YYYY-MM-DD HH:MM[:SS[.fraction]]`` with a space (year 1000–9999) and an optional ``Z``,
      `` UTC``/`` GMT`` or numeric offset.

    Not emulated, so they give the epoch although V8's fallback parser reads some of them:
    RFC 2822 and other month-name forms, slashes, unpadded fields, two-digit years, trailing
    text or whitespace. Every collection that stores this value requires ``createdAt`` to be a
    valid Lexicon datetime (case 1), so those forms only ever reach records that fail
    validation anyway.
    """
    if type(s) is not str:
        return EPOCH
    if _is_canonical_datetime(s):
        return s
    ms = _datetime_ms(s)
    try:
        if ms is None and _HAS_ZONE_RE.search(s) is None:
            ms = _js_date_ms(s + "Z")
        if ms is None:
            ms = _js_date_ms(s)
    except _NotEmulated:
        return EPOCH
    if ms is None or not (_MS_YEAR_10 <= ms < _MS_YEAR_10000):
        return EPOCH
    return _iso_from_ms(ms)


# --------------------------------------------------------------------------------------------
# Records: canonical lex JSON
# --------------------------------------------------------------------------------------------

MAX_DEPTH = 128  # nesting levels accepted in a record (real records use fewer than 20)


class DataModelError(ValueError):
    """A record value that is not valid in the atproto data model."""


def _cid_from_int_array(arr: list[Any]) -> str:
    try:
        raw = bytes(arr)
    except (TypeError, ValueError):
        raise DataModelError("blob ref is an array but not of bytes") from None
    if raw[:1] == b"\x00":  # DAG-CBOR tag 42 keeps the identity multibase prefix
        raw = raw[1:]
    try:
        return libipld.encode_cid(raw)
    except ValueError:
        raise DataModelError("blob ref bytes are not a CID") from None


def _check_link(cid: Any) -> None:
    if type(cid) is not str:
        raise DataModelError("$link is not a string")
    if not is_cid_strict(cid):
        raise DataModelError(f"$link is not a CID: {cid[:80]!r}")


def _norm_blob(d: dict[str, Any]) -> dict[str, Any]:
    ref = d.get("ref")
    changed = False
    if type(ref) is dict:
        if len(ref) != 1 or "$link" not in ref:
            raise DataModelError("blob ref is not a link")
        cid = ref["$link"]
    elif type(ref) is str:
        cid, changed = ref, True
    elif type(ref) is list:
        cid, changed = _cid_from_int_array(ref), True
    elif ref is None:
        raise DataModelError("blob has no ref")
    else:
        raise DataModelError("blob ref is not a link")
    _check_link(cid)
    mime = d.get("mimeType")
    if type(mime) is not str:
        raise DataModelError("blob mimeType is not a string")
    size = d.get("size")
    if type(size) is float and size.is_integer():
        size, changed = int(size), True
    if type(size) is not int:
        raise DataModelError("blob size is not an integer")
    if len(d) != 4:
        extra = sorted(k for k in d if k not in ("$type", "ref", "mimeType", "size"))
        raise DataModelError(f"blob has unexpected field {extra[0]!r}" if extra else "bad blob")
    if not changed:
        return d
    return {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": size}


def _norm_bytes(d: dict[str, Any]) -> dict[str, Any]:
    b64 = d["$bytes"]
    if type(b64) is not str:
        raise DataModelError("$bytes is not a string")
    if len(d) != 1:
        raise DataModelError("$bytes object has extra fields")
    # Canonical lex JSON is standard base64 without padding; accept padded or url-safe input.
    body = b64.rstrip("=")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise DataModelError("$bytes is not base64") from None
    canon = base64.b64encode(raw).decode("ascii").rstrip("=")
    return d if canon == b64 else {"$bytes": canon}


def _norm_dict(d: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise DataModelError("record is nested too deeply")
    if "$link" in d:
        if len(d) != 1:
            raise DataModelError("$link object has extra fields")
        _check_link(d["$link"])
        return d
    if "$bytes" in d:
        return _norm_bytes(d)
    if "$type" in d:
        t = d["$type"]
        if t == "blob":
            return _norm_blob(d)
        if type(t) is not str or not t:
            raise DataModelError("$type is not a non-empty string")
    out: dict[str, Any] | None = None
    for k, v in d.items():
        tv = type(v)
        if tv is str or tv is int or tv is bool or v is None:
            continue
        nv = _norm_value(v, depth + 1)
        if nv is not v:
            if out is None:
                out = dict(d)
            out[k] = nv
    return d if out is None else out


def _norm_list(a: list[Any], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise DataModelError("record is nested too deeply")
    if a and all(type(x) is int and 0 <= x <= 255 for x in a):
        # Older producers wrote bytes as arrays of integers.
        return {"$bytes": base64.b64encode(bytes(a)).decode("ascii").rstrip("=")}
    out: list[Any] | None = None
    for i, v in enumerate(a):
        tv = type(v)
        if tv is str or tv is int or tv is bool or v is None:
            continue
        nv = _norm_value(v, depth + 1)
        if nv is not v:
            if out is None:
                out = list(a)
            out[i] = nv
    return a if out is None else out


def _norm_value(v: Any, depth: int) -> Any:
    t = type(v)
    if t is dict:
        return _norm_dict(v, depth)
    if t is list:
        return _norm_list(v, depth)
    if t is float:
        if v.is_integer() and -(2**53) < v < 2**53:
            return int(v)
        raise DataModelError(f"non-integer number {v!r}")
    if t is str or t is int or t is bool or v is None:
        return v
    raise DataModelError(f"unsupported value type {t.__name__}")


def normalize_record(value: Any) -> Any:
    """The record in canonical lex JSON, as upstream stores it in ``record.json``.

    * ``{"$link": cid}`` links stay as they are (the CID must parse);
    * blobs (objects with ``"$type": "blob"``) become
      ``{"$type": "blob", "ref": {"$link": cid}, "mimeType": …, "size": …}`` whether ``ref`` came
      as a ``$link`` object, a CID string, or an array of integers holding the binary CID (with or
      without the 0x00 multibase prefix of DAG-CBOR tag 42);
    * bytes become ``{"$bytes": base64}`` (standard alphabet, unpadded) whether they came as
      ``$bytes`` or as a non-empty array of integers 0–255. Without a schema an integer array
      cannot be told from bytes, so *every* such array outside a blob ref is taken as bytes
      (no app.bsky record has integer arrays);
    * strongRef ``cid`` fields and every other string stay strings: only blob refs are links;
    * integral floats (``123.0``) become integers.

    Legacy blobs ``{"cid": …, "mimeType": …}`` are left exactly as they are: upstream's strict
    validation rejects them in blob positions (``lexicon.validate_record`` does too), and
    ``blob_cid`` still reads them.

    Raises ``DataModelError`` (a ValueError) for values outside the data model: non-integral
    numbers, malformed ``$link``/``$bytes``/blob objects, a ``$type`` that is not a non-empty
    string, nesting deeper than ``MAX_DEPTH``. The input is never mutated; containers that need
    no change are returned as they are (no copy).
    """
    return _norm_value(value, 0)


def blob_cid(blob: Any) -> str | None:
    """The CID string of a (normalised) blob or of a legacy ``{cid, mimeType}`` blob."""
    if type(blob) is not dict:
        return None
    ref = blob.get("ref")
    if type(ref) is dict:
        link = ref.get("$link")
        return link if type(link) is str else None
    if type(ref) is str:
        return ref
    if type(ref) is list:
        try:
            return _cid_from_int_array(ref)
        except DataModelError:
            return None
    cid = blob.get("cid")
    return cid if type(cid) is str else None
