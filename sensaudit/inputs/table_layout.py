"""Which columns of an extract play which part: the features, the label, the ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Table:
    """What the audit reads from the extract: which columns play which part."""

    path: Path
    features: tuple[str, ...]
    label: str | None
    id: str | None
    row_count: int | None = None  # known up front for Parquet, not for CSV
    # Columns left out of the default features (text), named when the model's width differs.
    skipped: tuple[str, ...] = ()
    # CSV feature columns whose first rows hold integers beyond float32's exact 2**24: parsed
    # as text and then as int64, so their statistics (and the warning that the model's dtype
    # rounds them) see the exact values a float64 parse would round.
    large_integers: tuple[str, ...] = ()
    # Columns read beside the features for the checks that ask (audit.protected): each
    # chunk carries their values (Chunk.extra), numbers or text as their first rows hold.
    extra: tuple[str, ...] = ()
    # The extra columns holding text (or booleans) in their first rows: read as text levels.
    extra_text: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        extra = [c for c in (self.id, self.label, *self.extra)
                 if c is not None and c not in self.features]
        return list(self.features) + list(dict.fromkeys(extra))
