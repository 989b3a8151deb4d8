"""The fix for a proxy: training data in which it no longer tracks the label.

A proxy helps a model in training because it is tied to the label there (copy length and
quality, both raised by revision effort). :func:`decorrelate` cuts that tie: the proxy is
binned into quantile bins (or taken as it is when it has few values), the label likewise
(classes, or quantile bins of a continuous label), and every proxy bin is given the label's
overall mix:

- **resample** (default): each (proxy bin, label class) cell keeps a seeded random subset of
  its rows, without replacement, as many as the bin's scarcest class allows at that mix; rows
  are never duplicated or changed and keep their file order (bins where the label was lopsided
  shrink most);
- **weights**: every row keeps its place and gets weight P(bin) P(class) / P(bin, class)
  (mean 1), for a training loop that takes sample weights; the proxy's bins keep their shares.

Inside a cell rows are kept (or weighted) alike, so what the other features say about the
label given the proxy's bin is kept, and the label's overall mix is kept. The proxy's values
within a bin can still lean with the label a little, so more bins cut the tie finer, as long
as every cell has rows. The dependence before and after is measured as the correlation of the
proxy with the label and the mutual information of their bins.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from sensaudit.core.errors import DataError, ReportError, did_you_mean
from sensaudit.inputs.dataset import PARQUET_SUFFIXES
from sensaudit.inputs.regular import refuse_special
from sensaudit.settings.sections import MAX_SEED


@dataclass(frozen=True)
class Dependence:
    """How much the proxy tells about the label: Pearson correlation (nan when the label is
    not a number with two or more values), and the mutual information of the proxy's bins and
    the label's classes, in bits (0: independent)."""

    correlation: float
    mutual_information: float


@dataclass
class Resampled:
    """What :func:`decorrelate` made: ``rows`` (0-based positions kept, in file order) or
    ``weights`` (one per row), and the dependence before and after."""

    rows: np.ndarray | None
    weights: np.ndarray | None
    before: Dependence
    after: Dependence
    proxy_bins: int
    label_classes: int
    input_rows: int

    @property
    def output_rows(self) -> int:
        return self.input_rows if self.rows is None else len(self.rows)


def decorrelate(proxy: np.ndarray, label: np.ndarray, *, bins: int = 10, seed: int = 0,
                weights: bool = False) -> Resampled:
    """Rows (or weights) under which ``proxy`` [rows] is independent of ``label`` [rows] at the
    resolution of ``bins`` quantile bins; both float, finite. Raises DataError (no file
    named) when a cell of proxy bin x label class has no row: independence cannot be reached
    by keeping rows, so fewer bins are needed."""
    proxy = np.asarray(proxy, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    p_cell, p_names = _cells(proxy, bins)
    l_cell, l_names = _cells(label, bins)
    n = len(proxy)
    counts = np.zeros((len(p_names), len(l_names)))
    np.add.at(counts, (p_cell, l_cell), 1)
    empty = np.argwhere(counts == 0)
    if len(empty):
        p, c = empty[0]
        raise DataError(f"no row has label {l_names[c]} with the proxy in {p_names[p]}: its tie "
                        "to the label cannot be removed by keeping rows; use fewer bins")
    target = np.outer(counts.sum(1), counts.sum(0)) / n  # expected counts under independence
    before = dependence(proxy, label, p_cell, l_cell)
    if weights:
        w = (target / counts)[p_cell, l_cell]
        return Resampled(rows=None, weights=w, before=before,
                         after=dependence(proxy, label, p_cell, l_cell, w),
                         proxy_bins=len(p_names), label_classes=len(l_names), input_rows=n)
    # Every proxy bin keeps the label's overall mix; a bin holds as many rows as its scarcest
    # class allows, so bins may shrink by different amounts (the weights keep them all).
    mix = counts.sum(0) / n
    bin_rows = (counts / mix).min(1)
    keep_counts = np.floor(np.outer(bin_rows, mix) + 1e-9).astype(np.int64)
    rng = np.random.default_rng(seed)
    kept = []
    for p in range(len(p_names)):
        for c in range(len(l_names)):
            members = np.flatnonzero((p_cell == p) & (l_cell == c))
            kept.append(rng.choice(members, size=int(keep_counts[p, c]), replace=False))
    rows = np.sort(np.concatenate(kept))
    return Resampled(rows=rows, weights=None, before=before,
                     after=dependence(proxy[rows], label[rows], p_cell[rows], l_cell[rows]),
                     proxy_bins=len(p_names), label_classes=len(l_names), input_rows=n)


def _cells(values: np.ndarray, bins: int) -> tuple[np.ndarray, list[str]]:
    """Each value's cell: the value itself when there are at most ``bins`` distinct values,
    else its quantile bin (edges that coincide merge). Returns cells [rows] and their names."""
    distinct = np.unique(values)
    if len(distinct) <= bins:
        return np.searchsorted(distinct, values), [f"{v:g}" for v in distinct]
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    cell = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    used = np.unique(cell)  # a bin can be empty when a value repeats across an edge
    cell = np.searchsorted(used, cell)
    names = [f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == len(edges) - 2 else ')'}"
             for i in used]
    return cell, names


def dependence(proxy: np.ndarray, label: np.ndarray, p_cell: np.ndarray, l_cell: np.ndarray,
               weights: np.ndarray | None = None) -> Dependence:
    w = np.ones(len(proxy)) if weights is None else weights
    total = w.sum()
    joint = np.zeros((int(p_cell.max()) + 1, int(l_cell.max()) + 1))
    np.add.at(joint, (p_cell, l_cell), w)
    joint /= total
    product = np.outer(joint.sum(1), joint.sum(0))
    nonzero = joint > 0
    mi = float((joint[nonzero] * np.log2(joint[nonzero] / product[nonzero])).sum())
    mp, ml = (w * proxy).sum() / total, (w * label).sum() / total
    cov = (w * (proxy - mp) * (label - ml)).sum()
    var = (w * (proxy - mp) ** 2).sum() * (w * (label - ml) ** 2).sum()
    correlation = float(cov / math.sqrt(var)) if var > 0 else float("nan")
    return Dependence(correlation=correlation, mutual_information=max(mi, 0.0))


# --- files ------------------------------------------------------------------------------------


def resample_file(path: str | Path, out: str | Path, *, proxy: str, label: str,
                  bins: int = 10, seed: int = 0, weights: bool = False,
                  weight_column: str = "weight") -> Resampled:
    """:func:`decorrelate` on a CSV or Parquet training file, written to ``out`` (CSV, or
    Parquet by its suffix): the kept rows as they were, or every row with ``weight_column``
    added. Refuses an ``out`` that exists. The file is read into memory (Arrow)."""
    path, out = Path(path), Path(out)
    if bins < 2:
        raise DataError(f"--bins must be at least 2 (got {bins})")
    if not 0 <= seed <= MAX_SEED:  # numpy's generators take non-negative seeds only
        raise DataError(f"--seed must be between 0 and {MAX_SEED} (got {seed})")
    if out.exists() or out.is_symlink():
        raise ReportError(f"{out}: already exists; refusing to overwrite it (remove it or "
                          "choose another --out)")
    table, numeric = _read(path, (proxy, label))
    if weights and weight_column in table.column_names:
        raise DataError(f"{path}: already has a column '{weight_column}'; name the weights "
                        "column another way (--weight-column)")
    try:
        result = decorrelate(numeric[proxy], numeric[label], bins=bins, seed=seed,
                             weights=weights)
    except DataError as exc:
        raise DataError(f"{path}: {exc} (--bins {bins})") from None
    if result.weights is not None:
        table = table.append_column(weight_column, pa.array(result.weights))
    elif result.rows is not None:  # decorrelate returns weights or rows
        table = table.take(pa.array(result.rows))
    _write_new(table, out)
    return result


def _read(path: Path, columns: tuple[str, str]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The whole table (a CSV's columns as their text, so kept rows are written back as they
    were) and the named columns as finite float64."""
    if not path.exists():
        raise DataError(f"{path}: training data file not found")
    # Read whole into memory: a FIFO or device would block or never end.
    refuse_special(path, "TRAIN", DataError)
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            table = pq.read_table(path)
            typed = table
        else:
            typed = pa_csv.read_csv(path)
            table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in typed.column_names},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: cannot read the training data ({str(exc).splitlines()[0]})"
                        ) from None
    numeric = {}
    for option, name in zip(("--proxy", "--label"), columns, strict=True):
        if name not in typed.column_names:
            raise DataError(f"{path}: no column '{name}' ({option})"
                            f"{did_you_mean(name, typed.column_names)}")
        column = typed.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)):
            raise DataError(f"{path}: column '{name}' ({option}) must hold numbers (found "
                            f"{column.type})")
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(f"{path}: column '{name}' ({option}) has {len(bad):,} missing or "
                            f"infinite value(s), first at row {bad[0] + 1}")
        numeric[name] = values
    if typed.num_rows < 2:
        raise DataError(f"{path}: {typed.num_rows} row(s); resampling needs at least 2")
    return table, numeric


def _write_new(table: pa.Table, out: Path) -> None:
    """Write ``table`` to a new file ``out``: staged beside it, then linked into place, which
    fails rather than replaces if ``out`` appeared meanwhile."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=".sensaudit-resample-", dir=out.parent)
        os.close(fd)
        try:
            if out.suffix.lower() in PARQUET_SUFFIXES:
                pq.write_table(table, staged)
            else:
                # pandas quotes a field only when it must (Arrow quotes every text field), so
                # kept rows read as they did in the input.
                table.to_pandas().to_csv(staged, index=False, lineterminator="\n")
            os.link(staged, out)
        finally:
            os.unlink(staged)
    except FileExistsError:
        raise ReportError(f"{out}: already exists; refusing to overwrite it (remove it or "
                          "choose another --out)") from None
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the resampled data ({exc.strerror or exc})"
                          ) from None
