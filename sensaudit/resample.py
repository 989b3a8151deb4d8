"""The fix for a proxy: training data in which it no longer tracks the label.

A proxy helps a model in training because it is tied to the label there (copy length and
quality, both raised by revision effort). :func:`decorrelate` cuts that tie, by one of four
methods (``method``; ``--method`` on the command line):

- **rows** (default): the proxy is binned into quantile bins (or taken as it is when it has
  few values), the label likewise (classes, or quantile bins of a continuous label), and each
  (proxy bin, label class) cell keeps a seeded random subset of its rows, without replacement,
  so that every proxy bin holds the label's overall mix, as many rows as the bin's scarcest
  class allows. Rows are never duplicated or changed and keep their file order (bins where the
  label was lopsided shrink most). Inside a cell rows are kept alike, so what the other
  features say about the label given the proxy's bin is kept, and the label's overall mix is
  kept. A proxy tied strongly to the label leaves few rows (or a cell with none: then no
  selection of rows can cut the tie at that resolution);
- **weights**: the same cells, but every row keeps its place and gets weight
  P(bin) P(class) / P(bin, class) (mean 1), for a training loop that takes sample weights;
- **permute**: every row is kept and the proxy's values are shuffled across rows (seeded): the
  proxy keeps its distribution and loses every tie, to the label and to the other features
  alike (a model can no longer learn anything from it);
- **residual**: every row is kept and the proxy is replaced by what the label does not
  explain: proxy - E[proxy | label] + mean(proxy), with E[proxy | label] the class means for a
  label with at most ``bins`` values, else the least-squares line on the label. Its
  correlation with the label is then 0 (to rounding) and what it says beyond the label is
  kept; a tie that is not linear in a continuous label can remain, and the figures after show
  it.

The dependence before and after is measured on the data as written (:func:`measure`): the
correlation of the proxy with the label, and the mutual information of their quantile bins,
``max(bins, MEASURE_BINS)`` of each chosen afresh on each data (weighted quantiles for the
weights; a variable with that few values: its values), with what independent columns would
show by chance at that size beside it. Balancing on 2 bins and measuring on the same 2 would
call a proxy independent that still tracks the label inside each bin.
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

METHODS = ("rows", "weights", "permute", "residual")
# Below this share of the input kept by the rows method, the command suggests a method that
# keeps every row.
FEW_ROWS = 0.25
# The dependence is measured with at least this many quantile bins of each variable: finer
# than coarse balancing bins, so a tie left inside them shows.
MEASURE_BINS = 10


@dataclass(frozen=True)
class Dependence:
    """How much the proxy tells about the label: Pearson correlation (nan when the label is
    not a number with two or more values), and the mutual information of the proxy's bins and
    the label's classes, in bits (0: independent). ``chance``: the mutual information
    independent columns show on average at this many rows and cells (the plug-in estimate's
    bias, (proxy cells - 1)(label cells - 1) / (2 rows ln 2), rows being the weights'
    effective count), below which a figure says nothing."""

    correlation: float
    mutual_information: float
    chance: float = 0.0
    proxy_bins: int = 0
    label_classes: int = 0


@dataclass
class Resampled:
    """What :func:`decorrelate` made: ``rows`` (0-based positions kept, in file order),
    ``weights`` (one per row) or ``proxy`` (the proxy's new values, one per row), and the
    dependence before (on the input) and after (on the output)."""

    rows: np.ndarray | None
    weights: np.ndarray | None
    before: Dependence
    after: Dependence
    proxy_bins: int
    label_classes: int
    input_rows: int
    method: str = "rows"
    proxy: np.ndarray | None = None
    order: np.ndarray | None = None  # permute: row i takes the proxy of row order[i]

    @property
    def output_rows(self) -> int:
        return self.input_rows if self.rows is None else len(self.rows)


def decorrelate(proxy: np.ndarray, label: np.ndarray, *, bins: int = 10, seed: int = 0,
                method: str = "rows") -> Resampled:
    """Rows, weights or new proxy values (``method``, see the module) under which ``proxy``
    [rows] no longer tracks ``label`` [rows]; both float, finite. ``bins``: the quantile bins
    of the proxy (and of a continuous label) the rows and weights methods balance; the
    dependence is measured with ``max(bins, MEASURE_BINS)``. Raises DataError (no file named)
    when rows or weights cannot reach independence: a cell of proxy bin x label class has no
    row; the message names the bins that can, and the methods that keep every row."""
    if method not in METHODS:
        raise DataError(f"--method must be one of {', '.join(METHODS)} (got {method!r})")
    proxy = np.asarray(proxy, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    n = len(proxy)
    resolution = max(bins, MEASURE_BINS)
    before = measure(proxy, label, resolution)
    rng = np.random.default_rng(seed)
    if method == "permute":
        order = rng.permutation(n)
        return _changed(proxy[order], label, before, resolution, method, order=order)
    if method == "residual":
        return _changed(residual(proxy, label, bins), label, before, resolution, method)
    p_cell, p_names = _cells(proxy, bins)
    l_cell, l_names = _cells(label, bins)
    counts = _counts(p_cell, l_cell, len(p_names), len(l_names))
    empty = np.argwhere(counts == 0)
    if len(empty):
        p, c = empty[0]
        raise DataError(f"no row has label {l_names[c]} with the proxy in {p_names[p]}: "
                        f"{_without_empty_cells(proxy, label, bins)}")
    target = np.outer(counts.sum(1), counts.sum(0)) / n  # expected counts under independence
    if method == "weights":
        w = (target / counts)[p_cell, l_cell]
        return Resampled(rows=None, weights=w, before=before,
                         after=measure(proxy, label, resolution, w), proxy_bins=len(p_names),
                         label_classes=len(l_names), input_rows=n, method=method)
    # Every proxy bin keeps the label's overall mix; a bin holds as many rows as its scarcest
    # class allows, so bins may shrink by different amounts (the weights keep them all).
    mix = counts.sum(0) / n
    bin_rows = (counts / mix).min(1)
    keep_counts = np.floor(np.outer(bin_rows, mix) + 1e-9).astype(np.int64)
    kept = []
    for p in range(len(p_names)):
        for c in range(len(l_names)):
            members = np.flatnonzero((p_cell == p) & (l_cell == c))
            kept.append(rng.choice(members, size=int(keep_counts[p, c]), replace=False))
    rows = np.sort(np.concatenate(kept))
    return Resampled(rows=rows, weights=None, before=before,
                     after=measure(proxy[rows], label[rows], resolution),
                     proxy_bins=len(p_names), label_classes=len(l_names), input_rows=n,
                     method=method)


def residual(proxy: np.ndarray, label: np.ndarray, bins: int) -> np.ndarray:
    """proxy - E[proxy | label] + mean(proxy): class means for a label with at most ``bins``
    values, else the least-squares line on the label (a constant label: the proxy as is)."""
    classes = np.unique(label)
    if len(classes) <= bins:
        cls = np.searchsorted(classes, label)
        means = np.bincount(cls, weights=proxy) / np.bincount(cls)
        # numpy's stubs type arithmetic on a bare ndarray as Any: the annotations say the type.
        by_class: np.ndarray = proxy - means[cls] + proxy.mean()
        return by_class
    centred = label - label.mean()
    slope = float((centred * (proxy - proxy.mean())).sum() / (centred**2).sum())
    by_line: np.ndarray = proxy - slope * centred
    return by_line


def _changed(new_proxy: np.ndarray, label: np.ndarray, before: Dependence, resolution: int,
             method: str, order: np.ndarray | None = None) -> Resampled:
    return Resampled(rows=None, weights=None, before=before,
                     after=measure(new_proxy, label, resolution), proxy_bins=before.proxy_bins,
                     label_classes=before.label_classes, input_rows=len(label), method=method,
                     proxy=new_proxy, order=order)


def _counts(p_cell: np.ndarray, l_cell: np.ndarray, p: int, c: int) -> np.ndarray:
    counts = np.zeros((p, c))
    np.add.at(counts, (p_cell, l_cell), 1)
    return counts


def _without_empty_cells(proxy: np.ndarray, label: np.ndarray, bins: int) -> str:
    """The rest of the refusal: the largest --bins with no empty cell, if any, and the
    methods that keep every row."""
    for fewer in range(bins - 1, 1, -1):
        p_cell, p_names = _cells(proxy, fewer)
        l_cell, l_names = _cells(label, fewer)
        if (_counts(p_cell, l_cell, len(p_names), len(l_names)) > 0).all():
            return (f"rows cannot be kept or weighted to cut its tie to the label at --bins "
                    f"{bins}; --bins {fewer} can (coarser), or --method residual (or permute) "
                    "keeps every row and changes the proxy instead")
    return ("no number of bins lets rows be kept or weighted to cut its tie to the label; "
            "--method residual (or permute) keeps every row and changes the proxy instead")


def _cells(values: np.ndarray, bins: int, weights: np.ndarray | None = None
           ) -> tuple[np.ndarray, list[str]]:
    """Each value's cell: the value itself when there are at most ``bins`` distinct values,
    else its quantile bin (weighted quantiles when ``weights`` are given; edges that coincide
    merge). Returns cells [rows] and their names."""
    distinct = np.unique(values)
    if len(distinct) <= bins:
        return np.searchsorted(distinct, values), [f"{v:g}" for v in distinct]
    q = np.linspace(0, 1, bins + 1)
    edges = np.unique(np.quantile(values, q) if weights is None else
                      np.quantile(values, q, weights=weights, method="inverted_cdf"))
    cell = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    used = np.unique(cell)  # a bin can be empty when a value repeats across an edge
    cell = np.searchsorted(used, cell)
    names = [f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == len(edges) - 2 else ')'}"
             for i in used]
    return cell, names


def measure(proxy: np.ndarray, label: np.ndarray, bins: int,
            weights: np.ndarray | None = None) -> Dependence:
    """The dependence of ``proxy`` on ``label`` in this data, with ``bins`` quantile bins of
    each (a variable with at most ``bins`` values: its values) chosen on this data."""
    p_cell, p_names = _cells(proxy, bins, weights)
    l_cell, l_names = _cells(label, bins, weights)
    found = dependence(proxy, label, p_cell, l_cell, weights)
    w = np.ones(len(proxy)) if weights is None else weights
    effective = float(w.sum() ** 2 / (w**2).sum())
    chance = (len(p_names) - 1) * (len(l_names) - 1) / (2 * effective * math.log(2))
    return Dependence(found.correlation, found.mutual_information, chance=chance,
                      proxy_bins=len(p_names), label_classes=len(l_names))


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
                  bins: int = 10, seed: int = 0, method: str = "rows",
                  weight_column: str = "weight") -> Resampled:
    """:func:`decorrelate` on a CSV or Parquet training file, written to ``out`` (CSV, or
    Parquet by its suffix): the kept rows as they were (rows), every row with
    ``weight_column`` added (weights), or every row with the proxy's column replaced
    (permute: the same values, shuffled; residual: new numbers). Refuses an ``out`` that
    exists. The file is read into memory (Arrow); ``out`` gets the mode a new report gets
    (0666 less the umask)."""
    path, out = Path(path), Path(out)
    if method not in METHODS:
        raise DataError(f"--method must be one of {', '.join(METHODS)} (got {method!r})")
    weights = method == "weights"
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
                             method=method)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    if result.weights is not None:
        table = table.append_column(weight_column, pa.array(result.weights))
    elif result.rows is not None:
        table = table.take(pa.array(result.rows))
    elif result.order is not None:  # the proxy's own values (as written), shuffled
        index = table.column_names.index(proxy)
        table = table.set_column(index, proxy, table.column(proxy).take(pa.array(result.order)))
    elif result.proxy is not None:
        index = table.column_names.index(proxy)
        table = table.set_column(index, proxy, pa.array(result.proxy))
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
            # mkstemp makes the file 0600; the output is data like any report (0666 - umask).
            os.chmod(staged, 0o666 & ~_umask())
            os.link(staged, out)
        finally:
            os.unlink(staged)
    except FileExistsError:
        raise ReportError(f"{out}: already exists; refusing to overwrite it (remove it or "
                          "choose another --out)") from None
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the resampled data ({exc.strerror or exc})"
                          ) from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
