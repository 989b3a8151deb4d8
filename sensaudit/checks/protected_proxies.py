"""``audit.protected``: inputs that stand in for a protected attribute (sex, age, ...).

Following the association-and-influence definition of a proxy (Datta, Fredrikson, Ko, Mardziel
and Sen, "Use privacy in data-driven systems", CCS 2017; Yeom, Datta and Fredrikson, "Hunting for
discriminatory proxies in linear regression models", NeurIPS 2018), a candidate is a proxy for
a protected column when it is both

- **associated** with the column: the canonical correlation between the candidate's inputs and
  the column (|Pearson r| for one input and a numeric or 0/1 column; the correlation ratio eta
  for one input and a text column; the multiple correlation R for several inputs and a numeric
  column; the first canonical correlation for several inputs and a text column), shrunk for
  the dimensions fit (Ezekiel's adjustment with k + q - 1 of them: k inputs, q = 1 for a numeric
  column or levels - 1 for a text one), with a Fisher z interval on n - k - q - 1 rows; and
- **influential**: it carries a share of the model's sensitivity (the ranking's share; a
  group's is the sum of its members'), with a Poisson bootstrap interval over rows.

Candidates: every input, every declared group (audit.groups), and the best linear combination
of the inputs not allowed (audit.protected.allow): the direction in the inputs that predicts
the protected column best (the regression of the column on the inputs, or the first canonical
direction for a text column). Its influence is the sensitivity of the score along that
direction relative to the total, both as root-mean-squares (a direction fit at the end can only
be applied to sums): sqrt(u' M u) / sum_j sqrt(M_jj), u the direction in standardized units,
M the mean outer product of the scaled attributions; a point estimate (no bootstrap).

A candidate is flagged (a failed gate) when the LOWER end of both intervals exceeds the limits:
a single input's or a group's flag is beyond noise on both counts. The linear combination's
share has no interval (its point estimate stands in for its lower end) and its association is
maximised over directions, so its flag is weaker evidence. Where the point estimates exceed
both limits but an interval's lower end does not, the candidate is a warning (possibly a proxy,
not shown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from sensaudit.checks.base import Check, CheckResult, Gate, Notice, Ranking
from sensaudit.core.errors import ConfigError, did_you_mean
from sensaudit.core.text_safety import markdown_name
from sensaudit.methods.base import Attributions
from sensaudit.settings.checks import MAX_COMBINED_FEATURES, FeatureGroup, ProtectedSettings
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.accumulators import PoissonBootstrap, finite_rows
from sensaudit.stats.bootstrap_sums import BootstrapMoments, BootstrapSensitivity
from sensaudit.stats.comoments import CoMoments
from sensaudit.stats.normal import normal_quantile

COMBINATION = "(linear combination)"  # the candidate name of the best linear combination
COLUMNS = ["protected", "output", "candidate", "candidate_kind", "measure", "rows",
           "association", "association_low", "association_high", "share", "share_low",
           "share_high", "flagged", "possible", "allowed", "reason", "weights"]


# Bootstrap weights are made for at most this many (replicate, row) pairs at once: 32 MB.
WEIGHT_ELEMENTS = 1 << 22


class WithPoint(PoissonBootstrap):
    """Replicate 0 weighs every row 1 (the point estimate); the Poisson replicates follow, so
    one pass of the bootstrap accumulators gives the estimate and its interval."""

    def __init__(self, samples: int, seed: int):
        super().__init__(samples + 1, seed)

    def weights(self, rows: np.ndarray) -> torch.Tensor:
        """float64 [1 + replicates, len(rows)]."""
        replicates = PoissonBootstrap(self.samples - 1, self.seed).weights(rows)
        return torch.cat([torch.ones(1, len(rows), dtype=torch.float64), replicates])


@dataclass
class _Column:
    """One protected column's sums: the inputs and (numeric) the column, over the rows where
    the column is known and the attributions are finite; per level for a text column."""

    overall: CoMoments
    levels: dict[str, CoMoments]
    text: bool
    missing: int = 0
    # A text column with more levels than audit.protected.max_levels: not judged (a failed
    # gate), and its levels' sums dropped (an id-like column would hold one per row).
    too_many: bool = False

    def merge(self, other: _Column, max_levels: int) -> None:
        self.overall.merge(other.overall)
        self.missing += other.missing
        self.too_many = self.too_many or other.too_many
        for level, moments in other.levels.items():
            if level in self.levels:
                self.levels[level].merge(moments)
            else:
                self.levels[level] = moments
        if self.too_many or len(self.levels) > max_levels:
            self.too_many, self.levels = True, {}


@dataclass
class _Association:
    value: float  # shrunk canonical correlation
    low: float
    high: float
    measure: str
    weights: np.ndarray | None = None  # the direction, standardized, over the inputs used


class ProtectedProxies(Check):
    name = "protected_proxies"
    config_key = "protected"
    Options = ProtectedSettings

    def __init__(self, options: ProtectedSettings, groups: tuple[FeatureGroup, ...]):
        self.options = options
        self.groups = groups
        self.allowed = dict(options.allow)
        self.bootstrap = WithPoint(options.bootstrap_samples, options.seed)
        self.columns: dict[str, _Column] = {}
        # The shares' sums under replicate 0 (every row weighs 1) and the Poisson replicates.
        self.moments: BootstrapMoments | None = None
        self.sensitivity: BootstrapSensitivity | None = None
        self.products: np.ndarray | None = None  # [outputs, features, features] sum a a'
        self.n_features = 0

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> ProtectedProxies | None:
        if settings.protected is None:
            return None
        return cls(settings.protected, settings.groups)

    @classmethod
    def data_columns(cls, settings: AuditSettings) -> tuple[tuple[str, str], ...]:
        if settings.protected is None:
            return ()
        return tuple((name, f"audit.protected.columns[{i}]")
                     for i, name in enumerate(settings.protected.columns))

    @classmethod
    def check_names(cls, settings: AuditSettings, features: tuple[str, ...]) -> None:
        if settings.protected is None:
            return
        names = [*features, *(g.name for g in settings.groups)]
        for name, _ in settings.protected.allow:
            if name not in names:
                raise ConfigError(f"audit.protected.allow.{name}: '{name}' is not an audited "
                                  f"feature or group{did_you_mean(name, names)} "
                                  f"(features: {', '.join(features)})")

    # --- accumulating -----------------------------------------------------------------------

    def update_columns(self, rows: np.ndarray, x: torch.Tensor, attributions: Attributions,
                       columns: Mapping[str, np.ndarray]) -> None:
        f = x.shape[1]
        outputs = attributions.values.shape[1]
        self.n_features = f
        if f > MAX_COMBINED_FEATURES:
            return  # not run (finish says so): the covariance would be [features]^2
        if self.moments is None or self.sensitivity is None:
            self.moments = BootstrapMoments(self.bootstrap, f)
            self.sensitivity = BootstrapSensitivity(self.bootstrap)
            self.products = np.zeros((outputs, f, f))
        keep = finite_rows(attributions.scores, attributions.values).cpu().numpy()
        index = torch.from_numpy(np.flatnonzero(keep))
        values = attributions.values[index.to(attributions.values.device)].detach().to(
            "cpu", torch.float64)
        xs = x[index.to(x.device)].detach().to("cpu", torch.float64)
        kept_rows = rows[keep]
        everywhere = torch.ones(len(kept_rows), dtype=torch.bool)
        block = max(1, WEIGHT_ELEMENTS // self.bootstrap.samples)  # weights [samples, block]
        for start in range(0, len(kept_rows), block):
            part = slice(start, start + block)
            weights = self.bootstrap.weights(kept_rows[part])
            self.moments.update(kept_rows[part], xs[part], weights)
            self.sensitivity.update(weights, values[part], everywhere[part])
        if self.products is not None:
            v = values.numpy()
            for o in range(outputs):  # one BLAS product per output
                self.products[o] += v[:, o].T @ v[:, o]
        xn = xs.numpy()
        for name, column in columns.items():
            self._add(name, xn, column[keep])

    def _add(self, name: str, x: np.ndarray, column: np.ndarray) -> None:
        text = column.dtype == object
        if name not in self.columns:
            width = x.shape[1] + (0 if text else 1)
            self.columns[name] = _Column(CoMoments(width), {}, text)
        state = self.columns[name]
        if text:
            known = ~pd.isna(column)
            state.missing += int((~known).sum())
            x, column = x[known], column[known]
            state.overall.update(x)
            found, codes = np.unique(column.astype(str), return_inverse=True)
            if len(set(state.levels) | set(found.tolist())) > self.options.max_levels:
                state.too_many, state.levels = True, {}
            if state.too_many:
                return
            for i, level in enumerate(found.tolist()):
                if level not in state.levels:
                    state.levels[level] = CoMoments(x.shape[1], scatter=False)
                state.levels[level].update(x[codes == i])
        else:
            known = np.isfinite(column)
            state.missing += int((~known).sum())
            state.overall.update(np.concatenate([x[known], column[known, None]], 1))

    def merge(self, other: Check) -> None:
        if not isinstance(other, ProtectedProxies):
            raise TypeError(f"cannot merge a {type(other).__name__} into ProtectedProxies")
        self.n_features = max(self.n_features, other.n_features)
        if other.moments is not None and other.sensitivity is not None:
            if self.moments is None or self.sensitivity is None:
                self.moments, self.sensitivity = other.moments, other.sensitivity
                self.products = other.products
            else:
                self.moments.merge(other.moments)
                self.sensitivity.merge(other.sensitivity)
                if self.products is not None and other.products is not None:
                    self.products = self.products + other.products
        for name, column in other.columns.items():
            if name in self.columns:
                self.columns[name].merge(column, self.options.max_levels)
            else:
                self.columns[name] = column

    # --- judging ----------------------------------------------------------------------------

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        opts = self.options
        status: dict[str, str] = {}
        frames = []
        if self.n_features > MAX_COMBINED_FEATURES:
            status = {name: f"not judged: {self.n_features:,} inputs, more than "
                            f"{MAX_COMBINED_FEATURES} (the check keeps their covariance)"
                      for name in opts.columns}
        else:
            share = self._shares(ranking)
            for name in opts.columns:
                frame, status[name] = self._judge(name, ranking, share)
                if frame is not None:
                    frames.append(frame)
        table = (pd.concat(frames, ignore_index=True) if frames
                 else pd.DataFrame({c: [] for c in COLUMNS}))
        multi = len(ranking.outputs) > 1
        for r in table[table["flagged"]].itertuples():
            details = _record(r)
            result.gates.append(Gate(check=self.name, subject=r.candidate, output=r.output,
                                     passed=False, limit=self._limit(r.protected),
                                     details=details))
            where = f" for output '{r.output}'" if multi else ""
            result.findings.append(
                f"**{r.candidate}** stands in for the protected column '{r.protected}'{where}: "
                + "; ".join(details["reasons"]) + ". If the model may use it, allow it with a "
                "reason (audit.protected.allow); otherwise remove it or its tie to "
                f"'{r.protected}' and retrain.")
        for r in table[table["possible"]].itertuples():
            result.warnings.append(Notice(check=self.name, subject=r.candidate, output=r.output,
                                          details=_record(r)))
        # A protected column with no proxy passes one gate per output: the check ran on it.
        for name in opts.columns:
            for output in ranking.outputs:
                rows = table[(table["protected"] == name) & (table["output"] == output)]
                if status.get(name, "").startswith("ran") and not rows["flagged"].any():
                    result.gates.append(Gate(
                        check=self.name, subject=f"proxies for {name}", output=output,
                        passed=True, limit=self._limit(name),
                        details={"candidates": len(rows)}))
        # A protected column that cannot be judged is not passed: the audit asked for it.
        for name, why in status.items():
            if why.startswith("not judged"):
                limit = (f"at most {MAX_COMBINED_FEATURES} inputs" if "inputs" in why else
                         f"a text protected column of at most {opts.max_levels} levels "
                         "(audit.protected.max_levels)")
                result.gates.append(Gate(
                    check=self.name, subject=f"proxies for {name}", output=ranking.outputs[0],
                    passed=False, limit=limit, details={"reasons": [f"'{name}' {why}"]}))
        not_run = {k: v for k, v in status.items() if not v.startswith("ran")}
        if not_run:
            result.notes.append("Protected proxies: " + "; ".join(
                f"'{k}' {v}" for k, v in not_run.items()) + ".")
        result.tables["protected_proxies.csv"] = table
        result.summary["protected_proxies"] = [_record(r) for r in
                                               table[table["flagged"]].itertuples()]
        result.summary["protected_columns"] = status
        result.summary["protected_limits"] = {"max_association": opts.max_association,
                                              "max_share": opts.max_share,
                                              "confidence": opts.confidence}
        result.sections["Proxies for protected attributes"] = self._section(table, status)
        return result

    def _shares(self, ranking: Ranking) -> list[np.ndarray]:
        """Per output, [samples + 1, features] shares (replicate 0 the point estimate)."""
        if self.moments is None or self.sensitivity is None:
            return []
        found = self.sensitivity.shares(self.moments.std if ranking.per_unit else None)
        return [found[:, o].numpy() for o in range(found.shape[1])]

    def _judge(self, name: str, ranking: Ranking, share: list[np.ndarray]
               ) -> tuple[pd.DataFrame | None, str]:
        state = self.columns.get(name)
        if state is not None and state.too_many:
            return None, (f"not judged: more than {self.options.max_levels} distinct values "
                          "for a text column (audit.protected.max_levels)")
        if state is None or state.overall.rows == 0:
            return None, "not run: no row has a value in this column"
        f = len(ranking.features)
        n = state.overall.rows
        scatter = state.overall.scatter
        if scatter is None:
            raise RuntimeError("protected proxies: the overall sums keep their scatter")
        txx = scatter[:f, :f]
        if state.text:
            if len(state.levels) < 2:
                return None, f"not run: one level on {n:,} rows"
            between = np.zeros((f, f))
            for level in state.levels.values():
                d = level.mean - state.overall.mean
                between += level.rows * np.outer(d, d)
            q = len(state.levels) - 1
            kind = f"text, {len(state.levels)} levels"
        else:
            if not scatter[f, f] > 0:
                return None, f"not run: the column does not vary on {n:,} rows"
            between = None
            q = 1
            kind = "numeric"
        confidence = self.options.confidence
        z = normal_quantile((1 + confidence) / 2)
        members = {g.name: [ranking.features.index(c) for c in g.columns] for g in self.groups}
        candidates = [(feature, "input", [j]) for j, feature in enumerate(ranking.features)]
        candidates += [(g.name, "group", members[g.name]) for g in self.groups]
        blocked = {j for name_ in self.allowed for j in members.get(name_, [])} | {
            j for j, feature in enumerate(ranking.features) if feature in self.allowed}
        free = [j for j in range(f) if j not in blocked]
        if len(free) >= 2:
            candidates.append((COMBINATION, "combination", free))
        rows = []
        for candidate, candidate_kind, index in candidates:
            found = _associate(txx, scatter, between, index, n, q, z, state.text)
            if found is None:
                continue
            for o, output in enumerate(ranking.outputs):
                if candidate_kind == "combination":
                    point = low = high = self._direction_share(o, index, found, ranking)
                else:
                    per_replicate = share[o][:, index].sum(1)
                    point = float(per_replicate[0])
                    low, high = _interval(per_replicate, confidence)
                rows.append(self._row(name, output, candidate, candidate_kind, n, found, point,
                                      low, high, ranking.features, index))
        if not rows:
            return None, f"not run: {n:,} rows are too few for any candidate"
        missing = f", {state.missing:,} without a value left out" if state.missing else ""
        return pd.DataFrame(rows, columns=COLUMNS), f"ran on {n:,} rows ({kind}{missing})"

    def _direction_share(self, o: int, index: list[int], found: _Association,
                         ranking: Ranking) -> float:
        """The RMS sensitivity along the combination's standardized direction over the summed
        RMS sensitivities of every input (see the module's docstring)."""
        if self.products is None or found.weights is None:
            return math.nan
        if self.moments is None:
            return math.nan
        products = self.products[o] / max(float(self.moments.w[0, 0]), 1.0)
        if ranking.per_unit:  # scaled as the shares are: by the std over the same rows
            sd = self.moments.std[0].numpy()
            products = products * np.outer(sd, sd)
        total = float(np.sqrt(np.clip(np.diag(products), 0, None)).sum())
        if total <= 0:
            return 0.0
        u = found.weights
        along = float(u @ products[np.ix_(index, index)] @ u)
        return min(1.0, math.sqrt(max(along, 0.0)) / total)

    def _row(self, name: str, output: str, candidate: str, candidate_kind: str, n: int,
             found: _Association, point: float, low: float, high: float,
             features: list[str], index: list[int]) -> dict[str, Any]:
        opts = self.options
        over = found.low > opts.max_association and low > opts.max_share
        maybe = found.value > opts.max_association and point > opts.max_share
        allowed = candidate in self.allowed
        weights = ""
        if found.weights is not None and candidate_kind != "input":
            # Ties (a one-hot pair's opposite weights) in input order, whatever the rounding.
            order = np.argsort(-np.round(np.abs(found.weights), 9), kind="stable")[:5]
            weights = ", ".join(f"{features[index[k]]} {found.weights[k]:+.2f}" for k in order)
        return {"protected": name, "output": output, "candidate": candidate,
                "candidate_kind": candidate_kind, "measure": found.measure, "rows": n,
                "association": found.value, "association_low": found.low,
                "association_high": found.high, "share": point, "share_low": low,
                "share_high": high, "flagged": over and not allowed,
                "possible": maybe and not over and not allowed, "allowed": allowed,
                "reason": self.allowed.get(candidate, ""), "weights": weights}

    def _limit(self, protected: str) -> str:
        opts = self.options
        return (f"association with '{protected}' at most {opts.max_association:.2f} or share "
                f"at most {opts.max_share:.0%}, on the intervals' lower ends (audit.protected)")

    def _section(self, table: pd.DataFrame, status: dict[str, str]) -> list[str]:
        opts = self.options
        lines = [f"Inputs, groups and the best linear combination of inputs associated with a "
                 f"protected column beyond {opts.max_association:.2f} (canonical correlation) "
                 f"that also carry more than {opts.max_share:.0%} of the sensitivity, both on "
                 f"the lower end of their {opts.confidence:.0%} intervals "
                 "(docs/checks/protected_proxies.md).",
                 ""]
        lines += [f"- {markdown_name(k)}: {v}" for k, v in status.items()]
        lines.append("")
        shown = table[table["flagged"] | table["possible"] | table["allowed"]
                      | (table["candidate_kind"] == "combination")
                      | (table["association_low"] > opts.max_association)] if len(table) \
            else table
        if shown.empty:
            lines.append("No candidate is associated with a protected column beyond the limit.")
            return lines
        lines += ["| protected | candidate | output | association | share | verdict |",
                  "|---|---|---|---:|---:|---|"]
        for r in shown.itertuples():
            verdict = ("**proxy**" if r.flagged else "allowed: " + r.reason if r.allowed
                       else "possible (not beyond noise)" if r.possible else "not a proxy")
            share = (f"{r.share:.1%}" if r.candidate_kind == "combination"
                     else f"{r.share:.1%} ({r.share_low:.1%} to {r.share_high:.1%})")
            lines.append(f"| {markdown_name(r.protected)} | {markdown_name(r.candidate)} | "
                         f"{markdown_name(r.output)} | {r.association:.2f} "
                         f"({r.association_low:.2f} to {r.association_high:.2f}) | {share} | "
                         f"{verdict} |")
        return lines


def _associate(txx: np.ndarray, scatter: np.ndarray, between: np.ndarray | None,
               index: list[int], n: int, q: int, z: float, text: bool) -> _Association | None:
    """The shrunk canonical correlation of the inputs ``index`` with the protected column, its
    Fisher z interval and direction; None when the rows are too few for it."""
    tg = txx[np.ix_(index, index)]
    values, vectors = np.linalg.eigh(tg)
    usable = values > 1e-10 * max(float(values.max()), 1e-300)
    k = int(usable.sum())
    if k == 0:
        return None
    dof = n - k - q - 1  # rows less the dimensions fit, less one for the mean
    if dof < 2:
        return None
    whiten = vectors[:, usable] / np.sqrt(values[usable])  # W' T W = I
    if text:
        if between is None:
            raise RuntimeError("a text column's association needs its between-level scatter")
        inner = whiten.T @ between[np.ix_(index, index)] @ whiten
        eig, directions = np.linalg.eigh(inner)
        squared = float(eig[-1])
        weights = whiten @ directions[:, -1]
    else:
        f = txx.shape[0]
        cross = scatter[index, f]
        projected = whiten.T @ cross
        squared = float(projected @ projected) / float(scatter[f, f])
        weights = whiten @ projected
    squared = min(max(squared, 0.0), 1.0)
    m = k + q - 1
    shrunk = max(0.0, 1 - (1 - squared) * (n - 1) / (n - m - 1))
    value = math.sqrt(shrunk)
    centre = math.atanh(min(value, 1 - 1e-12))
    spread = z / math.sqrt(dof)  # n - 3 for one input and a numeric column: Fisher's
    sd = np.sqrt(np.clip(np.diag(tg), 0, None))
    standardized = weights * sd
    norm = float(np.linalg.norm(standardized))
    measure = (("eta" if len(index) == 1 else "canonical correlation") if text
               else ("|Pearson r|" if len(index) == 1 else "multiple correlation R"))
    if norm > 0:  # an eigenvector's sign is arbitrary: the largest weight is positive
        standardized = standardized / norm
        standardized *= 1.0 if standardized[np.argmax(np.round(np.abs(standardized), 9))] >= 0 \
            else -1.0
    return _Association(value=value, low=max(0.0, math.tanh(centre - spread)),
                        high=min(1.0, math.tanh(centre + spread)), measure=measure,
                        weights=standardized if norm > 0 else None)


def _interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if len(replicates) < 2:
        return float(replicates[0]), float(replicates[0])
    low = float(np.quantile(replicates[1:], (1 - confidence) / 2))
    high = float(np.quantile(replicates[1:], (1 + confidence) / 2))
    return low, high


def _record(r: Any) -> dict[str, Any]:
    """A candidate as summary.json and the gate list it: reasons, then the figures."""
    reasons = [f"associated with '{r.protected}' by {r.measure} {r.association:.2f} (interval "
               f"{r.association_low:.2f} to {r.association_high:.2f}, on {r.rows:,} rows)",
               (f"{r.share:.1%} of the sensitivity along it"
                if r.candidate_kind == "combination" else
                f"{r.share:.1%} of the sensitivity (interval {r.share_low:.1%} to "
                f"{r.share_high:.1%})")]
    if r.weights:
        reasons.append(f"weights {r.weights}")
    record: dict[str, Any] = {"feature": r.candidate, "output": r.output,
                              "protected": r.protected, "kind": r.candidate_kind,
                              "reasons": reasons}
    for key in ("association", "association_low", "association_high", "share", "share_low",
                "share_high"):
        value = float(getattr(r, key))
        record[key] = value if math.isfinite(value) else None
    return record
