"""``sensaudit init MODEL DATA``: a commented starter config that runs as written.

The features are the input names saved in the model file when it has them (the names ``run``
matches columns by), else the data's numeric columns less the id and label. The model is
loaded (safely: no pickled code) and run on the data's first rows, so a model whose input
width does not match is caught here rather than in the first audit. Numeric columns the model
does not take are left out of ``data.features`` with a comment saying which and why (by name
when the file names its inputs; else the last ones, marked TODO to check). It refuses only
what no config can fix: a model that runs on no width the data can give, or saved input names
the data lacks. The config is validated before it is written, and an existing file is never
overwritten.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sensaudit.config.load import parse_config
from sensaudit.config.yaml_loader import load_yaml
from sensaudit.core.errors import ConfigError, DataError, ModelError, ModelLoadError, first_line
from sensaudit.core.jacobian import as_output_matrix
from sensaudit.inputs import tables
from sensaudit.inputs.dataset import PARQUET_SUFFIXES
from sensaudit.inputs.model_inputs import saved_features
from sensaudit.inputs.models import LoadedModel, load_model
from sensaudit.inputs.regular import refuse_special
from sensaudit.inputs.table_layout import Table
from sensaudit.settings.sections import DataConfig, ModelConfig

# Widths tried to tell the user what the model takes, when it refuses the data's columns.
_MAX_PROBED_WIDTH = 512
# Names a target column often has: left out of the features, it is suggested as the label.
_LABEL_NAMES = ("label", "target", "y", "class", "outcome")


@dataclass
class Starter:
    """The config text and what it was built from (for the CLI's message)."""

    text: str
    features: tuple[str, ...]
    outputs: int
    id: str | None
    label: str | None
    left_out: tuple[str, ...] = ()  # numeric columns that are not the model's inputs


@dataclass(frozen=True)
class _Inputs:
    """The features the config lists, the numeric columns it leaves out, and how they were
    chosen (the comment above data.features)."""

    features: tuple[str, ...]
    left_out: tuple[str, ...]
    comment: list[str]


def starter_config(model: Path, data: Path, config: Path, *, label: str | None = None,
                   id: str | None = None) -> Starter:
    """The text of a starter config at ``config`` for ``model`` audited on ``data``."""
    # Before the header is peeked at: a FIFO or device would block or never end.
    refuse_special(model, "MODEL", ModelLoadError)
    refuse_special(data, "DATA", DataError)
    id = id if id is not None else _guess_id(data)
    table = tables.open_table(DataConfig(path=data, label=label, id=id))
    loaded = load_model(ModelConfig(path=model))
    saved = saved_features(model)
    inputs = (_saved_inputs(saved, table, model, data) if saved is not None
              else _inputs_by_width(loaded, table, data))
    outputs = _outputs(loaded, table, data, inputs.features)
    text = _render(model, data, config, table, outputs, inputs)
    # Whatever the columns are called, the config must read back as written.
    parse_config(load_yaml(text, config), source=config, base_dir=config.parent)
    return Starter(text=text, features=inputs.features, outputs=outputs, id=table.id,
                   label=table.label, left_out=inputs.left_out)


def write_new(config: Path, text: str) -> None:
    """Write ``config``, refusing to replace a file that is there."""
    try:
        with config.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ConfigError(f"{config}: already exists; sensaudit init does not overwrite a "
                          "config (remove it, or pass --config with another name)") from None
    except OSError as exc:
        raise ConfigError(f"{config}: cannot write the config ({exc.strerror or exc})") from None


def _guess_id(data: Path) -> str | None:
    """A column named id or ending in _id names the rows: it is not a feature."""
    for column in _header(data):
        if column.lower() == "id" or column.lower().endswith("_id"):
            return column
    return None


def _header(data: Path) -> list[str]:
    """The column names; an unreadable file is left for open_table to name."""
    try:
        if data.suffix.lower() in PARQUET_SUFFIXES:
            return list(pq.read_schema(data).names)
        with data.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException):
        return []


def _saved_inputs(saved: tuple[str, ...], table: Table, model: Path,
                  data: Path) -> _Inputs:
    """The model file names its inputs: those columns, in its order; the data's other numeric
    columns are left out, by name."""
    columns = set(_header(data))
    missing = [name for name in saved if name not in columns]
    if missing:
        raise DataError(f"{data}: has no column {', '.join(repr(m) for m in missing)}, which "
                        f"{model} names among its inputs ({', '.join(saved)}); audit it on "
                        "data that has every input column")
    if table.id in saved or table.label in saved:
        used = table.id if table.id in saved else table.label
        raise ConfigError(f"{model} takes '{used}' as an input; it cannot also be the "
                          f"{'id' if used == table.id else 'label'} (--id / --label)")
    left_out = tuple(f for f in table.features if f not in saved)
    comment = [f"  # The model's inputs, in its order, as its file names them ({len(saved)})."]
    if left_out:
        comment.append(f"  # Left out: {_listed(left_out)}, numeric column(s) of the data "
                       "the model does not take.")
        comment += _label_hint(left_out, table)
    return _Inputs(features=saved, left_out=left_out, comment=comment)


def _inputs_by_width(loaded: LoadedModel, table: Table, data: Path) -> _Inputs:
    """No saved names: the data's numeric columns, or, when the model takes fewer, the first
    ones in the data's order with the rest left out and a TODO to check the choice."""
    features = table.features
    if _runs_on(loaded, _first_rows(loaded, table, data, features)):
        return _Inputs(features=features, left_out=(), comment=[
            f"  # The data's numeric columns; the model takes {len(features)} inputs.",
            "  # TODO: check they are the model's inputs in its order (the model file does",
            "  # not name them; docs/inputs.md, \"Declaring the model's inputs\")."])
    width = _accepted_width(loaded, len(features))
    if width is None or width > len(features):
        hint = (f"the model takes {width} input features" if width is not None
                else "the model runs on no input width up to "
                     f"{_MAX_PROBED_WIDTH}")
        raise ModelError(
            f"{loaded.path}: {data} has {len(features)} numeric feature columns "
            f"({', '.join(features)}) but {hint}; pass --label or --id for columns "
            "that are not inputs, or write data.features by hand")
    # A column named like a target goes first among those left out.
    labels = [f for f in features if f.lower() in _LABEL_NAMES]
    kept = [f for f in features if f not in labels]
    chosen = tuple(kept[:width]) if len(kept) >= width else tuple(features[:width])
    left_out = tuple(f for f in features if f not in chosen)
    return _Inputs(features=chosen, left_out=left_out, comment=[
        f"  # The model takes {width} inputs but the data has {len(features)} numeric "
        f"columns: {_listed(left_out)} left out.",
        "  # TODO: check these are the model's inputs in its order, or edit the list",
        "  # (the model file does not name them; docs/inputs.md, \"Declaring the model's",
        "  # inputs\").",
        *_label_hint(left_out, table)])


def _label_hint(left_out: tuple[str, ...], table: Table) -> list[str]:
    named = [f for f in left_out if f.lower() in _LABEL_NAMES]
    if table.label is not None or not named:
        return []
    return [f"  # TODO: {_q(named[0])} looks like the target; `label: {_q(named[0])}` above "
            "copies it into examples.csv."]


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _runs_on(loaded: LoadedModel, x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            as_output_matrix(loaded.module(x), x.shape[0])
    except Exception:  # noqa: BLE001 - probing: any failure means "not this width"
        return False
    return True


def _first_rows(loaded: LoadedModel, table: Table, data: Path,
                features: tuple[str, ...]) -> torch.Tensor:
    """The data's first rows in the given columns, as the model takes them."""
    cfg = DataConfig(path=data, features=features, label=table.label, id=table.id)
    chunk = next(tables.iter_chunks(tables.open_table(cfg), cfg, loaded.dtype))
    return chunk.x[:8].to(loaded.device, loaded.dtype)


def _outputs(loaded: LoadedModel, table: Table, data: Path,
             features: tuple[str, ...]) -> int:
    """Run the model on the data's first rows, in the chosen columns: its output count."""
    x = _first_rows(loaded, table, data, features)
    try:
        with torch.no_grad():
            return as_output_matrix(loaded.module(x), x.shape[0]).shape[1]
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    except Exception as exc:  # the model's own code may raise anything on a bad input
        raise ModelError(f"{loaded.path}: the model does not run on the columns "
                         f"{', '.join(features)} of {data} ({first_line(exc)})") from None


def _accepted_width(loaded: LoadedModel, tried: int) -> int | None:
    return next((width for width in range(1, _MAX_PROBED_WIDTH + 1)
                 if width != tried and _runs_on(loaded, torch.zeros(
                     2, width, dtype=loaded.dtype, device=loaded.device))), None)


def _render(model: Path, data: Path, config: Path, table: Table, outputs: int,
            inputs: _Inputs) -> str:
    folder = config.parent
    features = ", ".join(_q(f) for f in inputs.features)
    lines = [
        f"# sensaudit starter config for {model.name} on {data.name} (sensaudit init).",
        "# Relative paths resolve against this file's folder. Every key: docs/configuration.md.",
        "model:",
        f"  path: {_q(_relative(model, folder))}",
    ]
    if outputs > 1:
        names = ", ".join(f"output_{i}" for i in range(outputs))
        lines += [f"  # The model returns {outputs} outputs; name them (e.g. the classes), and",
                  "  # audit one of them or all (each output gets its own ranking):",
                  f"  # output_names: [{names}]",
                  "  # output: 0",
                  "  # Classifier logits? `transform: softmax` audits the class probabilities:",
                  "  transform: none                # none | sigmoid | softmax"]
    else:
        lines += ["  # A logit? `transform: sigmoid` audits the probability instead:",
                  "  transform: none                # none | sigmoid | softmax"]
    lines += [
        "data:",
        f"  path: {_q(_relative(data, folder))}",
        f"  id: {_q(table.id)}" if table.id else "  # id: <column naming the rows>",
        f"  label: {_q(table.label)}" if table.label
        else "  # label: <column with the target; copied into examples.csv>",
        "  # The rows the model was trained on (same columns, with the label): a feature whose",
        "  # tie to the label there does not hold here is a suspected proxy (needs label):",
        "  # train: <training rows, CSV or Parquet>",
        *inputs.comment,
        f"  features: [{features}]",
        "audit:",
        "  # Features the model must not rely on, with their limits, e.g.:",
        "  proxies: []",
        "  #  - feature: <column>",
        "  #    max_share: 0.15            # flagged above 15% of the sensitivity",
        "  #    max_rank: 3                # and/or when among the top 3 drivers",
        "  #    reason: \"why it must not matter\"",
        "  dominance_warning: 0.5          # warn when one undeclared feature holds more",
        "  top_k: 3                        # drivers listed per row in examples.csv",
        "report:",
        f"  dir: {_q(_relative(folder / 'reports' / config.stem, folder))}",
        "  # csv, markdown, json, junit, parquet; png and html need 'sensaudit[charts]'",
        "  formats: [csv, markdown, json, junit]",
        "  examples: all                   # per-row rows: all | top | none | a row limit",
    ]
    return "\n".join(lines) + "\n"


def _relative(path: Path, folder: Path) -> str:
    """Relative to the config's folder when they share more than the filesystem root (the
    config then moves with its project), else absolute."""
    target, base = path.resolve(), folder.resolve()
    try:
        if Path(os.path.commonpath([target, base])) != Path(target.anchor):
            return os.path.relpath(target, base)
    except ValueError:  # another drive (Windows)
        pass
    return str(target)


def _q(text: str) -> str:
    """A YAML scalar for any text: JSON's double-quoted strings are valid YAML."""
    return json.dumps(text, ensure_ascii=False)
