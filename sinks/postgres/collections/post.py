"""app.bsky.feed.post → ``post``, ``feed_item``, ``post_embed_*``, ``quote``, ``op_thread_reply``;
notifies mentions, the quoted author and the authors of up to four ancestors; counts
``post_agg`` replyCount/quoteCount and ``profile_agg."postsCount"``.

Reply validity and gate checks read the ``record`` rows of the parent, the root, the root's
threadgate and the quoted post's postgate, as upstream does; ``reads()`` names them so a batch is
cut before a post whose parent or gate is written earlier in the same batch.
"""

from __future__ import annotations

from typing import Any

from ._sql import did_of, rows_of

NSID = "app.bsky.feed.post"
PROMOTES = False
REPLY_NOTIF_DEPTH = 5  # ancestors of height 1..4 are notified


def dedup_key(record: dict[str, Any]) -> tuple[str, ...] | None:
    return None


def _gate_uri(uri: str, gate: str) -> str:
    parts = uri.split("/")
    return f"at://{parts[2]}/app.bsky.feed.{gate}/{parts[-1]}" if len(parts) >= 5 else ""


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
        out += [root, parent, _gate_uri(root, "threadgate")]
    quoted = _quoted(record)
    if quoted:
        out += [quoted, _gate_uri(quoted, "postgate")]
    return tuple(u for u in out if u)


_THREADGATE = "'at://' || {did} || '/app.bsky.feed.threadgate/' || split_part({uri}, '/', 5)"
_POSTGATE = "'at://' || {did} || '/app.bsky.feed.postgate/' || split_part({uri}, '/', 5)"
_RULE = "app.bsky.feed.threadgate#"

DELETE_SQL = f"""
WITH gone AS (
  DELETE FROM post t USING {rows_of(NSID, "'delete', 'update'")} AND t.uri = e.uri
  RETURNING t.uri, t.creator, t."replyParent", t."violatesThreadGate", e.op, e.idx
), agg AS (
  INSERT INTO _agg (tbl, col, key, delta)
  SELECT 'profile_agg', 'postsCount', creator, -1 FROM gone
  UNION ALL
  SELECT 'post_agg', 'replyCount', "replyParent", -1 FROM gone
  WHERE "replyParent" IS NOT NULL AND "violatesThreadGate" IS NOT TRUE
)
INSERT INTO _gone (uri, collection, op, idx, drop_notifs)
SELECT uri, '{NSID}', op, idx, true FROM gone;

-- The post's own feed item and every repost's (upstream deletes by "postUri").
DELETE FROM feed_item f USING {rows_of(NSID, "'delete', 'update'")} AND f."postUri" = e.uri;
UPDATE op_thread_reply o SET "deletedAt" = e.ts
FROM {rows_of(NSID, "'delete', 'update'")} AND o.uri = e.uri AND o."deletedAt" IS NULL;
-- Quotes *of* this post go without a recount (upstream); this post's own quote is recounted.
DELETE FROM quote q USING {rows_of(NSID, "'delete', 'update'")} AND q.subject = e.uri;
WITH own AS (
  DELETE FROM quote q USING {rows_of(NSID, "'delete', 'update'")} AND q.uri = e.uri
  RETURNING q.subject
)
INSERT INTO _agg (tbl, col, key, delta) SELECT 'post_agg', 'quoteCount', subject, -1 FROM own;
DELETE FROM post_embed_image t USING {rows_of(NSID, "'delete', 'update'")} AND t."postUri" = e.uri;
DELETE FROM post_embed_external t USING {rows_of(NSID, "'delete', 'update'")}
  AND t."postUri" = e.uri;
DELETE FROM post_embed_record t USING {rows_of(NSID, "'delete', 'update'")} AND t."postUri" = e.uri;
DELETE FROM post_embed_video t USING {rows_of(NSID, "'delete', 'update'")} AND t."postUri" = e.uri;
"""

INSERT_SQL = f"""
WITH src AS (
  SELECT e.idx, e.uri, e.cid, e.did, e.record AS r, e.c, e.ts,
         e.record->'reply'->'root'->>'uri' AS root_uri,
         e.record->'reply'->'parent'->>'uri' AS parent_uri,
         CASE e.record->'embed'->>'$type'
           WHEN 'app.bsky.embed.record' THEN e.record->'embed'->'record'
           WHEN 'app.bsky.embed.recordWithMedia' THEN e.record->'embed'->'record'->'record'
         END AS quoted
  FROM {rows_of(NSID, "'create', 'update'")}
), checked AS (
  SELECT s.*,
    CASE WHEN s.r ? 'reply' THEN
      CASE WHEN pr.uri IS NULL THEN true
           WHEN pp."invalidReplyRoot" THEN true
           WHEN s.parent_uri = s.root_uri
             THEN coalesce(jsonb_typeof(pr.json::jsonb->'reply') NOT IN ('null'), false)
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
                      FROM jsonb_array_elements(CASE WHEN jsonb_typeof(rr.json::jsonb->'facets')
                             = 'array' THEN rr.json::jsonb->'facets' ELSE '[]' END) f,
                           jsonb_array_elements(CASE WHEN jsonb_typeof(f->'features') = 'array'
                             THEN f->'features' ELSE '[]' END) ft
                      WHERE ft->>'$type' = 'app.bsky.richtext.facet#mention'
                        AND ft->>'did' = s.did))
                OR (rule->>'$type' = '{_RULE}followerRule' AND EXISTS (
                      SELECT 1 FROM follow fo
                      WHERE fo.creator = s.did AND fo."subjectDid" = {did_of("s.root_uri")}))
                OR (rule->>'$type' = '{_RULE}followingRule' AND EXISTS (
                      SELECT 1 FROM follow fo
                      WHERE fo.creator = {did_of("s.root_uri")} AND fo."subjectDid" = s.did))
                OR (rule->>'$type' = '{_RULE}listRule' AND EXISTS (
                      SELECT 1 FROM list_item li
                      WHERE li."listUri" = rule->>'list' AND li."subjectDid" = s.did)))
      END
    END AS violates_gate,
    CASE WHEN pg.uri IS NOT NULL AND {did_of("s.quoted->>'uri'")} <> s.did
              AND jsonb_typeof(pg.json::jsonb->'embeddingRules') = 'array'
              AND EXISTS (SELECT 1 FROM jsonb_array_elements(pg.json::jsonb->'embeddingRules') er
                          WHERE er->>'$type' = 'app.bsky.feed.postgate#disableRule')
         THEN true END AS violates_embedding
  FROM src s
  LEFT JOIN record pr ON pr.uri = s.parent_uri
  LEFT JOIN post pp ON pp.uri = s.parent_uri
  LEFT JOIN record rr ON rr.uri = s.root_uri
  LEFT JOIN record g
    ON g.uri = {_THREADGATE.format(did=did_of("s.root_uri"), uri="s.root_uri")}
  LEFT JOIN record pg ON pg.uri = {
    _POSTGATE.format(did=did_of("s.quoted->>'uri'"), uri="s.quoted->>'uri'")
}
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
  SELECT 'post_agg', 'replyCount', "replyParent", 1 FROM ins
  WHERE "replyParent" IS NOT NULL AND "violatesThreadGate" IS NOT TRUE
)
INSERT INTO _new (uri, collection) SELECT uri, '{NSID}' FROM ins;

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
       CASE e.record->'embed'->>'$type'
         WHEN 'app.bsky.embed.record' THEN e.record->'embed'->'record'
         WHEN 'app.bsky.embed.recordWithMedia' THEN e.record->'embed'->'record'->'record'
       END
FROM _new n JOIN _ev e ON e.uri = n.uri
WHERE n.collection = '{NSID}' AND e.op IN ('create', 'update');
ANALYZE _post;

INSERT INTO op_thread_reply ("rootUri", "parentUri", uri, "deletedAt")
SELECT p.r->'reply'->'root'->>'uri', p.r->'reply'->'parent'->>'uri', p.uri, NULL
FROM _post p
WHERE p.r->'reply'->'parent'->>'uri' IS NOT NULL
  AND {did_of("p.r->'reply'->'root'->>'uri'")} = p.did
ORDER BY p.idx
ON CONFLICT DO NOTHING;

INSERT INTO post_embed_image ("postUri", position, "imageCid", alt)
SELECT p.uri, (img.n - 1)::text, img.v->'image'->'ref'->>'$link', img.v->>'alt'
FROM _post p, jsonb_array_elements(p.media->'images') WITH ORDINALITY AS img(v, n)
WHERE p.media->>'$type' = 'app.bsky.embed.images'
ORDER BY p.idx, img.n;

INSERT INTO post_embed_external ("postUri", uri, title, description, "thumbCid")
SELECT p.uri, p.media->'external'->>'uri', p.media->'external'->>'title',
       p.media->'external'->>'description', p.media->'external'->'thumb'->'ref'->>'$link'
FROM _post p WHERE p.media->>'$type' = 'app.bsky.embed.external'
ORDER BY p.idx;

INSERT INTO post_embed_video ("postUri", "videoCid", alt)
SELECT p.uri, p.media->'video'->'ref'->>'$link', p.media->>'alt'
FROM _post p WHERE p.media->>'$type' = 'app.bsky.embed.video'
ORDER BY p.idx;

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

-- Notifications: each recipient at most once per post, the first reason wins
-- (mention, then quote, then reply by ancestor height); never to the author.
WITH RECURSIVE ancestor(post_idx, uri, parent, height) AS (
  SELECT p.idx, p.uri, p.r->'reply'->'parent'->>'uri', 0 FROM _post p
  UNION ALL
  SELECT a.post_idx, t.uri, t."replyParent", a.height + 1
  FROM ancestor a JOIN post t ON t.uri = a.parent
  WHERE a.height < {REPLY_NOTIF_DEPTH}
), hidden AS (
  -- The walk stops after an ancestor the root's threadgate hides.
  SELECT a.post_idx, min(a.height) AS height
  FROM ancestor a
  JOIN _post p ON p.idx = a.post_idx
  JOIN record g ON g.uri = {
    _THREADGATE.format(
        did=did_of("coalesce(p.r->'reply'->'root'->>'uri', p.uri)"),
        uri="coalesce(p.r->'reply'->'root'->>'uri', p.uri)",
    )
}
  WHERE a.height > 0
    AND jsonb_typeof(g.json::jsonb->'hiddenReplies') = 'array'
    AND g.json::jsonb->'hiddenReplies' ? a.uri
  GROUP BY a.post_idx
), candidate AS (
  SELECT p.idx, p.uri, ft.v->>'did' AS did, 'mention' AS reason, NULL AS subject,
         f.n * 1000 + ft.n AS ord
  FROM _post p,
       jsonb_array_elements(CASE WHEN jsonb_typeof(p.r->'facets') = 'array'
                            THEN p.r->'facets' ELSE '[]' END) WITH ORDINALITY AS f(v, n),
       jsonb_array_elements(CASE WHEN jsonb_typeof(f.v->'features') = 'array'
                            THEN f.v->'features' ELSE '[]' END) WITH ORDINALITY AS ft(v, n)
  WHERE ft.v->>'$type' = 'app.bsky.richtext.facet#mention'
  UNION ALL
  SELECT p.idx, p.uri, {did_of("p.quoted->>'uri'")}, 'quote', p.quoted->>'uri', 1000000000
  FROM _post p JOIN post t ON t.uri = p.uri
  WHERE split_part(p.quoted->>'uri', '/', 4) = '{NSID}' AND t."violatesEmbeddingRules" IS NOT TRUE
  UNION ALL
  SELECT p.idx, p.uri, {did_of("a.uri")}, 'reply', a.uri, 2000000000 + a.height
  FROM _post p
  JOIN post t ON t.uri = p.uri
  JOIN ancestor a ON a.post_idx = p.idx
  LEFT JOIN hidden h ON h.post_idx = p.idx
  WHERE a.height BETWEEN 1 AND {REPLY_NOTIF_DEPTH - 1} AND t."violatesThreadGate" IS NOT TRUE
    AND (h.height IS NULL OR a.height <= h.height)
)
INSERT INTO _notif (did, record_uri, record_cid, author, reason, reason_subject, sort_at, idx, ord)
SELECT DISTINCT ON (c.idx, c.did) c.did, t.uri, t.cid, t.creator, c.reason, c.subject,
       t."sortAt", c.idx, c.ord
FROM candidate c JOIN post t ON t.uri = c.uri
WHERE c.did IS NOT NULL AND c.did <> t.creator
ORDER BY c.idx, c.did, c.ord;
"""
