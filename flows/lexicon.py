"""Record validation against the published app.bsky lexicons.

``validate_record(collection, record)`` returns a short human-readable reason when the record
is invalid and None when it is valid, the way upstream's indexer (``@atproto/bsky`` 0.0.280,
``@atproto/lex`` in "validate" mode, strict) decides whether to index it:

* the record must be an object whose ``$type`` equals the collection (except for ``UNCHECKED``
  collections, which upstream indexes unvalidated: they only get the string scan below);
* no string (value or key) anywhere may contain NUL (PostgreSQL text/jsonb cannot store it) or be
  longer than ``MAX_STRING_BYTES`` UTF-8 bytes;
* for the collections in ``RULES_FOR`` the record must match its lexicon: required fields,
  types, string formats and length limits, array lengths, blob shape/accept/maxSize, union
  members, and a named object's ``$type``, when present, must name it. Unknown extra fields are
  allowed; open unions accept unknown ``$type`` values.
  Other collections only get the two generic checks above.

The schemas below are a transcription of the lexicon JSON documents (bluesky-social/atproto,
``lexicons/``), limited to the definitions records use, compiled once into closures. Records
are expected in canonical lex JSON (``datamodel.normalize_record``).

Deliberate approximations:

* ``maxGraphemes``: a string with at most that many code points always passes (graphemes never
  outnumber code points). Longer ones are counted with a simplified extended-grapheme rule
  (combining marks, variation selectors, emoji modifiers, ZWJ sequences, flag pairs, Hangul
  jamo, CRLF) that can only under-count: we may accept a rare string upstream rejects, never
  the reverse.
* legacy blobs ``{"cid", "mimeType"}`` are rejected in blob positions, as upstream's strict
  validation does since 2026-03 (before that it accepted them).
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Callable
from typing import Any

from flows import datamodel as dm

MAX_STRING_BYTES = 100_000

Issue = tuple[str, str]  # (path, message)
Check = Callable[[Any], Issue | None]

# --------------------------------------------------------------------------------------------
# Schemas (transcribed lexicon JSON; only what records use)
# --------------------------------------------------------------------------------------------

_STRONG_REF = {"type": "ref", "ref": "com.atproto.repo.strongRef"}
_DATETIME = {"type": "string", "format": "datetime"}
_SUBJECT_DID_RECORD = {
    "main": {
        "type": "record",
        "key": "tid",
        "record": {
            "type": "object",
            "required": ["subject", "createdAt"],
            "properties": {"subject": {"type": "string", "format": "did"}, "createdAt": _DATETIME},
        },
    }
}
_SUBJECT_REF_RECORD = {
    "main": {
        "type": "record",
        "key": "tid",
        "record": {
            "type": "object",
            "required": ["subject", "createdAt"],
            "properties": {"subject": _STRONG_REF, "createdAt": _DATETIME, "via": _STRONG_REF},
        },
    }
}
_SUBJECT_URI_RECORD = {
    "main": {
        "type": "record",
        "key": "tid",
        "record": {
            "type": "object",
            "required": ["subject", "createdAt"],
            "properties": {
                "subject": {"type": "string", "format": "at-uri"},
                "createdAt": _DATETIME,
            },
        },
    }
}
_SELF_LABELS = {"type": "union", "refs": ["com.atproto.label.defs#selfLabels"]}
_IMAGE_BLOB_PNG_JPEG = {"type": "blob", "accept": ["image/png", "image/jpeg"], "maxSize": 1000000}
_FACETS = {"type": "array", "items": {"type": "ref", "ref": "app.bsky.richtext.facet"}}

LEXICONS: dict[str, dict[str, Any]] = {
    "com.atproto.repo.strongRef": {
        "main": {
            "type": "object",
            "required": ["uri", "cid"],
            "properties": {
                "uri": {"type": "string", "format": "at-uri"},
                "cid": {"type": "string", "format": "cid"},
            },
        }
    },
    "com.atproto.label.defs": {
        "selfLabels": {
            "type": "object",
            "required": ["values"],
            "properties": {
                "values": {
                    "type": "array",
                    "items": {"type": "ref", "ref": "#selfLabel"},
                    "maxLength": 10,
                }
            },
        },
        "selfLabel": {
            "type": "object",
            "required": ["val"],
            "properties": {"val": {"type": "string", "maxLength": 128}},
        },
        "labelValue": {"type": "string"},  # known values only, any string passes
        "labelValueDefinition": {
            "type": "object",
            "required": ["identifier", "severity", "blurs", "locales"],
            "properties": {
                "identifier": {"type": "string", "maxLength": 100, "maxGraphemes": 100},
                "severity": {"type": "string"},
                "blurs": {"type": "string"},
                "defaultSetting": {"type": "string"},
                "adultOnly": {"type": "boolean"},
                "locales": {
                    "type": "array",
                    "items": {"type": "ref", "ref": "#labelValueDefinitionStrings"},
                },
            },
        },
        "labelValueDefinitionStrings": {
            "type": "object",
            "required": ["lang", "name", "description"],
            "properties": {
                "lang": {"type": "string", "format": "language"},
                "name": {"type": "string", "maxGraphemes": 64, "maxLength": 640},
                "description": {"type": "string", "maxGraphemes": 10000, "maxLength": 100000},
            },
        },
    },
    "app.bsky.richtext.facet": {
        "main": {
            "type": "object",
            "required": ["index", "features"],
            "properties": {
                "index": {"type": "ref", "ref": "#byteSlice"},
                "features": {
                    "type": "array",
                    "items": {"type": "union", "refs": ["#mention", "#link", "#tag"]},
                },
            },
        },
        "mention": {
            "type": "object",
            "required": ["did"],
            "properties": {"did": {"type": "string", "format": "did"}},
        },
        "link": {
            "type": "object",
            "required": ["uri"],
            "properties": {"uri": {"type": "string", "format": "uri"}},
        },
        "tag": {
            "type": "object",
            "required": ["tag"],
            "properties": {"tag": {"type": "string", "maxLength": 640, "maxGraphemes": 64}},
        },
        "byteSlice": {
            "type": "object",
            "required": ["byteStart", "byteEnd"],
            "properties": {
                "byteStart": {"type": "integer", "minimum": 0},
                "byteEnd": {"type": "integer", "minimum": 0},
            },
        },
    },
    "app.bsky.embed.defs": {
        "aspectRatio": {
            "type": "object",
            "required": ["width", "height"],
            "properties": {
                "width": {"type": "integer", "minimum": 1},
                "height": {"type": "integer", "minimum": 1},
            },
        }
    },
    "app.bsky.embed.images": {
        "main": {
            "type": "object",
            "required": ["images"],
            "properties": {
                "images": {
                    "type": "array",
                    "items": {"type": "ref", "ref": "#image"},
                    "maxLength": 4,
                }
            },
        },
        "image": {
            "type": "object",
            "required": ["image", "alt"],
            "properties": {
                "image": {"type": "blob", "accept": ["image/*"], "maxSize": 2000000},
                "alt": {"type": "string"},
                "aspectRatio": {"type": "ref", "ref": "app.bsky.embed.defs#aspectRatio"},
            },
        },
    },
    "app.bsky.embed.gallery": {
        "main": {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {
                    "type": "array",
                    "items": {"type": "union", "refs": ["#image"]},
                    "maxLength": 20,
                }
            },
        },
        "image": {
            "type": "object",
            "required": ["image", "alt", "aspectRatio"],
            "properties": {
                "image": {"type": "blob", "accept": ["image/*"], "maxSize": 2000000},
                "alt": {"type": "string"},
                "aspectRatio": {"type": "ref", "ref": "app.bsky.embed.defs#aspectRatio"},
            },
        },
    },
    "app.bsky.embed.external": {
        "main": {
            "type": "object",
            "required": ["external"],
            "properties": {"external": {"type": "ref", "ref": "#external"}},
        },
        "external": {
            "type": "object",
            "required": ["uri", "title", "description"],
            "properties": {
                "uri": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "description": {"type": "string"},
                "thumb": {"type": "blob", "accept": ["image/*"], "maxSize": 1000000},
            },
        },
    },
    "app.bsky.embed.record": {
        "main": {
            "type": "object",
            "required": ["record"],
            "properties": {"record": _STRONG_REF},
        }
    },
    "app.bsky.embed.recordWithMedia": {
        "main": {
            "type": "object",
            "required": ["record", "media"],
            "properties": {
                "record": {"type": "ref", "ref": "app.bsky.embed.record"},
                "media": {
                    "type": "union",
                    "refs": [
                        "app.bsky.embed.images",
                        "app.bsky.embed.video",
                        "app.bsky.embed.gallery",
                        "app.bsky.embed.external",
                    ],
                },
            },
        }
    },
    "app.bsky.embed.video": {
        "main": {
            "type": "object",
            "required": ["video"],
            "properties": {
                "video": {"type": "blob", "accept": ["video/mp4"], "maxSize": 300000000},
                "captions": {
                    "type": "array",
                    "items": {"type": "ref", "ref": "#caption"},
                    "maxLength": 20,
                },
                "alt": {"type": "string"},  # no limits in the 0.0.280 schema
                "aspectRatio": {"type": "ref", "ref": "app.bsky.embed.defs#aspectRatio"},
                "presentation": {"type": "string"},
            },
        },
        "caption": {
            "type": "object",
            "required": ["lang", "file"],
            "properties": {
                "lang": {"type": "string", "format": "language"},
                "file": {"type": "blob", "accept": ["text/vtt"], "maxSize": 20000},
            },
        },
    },
    "app.bsky.feed.post": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["text", "createdAt"],
                "properties": {
                    "text": {"type": "string", "maxLength": 3000, "maxGraphemes": 300},
                    "entities": {"type": "array", "items": {"type": "ref", "ref": "#entity"}},
                    "facets": _FACETS,
                    "reply": {"type": "ref", "ref": "#replyRef"},
                    "embed": {
                        "type": "union",
                        "refs": [
                            "app.bsky.embed.images",
                            "app.bsky.embed.video",
                            "app.bsky.embed.gallery",
                            "app.bsky.embed.external",
                            "app.bsky.embed.record",
                            "app.bsky.embed.recordWithMedia",
                        ],
                    },
                    "langs": {
                        "type": "array",
                        "maxLength": 3,
                        "items": {"type": "string", "format": "language"},
                    },
                    "labels": _SELF_LABELS,
                    "tags": {
                        "type": "array",
                        "maxLength": 8,
                        "items": {"type": "string", "maxLength": 640, "maxGraphemes": 64},
                    },
                    "createdAt": _DATETIME,
                },
            },
        },
        "replyRef": {
            "type": "object",
            "required": ["root", "parent"],
            "properties": {"root": _STRONG_REF, "parent": _STRONG_REF},
        },
        "entity": {
            "type": "object",
            "required": ["index", "type", "value"],
            "properties": {
                "index": {"type": "ref", "ref": "#textSlice"},
                "type": {"type": "string"},
                "value": {"type": "string"},
            },
        },
        "textSlice": {
            "type": "object",
            "required": ["start", "end"],
            "properties": {
                "start": {"type": "integer", "minimum": 0},
                "end": {"type": "integer", "minimum": 0},
            },
        },
    },
    # A like and a repost have the same record shape.
    "app.bsky.feed.like": _SUBJECT_REF_RECORD,
    "app.bsky.feed.repost": _SUBJECT_REF_RECORD,
    # A follow and a block have the same record shape.
    "app.bsky.graph.follow": _SUBJECT_DID_RECORD,
    "app.bsky.graph.block": _SUBJECT_DID_RECORD,
    "app.bsky.actor.profile": {
        "main": {
            "type": "record",
            "key": "literal:self",
            "record": {
                "type": "object",
                "properties": {
                    "displayName": {"type": "string", "maxGraphemes": 64, "maxLength": 640},
                    "description": {"type": "string", "maxGraphemes": 256, "maxLength": 2560},
                    "avatar": _IMAGE_BLOB_PNG_JPEG,
                    "banner": _IMAGE_BLOB_PNG_JPEG,
                    "labels": _SELF_LABELS,
                    "joinedViaStarterPack": _STRONG_REF,
                    "pinnedPost": _STRONG_REF,
                    "createdAt": _DATETIME,
                },
            },
        }
    },
    "app.bsky.feed.threadgate": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["post", "createdAt"],
                "properties": {
                    "post": {"type": "string", "format": "at-uri"},
                    "allow": {
                        "type": "array",
                        "maxLength": 5,
                        "items": {
                            "type": "union",
                            "refs": [
                                "#mentionRule",
                                "#followerRule",
                                "#followingRule",
                                "#listRule",
                            ],
                        },
                    },
                    "createdAt": _DATETIME,
                    "hiddenReplies": {
                        "type": "array",
                        "maxLength": 300,
                        "items": {"type": "string", "format": "at-uri"},
                    },
                },
            },
        },
        "mentionRule": {"type": "object", "properties": {}},
        "followerRule": {"type": "object", "properties": {}},
        "followingRule": {"type": "object", "properties": {}},
        "listRule": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "string", "format": "at-uri"}},
        },
    },
    "app.bsky.feed.postgate": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["post", "createdAt"],
                "properties": {
                    "createdAt": _DATETIME,
                    "post": {"type": "string", "format": "at-uri"},
                    "detachedEmbeddingUris": {
                        "type": "array",
                        "maxLength": 50,
                        "items": {"type": "string", "format": "at-uri"},
                    },
                    "embeddingRules": {
                        "type": "array",
                        "maxLength": 5,
                        "items": {"type": "union", "refs": ["#disableRule"]},
                    },
                },
            },
        },
        "disableRule": {"type": "object", "properties": {}},
    },
    "app.bsky.graph.defs": {
        "listPurpose": {
            "type": "string",
            "knownValues": [
                "app.bsky.graph.defs#modlist",
                "app.bsky.graph.defs#curatelist",
                "app.bsky.graph.defs#referencelist",
            ],
        },
    },
    "app.bsky.graph.list": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["name", "purpose", "createdAt"],
                "properties": {
                    "purpose": {"type": "ref", "ref": "app.bsky.graph.defs#listPurpose"},
                    "name": {"type": "string", "maxLength": 64, "minLength": 1},
                    "description": {"type": "string", "maxGraphemes": 300, "maxLength": 3000},
                    "descriptionFacets": _FACETS,
                    "avatar": _IMAGE_BLOB_PNG_JPEG,
                    "labels": _SELF_LABELS,
                    "createdAt": _DATETIME,
                },
            },
        }
    },
    "app.bsky.graph.listitem": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["subject", "list", "createdAt"],
                "properties": {
                    "subject": {"type": "string", "format": "did"},
                    "list": {"type": "string", "format": "at-uri"},
                    "createdAt": _DATETIME,
                },
            },
        }
    },
    # A list block and a reference-list opt-out have the same record shape.
    "app.bsky.graph.listblock": _SUBJECT_URI_RECORD,
    "app.bsky.graph.referencelistoptout": _SUBJECT_URI_RECORD,
    "app.bsky.feed.generator": {
        "main": {
            "type": "record",
            "key": "any",
            "record": {
                "type": "object",
                "required": ["did", "displayName", "createdAt"],
                "properties": {
                    "did": {"type": "string", "format": "did"},
                    "displayName": {"type": "string", "maxGraphemes": 24, "maxLength": 240},
                    "description": {"type": "string", "maxGraphemes": 300, "maxLength": 3000},
                    "descriptionFacets": _FACETS,
                    "avatar": _IMAGE_BLOB_PNG_JPEG,
                    "acceptsInteractions": {"type": "boolean"},
                    "labels": _SELF_LABELS,
                    "contentMode": {"type": "string"},
                    "createdAt": _DATETIME,
                },
            },
        }
    },
    "app.bsky.graph.starterpack": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["name", "list", "createdAt"],
                "properties": {
                    "name": {
                        "type": "string",
                        "maxGraphemes": 50,
                        "maxLength": 500,
                        "minLength": 1,
                    },
                    "description": {"type": "string", "maxGraphemes": 300, "maxLength": 3000},
                    "descriptionFacets": _FACETS,
                    "list": {"type": "string", "format": "at-uri"},
                    "feeds": {
                        "type": "array",
                        "maxLength": 3,
                        "items": {"type": "ref", "ref": "#feedItem"},
                    },
                    "createdAt": _DATETIME,
                },
            },
        },
        "feedItem": {
            "type": "object",
            "required": ["uri"],
            "properties": {"uri": {"type": "string", "format": "at-uri"}},
        },
    },
    "app.bsky.labeler.service": {
        "main": {
            "type": "record",
            "key": "literal:self",
            "record": {
                "type": "object",
                "required": ["policies", "createdAt"],
                "properties": {
                    "policies": {"type": "ref", "ref": "app.bsky.labeler.defs#labelerPolicies"},
                    "labels": _SELF_LABELS,
                    "createdAt": _DATETIME,
                    "reasonTypes": {
                        "type": "array",
                        "items": {"type": "ref", "ref": "com.atproto.moderation.defs#reasonType"},
                    },
                    "subjectTypes": {
                        "type": "array",
                        "items": {"type": "ref", "ref": "com.atproto.moderation.defs#subjectType"},
                    },
                    "subjectCollections": {
                        "type": "array",
                        "items": {"type": "string", "format": "nsid"},
                    },
                },
            },
        }
    },
    "app.bsky.labeler.defs": {
        "labelerPolicies": {
            "type": "object",
            "required": ["labelValues"],
            "properties": {
                "labelValues": {
                    "type": "array",
                    "items": {"type": "ref", "ref": "com.atproto.label.defs#labelValue"},
                },
                "labelValueDefinitions": {
                    "type": "array",
                    "items": {"type": "ref", "ref": "com.atproto.label.defs#labelValueDefinition"},
                },
            },
        },
    },
    "com.atproto.moderation.defs": {
        # Open sets of known values: any string.
        "reasonType": {"type": "string"},
        "subjectType": {"type": "string"},
    },
    "app.bsky.graph.verification": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["subject", "handle", "displayName", "createdAt"],
                "properties": {
                    "subject": {"type": "string", "format": "did"},
                    "handle": {"type": "string", "format": "handle"},
                    "displayName": {"type": "string"},
                    "createdAt": _DATETIME,
                },
            },
        }
    },
    "app.bsky.actor.status": {
        "main": {
            "type": "record",
            "key": "literal:self",
            "record": {
                "type": "object",
                "required": ["status", "createdAt"],
                "properties": {
                    "status": {"type": "string"},
                    "embed": {"type": "union", "refs": ["app.bsky.embed.external"]},
                    "durationMinutes": {"type": "integer", "minimum": 1},
                    "createdAt": _DATETIME,
                },
            },
        }
    },
    "app.bsky.notification.declaration": {
        "main": {
            "type": "record",
            "key": "literal:self",
            "record": {
                "type": "object",
                "required": ["allowSubscriptions"],
                "properties": {"allowSubscriptions": {"type": "string"}},
            },
        }
    },
    "com.germnetwork.declaration": {
        "main": {
            "type": "record",
            "key": "literal:self",
            "record": {
                "type": "object",
                "required": ["version", "currentKey"],
                "properties": {
                    "version": {"type": "string", "minLength": 5, "maxLength": 14},
                    "currentKey": {"type": "bytes"},
                    "messageMe": {"type": "ref", "ref": "#messageMe"},
                    "keyPackage": {"type": "bytes"},
                    "continuityProofs": {
                        "type": "array",
                        "maxLength": 1000,
                        "items": {"type": "bytes"},
                    },
                },
            },
        },
        "messageMe": {
            "type": "object",
            "required": ["messageMeUrl", "showButtonTo"],
            "properties": {
                "messageMeUrl": {
                    "type": "string",
                    "format": "uri",
                    "minLength": 1,
                    "maxLength": 2047,
                },
                "showButtonTo": {"type": "string", "minLength": 1, "maxLength": 100},
            },
        },
    },
}

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

_FORMATS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "at-identifier": (dm.is_at_identifier, "an AT identifier"),
    "at-uri": (dm.is_at_uri, "an AT-URI"),
    "cid": (dm.is_cid_strict, "a CID"),
    "datetime": (dm.is_lex_datetime, "a datetime"),
    "did": (dm.is_did, "a DID"),
    "handle": (dm.is_handle, "a handle"),
    "language": (dm.is_language, "a language tag"),
    "nsid": (dm.is_nsid, "an NSID"),
    "record-key": (dm.is_record_key, "a record key"),
    "tid": (dm.is_tid, "a TID"),
    "uri": (dm.is_uri, "a URI"),
}


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _is_extend(ch: str, o: int) -> bool:
    return (
        0xFE00 <= o <= 0xFE0F  # variation selectors
        or 0x1F3FB <= o <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= o <= 0xE007F  # emoji tag sequences
        or 0xE0100 <= o <= 0xE01EF
        or 0x1160 <= o <= 0x11FF  # Hangul medial vowels / final consonants
        or 0xD7B0 <= o <= 0xD7FF
        or o == 0x200C
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
    )


def grapheme_len(s: str) -> int:
    """Approximate extended-grapheme-cluster count; never more than the true count in practice."""
    n = 0
    after_zwj = False
    open_flag = False
    prev_cr = False
    for ch in s:
        o = ord(ch)
        if after_zwj:  # ZWJ glues the next character to the cluster
            after_zwj = o == 0x200D
            continue
        if o < 0x300:
            if o == 0x0A and prev_cr:
                prev_cr = False
                continue
            prev_cr = o == 0x0D
            open_flag = False
            n += 1
            continue
        prev_cr = False
        if o == 0x200D:
            after_zwj = True
            continue
        if 0x1F1E6 <= o <= 0x1F1FF:  # regional indicators pair up into flags
            if open_flag:
                open_flag = False
                continue
            open_flag = True
            n += 1
            continue
        open_flag = False
        if not _is_extend(ch, o):
            n += 1
    return n


def _join(key: str, path: str) -> str:
    if not path:
        return key
    return key + path if path[0] == "[" else f"{key}.{path}"


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(v), type(v).__name__)


_RAW_SHA256_CIDV1 = (1, 0x55, 0x12)  # version, codec raw, multihash sha2-256


def _is_raw_cid(cid: str) -> bool:
    return dm.cid_parts(cid) == _RAW_SHA256_CIDV1


# --------------------------------------------------------------------------------------------
# Compiler: lexicon definitions -> checks
# --------------------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, docs: dict[str, dict[str, Any]], *, strict_blobs: bool = True) -> None:
        self.docs = docs
        self.strict_blobs = strict_blobs
        self.cache: dict[str, Check] = {}

    @staticmethod
    def full_id(ref: str, nsid: str) -> str:
        if ref.startswith("#"):
            return f"{nsid}{ref}"
        return ref if "#" in ref else f"{ref}#main"

    def ref(self, full: str) -> Check:
        c = self.cache.get(full)
        if c is not None:
            return c
        nsid, _, name = full.partition("#")
        try:
            defn = self.docs[nsid][name]
        except KeyError:
            raise KeyError(f"unknown lexicon reference {full}") from None
        slot: list[Check] = []
        self.cache[full] = lambda v: slot[0](v)  # placeholder for recursive definitions
        try:
            if defn["type"] == "token":
                c = self._token(full)
            elif defn["type"] == "record":
                c = self.compile(defn["record"], nsid)
            elif defn["type"] == "object":
                c = self._object(defn, nsid, typed=nsid if name == "main" else full)
            else:
                c = self.compile(defn, nsid)
        except Exception:
            del self.cache[full]  # no placeholder left that nothing will ever fill
            raise
        slot.append(c)
        self.cache[full] = c
        return c

    def compile(self, d: dict[str, Any], nsid: str) -> Check:
        t = d["type"]
        fn = getattr(self, "_" + t.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"unsupported lexicon type {t!r}")
        return fn(d, nsid)

    # -- primitives --------------------------------------------------------------------------

    def _string(self, d: dict[str, Any], nsid: str) -> Check:
        fmt = d.get("format")
        fmt_check, fmt_name = _FORMATS[fmt] if fmt else (None, "")
        max_len, min_len = d.get("maxLength"), d.get("minLength")
        max_g, min_g = d.get("maxGraphemes"), d.get("minGraphemes")
        enum, const = d.get("enum"), d.get("const")

        # Most strings have a format or nothing else: checks of their own, without the tests of
        # limits they do not have (same messages as the general check below).
        if max_len is None and min_len is None and max_g is None and min_g is None:
            if enum is None and const is None:
                if fmt_check is None:
                    return _any_string
                return _format_check(fmt_check, fmt_name)

        def check(v: Any) -> Issue | None:
            if type(v) is not str:
                return ("", f"must be a string, not {_kind(v)}")
            n = len(v)
            if max_len is not None and n * 4 > max_len and (b := _utf8_len(v)) > max_len:
                return ("", f"is longer than {max_len} bytes ({b})")
            if min_len is not None and n < min_len * 4 and (b := _utf8_len(v)) < min_len:
                return ("", f"is shorter than {min_len} bytes ({b})")
            if max_g is not None and n > max_g and (g := grapheme_len(v)) > max_g:
                return ("", f"is longer than {max_g} graphemes ({g})")
            if min_g is not None and (n < min_g or grapheme_len(v) < min_g):
                return ("", f"is shorter than {min_g} graphemes")
            if enum is not None and v not in enum:
                return ("", f"must be one of {enum}, not {_show(v)}")
            if const is not None and v != const:
                return ("", f"must be {const!r}")
            if fmt_check is not None and not fmt_check(v):
                return ("", f"is not {fmt_name}: {_show(v)}")
            return None

        return check

    def _integer(self, d: dict[str, Any], nsid: str) -> Check:
        lo, hi = d.get("minimum"), d.get("maximum")
        enum, const = d.get("enum"), d.get("const")

        def check(v: Any) -> Issue | None:
            if type(v) is not int:
                return ("", f"must be an integer, not {_kind(v)}")
            if lo is not None and v < lo:
                return ("", f"must be at least {lo}, not {v}")
            if hi is not None and v > hi:
                return ("", f"must be at most {hi}, not {v}")
            if enum is not None and v not in enum:
                return ("", f"must be one of {enum}, not {v}")
            if const is not None and v != const:
                return ("", f"must be {const}, not {v}")
            return None

        return check

    def _boolean(self, d: dict[str, Any], nsid: str) -> Check:
        const = d.get("const")

        def check(v: Any) -> Issue | None:
            if type(v) is not bool:
                return ("", f"must be a boolean, not {_kind(v)}")
            if const is not None and v is not const:
                return ("", f"must be {str(const).lower()}")
            return None

        return check

    def _null(self, d: dict[str, Any], nsid: str) -> Check:
        return lambda v: None if v is None else ("", f"must be null, not {_kind(v)}")

    def _bytes(self, d: dict[str, Any], nsid: str) -> Check:
        lo, hi = d.get("minLength"), d.get("maxLength")

        def check(v: Any) -> Issue | None:
            if type(v) is not dict or len(v) != 1 or type(v.get("$bytes")) is not str:
                return ("", 'must be bytes ({"$bytes": base64})')
            if lo is None and hi is None:
                return None
            b64 = v["$bytes"].rstrip("=")
            try:
                n = len(base64.b64decode(b64 + "=" * (-len(b64) % 4), altchars=b"-_"))
            except (binascii.Error, ValueError):
                return ("", "is not valid base64")
            if lo is not None and n < lo:
                return ("", f"is shorter than {lo} bytes ({n})")
            if hi is not None and n > hi:
                return ("", f"is longer than {hi} bytes ({n})")
            return None

        return check

    def _cid_link(self, d: dict[str, Any], nsid: str) -> Check:
        def check(v: Any) -> Issue | None:
            if type(v) is not dict or len(v) != 1 or not dm.is_cid_strict(v.get("$link")):
                return ("", 'must be a link ({"$link": cid})')
            return None

        return check

    def _blob(self, d: dict[str, Any], nsid: str) -> Check:
        accept: list[str] | None = d.get("accept")
        max_size = d.get("maxSize")
        strict = self.strict_blobs
        exact = frozenset(a for a in accept or () if not a.endswith("/*"))
        prefixes = tuple(a[:-1] for a in accept or () if a.endswith("/*"))
        any_mime = accept is None or "*/*" in exact

        def check(v: Any) -> Issue | None:
            if type(v) is not dict:
                return ("", f"must be a blob, not {_kind(v)}")
            if v.get("$type") != "blob":
                if "cid" in v and "$type" not in v:
                    return ("", "is a legacy blob ({cid, mimeType}), not accepted")
                return ("", "must be a blob")
            ref, mime, size = v.get("ref"), v.get("mimeType"), v.get("size")
            if type(ref) is not dict or type(ref.get("$link")) is not str:
                return ("", "blob ref must be a link")
            if strict and not _is_raw_cid(ref["$link"]):
                return ("", "blob ref must be a raw sha-256 CIDv1")
            if type(mime) is not str or "/" not in mime:
                return ("", f"blob mimeType is not a MIME type: {_show(mime)}")
            if type(size) is not int or size < 0:
                return ("", "blob size must be a non-negative integer")
            if len(v) != 4:
                return ("", "blob has unexpected fields")
            if not any_mime and mime not in exact and not mime.startswith(prefixes):
                return ("", f"blob mimeType {_show(mime)} is not accepted ({', '.join(accept)})")
            if max_size is not None and size > max_size:
                return ("", f"blob is larger than {max_size} bytes ({size})")
            return None

        return check

    def _unknown(self, d: dict[str, Any], nsid: str) -> Check:
        def check(v: Any) -> Issue | None:
            if type(v) is not dict:
                return ("", f"must be an object, not {_kind(v)}")
            if "$bytes" in v or "$link" in v or v.get("$type") == "blob":
                return ("", "must be an object, not bytes, a link or a blob")
            return None

        return check

    def _token(self, full: str) -> Check:
        def check(v: Any) -> Issue | None:
            return None if v == full else ("", f"must be the token {full!r}")

        return check

    # -- containers --------------------------------------------------------------------------

    def _array(self, d: dict[str, Any], nsid: str) -> Check:
        item = self.compile(d["items"], nsid)
        lo, hi = d.get("minLength"), d.get("maxLength")

        def check(v: Any) -> Issue | None:
            if type(v) is not list:
                return ("", f"must be an array, not {_kind(v)}")
            n = len(v)
            if hi is not None and n > hi:
                return ("", f"has more than {hi} items ({n})")
            if lo is not None and n < lo:
                return ("", f"has fewer than {lo} items ({n})")
            for i, x in enumerate(v):
                r = item(x)
                if r is not None:
                    return (f"[{i}]" + ("." + r[0] if r[0] and r[0][0] != "[" else r[0]), r[1])
            return None

        return check

    def _object(self, d: dict[str, Any], nsid: str, typed: str | None = None) -> Check:
        """``typed``: the name of a named object definition, whose ``$type``, when present, must
        name it (upstream's typedObject), wherever the object appears."""
        props = {k: self.compile(p, nsid) for k, p in d.get("properties", {}).items()}
        required = tuple(d.get("required", ()))
        nullable = frozenset(d.get("nullable", ()))
        items = tuple(props.items())

        def check(v: Any) -> Issue | None:
            if type(v) is not dict:
                return ("", f"must be an object, not {_kind(v)}")
            if typed is not None and "$type" in v and v["$type"] != typed:
                return ("$type", f"must be {typed!r}, not {_show(v['$type'])}")
            for k in required:
                if k not in v:
                    return (k, "is required")
            for k, c in items:
                x = v.get(k, _MISSING)
                if x is _MISSING:
                    continue
                if x is None:
                    if k in nullable:
                        continue
                    return (k, "must not be null")
                r = c(x)
                if r is not None:
                    return (_join(k, r[0]), r[1])
            return None

        return check

    def _ref(self, d: dict[str, Any], nsid: str) -> Check:
        full = self.full_id(d["ref"], nsid)
        try:
            # The target's own check, no wrapper (ref() hands out a placeholder while the target
            # is being compiled, so recursive definitions work).
            return self.ref(full)
        except (KeyError, ValueError):
            pass  # unknown or unsupported: fails when first used, as it always did
        target: list[Check] = []

        def check(v: Any) -> Issue | None:
            if not target:
                target.append(self.ref(full))
            return target[0](v)

        return check

    def _union(self, d: dict[str, Any], nsid: str) -> Check:
        fulls = [self.full_id(r, nsid) for r in d["refs"]]
        closed = bool(d.get("closed"))
        table: dict[str, Check] = {}

        def resolve() -> None:
            for full in fulls:
                c = self.ref(full)
                table[full] = c
                if full.endswith("#main"):
                    table[full[:-5]] = c  # a main definition's $type is the bare NSID

        def check(v: Any) -> Issue | None:
            if type(v) is not dict:
                return ("", f"must be an object, not {_kind(v)}")
            t = v.get("$type")
            if type(t) is not str or not t:
                return ("", "has no $type")
            if not table:
                resolve()
            c = table.get(t)
            if c is None:
                return ("", f"has unexpected $type {_show(t)}") if closed else None
            return c(v)

        return check


_MISSING = object()


def _any_string(v: Any) -> Issue | None:
    return None if type(v) is str else ("", f"must be a string, not {_kind(v)}")


def _format_check(fmt_check: Callable[[Any], bool], fmt_name: str) -> Check:
    def check(v: Any) -> Issue | None:
        if type(v) is not str:
            return ("", f"must be a string, not {_kind(v)}")
        if not fmt_check(v):
            return ("", f"is not {fmt_name}: {_show(v)}")
        return None

    return check


# Collections upstream indexes without validating the record at all (its chat declaration plugin
# switches validation off), not even its $type: only the generic string scan applies.
UNCHECKED = frozenset({"chat.bsky.actor.declaration"})

_COMPILER = _Compiler(LEXICONS)
# Collections with full schema rules; the others only get the generic checks.
RULES_FOR: dict[str, Check] = {
    nsid: _COMPILER.ref(f"{nsid}#main")
    for nsid, defs in LEXICONS.items()
    if defs.get("main", {}).get("type") == "record"
}


def compile_lexicons(docs: dict[str, dict[str, Any]], *, strict_blobs: bool = True) -> _Compiler:
    """A validator for other lexicon documents ({nsid: defs}); used by the conformance tests."""
    return _Compiler(docs, strict_blobs=strict_blobs)


# --------------------------------------------------------------------------------------------
# Generic checks: NUL and absurdly long strings anywhere (keys included)
# --------------------------------------------------------------------------------------------


def _scan_str(s: str) -> str | None:
    if "\x00" in s:
        return "contains a NUL character"
    if len(s) * 4 > MAX_STRING_BYTES and _utf8_len(s) > MAX_STRING_BYTES:
        return f"is longer than {MAX_STRING_BYTES} bytes"
    return None


def _scan(v: Any, path: str, depth: int) -> str | None:
    t = type(v)
    if t is str:
        r = _scan_str(v)
        return None if r is None else f"{path or 'value'} {r}"
    if depth > dm.MAX_DEPTH:
        return "record is nested too deeply"
    if t is dict:
        for k, x in v.items():
            if type(k) is str and (r := _scan_str(k)) is not None:
                return f"a key in {path or 'the record'} {r}"
            tx = type(x)
            if tx is str or tx is dict or tx is list:
                r = _scan(x, _join(path, k) if path else k, depth + 1)
                if r is not None:
                    return r
    elif t is list:
        for i, x in enumerate(v):
            tx = type(x)
            if tx is str or tx is dict or tx is list:
                r = _scan(x, f"{path}[{i}]", depth + 1)
                if r is not None:
                    return r
    return None


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def validate_record(collection: str, record: Any, *, scan_strings: bool = True) -> str | None:
    """Why ``record`` is not a valid ``collection`` record, or None if it is.

    ``scan_strings=False`` skips the NUL / long-string scan; the decoder uses it when the raw
    JSON already proves there is neither (no ``\\u0000`` escape, payload under the limit).
    """
    if type(record) is not dict:
        return f"record must be an object, not {_kind(record)}"
    if collection in UNCHECKED:
        return _scan(record, "", 0) if scan_strings else None
    t = record.get("$type")
    if t is None:
        return "record has no $type"
    if t != collection:
        return f"$type {_show(t)} does not match the collection {collection!r}"
    if scan_strings and (r := _scan(record, "", 0)) is not None:
        return r
    check = RULES_FOR.get(collection)
    if check is None:
        return None
    r = check(record)
    if r is None:
        return None
    path, msg = r
    return f"{path} {msg}" if path else msg
