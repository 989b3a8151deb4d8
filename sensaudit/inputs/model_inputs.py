"""Which data column feeds which model input: declared in the config or saved with the model.

A model takes its inputs by position, a data file holds them by name. Feeding the data's
columns in file order to a model trained on another order gives a silently wrong audit, so the
audit matches columns by name whenever the order is known:

- ``model.features`` in the config, or
- the names saved with the model: ``torch.export.save(program, path, extra_files={
  "sensaudit.json": json.dumps({"features": [...]})})`` (``torch.jit.save``'s
  ``_extra_files`` works the same way). The file is read here as plain JSON from the archive,
  without loading the model.

Without either, the data's column order is assumed, and the report says so.

``compare`` may pair models whose inputs differ by name (a retrain that dropped a leaky
column): both then read the union of their columns in one pass, and each model takes its own
columns of every chunk (:class:`SelectedColumns`), so a column a model does not take has an
exact zero gradient and no part of its sensitivity (:func:`paired_inputs`).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from sensaudit.core.errors import ConfigError, ModelLoadError
from sensaudit.settings.sections import DataConfig, ModelConfig

METADATA_NAME = "sensaudit.json"
_MAX_METADATA_BYTES = 1 << 20  # a list of column names; anything bigger is not ours


@dataclass(frozen=True)
class ModelInputs:
    """The model's input columns in order, and where that order came from."""

    features: tuple[str, ...] | None
    source: str  # "model.features", "the model file", "data.features" or "data column order"


def declared_inputs(model: ModelConfig | None, data: DataConfig) -> ModelInputs:
    """The input order the audit will use, before any data is read."""
    if model is not None and model.features is not None:
        return ModelInputs(model.features, "model.features")
    if model is not None:
        saved = saved_features(model.path)
        if saved is not None:
            return ModelInputs(saved, "the model file")
    if data.features is not None:
        return ModelInputs(None, "data.features")
    return ModelInputs(None, "data column order")


def saved_features(path: Path) -> tuple[str, ...] | None:
    """The feature names saved in a model archive's ``extra/sensaudit.json``, if any.

    A file that is not a readable zip archive has none here: the loader reports what is wrong
    with it.
    """
    if not path.is_file():  # a FIFO would block here; the loader names what it is
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            entry = next((i for i in archive.infolist()
                          if i.filename.endswith("/extra/" + METADATA_NAME)), None)
            if entry is None:
                return None
            if entry.file_size > _MAX_METADATA_BYTES:
                raise ModelLoadError(f"{path}: its {METADATA_NAME} is {entry.file_size:,} bytes;"
                                     " expected a short list of feature names")
            raw = archive.read(entry)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelLoadError(f"{path}: its {METADATA_NAME} is not valid JSON") from None
    features = meta.get("features") if isinstance(meta, dict) else None
    if (not isinstance(features, list) or not features
            or not all(isinstance(f, str) and f for f in features)
            or len(set(features)) != len(features)):
        raise ModelLoadError(f"{path}: its {METADATA_NAME} must hold \"features\": a list of "
                             "distinct column names")
    return tuple(features)


def match_data(data: DataConfig, inputs: ModelInputs, source: object) -> DataConfig:
    """The data settings with the features set to the model's inputs, in the model's order.

    ``data.features`` may still be given, to select the same columns; naming others is an
    error, since the model cannot take them.
    """
    if inputs.features is None:
        return data
    if data.features is not None and set(data.features) != set(inputs.features):
        extra = [f for f in data.features if f not in inputs.features]
        missing = [f for f in inputs.features if f not in data.features]
        detail = (f"'{extra[0]}' is not one of them" if extra
                  else f"it leaves out '{missing[0]}'")
        raise ConfigError(f"{source}: data.features does not match the model's inputs "
                          f"({inputs.source}: {', '.join(inputs.features)}): {detail}")
    return replace(data, features=inputs.features, features_key=inputs.source)


def order_note(inputs: ModelInputs, features: tuple[str, ...]) -> str | None:
    """The report's note when the column order was assumed rather than known."""
    if inputs.source != "data column order":
        return None
    shown = ", ".join(features[:8]) + (", ..." if len(features) > 8 else "")
    return (f"The model's input columns were not declared, so the data's column order ({shown})"
            " was assumed to be the order the model takes them in. If it is not, every figure "
            "is wrong: declare the order with model.features, or save it with the model "
            "(docs/inputs.md, \"Declaring the model's inputs\").")


@dataclass(frozen=True)
class PairedInputs:
    """What compare's two models read: ``table`` the columns of the data both read (their
    union, old's first, when they differ by name), and each model's own inputs in its order
    (``old`` / ``new``, None when it takes ``table`` as it is)."""

    table: ModelInputs
    old: tuple[str, ...] | None = None
    new: tuple[str, ...] | None = None

    @property
    def differ(self) -> bool:
        return self.old is not None or self.new is not None

    def columns(self, features: tuple[str, ...] | None) -> tuple[int, ...] | None:
        """Where a model's inputs are among the table's columns (None: all, in order)."""
        if features is None or self.table.features is None:
            return None
        return tuple(self.table.features.index(f) for f in features)


def paired_inputs(old: ModelInputs, new: ModelInputs, old_path: Path, new_path: Path
                  ) -> PairedInputs:
    """The columns compare's two models read. Models whose names are known and differ (other
    columns, or the same in another order) read the union; a model whose names are unknown
    is taken to read the other's columns (when its width differs, it fails on its first
    rows, named)."""
    if not (old.features and new.features) or old.features == new.features:
        return PairedInputs(table=old if old.features else new)
    union = (*old.features, *(f for f in new.features if f not in old.features))
    source = (f"the models' inputs ({_source_name(old, old_path)}, "
              f"{_source_name(new, new_path)})")
    return PairedInputs(table=ModelInputs(union, source),
                        old=old.features if old.features != union else None,
                        new=new.features)


def _source_name(inputs: ModelInputs, path: Path) -> str:
    return f"{path.name}: {inputs.source}"


class SelectedColumns(torch.nn.Module):
    """A model fed its own columns, in its order, of wider rows: ``forward(x)`` is
    ``model(x[:, columns])``. The columns it leaves out get an exact zero gradient."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor],
                 columns: tuple[int, ...], device: torch.device):
        super().__init__()
        self.inner = model
        self.columns = columns
        self.index = torch.tensor(columns, dtype=torch.long, device=device)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        index = self.index if self.index.device == x.device else self.index.to(x.device)
        return x.index_select(-1, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.select(x))
