"""Jacobians -> rankings, flags and findings. No I/O.

Statistics are accumulated chunk by chunk in float64 so an audit of millions of rows needs
memory for one chunk only, and a chunked audit equals the whole-table one up to float rounding.
Feature standard deviations come from a first pass over the data (Chan et al.'s pairwise merge
of per-chunk means and squared deviations), so every row's scaled contribution is known when
its gradient is computed in the second pass.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .config import ProxyLimit

SENSITIVITY_COLUMNS = ["output", "feature", "mean_gradient", "mean_abs_gradient", "rms_gradient",
                       "std", "scaled_sensitivity", "share", "rank", "flagged"]
NONFINITE_IDS_KEPT = 20


class FeatureMoments:
    """Exact running count, mean and sum of squared deviations per feature (float64)."""

    def __init__(self, n_features: int):
        self.count = 0
        self.mean = torch.zeros(n_features, dtype=torch.float64)
        self.m2 = torch.zeros(n_features, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """x: float [rows, features]."""
        rows = x.shape[0]
        if rows == 0:
            return
        x = x.detach().to("cpu", torch.float64)
        chunk_mean = x.mean(0)
        chunk_m2 = ((x - chunk_mean) ** 2).sum(0)
        total = self.count + rows
        delta = chunk_mean - self.mean
        self.mean = self.mean + delta * (rows / total)
        self.m2 = self.m2 + chunk_m2 + delta**2 * (self.count * rows / total)
        self.count = total

    @property
    def std(self) -> torch.Tensor:
        """Sample standard deviation (ddof=1) per feature."""
        if self.count < 2:
            return torch.full_like(self.mean, float("nan"))
        return (self.m2 / (self.count - 1)).sqrt()


@dataclass
class ExampleRecord:
    """One audited row kept for the report: its score and strongest drivers."""

    id: object
    output: str
    score: float
    label: float | None
    drivers: list[tuple[str, float, float]]  # (feature, gradient, scaled contribution)
    proxy_contribution: float


@dataclass
class Drivers:
    """Each (row, output) entry's top features: index, gradient and scaled contribution,
    all [entries, top_k]."""

    index: np.ndarray
    gradient: np.ndarray
    contribution: np.ndarray


class GradientAccumulator:
    """Streams [rows, outputs, features] Jacobians into per-feature statistics and examples."""

    def __init__(self, features: Sequence[str], outputs: Sequence[str], std: torch.Tensor, *,
                 top_k: int = 3, proxies: Sequence[str] = (), keep_examples: int = 10):
        self.features = list(features)
        self.outputs = list(outputs)
        m, n = len(outputs), len(features)
        self.std = std.to(torch.float64)
        self.top_k = min(top_k, n)
        self.proxy_index = [self.features.index(p) for p in proxies if p in self.features]
        self.keep_examples = keep_examples
        self.rows = 0
        self.sum = torch.zeros(m, n, dtype=torch.float64)
        self.sum_abs = torch.zeros(m, n, dtype=torch.float64)
        self.sum_sq = torch.zeros(m, n, dtype=torch.float64)
        self.nonfinite_rows = 0
        self.nonfinite_ids: list = []
        self.score_sum = torch.zeros(m, dtype=torch.float64)
        self._heap: list[tuple[float, int, ExampleRecord]] = []
        self._order = itertools.count()

    def update(self, ids: Sequence, scores: torch.Tensor, jac: torch.Tensor,
               labels: np.ndarray | None = None, *, examples: bool = True
               ) -> pd.DataFrame | None:
        """Add one chunk; return its per-example top drivers (one row per row and output), or
        None when ``examples`` is False (nothing will write them).

        scores: [rows, outputs]; jac: [rows, outputs, features].
        """
        jac = jac.detach().to("cpu", torch.float64)
        scores = scores.detach().to("cpu", torch.float64)
        finite = torch.isfinite(jac).flatten(1).all(1) & torch.isfinite(scores).all(1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            self.nonfinite_rows += len(bad)
            room = NONFINITE_IDS_KEPT - len(self.nonfinite_ids)
            self.nonfinite_ids.extend(ids[i] for i in bad[:max(room, 0)])
            good = jac[finite]
        else:
            good = jac
        self.rows += good.shape[0]
        self.sum += good.sum(0)
        self.sum_abs += good.abs().sum(0)
        self.sum_sq += (good**2).sum(0)
        self.score_sum += scores[finite].sum(0)
        return self._examples(ids, scores, jac, labels, finite, examples)

    def _examples(self, ids: Sequence, scores: torch.Tensor, jac: torch.Tensor,
                  labels: np.ndarray | None, finite: torch.Tensor, build_frame: bool
                  ) -> pd.DataFrame | None:
        rows, m, _ = jac.shape
        contribution = jac * self.std  # typical score change per one-std change, per row
        magnitude = contribution.abs()
        top = magnitude.nan_to_num(nan=-1.0).topk(self.top_k, dim=2).indices
        # Flattened to one entry per (row, output): entry i is row i // m, output i % m.
        k = self.top_k
        drivers = Drivers(top.reshape(rows * m, k).numpy(),
                          jac.gather(2, top).reshape(rows * m, k).numpy(),
                          contribution.gather(2, top).reshape(rows * m, k).numpy())
        if self.keep_examples:
            self._keep_strongest(ids, scores, labels, magnitude, finite, drivers)
        if not build_frame:
            return None
        names = np.asarray(self.features, dtype=object)
        frame: dict[str, object] = {
            "id": np.repeat(np.asarray(list(ids), dtype=object), m),
            "output": np.tile(np.asarray(self.outputs, dtype=object), rows),
            "score": scores.reshape(-1).numpy(),
        }
        if labels is not None:
            frame["label"] = np.repeat(labels, m)
        for k in range(self.top_k):
            frame[f"driver_{k + 1}"] = names[drivers.index[:, k]]
            frame[f"gradient_{k + 1}"] = drivers.gradient[:, k]
            frame[f"contribution_{k + 1}"] = drivers.contribution[:, k]
        return pd.DataFrame(frame)

    def _keep_strongest(self, ids: Sequence, scores: torch.Tensor, labels: np.ndarray | None,
                        magnitude: torch.Tensor, finite: torch.Tensor, drivers: Drivers
                        ) -> None:
        # Rows where declared proxies move the score most are the ones to read first; without
        # proxies, rows whose single strongest driver is largest.
        m = magnitude.shape[1]
        if self.proxy_index:
            key = magnitude[:, :, self.proxy_index].sum(2)
        else:
            key = magnitude.amax(2)
        # Rows left out of the statistics as non-finite are not examples of what drives the
        # score: an infinite gradient would otherwise head the list.
        key = torch.where(finite[:, None], key, torch.full_like(key, -1.0)).reshape(-1)
        count = min(self.keep_examples, int(finite.sum()) * m)
        flat_scores = scores.reshape(-1)
        for i in key.topk(count).indices.tolist():
            value = float(key[i])
            if len(self._heap) == self.keep_examples and value <= self._heap[0][0]:
                continue
            row, output = divmod(i, m)
            label = None if labels is None else labels[row]
            record = ExampleRecord(
                id=ids[row], output=self.outputs[output], score=float(flat_scores[i]),
                label=None if label is None or pd.isna(label) else float(label),
                drivers=[(self.features[drivers.index[i, k]], float(drivers.gradient[i, k]),
                          float(drivers.contribution[i, k])) for k in range(self.top_k)],
                proxy_contribution=value)
            item = (value, next(self._order), record)
            if len(self._heap) < self.keep_examples:
                heapq.heappush(self._heap, item)
            else:
                heapq.heapreplace(self._heap, item)

    def strongest_examples(self) -> list[ExampleRecord]:
        return [rec for _, _, rec in sorted(self._heap, key=lambda t: (-t[0], t[1]))]

    def sensitivity(self) -> pd.DataFrame:
        """Per (output, feature) statistics, ranked within each output (flagged left False)."""
        rows = max(self.rows, 1)
        mean = self.sum / rows
        mean_abs = self.sum_abs / rows
        rms = (self.sum_sq / rows).sqrt()
        scaled = mean_abs * self.std
        total = scaled.sum(1, keepdim=True)
        share = torch.where(total > 0, scaled / total, torch.zeros_like(scaled))
        frames = []
        for i, output in enumerate(self.outputs):
            frame = pd.DataFrame({
                "output": output, "feature": self.features,
                "mean_gradient": mean[i].numpy(), "mean_abs_gradient": mean_abs[i].numpy(),
                "rms_gradient": rms[i].numpy(), "std": self.std.numpy(),
                "scaled_sensitivity": scaled[i].numpy(), "share": share[i].numpy(),
            })
            # Ties share a rank (the best one), so two identical features rank alike.
            # na_option: a NaN share (infinite gradients summed) ranks last, not a crash.
            frame["rank"] = frame["share"].rank(ascending=False, method="min",
                                                na_option="bottom").astype(int)
            frame["flagged"] = False
            frames.append(frame.sort_values(["rank", "feature"], kind="stable"))
        return pd.concat(frames, ignore_index=True)[SENSITIVITY_COLUMNS]


@dataclass
class Flag:
    """A declared proxy over one of its limits."""

    feature: str
    output: str
    share: float
    rank: int
    max_share: float | None
    max_rank: int | None
    reason: str | None = None

    @property
    def limit(self) -> str:
        parts = []
        if self.max_share is not None and self.share > self.max_share:
            parts.append(f"share <= {self.max_share:.0%}")
        if self.max_rank is not None and self.rank <= self.max_rank:
            parts.append(f"not among the top {self.max_rank}")
        return " and ".join(parts)


@dataclass
class DominanceWarning:
    """An undeclared feature that dominates: how unknown proxies show up."""

    feature: str
    output: str
    share: float
    threshold: float


@dataclass
class Gates:
    flags: list[Flag] = field(default_factory=list)
    warnings: list[DominanceWarning] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.flags


def evaluate_gates(table: pd.DataFrame, proxies: Sequence[ProxyLimit],
                   dominance_warning: float) -> Gates:
    """Check declared proxies against their limits and look for dominant undeclared features.

    Marks flagged rows in ``table`` in place.
    """
    gates = Gates()
    declared = {p.feature: p for p in proxies}
    for index, row in table.iterrows():
        proxy = declared.get(row["feature"])
        share, rank = float(row["share"]), int(row["rank"])
        if proxy is not None:
            over_share = proxy.max_share is not None and share > proxy.max_share
            over_rank = proxy.max_rank is not None and rank <= proxy.max_rank
            if over_share or over_rank:
                table.at[index, "flagged"] = True
                gates.flags.append(Flag(feature=row["feature"], output=row["output"],
                                        share=share, rank=rank, max_share=proxy.max_share,
                                        max_rank=proxy.max_rank, reason=proxy.reason))
        elif share > dominance_warning:
            gates.warnings.append(DominanceWarning(feature=row["feature"], output=row["output"],
                                          share=share, threshold=dominance_warning))
    return gates


def findings(table: pd.DataFrame, gates: Gates, n_features: int) -> list[str]:
    """Plain-words sentences on what the audit found and what it means."""
    lines: list[str] = []
    multi = table["output"].nunique() > 1
    for flag in gates.flags:
        row = table[(table["feature"] == flag.feature) & (table["output"] == flag.output)].iloc[0]
        where = f" for output '{flag.output}'" if multi else ""
        lines.append(
            f"**{flag.feature}** is a declared proxy and drives {flag.share:.1%} of the score's "
            f"sensitivity{where} (rank {flag.rank} of {n_features}), over its limit "
            f"({flag.limit}). A one-standard-deviation change in {flag.feature} "
            f"({_num(row['std'])}) moves the score by {_num(row['scaled_sensitivity'])} on "
            f"average. The model leans on a feature that should not decide the score: it has "
            "likely learned it as a stand-in for what actually matters. Remove the correlation "
            "from the training data (resample, or add it as a control) and retrain, then run "
            "this audit again." + (f" Why it must not matter: {flag.reason}." if flag.reason
                                   else ""))
    for warning in gates.warnings:
        where = f" for output '{warning.output}'" if multi else ""
        lines.append(
            f"**{warning.feature}** alone holds {warning.share:.1%} of the sensitivity{where}, "
            f"more than {warning.threshold:.0%}. It is not a declared proxy, but one feature "
            "dominating is how unknown proxies show up: check that it should drive the score.")
    if not gates.flags:
        for output, group in table.groupby("output", sort=False):
            top = group.sort_values("rank").head(3)
            names = ", ".join(f"{r.feature} ({r.share:.1%})" for r in top.itertuples())
            where = f"Output '{output}': " if multi else ""
            lines.append(f"{where}No declared proxy is over its limit. The strongest drivers "
                         f"are {names}.")
    return lines


def _num(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.3g}"


@dataclass
class AuditResult:
    """Everything one audit found; :mod:`sensaudit.report` turns it into files."""

    table: pd.DataFrame  # SENSITIVITY_COLUMNS, one row per (output, feature)
    gates: Gates
    findings: list[str]
    examples: list[ExampleRecord]
    features: list[str]
    outputs: list[str]
    rows: int  # rows audited (finite gradients)
    rows_dropped: int  # rows skipped for missing values (data.on_missing: drop)
    nonfinite_rows: int
    nonfinite_ids: list
    nonfinite_allowed: bool
    model_path: str
    model_format: str
    data_path: str
    proxies: list[str]  # the declared proxies' features
    mean_scores: dict[str, float]

    @property
    def passed(self) -> bool:
        nonfinite_ok = self.nonfinite_rows == 0 or self.nonfinite_allowed
        return self.gates.passed and nonfinite_ok
