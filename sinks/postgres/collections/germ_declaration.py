"""com.germnetwork.declaration → its ``record`` row only."""

from __future__ import annotations

from ._record_only import DELETE_SQL, INSERT_SQL, PROMOTES, dedup_key, reads

__all__ = ["NSID", "PROMOTES", "DELETE_SQL", "INSERT_SQL", "dedup_key", "reads"]

NSID = "com.germnetwork.declaration"
