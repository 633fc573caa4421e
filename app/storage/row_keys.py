"""The search values a resource row carries itself: ``subject_ref`` and ``status_code``.

They copy the value of one reference and one token parameter of the type
(which ones: ``app.search.row_columns``) from the version's index rows, so
that the commonest searches are one range scan of the row's own index
(``ix_resources_subject_status``) instead of joins of index tables. Every
write of the current row sets them (a tombstone clears them), in the same
statement as the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from app.storage.index_tables import IndexRows


@dataclass(frozen=True, slots=True)
class RowKeys:
    """``subject``: the one reference as ``Type/id`` (its id as the index stores it); ``status``: the
    one code. None: the resource has no such value (or the type no such parameter)."""

    subject: str | None = None
    status: str | None = None

    def columns(self) -> dict[str, str | None]:
        """The values by column name of ``resources``."""
        return {"subject_ref": self.subject, "status_code": self.status}


NO_KEYS: Final = RowKeys()


@dataclass(frozen=True, slots=True)
class RowKeyRule:
    """One type's parameter hashes whose index rows fill the row's columns (None: no such column)."""

    subject_hash: int | None = None
    status_hash: int | None = None

    def keys(self, rows: IndexRows) -> RowKeys:
        """The row columns of a version with these index rows. The parameters were chosen because their
        element cannot repeat, so there is at most one row of each."""
        if self.subject_hash is None and self.status_hash is None:
            return NO_KEYS
        subject = status = None
        if self.subject_hash is not None:
            for row in rows.get("reference", ()):
                if row["param_hash"] == self.subject_hash and row["combo"] is None:
                    if row["target_type"] is not None and row["target_id"] is not None:
                        subject = f"{row['target_type']}/{row['target_id']}"
                    break
        if self.status_hash is not None:
            for row in rows.get("token", ()):
                if row["param_hash"] == self.status_hash and row["combo"] is None:
                    status = row["code"]
                    break
        return RowKeys(subject, status)


NO_RULE: Final = RowKeyRule()
