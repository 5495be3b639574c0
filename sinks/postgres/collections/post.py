"""app.bsky.feed.post → ``post``, ``feed_item``, ``post_embed_*``, ``quote``, ``op_thread_reply``;
notifies mentions, the quoted author, the authors of up to four ancestors and, for replies
indexed before the post (descendants), ancestors those could not reach then; counts ``post_agg``
replyCount/quoteCount and ``profile_agg."postsCount"``.

Reply validity and gate checks read the ``record`` rows of the parent, the root, the root's
threadgate and the quoted post's postgate, the parent's ``post`` row, and the ``follow`` and
``list_item`` rows a threadgate's rules ask about, as upstream does; ``reads()`` names them so a
batch is cut between a post and a write of any of them. The ancestor and descendant walks see
the ``post`` table as it stood at the post's place in its segment (``posts_seen_at``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._keys import removed_by
from ._sql import did_of, posts_seen_at, rows_of

NSID = "app.bsky.feed.post"
PROMOTES = False
REPLY_NOTIF_DEPTH = 5  # ancestors of height 1..4 are notified
THREADGATE = "app.bsky.feed.threadgate"
POSTGATE = "app.bsky.feed.postgate"
FOLLOW = "app.bsky.graph.follow"
LISTITEM = "app.bsky.graph.listitem"


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return None


def gate_uri(uri: str, gate: str) -> str:
    """A post's gate: its did and rkey under the gate's collection. A URI that is not a post's
    comes back unchanged, as upstream's lookup does (that record then stands in for the gate)."""
    parts = uri.split("/")
    if len(parts) >= 4 and parts[3] == NSID:
        parts[3] = gate
        return "/".join(parts)
    return uri


def _gate_sql(uri: str, gate: str) -> str:
    """gate_uri() in SQL."""
    return (
        f"CASE WHEN split_part({uri}, '/', 4) = '{NSID}' "
        f"THEN regexp_replace({uri}, '^(at://[^/]*/)[^/]*', '\\1{gate}') ELSE {uri} END"
    )


def _quoted(record: dict[str, Any]) -> str | None:
    embed = record.get("embed") or {}
    kind = embed.get("$type")
    if kind == "app.bsky.embed.record":
        return (embed.get("record") or {}).get("uri")
    if kind == "app.bsky.embed.recordWithMedia":
        return ((embed.get("record") or {}).get("record") or {}).get("uri")
    return None


def reads(event: Any) -> tuple[str, ...]:
    record = event.record or {}
    out: list[str] = []
    reply = record.get("reply")
    if isinstance(reply, dict):
        root = (reply.get("root") or {}).get("uri") or ""
        parent = (reply.get("parent") or {}).get("uri") or ""
        out += [root, parent, gate_uri(root, THREADGATE)]
        owner = root.split("/")[2] if root.count("/") >= 2 else ""
        if owner != event.did:
            # The root's threadgate may ask whether one follows the other, or for any list.
            out += [removed_by(FOLLOW, event.did), removed_by(FOLLOW, owner), removed_by(LISTITEM)]
    quoted = _quoted(record)
    if quoted:
        out.append(quoted)
        if gate_uri(quoted, POSTGATE) != quoted:
            out.append(gate_uri(quoted, POSTGATE))
    return tuple(u for u in out if u)


def follows(event: Any) -> tuple[str, ...]:
    # The reply may be in the segment of its parent, root or quoted post created or updated
    # before it: the parent's post row is read once its wave is in (waves()), the others'
    # record rows are in before any insert step.
    record = event.record or {}
    reply = record.get("reply")
    out = [_quoted(record)]
    if isinstance(reply, dict):
        out += [(reply.get("root") or {}).get("uri"), (reply.get("parent") or {}).get("uri")]
    return tuple(u for u in out if u)


def waves(posts: Sequence[tuple[int, Any]]) -> list[list[int]]:
    """The staged positions of a segment's created or updated posts, in insert waves: a reply
    goes in the wave after its parent's when the parent is among them (the check of its root
    reads the parent's post row), so chains of replies within a segment see each other."""
    wave: dict[str, int] = {}
    out: list[list[int]] = []
    for idx, ev in posts:
        reply = (ev.record or {}).get("reply")
        parent = (reply.get("parent") or {}).get("uri") if isinstance(reply, dict) else None
        n = wave[parent] + 1 if parent in wave else 0
        wave[ev.uri] = n
        if n == len(out):
            out.append([])
        out[n].append(idx)
    return out


def watches(event: Any) -> tuple[str, ...]:
    # A gate deleted or updated after the post clears the post's hasThreadGate/hasPostGate
    # before the post is in; a gate created after it sets the flag after the post step.
    return (gate_uri(event.uri, THREADGATE), gate_uri(event.uri, POSTGATE))


def _js_truthy(j: str) -> str:
    """JavaScript's ``!!value`` of a jsonb value (NULL when absent counts as undefined)."""
    return (
        f"CASE jsonb_typeof({j}) WHEN 'object' THEN true WHEN 'array' THEN true "
        f"WHEN 'string' THEN {j} <> '\"\"' WHEN 'number' THEN {j} <> '0' "
        f"WHEN 'boolean' THEN {j} = 'true' ELSE false END"
    )


def _created_before(idx: str, nsid: str, *conds: str) -> str:
    """Whether a record of nsid matching conds (over alias e2) is created earlier in the
    segment. The follow and list item steps insert after the post step, and a delete or update
    of either is cut from a reply (reads()), so a reply's gate check sees their table plus this."""
    where = " AND ".join(conds)
    return f"""EXISTS (SELECT 1 FROM _ev e2 WHERE e2.collection = '{nsid}'
                AND e2.op IN ('create', 'update') AND e2.idx < {idx} AND {where})"""


def _follows(creator: str, subject: str) -> str:
    """Whether creator follows subject, as the reply at s.idx sees it."""
    return f"""(EXISTS (SELECT 1 FROM follow fo
                     WHERE fo.creator = {creator} AND fo."subjectDid" = {subject})
          OR {_created_before("s.idx", FOLLOW, f"e2.did = {creator}", f"e2.record->>'subject' = {subject}")})"""


def _elements(j: str) -> str:
    """The elements of a jsonb value that should be an array (none when it is not)."""
    return f"jsonb_array_elements(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} ELSE '[]' END)"


_QUOTED = """CASE {r}->'embed'->>'$type'
           WHEN 'app.bsky.embed.record' THEN {r}->'embed'->'record'
           WHEN 'app.bsky.embed.recordWithMedia' THEN {r}->'embed'->'record'->'record'
         END"""
_RULE = "app.bsky.feed.threadgate#"
_CHANGED = rows_of(NSID, "'delete', 'update'")
# A reply that violates the threadgate is not counted, but upstream's recount still creates the
# parent's post_agg row: a delta of 0 does that.
_COUNTED = """CASE WHEN "violatesThreadGate" THEN 0 ELSE {sign}1 END"""

DELETE_SQL = f"""
WITH gone AS (
  DELETE FROM post t USING {_CHANGED} AND t.uri = e.uri
  RETURNING t.uri, t.cid, t.creator, t."replyRoot", t."replyParent", t."sortAt", t."indexedAt",
            t."violatesThreadGate", e.op, e.idx
), agg AS (
  INSERT INTO _agg (tbl, col, key, delta)
  SELECT 'profile_agg', 'postsCount', creator, -1 FROM gone
  UNION ALL
  SELECT 'post_agg', 'replyCount', "replyParent", {_COUNTED.format(sign="-")} FROM gone
  WHERE "replyParent" IS NOT NULL
), seen AS (
  INSERT INTO _post_gone (idx, uri, cid, creator, "replyRoot", "replyParent", "sortAt",
                          "indexedAt")
  SELECT idx, uri, cid, creator, "replyRoot", "replyParent", "sortAt", "indexedAt" FROM gone
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{NSID}', op, idx, true FROM gone;

-- The post's own feed item and every repost's (upstream deletes by "postUri").
DELETE FROM feed_item f USING {_CHANGED} AND f."postUri" = e.uri;
UPDATE op_thread_reply o SET "deletedAt" = e.ts
FROM {_CHANGED} AND o.uri = e.uri AND o."deletedAt" IS NULL;
-- This post's own quote is recounted, unless the quoted post went earlier in the segment and
-- took it along; quotes *of* this post go without a recount (upstream).
WITH own AS (
  DELETE FROM quote q USING {_CHANGED} AND q.uri = e.uri
  RETURNING q.subject, e.idx
)
INSERT INTO _agg (tbl, col, key, delta)
SELECT 'post_agg', 'quoteCount', o.subject, -1 FROM own o
WHERE NOT EXISTS (SELECT 1 FROM {_CHANGED} AND e.uri = o.subject AND e.idx < o.idx);
DELETE FROM quote q USING {_CHANGED} AND q.subject = e.uri;
DELETE FROM post_embed_image t USING {_CHANGED} AND t."postUri" = e.uri;
DELETE FROM post_embed_external t USING {_CHANGED} AND t."postUri" = e.uri;
DELETE FROM post_embed_record t USING {_CHANGED} AND t."postUri" = e.uri;
DELETE FROM post_embed_video t USING {_CHANGED} AND t."postUri" = e.uri;
DELETE FROM post_embed_gallery_image t USING {_CHANGED} AND t."postUri" = e.uri;
"""


def insert_posts(wave: Sequence[int] | None = None) -> str:
    """The statement inserting the staged posts (those at the ``wave`` positions only, if given)."""
    only = f" AND e.idx = ANY('{{{','.join(map(str, wave))}}}'::int[])" if wave is not None else ""
    return f"""
WITH src AS (
  SELECT e.idx, e.uri, e.cid, e.did, e.record AS r, e.c, e.ts,
         e.record->'reply'->'root'->>'uri' AS root_uri,
         e.record->'reply'->'parent'->>'uri' AS parent_uri,
         {_QUOTED.format(r="e.record")} AS quoted
  FROM {rows_of(NSID, "'create', 'update'")}{only}
), checked AS (
  SELECT s.*,
    CASE WHEN s.r ? 'reply' THEN
      CASE WHEN pr.uri IS NULL OR pp."invalidReplyRoot" THEN true
           WHEN s.parent_uri = s.root_uri THEN {_js_truthy("pr.json::jsonb->'reply'")}
           ELSE (pr.json::jsonb->'reply'->'root'->>'uri') IS DISTINCT FROM s.root_uri
      END
    END AS invalid_root,
    CASE WHEN s.r ? 'reply' THEN
      CASE WHEN {did_of("s.root_uri")} = s.did OR g.uri IS NULL
             OR jsonb_typeof(g.json::jsonb->'allow') IS DISTINCT FROM 'array' THEN false
           ELSE NOT EXISTS (
             SELECT 1 FROM jsonb_array_elements(g.json::jsonb->'allow') rule
             WHERE (rule->>'$type' = '{_RULE}mentionRule' AND EXISTS (
                      SELECT 1
                      FROM {_elements("rr.json::jsonb->'facets'")} f,
                           {_elements("f->'features'")} ft
                      WHERE ft->>'$type' = 'app.bsky.richtext.facet#mention'
                        AND ft->>'did' = s.did))
                OR (rule->>'$type' = '{_RULE}followerRule'
                    AND {_follows("s.did", did_of("s.root_uri"))})
                OR (rule->>'$type' = '{_RULE}followingRule'
                    AND {_follows(did_of("s.root_uri"), "s.did")})
                OR (rule->>'$type' = '{_RULE}listRule' AND (
                      EXISTS (SELECT 1 FROM list_item li
                              WHERE li."listUri" = rule->>'list' AND li."subjectDid" = s.did)
                      OR {_created_before("s.idx", LISTITEM, "e2.record->>'list' = rule->>'list'", "e2.record->>'subject' = s.did")})))
      END
    END AS violates_gate,
    -- Only quotes of posts are checked against the quoted post's postgate.
    CASE WHEN split_part(s.quoted->>'uri', '/', 4) = '{NSID}'
              AND {did_of("s.quoted->>'uri'")} <> s.did
              AND jsonb_typeof(pg.json::jsonb->'embeddingRules') = 'array'
              AND EXISTS (SELECT 1 FROM jsonb_array_elements(pg.json::jsonb->'embeddingRules') er
                          WHERE er->>'$type' = 'app.bsky.feed.postgate#disableRule')
         THEN true END AS violates_embedding
  FROM src s
  LEFT JOIN record pr ON pr.uri = s.parent_uri
  LEFT JOIN post pp ON pp.uri = s.parent_uri
  LEFT JOIN record rr ON rr.uri = s.root_uri
  LEFT JOIN record g ON g.uri = {_gate_sql("s.root_uri", THREADGATE)}
  LEFT JOIN record pg ON pg.uri = {_gate_sql("s.quoted->>'uri'", POSTGATE)}
), ins AS (
  INSERT INTO post (uri, cid, creator, text, "replyRoot", "replyRootCid", "replyParent",
                    "replyParentCid", langs, tags, "invalidReplyRoot", "violatesThreadGate",
                    "violatesEmbeddingRules", "createdAt", "indexedAt")
  SELECT uri, cid, did, r->>'text', root_uri, r->'reply'->'root'->>'cid', parent_uri,
         r->'reply'->'parent'->>'cid',
         CASE WHEN jsonb_typeof(r->'langs') = 'array' AND jsonb_array_length(r->'langs') > 0
              THEN r->'langs' END,
         CASE WHEN jsonb_typeof(r->'tags') = 'array' AND jsonb_array_length(r->'tags') > 0
              THEN r->'tags' END,
         CASE WHEN invalid_root OR violates_gate THEN invalid_root END,
         CASE WHEN invalid_root OR violates_gate THEN violates_gate END,
         violates_embedding, c, ts
  FROM checked ORDER BY idx
  ON CONFLICT DO NOTHING
  RETURNING uri, creator, "replyParent", "violatesThreadGate"
), agg AS (
  INSERT INTO _agg (tbl, col, key, delta)
  SELECT 'profile_agg', 'postsCount', creator, 1 FROM ins
  UNION ALL
  SELECT 'post_agg', 'replyCount', "replyParent", {_COUNTED.format(sign="")} FROM ins
  WHERE "replyParent" IS NOT NULL
)
INSERT INTO _new (uri, collection) SELECT uri, '{NSID}' FROM ins;
"""


INSERT_POSTS = insert_posts()


_FEED_ITEMS = f"""
-- Upstream inserts the feed item even when the post row already existed.
INSERT INTO feed_item (uri, cid, type, "postUri", "originatorDid", "sortAt")
SELECT e.uri, e.cid, 'post', e.uri, e.did, e.sort_at
FROM {rows_of(NSID, "'create', 'update'")}
ORDER BY e.idx
ON CONFLICT DO NOTHING;

-- Everything below is for newly inserted posts only.
INSERT INTO _post
SELECT e.idx, e.uri, e.cid, e.did, e.record, e.c, e.ts,
       CASE WHEN e.record->'embed'->>'$type' = 'app.bsky.embed.recordWithMedia'
            THEN e.record->'embed'->'media' ELSE e.record->'embed' END,
       {_QUOTED.format(r="e.record")}
FROM _new n JOIN _ev e ON e.uri = n.uri
WHERE n.collection = '{NSID}' AND e.op IN ('create', 'update');
ANALYZE _post;
"""

_THREAD_REPLIES = f"""
INSERT INTO op_thread_reply ("rootUri", "parentUri", uri, "deletedAt")
SELECT p.r->'reply'->'root'->>'uri', p.r->'reply'->'parent'->>'uri', p.uri, NULL
FROM _post p
WHERE p.r->'reply'->'parent'->>'uri' IS NOT NULL
  AND {did_of("p.r->'reply'->'root'->>'uri'")} = p.did
ORDER BY p.idx
ON CONFLICT DO NOTHING;
"""

_IMAGES = """
INSERT INTO post_embed_image ("postUri", position, "imageCid", alt)
SELECT p.uri, (img.n - 1)::text, img.v->'image'->'ref'->>'$link', img.v->>'alt'
FROM _post p, jsonb_array_elements(p.media->'images') WITH ORDINALITY AS img(v, n)
WHERE p.media->>'$type' = 'app.bsky.embed.images'
ORDER BY p.idx, img.n;
"""

_GALLERY = """
-- Gallery items other than images are skipped, but still count for the positions (upstream).
INSERT INTO post_embed_gallery_image ("postUri", position, "imageCid", alt)
SELECT p.uri, (it.n - 1)::text, it.v->'image'->'ref'->>'$link', it.v->>'alt'
FROM _post p, jsonb_array_elements(p.media->'items') WITH ORDINALITY AS it(v, n)
WHERE p.media->>'$type' = 'app.bsky.embed.gallery'
  AND it.v->>'$type' = 'app.bsky.embed.gallery#image'
ORDER BY p.idx, it.n;
"""

_EXTERNAL = """
INSERT INTO post_embed_external ("postUri", uri, title, description, "thumbCid")
SELECT p.uri, p.media->'external'->>'uri', p.media->'external'->>'title',
       p.media->'external'->>'description', p.media->'external'->'thumb'->'ref'->>'$link'
FROM _post p WHERE p.media->>'$type' = 'app.bsky.embed.external'
ORDER BY p.idx;
"""

_VIDEO = """
INSERT INTO post_embed_video ("postUri", "videoCid", alt)
SELECT p.uri, p.media->'video'->'ref'->>'$link', p.media->>'alt'
FROM _post p WHERE p.media->>'$type' = 'app.bsky.embed.video'
ORDER BY p.idx;
"""

_QUOTES = f"""
INSERT INTO post_embed_record ("postUri", "embedUri", "embedCid")
SELECT p.uri, p.quoted->>'uri', p.quoted->>'cid'
FROM _post p WHERE p.quoted IS NOT NULL
ORDER BY p.idx;

WITH ins AS (
  INSERT INTO quote (uri, cid, subject, "subjectCid", "createdAt", "indexedAt")
  SELECT p.uri, p.cid, p.quoted->>'uri', p.quoted->>'cid', p.c, p.ts
  FROM _post p
  WHERE p.quoted IS NOT NULL AND split_part(p.quoted->>'uri', '/', 4) = '{NSID}'
  ORDER BY p.idx
  ON CONFLICT DO NOTHING
  RETURNING subject
)
INSERT INTO _agg (tbl, col, key, delta) SELECT 'post_agg', 'quoteCount', subject, 1 FROM ins;
"""

_NOTIFY = f"""
-- Notifications: each recipient at most once per post, the first reason queued wins (mention,
-- quote, reply by ancestor height, then replies indexed before this post); never the author.
WITH RECURSIVE ancestor(post_idx, uri, parent, height) AS (
  SELECT p.idx, p.uri, p.r->'reply'->'parent'->>'uri', 0 FROM _post p
  UNION ALL
  SELECT a.post_idx, v.uri, v."replyParent", a.height + 1
  FROM ancestor a CROSS JOIN LATERAL {posts_seen_at("a.post_idx", "v.uri = a.parent")} v
  WHERE a.height < {REPLY_NOTIF_DEPTH}
), descendant(post_idx, uri, cid, creator, sort_at, indexed_at, depth) AS (
  SELECT p.idx, v.uri, v.cid, v.creator, v."sortAt", v."indexedAt", 1
  FROM _post p CROSS JOIN LATERAL {posts_seen_at("p.idx", 'v."replyParent" = p.uri')} v
  UNION ALL
  SELECT d.post_idx, v.uri, v.cid, v.creator, v."sortAt", v."indexedAt", d.depth + 1
  FROM descendant d CROSS JOIN LATERAL {posts_seen_at("d.post_idx", 'v."replyParent" = d.uri')} v
  WHERE d.depth < {REPLY_NOTIF_DEPTH}
), np AS (
  SELECT p.idx, p.uri, p.r, p.quoted, t.cid, t.creator, t."sortAt",
         t."violatesThreadGate" AS violates_gate, t."violatesEmbeddingRules" AS violates_embedding
  FROM _post p JOIN post t ON t.uri = p.uri
), hidden AS (
  -- The reply walk stops after the first ancestor the root's threadgate hides.
  SELECT a.post_idx, min(a.height) AS height
  FROM ancestor a
  JOIN np ON np.idx = a.post_idx
  JOIN record g
    ON g.uri = {_gate_sql("coalesce(np.r->'reply'->'root'->>'uri', np.uri)", THREADGATE)}
  WHERE a.height BETWEEN 1 AND {REPLY_NOTIF_DEPTH - 1} AND a.uri <> np.uri
    AND jsonb_typeof(g.json::jsonb->'hiddenReplies') = 'array'
    AND g.json::jsonb->'hiddenReplies' ? a.uri
  GROUP BY a.post_idx
), candidate AS (
  SELECT np.idx, ft.v->>'did' AS did, 'mention' AS reason, NULL AS subject,
         f.n * 1000 + ft.n AS ord, np.uri, np.cid, np.creator, np."sortAt"
  FROM np,
       {_elements("np.r->'facets'")} WITH ORDINALITY AS f(v, n),
       {_elements("f.v->'features'")} WITH ORDINALITY AS ft(v, n)
  WHERE ft.v->>'$type' = 'app.bsky.richtext.facet#mention'
  UNION ALL
  SELECT np.idx, {did_of("np.quoted->>'uri'")}, 'quote', np.quoted->>'uri', 1000000000,
         np.uri, np.cid, np.creator, np."sortAt"
  FROM np
  WHERE split_part(np.quoted->>'uri', '/', 4) = '{NSID}' AND np.violates_embedding IS NOT TRUE
  UNION ALL
  SELECT np.idx, {did_of("a.uri")}, 'reply', a.uri, 2000000000 + a.height,
         np.uri, np.cid, np.creator, np."sortAt"
  FROM np
  JOIN ancestor a ON a.post_idx = np.idx
  LEFT JOIN hidden h ON h.post_idx = np.idx
  WHERE a.height BETWEEN 1 AND {REPLY_NOTIF_DEPTH - 1} AND np.violates_gate IS NOT TRUE
    AND (h.height IS NULL OR a.height <= h.height)
  UNION ALL
  -- Out of order: each descendant (shallowest first) notifies the ancestors within reach of it,
  -- as its author. Upstream takes descendants of one depth in the order the database returns
  -- them (in practice the order they were inserted); we take the earliest indexed first.
  SELECT np.idx, {did_of("a.uri")}, 'reply', a.uri,
         3000000000 + 10 * d.rank + a.height, d.uri, d.cid, d.creator, d.sort_at
  FROM np
  JOIN (SELECT *, row_number() OVER (PARTITION BY post_idx ORDER BY depth, indexed_at, uri) AS rank
        FROM descendant) d ON d.post_idx = np.idx
  JOIN ancestor a ON a.post_idx = np.idx
  WHERE d.depth + a.height < {REPLY_NOTIF_DEPTH} AND np.violates_gate IS NOT TRUE
)
INSERT INTO _notif (did, record_uri, record_cid, author, reason, reason_subject, sort_at, idx, ord)
SELECT DISTINCT ON (c.idx, c.did) c.did, c.uri, c.cid, c.creator, c.reason, c.subject,
       c."sortAt", c.idx, c.ord
FROM candidate c JOIN np ON np.idx = c.idx
WHERE c.did IS NOT NULL AND c.did <> np.creator
ORDER BY c.idx, c.did, c.ord;
"""

_MEDIA = {
    "app.bsky.embed.images": "images",
    "app.bsky.embed.gallery": "gallery",
    "app.bsky.embed.external": "external",
    "app.bsky.embed.video": "video",
}
# The insert step's statements, each with the feature (features()) without which it writes
# nothing; None: always run.
INSERT_PARTS: tuple[tuple[str | None, str], ...] = (
    (None, INSERT_POSTS),
    (None, _FEED_ITEMS),
    ("reply", _THREAD_REPLIES),
    ("images", _IMAGES),
    ("gallery", _GALLERY),
    ("external", _EXTERNAL),
    ("video", _VIDEO),
    ("record", _QUOTES),
    (None, _NOTIFY),
)
INSERT_SQL = "".join(sql for _, sql in INSERT_PARTS)


def features(event: Any) -> tuple[str, ...]:
    """The optional statements of INSERT_PARTS this post may write a row in (a superset of what
    their SQL selects: the staged JSON is this record)."""
    record = event.record or {}
    out: list[str] = ["reply"] if "reply" in record else []
    embed = record.get("embed")
    if isinstance(embed, dict):
        kind = embed.get("$type")
        if kind in ("app.bsky.embed.record", "app.bsky.embed.recordWithMedia"):
            out.append("record")
        media = embed.get("media") if kind == "app.bsky.embed.recordWithMedia" else embed
        if isinstance(media, dict) and media.get("$type") in _MEDIA:
            out.append(_MEDIA[media["$type"]])
    return tuple(out)
