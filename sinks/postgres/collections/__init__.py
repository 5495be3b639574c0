"""One module per collection, each of the same shape (like the AppView's indexing plugins).

A collection module defines:
- ``NSID``: the collection it indexes.
- ``PROMOTES``: whether deleting a row promotes its oldest duplicate (``duplicate_record``).
- ``dedup_key(record)``: the record's duplicate key (its table's UNIQUE key minus the creator),
  or None when records of this collection are never duplicates.
- ``reads(event)``: URIs of other records this record's rows depend on (reply parents, gates...),
  so a batch is cut where one event would read what another in the same batch writes; rows it
  cannot name by URI are named by the keys of ``_keys.removed_by`` (a reply's threadgate check
  reads follows and list items).
- optionally ``DUPLICATES``: True when duplicates are recorded although ``PROMOTES`` is False
  (reference-list opt-outs), so a delete is still kept apart from a create that could collide.
- optionally ``follows(event)``: those of ``reads()`` that may be created or updated earlier in
  the same segment, because the insert step reads them after they are in (a reply and its parent
  post: post.py's insert waves; a gate and its post: the post step runs first); a delete of them
  still cuts.
- optionally ``features(event)`` and ``INSERT_PARTS``: the insert step as (feature, SQL) parts; a
  part whose feature no record of the segment has is left out of the script (each statement is
  parsed and planned on every run, rows or none).
- optionally ``watches(event)``: URIs whose delete or update *later* in the batch would change
  this record's rows (a repost's subject: deleting the post removes the repost's feed item; a
  post's gates: deleting one clears its flag), so the batch is cut there; a create of them later,
  or any write earlier, does not matter.
- optionally ``REFUSED_UPDATES`` (collections with duplicates): a SELECT (idx, reason) of the staged
  updates upstream refuses whole (``_sql.refused_updates``); the writer takes them out of ``_ev``
  before any step runs and dead-letters them.
- ``DELETE_SQL``: removes the rows of ``_ev`` rows with op delete/update, and lists them in ``_gone``
  (with whether their notifications go too) and their counter changes in ``_agg``; in collections
  with duplicates it first settles an update's ``duplicate_record`` row (``_sql.update_duplicates``).
- ``INSERT_SQL``: inserts rows for ``_ev`` rows with op create/update/promote, lists new rows in
  ``_new``, their notifications in ``_notif``, counter changes in ``_agg``, and records a conflicting
  row as a duplicate of the row it collides with.

Both run inside the batch's transaction over the staging tables of ``sinks/postgres/staging.py``.
Records of a collection that has a module but declines the row (a profile whose rkey is not
``self``) still get their ``record`` row, as upstream does; collections with no module write
nothing at all.
"""

from __future__ import annotations

from types import ModuleType

from . import (
    actor_status,
    block,
    chat_declaration,
    feed_generator,
    follow,
    germ_declaration,
    labeler,
    like,
    list_block,
    list_item,
    lists,
    notification_declaration,
    post,
    postgate,
    profile,
    reference_list_opt_out,
    repost,
    starter_pack,
    threadgate,
    verification,
)

MODULES: tuple[ModuleType, ...] = (
    post,
    threadgate,
    postgate,
    like,
    repost,
    follow,
    block,
    profile,
    lists,
    list_item,
    list_block,
    reference_list_opt_out,
    feed_generator,
    starter_pack,
    labeler,
    verification,
    actor_status,
    chat_declaration,
    germ_declaration,
    notification_declaration,
)
BY_NSID: dict[str, ModuleType] = {m.NSID: m for m in MODULES}
