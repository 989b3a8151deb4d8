"""The training rows (``data.train``): read once, before the audit, into each feature's
correlation with the label there (:class:`~sensaudit.stats.label_correlation.LabelTies`),
which the suspects check sets against the audited rows' (:mod:`sensaudit.checks.tie_shift`).

They are read as the audited data is (the same readers, checks and ``data.on_missing``), for
the audited features and the label only: no model runs on them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from sensaudit.core.errors import ConfigError
from sensaudit.inputs import tables
from sensaudit.settings.sections import DataConfig
from sensaudit.stats.label_correlation import LabelTies


def training_ties(data: DataConfig, features: tuple[str, ...], source: object,
                  frame: pd.DataFrame | None = None,
                  progress: Callable[[str, int, int | None], None] | None = None
                  ) -> LabelTies | None:
    """The label's correlation with each of ``features`` over the rows of ``data.train`` (or
    of ``frame``, an in-memory copy of them); None when neither is given. ``progress``: the
    audit's callback, told the rows read as stage "training"."""
    if frame is not None:
        path = Path("<training DataFrame>")
    elif data.train is not None:
        path = data.train
    else:
        return None
    if data.label is None:
        raise ConfigError(f"{source}: data.train needs data.label: the training rows are "
                          "read for the label's tie to each feature")
    cfg = DataConfig(path=path, features=features, label=data.label,
                     on_missing=data.on_missing, chunk_rows=data.chunk_rows,
                     features_key="the audited features")
    if frame is not None:
        table = tables.frame_table(frame, cfg)
        chunks = tables.iter_frame_chunks(frame, table, cfg, torch.float64)
    else:
        table = tables.open_table(cfg)
        chunks = tables.iter_chunks(table, cfg, torch.float64)
    ties, read = LabelTies(len(features)), 0
    for chunk in chunks:
        if chunk.labels is not None and len(chunk.labels):
            ties.update(chunk.x.detach().to("cpu", torch.float64).numpy(), chunk.labels)
        read += len(chunk.rows) + chunk.dropped
        if progress is not None:
            progress("training", read, table.row_count)
    return ties
