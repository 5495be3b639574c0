-- The AppView tables bsky-indexer writes or reads, as the genuine @atproto/bsky 0.0.280 schema
-- defines them.
--
-- Source of truth: the 61 Kysely migrations of @atproto/bsky@0.0.280
-- (dist/data-plane/server/db/migrations), applied to a fresh database and read back with
-- `pg_dump --schema-only`. Only the tables the indexer touches are here, with the same column
-- order, types, nullability, defaults, generated columns, constraint names and index names as
-- upstream. tests/test_schema_upstream.py rebuilds the genuine schema (tests/upstream/) and
-- checks this file against it, table by table.
--
-- The AppView owns these tables. Every statement is IF NOT EXISTS, so running this against a
-- database the AppView has already migrated changes nothing: the indexer never alters, drops or
-- adds anything to the AppView's tables. Its own state lives in the `bsky_indexer` schema.
--
-- Conventions (upstream): timestamps are ISO-8601 strings in `character varying`; `langs` and
-- `tags` are jsonb; most record tables carry
-- "sortAt" GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED.

-- Trigram indexes on actor.handle, profile."displayName" and starter_pack.name need it.
-- Upstream puts it in `public` so that every schema sees it.
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;

-- ---------------------------------------------------------------------------------------------
-- Generic records and actors
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS record (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    did character varying NOT NULL,
    json text NOT NULL,
    "indexedAt" character varying NOT NULL,
    "takedownRef" character varying,
    tags jsonb,
    CONSTRAINT record_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS record_did_idx ON record USING btree (did);

CREATE TABLE IF NOT EXISTS duplicate_record (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    "duplicateOf" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    CONSTRAINT duplicate_record_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS duplicate_record_duplicate_of_idx
    ON duplicate_record USING btree ("duplicateOf");

CREATE TABLE IF NOT EXISTS actor (
    did character varying NOT NULL,
    handle character varying,
    "indexedAt" character varying NOT NULL,
    "takedownRef" character varying,
    "upstreamStatus" character varying,
    "trustedVerifier" boolean DEFAULT false NOT NULL,
    "ageAssuranceStatus" text,
    "ageAssuranceLastInitiatedAt" character varying,
    "ageAssuranceAccess" text,
    "ageAssuranceCountryCode" text,
    "ageAssuranceRegionCode" text,
    CONSTRAINT actor_pkey PRIMARY KEY (did),
    CONSTRAINT actor_handle_key UNIQUE (handle)
);
CREATE INDEX IF NOT EXISTS actor_handle_tgrm_idx ON actor USING gist (handle public.gist_trgm_ops);

CREATE TABLE IF NOT EXISTS actor_sync (
    did character varying NOT NULL,
    "commitCid" character varying NOT NULL,
    "repoRev" character varying,
    CONSTRAINT actor_sync_pkey PRIMARY KEY (did)
);

-- ---------------------------------------------------------------------------------------------
-- app.bsky.feed.post and what hangs off it
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS post (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    text character varying NOT NULL,
    "replyRoot" character varying,
    "replyRootCid" character varying,
    "replyParent" character varying,
    "replyParentCid" character varying,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    langs jsonb,
    "invalidReplyRoot" boolean,
    "violatesThreadGate" boolean,
    tags jsonb,
    "violatesEmbeddingRules" boolean,
    "hasThreadGate" boolean,
    "hasPostGate" boolean,
    CONSTRAINT post_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS post_creator_cursor_idx ON post USING btree (creator, "sortAt", cid);
CREATE INDEX IF NOT EXISTS post_order_by_idx ON post USING btree ("sortAt", cid);
CREATE INDEX IF NOT EXISTS post_replyparent_idx ON post USING btree ("replyParent") INCLUDE (uri);

CREATE TABLE IF NOT EXISTS feed_item (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    type character varying NOT NULL,
    "postUri" character varying NOT NULL,
    "originatorDid" character varying NOT NULL,
    "sortAt" character varying NOT NULL,
    CONSTRAINT feed_item_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS feed_item_cursor_idx ON feed_item USING btree ("sortAt", cid);
CREATE INDEX IF NOT EXISTS feed_item_originator_cursor_idx
    ON feed_item USING btree ("originatorDid", "sortAt", cid);
CREATE INDEX IF NOT EXISTS feed_item_post_uri_idx ON feed_item USING btree ("postUri");

CREATE TABLE IF NOT EXISTS post_embed_image (
    "postUri" character varying NOT NULL,
    "position" character varying NOT NULL,
    "imageCid" character varying NOT NULL,
    alt character varying NOT NULL,
    CONSTRAINT post_embed_image_pkey PRIMARY KEY ("postUri", "position")
);

CREATE TABLE IF NOT EXISTS post_embed_external (
    "postUri" character varying NOT NULL,
    uri character varying NOT NULL,
    title character varying NOT NULL,
    description character varying NOT NULL,
    "thumbCid" character varying,
    CONSTRAINT post_embed_external_pkey PRIMARY KEY ("postUri")
);

CREATE TABLE IF NOT EXISTS post_embed_record (
    "postUri" character varying NOT NULL,
    "embedUri" character varying NOT NULL,
    "embedCid" character varying NOT NULL,
    CONSTRAINT post_embed_record_pkey PRIMARY KEY ("postUri", "embedUri")
);

CREATE TABLE IF NOT EXISTS post_embed_video (
    "postUri" character varying NOT NULL,
    "videoCid" character varying NOT NULL,
    alt character varying,
    CONSTRAINT post_embed_video_pkey PRIMARY KEY ("postUri")
);

CREATE TABLE IF NOT EXISTS post_embed_gallery_image (
    "postUri" character varying NOT NULL,
    "position" character varying NOT NULL,
    "imageCid" character varying NOT NULL,
    alt character varying NOT NULL,
    CONSTRAINT post_embed_gallery_image_pkey PRIMARY KEY ("postUri", "position")
);

CREATE TABLE IF NOT EXISTS quote (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    subject character varying NOT NULL,
    "subjectCid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT quote_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS quote_subject_cursor_idx ON quote USING btree (subject, "sortAt", cid);

CREATE TABLE IF NOT EXISTS op_thread_reply (
    "rootUri" character varying NOT NULL,
    "parentUri" character varying NOT NULL,
    uri character varying NOT NULL,
    "deletedAt" character varying,
    CONSTRAINT op_thread_reply_pkey PRIMARY KEY ("rootUri", uri)
);

-- ---------------------------------------------------------------------------------------------
-- Likes, reposts and the social graph
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS "like" (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    subject character varying NOT NULL,
    "subjectCid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    via character varying,
    "viaCid" character varying,
    CONSTRAINT like_pkey PRIMARY KEY (uri),
    CONSTRAINT like_unique_subject UNIQUE (subject, creator)
);
CREATE INDEX IF NOT EXISTS like_creator_cursor_idx ON "like" USING btree (creator, "sortAt", cid);
CREATE INDEX IF NOT EXISTS like_subject_sort_at_creator_idx
    ON "like" USING btree (subject, "sortAt" DESC) INCLUDE (creator);

CREATE TABLE IF NOT EXISTS repost (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    subject character varying NOT NULL,
    "subjectCid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    via character varying,
    "viaCid" character varying,
    CONSTRAINT repost_pkey PRIMARY KEY (uri),
    CONSTRAINT repost_unique_subject UNIQUE (creator, subject)
);
CREATE INDEX IF NOT EXISTS repost_order_by_idx ON repost USING btree ("sortAt", cid);
CREATE INDEX IF NOT EXISTS repost_subject_idx ON repost USING btree (subject);

CREATE TABLE IF NOT EXISTS follow (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT follow_pkey PRIMARY KEY (uri),
    CONSTRAINT follow_unique_subject UNIQUE (creator, "subjectDid")
);
CREATE INDEX IF NOT EXISTS follow_creator_cursor_idx ON follow USING btree (creator, "sortAt", cid);
CREATE INDEX IF NOT EXISTS follow_subject_cursor_idx
    ON follow USING btree ("subjectDid", "sortAt", cid);

CREATE TABLE IF NOT EXISTS actor_block (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT actor_block_pkey PRIMARY KEY (uri),
    CONSTRAINT actor_block_unique_subject UNIQUE (creator, "subjectDid")
);
CREATE INDEX IF NOT EXISTS actor_block_subjectdid_idx ON actor_block USING btree ("subjectDid");

-- ---------------------------------------------------------------------------------------------
-- Profiles, notifications, aggregates
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS profile (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "displayName" character varying,
    description character varying,
    "avatarCid" character varying,
    "bannerCid" character varying,
    "indexedAt" character varying NOT NULL,
    "joinedViaStarterPackUri" character varying,
    "createdAt" character varying NOT NULL,
    "pinnedPost" character varying,
    "pinnedPostCid" character varying,
    CONSTRAINT profile_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS profile_creator_idx ON profile USING btree (creator);
CREATE INDEX IF NOT EXISTS profile_display_name_tgrm_idx
    ON profile USING gist ("displayName" public.gist_trgm_ops);
CREATE INDEX IF NOT EXISTS profile_starter_pack_joined_idx
    ON profile USING btree ("joinedViaStarterPackUri", "createdAt");

-- Upstream declares id as bigserial: bigint DEFAULT nextval('notification_id_seq').
CREATE TABLE IF NOT EXISTS notification (
    id bigserial NOT NULL,
    did character varying NOT NULL,
    "recordUri" character varying NOT NULL,
    "recordCid" character varying NOT NULL,
    author character varying NOT NULL,
    reason character varying NOT NULL,
    "reasonSubject" character varying,
    "sortAt" character varying NOT NULL,
    CONSTRAINT notification_pkey PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS notification_author_idx ON notification USING btree (author);
CREATE INDEX IF NOT EXISTS notification_did_sortat_idx ON notification USING btree (did, "sortAt");
CREATE INDEX IF NOT EXISTS notification_record_idx ON notification USING btree ("recordUri");

-- Keyed by subject uri, whatever the subject is (a like of a feed generator counts too).
CREATE TABLE IF NOT EXISTS post_agg (
    uri character varying NOT NULL,
    "likeCount" bigint DEFAULT 0 NOT NULL,
    "replyCount" bigint DEFAULT 0 NOT NULL,
    "repostCount" bigint DEFAULT 0 NOT NULL,
    "quoteCount" bigint DEFAULT 0 NOT NULL,
    "bookmarkCount" bigint DEFAULT 0 NOT NULL,
    CONSTRAINT post_agg_pkey PRIMARY KEY (uri)
);

CREATE TABLE IF NOT EXISTS profile_agg (
    did character varying NOT NULL,
    "followersCount" bigint DEFAULT 0 NOT NULL,
    "followsCount" bigint DEFAULT 0 NOT NULL,
    "postsCount" bigint DEFAULT 0 NOT NULL,
    CONSTRAINT profile_agg_pkey PRIMARY KEY (did)
);

-- ---------------------------------------------------------------------------------------------
-- Gates and mutes
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS thread_gate (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "postUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    CONSTRAINT thread_gate_pkey PRIMARY KEY (uri),
    CONSTRAINT "thread_gate_postUri_key" UNIQUE ("postUri")
);

CREATE TABLE IF NOT EXISTS post_gate (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "postUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    CONSTRAINT post_gate_pkey PRIMARY KEY (uri),
    CONSTRAINT "post_gate_postUri_key" UNIQUE ("postUri")
);

-- Written by bsync upstream, not by the record indexer; read here.
CREATE TABLE IF NOT EXISTS thread_mute (
    "rootUri" character varying NOT NULL,
    "mutedByDid" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    CONSTRAINT thread_mute_pkey PRIMARY KEY ("rootUri", "mutedByDid")
);

-- ---------------------------------------------------------------------------------------------
-- Lists
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS list (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    name character varying NOT NULL,
    purpose character varying NOT NULL,
    description character varying,
    "descriptionFacets" character varying,
    "avatarCid" character varying,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT list_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS list_creator_idx ON list USING btree (creator);

CREATE TABLE IF NOT EXISTS list_item (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectDid" character varying NOT NULL,
    "listUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT list_item_pkey PRIMARY KEY (uri),
    CONSTRAINT list_item_unique_subject_in_list UNIQUE ("listUri", "subjectDid")
);
CREATE INDEX IF NOT EXISTS list_item_creator_idx ON list_item USING btree (creator);
CREATE INDEX IF NOT EXISTS list_item_subject_idx ON list_item USING btree ("subjectDid");

CREATE TABLE IF NOT EXISTS list_block (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT list_block_pkey PRIMARY KEY (uri),
    CONSTRAINT list_block_unique_subject UNIQUE (creator, "subjectUri")
);

CREATE TABLE IF NOT EXISTS reference_list_opt_out (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "subjectUri" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT reference_list_opt_out_pkey PRIMARY KEY (uri),
    CONSTRAINT reference_list_opt_out_unique_subject UNIQUE (creator, "subjectUri")
);

-- ---------------------------------------------------------------------------------------------
-- Feed generators, starter packs, labelers, verifications, labels
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS feed_generator (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "feedDid" character varying NOT NULL,
    "displayName" character varying,
    description character varying,
    "descriptionFacets" character varying,
    "avatarCid" character varying,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT feed_generator_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS feed_generator_creator_index ON feed_generator USING btree (creator);

CREATE TABLE IF NOT EXISTS starter_pack (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    name character varying,
    CONSTRAINT starter_pack_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS starter_pack_creator_order_by_idx
    ON starter_pack USING btree (creator, "sortAt", cid);
CREATE INDEX IF NOT EXISTS starter_pack_name_tgrm_idx
    ON starter_pack USING gist (name public.gist_trgm_ops);

CREATE TABLE IF NOT EXISTS labeler (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    creator character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT labeler_pkey PRIMARY KEY (uri)
);
CREATE INDEX IF NOT EXISTS labeler_order_by_idx ON labeler USING btree ("sortAt", cid);

-- The only table whose generated column is "sortedAt" rather than "sortAt".
CREATE TABLE IF NOT EXISTS verification (
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    rkey character varying NOT NULL,
    creator character varying NOT NULL,
    subject character varying NOT NULL,
    handle character varying NOT NULL,
    "displayName" character varying NOT NULL,
    "createdAt" character varying NOT NULL,
    "indexedAt" character varying NOT NULL,
    "sortedAt" character varying GENERATED ALWAYS AS (LEAST("createdAt", "indexedAt")) STORED NOT NULL,
    CONSTRAINT verification_pkey PRIMARY KEY (uri),
    CONSTRAINT verification_unique_subject_creator UNIQUE (subject, creator)
);

-- cid is '' when a label has no cid. A negation updates the row on the same key (neg=true).
CREATE TABLE IF NOT EXISTS label (
    src character varying NOT NULL,
    uri character varying NOT NULL,
    cid character varying NOT NULL,
    val character varying NOT NULL,
    neg boolean NOT NULL,
    cts character varying NOT NULL,
    exp character varying,
    CONSTRAINT label_pkey PRIMARY KEY (src, uri, cid, val)
);
CREATE INDEX IF NOT EXISTS label_cts_idx ON label USING btree (cts);
CREATE INDEX IF NOT EXISTS label_uri_index ON label USING btree (uri);
