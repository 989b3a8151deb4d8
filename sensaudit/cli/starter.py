"""``sensaudit init MODEL DATA``: a commented starter config that runs as written.

The features come from the data (its numeric columns, less the id and label), the model is
loaded (safely: no pickled code) and run on the data's first rows, so a model whose input
width does not match is caught here, with the width it does take, rather than in the first
audit. The config is validated before it is written, and an existing file is never
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
from sensaudit.inputs.models import LoadedModel, load_model
from sensaudit.inputs.regular import refuse_special
from sensaudit.settings.sections import DataConfig, ModelConfig

# Widths tried to tell the user what the model takes, when it refuses the data's columns.
_MAX_PROBED_WIDTH = 512


@dataclass
class Starter:
    """The config text and what it was built from (for the CLI's message)."""

    text: str
    features: tuple[str, ...]
    outputs: int
    id: str | None
    label: str | None


def starter_config(model: Path, data: Path, config: Path, *, label: str | None = None,
                   id: str | None = None) -> Starter:
    """The text of a starter config at ``config`` for ``model`` audited on ``data``."""
    # Before the header is peeked at: a FIFO or device would block or never end.
    refuse_special(model, "MODEL", ModelLoadError)
    refuse_special(data, "DATA", DataError)
    id = id if id is not None else _guess_id(data)
    table = tables.open_table(DataConfig(path=data, label=label, id=id))
    loaded = load_model(ModelConfig(path=model))
    outputs = _outputs(loaded, table, data)
    text = _render(model, data, config, table, outputs)
    # Whatever the columns are called, the config must read back as written.
    parse_config(load_yaml(text, config), source=config, base_dir=config.parent)
    return Starter(text=text, features=table.features, outputs=outputs, id=table.id,
                   label=table.label)


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


def _outputs(loaded: LoadedModel, table: tables.Table, data: Path) -> int:
    """Run the model on the data's first rows: it must take exactly the features."""
    cfg = DataConfig(path=data, features=table.features, label=table.label, id=table.id)
    chunk = next(tables.iter_chunks(table, cfg, loaded.dtype))
    x = chunk.x[:8].to(loaded.device, loaded.dtype)
    try:
        with torch.no_grad():
            return as_output_matrix(loaded.module(x), x.shape[0]).shape[1]
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    except Exception as exc:  # the model's own code may raise anything on a bad input
        width = _accepted_width(loaded, x.shape[1])
        hint = (f"the model takes {width} input features" if width is not None
                else f"the model does not run on them ({first_line(exc)})")
        raise ModelError(
            f"{loaded.path}: {data} has {x.shape[1]} numeric feature columns "
            f"({', '.join(table.features)}) but {hint}; pass --label or --id for columns "
            "that are not inputs, or write data.features by hand") from None


def _accepted_width(loaded: LoadedModel, tried: int) -> int | None:
    for width in range(1, _MAX_PROBED_WIDTH + 1):
        if width == tried:
            continue
        try:
            with torch.no_grad():
                as_output_matrix(loaded.module(torch.zeros(2, width, dtype=loaded.dtype,
                                                           device=loaded.device)), 2)
        except Exception:  # noqa: BLE001 - probing: any failure means "not this width"
            continue
        return width
    return None


def _render(model: Path, data: Path, config: Path, table: tables.Table, outputs: int) -> str:
    folder = config.parent
    features = ", ".join(_q(f) for f in table.features)
    lines = [
        f"# sensaudit starter config for {model.name} on {data.name} (sensaudit init).",
        "# Relative paths resolve against this file's folder. README: Config, for every key.",
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
        f"  # The data's numeric columns; the model takes {len(table.features)} inputs.",
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
