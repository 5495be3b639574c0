"""app.bsky.actor.status → its ``record`` row only: upstream's status plugin is a placeholder
that writes no other table (no ``actor`` column either)."""

from __future__ import annotations

from ._record_only import DELETE_SQL, INSERT_SQL, PROMOTES, dedup_key, reads

__all__ = ["NSID", "PROMOTES", "DELETE_SQL", "INSERT_SQL", "dedup_key", "reads"]

NSID = "app.bsky.actor.status"
