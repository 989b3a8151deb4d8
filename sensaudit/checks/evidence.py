"""Mergeable accumulators of the suspected-proxies check (checks/suspects.py). No I/O.

- :class:`GroupedMoments`: per group of rows (misscored or not; or a bin of the error), the
  weighted sums of the features, their squares and the absolute attributions, under the point
  weights (every row 1) and the Poisson bootstrap's weights. Shares on any union of groups, with
  intervals, follow at the end.
- :class:`LabelGram`: the Gram matrix of each row's basis [1, x, x^2, y], from which an additive
  ridge fit of the label on every standardized feature and its square says how much the labels
  support each feature on the audited rows.

Both are sums keyed by nothing but the row (its values and its row number), so any split of the
rows merges to the single-pass answer (tests/test_suspects.py checks each on random partitions).
Sums are of values centred on a shift (the first chunk's mean) so float64 keeps its precision;
merging and finishing move them to another centre exactly (the basis is polynomial in x).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from sensaudit.settings.sections import MisscoredRule
from sensaudit.stats.accumulators import PoissonBootstrap

# Rows per block of bootstrap weights: [samples + 1, block] float64 stays a few MB.
BLOCK_ROWS = 8192
# top_error_quantile bins |error| by 1/8 of a power of two (9% wide): the misscored rows
# are the bins above the boundary closest to the quantile, so their fraction is the
# requested one to within the mass of one bin (the report states the fraction it used).
ERROR_BINS_PER_OCTAVE = 8
ZERO_ERROR_KEY = -(2**40)  # |error| == 0 exactly: below every other bin
# A row's group key holds what every reading the end may settle on needs. Its low TAG_BITS tag
# the label: for a 0/1 label the end judges in the label's units (the class for a decision; the
# probability sigmoid(score) when the scores are logits), which only the whole audit can tell
# (every label 0/1? any score outside [0, 1]?), so each row keeps both readings' facts.
TAG_BITS = 3
TAGS = 1 << TAG_BITS
REST = -1  # a key no row has: the rest when every row is misscored
JUDGED = TAGS - 1  # threshold in (0, 1]: the key is misscored or not, for every label


def _sigmoid(scores: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        # numpy's stubs type arithmetic on a bare ndarray as Any: the annotation says the type.
        probability: np.ndarray = 1.0 / (1.0 + np.exp(-scores))
    return probability


def misscored_keys(scores: np.ndarray, labels: np.ndarray, rule: MisscoredRule) -> np.ndarray:
    """int64 [rows] group keys for finite scores and labels [rows], grouped at the end by
    :func:`misscored_groups`.

    - ``threshold``: the decision (score >= value) and a tag: 0/1 a label that is not 0 or 1,
      below / at or above value; 2/3 a 0/1 label (its class). For a value in (0, 1], where a
      0/1 label's side is its class, whether the row is misscored, tagged JUDGED.
    - ``abs_error_above``: |score - label| > value, and a tag: 0 a label that is not 0 or 1;
      1/2 a 0/1 label with |sigmoid(score) - label| within / over value.
    - ``top_error_quantile``: the |score - label| bin (1/8 of an octave) and a tag: 0 a label
      that is not 0 or 1; 1 + 2 x label + (score > label) for a 0/1 label, so each key is an
      interval of scores on which |sigmoid(score) - label| is monotone.
    """
    binary = (labels == 0) | (labels == 1)
    y = np.where(binary, labels, 0).astype(np.int64)
    if rule.kind == "threshold":
        decision = (scores >= rule.value).astype(np.int64)
        side = (labels >= rule.value).astype(np.int64)
        if 0 < rule.value <= 1:  # a 0/1 label's side is its class already: judged here
            judged: np.ndarray = (decision != side).astype(np.int64) * TAGS + JUDGED
            return judged
        return decision * TAGS + np.where(binary, 2 + y, side)
    error = np.abs(scores - labels)
    if rule.kind == "abs_error_above":
        wrong = (error > rule.value).astype(np.int64)
        on_probability = np.abs(_sigmoid(scores) - labels) > rule.value
        by_error: np.ndarray = wrong * TAGS + np.where(binary, 1 + on_probability.astype(np.int64),
                                                       0)
        return by_error
    with np.errstate(divide="ignore"):
        bins = np.floor(np.log2(error) * ERROR_BINS_PER_OCTAVE)
    bins = np.where(error > 0, bins, ZERO_ERROR_KEY).astype(np.int64)
    return bins * TAGS + np.where(binary, 1 + 2 * y + (scores > labels), 0)


def binary_labels(counts: dict[int, float], rule: MisscoredRule) -> bool:
    """Every row's label was 0 or 1 (read from the keys' tags)."""
    other = {0, 1, JUDGED} if rule.kind == "threshold" else {0}
    return bool(counts) and not any(key % TAGS in other for key in counts)


def describe_rule(rule: MisscoredRule, on_probability: bool = False,
                  binary: bool = False) -> str:
    score = "sigmoid(score)" if on_probability else "score"
    if rule.kind == "abs_error_above":
        return f"|{score} - label| > {rule.value:g}"
    if rule.kind == "threshold":
        if binary and not 0 < rule.value <= 1:  # within (0, 1] the label's side is its class
            return f"the decision score >= {rule.value:g} against the 0/1 label"
        return f"score and label on different sides of {rule.value:g}"
    return f"the top {rule.value:.0%} of |{score} - label|"


def misscored_groups(counts: dict[int, float], rule: MisscoredRule, on_probability: bool
                     ) -> tuple[set[int], float] | None:
    """The keys of the misscored rows' groups and their fraction of the rows; None when the
    rule cannot split the rows (every row in one error bin).

    ``on_probability``: every label is 0 or 1 and the scores are logits, so the error is
    judged on sigmoid(score). A 0/1 label's side of a ``threshold`` is its class whatever the
    scale (the decision score >= value against label 1), as long as every label is 0 or 1.
    """
    total = sum(counts.values())
    if total <= 0:
        return None
    if rule.kind == "threshold":
        binary = binary_labels(counts, rule)

        def wrong(key: int) -> bool:
            decision, tag = divmod(key, TAGS)
            return bool(decision) if tag == JUDGED else bool(decision) != positive(tag)

        def positive(tag: int) -> bool:
            if binary:
                return tag == 3
            return tag == 1 or (tag == 3 and 1 >= rule.value) or (tag == 2 and 0 >= rule.value)

        chosen = {k for k in counts if wrong(k)}
    elif rule.kind == "abs_error_above":
        chosen = {k for k in counts if (k % TAGS == 2 if on_probability else k // TAGS == 1)}
    else:
        return _top_groups(counts, rule.value, on_probability)
    return chosen, sum(counts[k] for k in chosen) / total


def _top_groups(counts: dict[int, float], fraction: float, on_probability: bool
                ) -> tuple[set[int], float] | None:
    if not on_probability:  # the error bins, whatever the tags
        bins: dict[int, float] = {}
        for key, count in counts.items():
            bins[key // TAGS] = bins.get(key // TAGS, 0.0) + count
        top = top_bins(bins, fraction)
        if top is None:
            return None
        return {k for k in counts if k // TAGS in top[0]}, top[1]
    # Each key is an interval of scores of one label: ordered by |sigmoid(score) - label| at
    # its bin's geometric middle (the bins are 9% wide in |score - label|).
    def error(key: int) -> float:
        bin_, tag = divmod(key, TAGS)
        y, above = divmod(tag - 1, 2)
        gap = 0.0 if bin_ == ZERO_ERROR_KEY else 2.0 ** ((bin_ + 0.5) / ERROR_BINS_PER_OCTAVE)
        return float(abs(_sigmoid(np.array(y + (gap if above else -gap))) - y))

    keys = sorted(counts, key=lambda k: (-error(k), k))
    if len(keys) < 2:
        return None
    total = sum(counts.values())
    cumulative = np.cumsum([counts[k] for k in keys])[:-1] / total
    best = int(np.argmin(np.abs(cumulative - fraction)))
    return set(keys[: best + 1]), float(cumulative[best])


def top_bins(counts: dict[int, float], fraction: float) -> tuple[set[int], float] | None:
    """The highest error bins holding the fraction of rows closest to ``fraction`` (at least
    one row in each side), and that fraction; None when every row is in one bin."""
    keys = sorted(counts, reverse=True)
    total = sum(counts.values())
    if len(keys) < 2 or total <= 0:
        return None
    cumulative = np.cumsum([counts[k] for k in keys])[:-1] / total  # leave one bin for the rest
    best = int(np.argmin(np.abs(cumulative - fraction)))
    return set(keys[: best + 1]), float(cumulative[best])


class GroupedMoments:
    """Per group key: [samples + 1, 1 + 3 * features] sums of w, w (x - c), w (x - c)^2 and
    w |a|, replicate 0 with every weight 1 (the point estimate), the others the bootstrap's."""

    def __init__(self, bootstrap: PoissonBootstrap, n_features: int):
        self.bootstrap = bootstrap
        self.n_features = n_features
        self.shift: np.ndarray | None = None
        self.groups: dict[int, np.ndarray] = {}

    def update(self, rows: np.ndarray, keys: np.ndarray, x: torch.Tensor,
               abs_values: torch.Tensor) -> None:
        """rows: int [rows]; keys: int [rows]; x, abs_values: float [rows, features]."""
        if not len(rows):
            return
        xs = x.detach().to("cpu", torch.float64).numpy()
        if self.shift is None:
            self.shift = xs.mean(0)
        centred = xs - self.shift
        block = np.concatenate([np.ones((len(rows), 1)), centred, centred**2,
                                abs_values.detach().to("cpu", torch.float64).numpy()], 1)
        # Rows sorted by key: each group is one contiguous slice, one matrix product (numpy:
        # many small products, where torch's thread start-up would cost more than the work).
        order = np.argsort(keys, kind="stable")
        keys, rows, block = keys[order], rows[order], block[order]
        for start in range(0, len(rows), BLOCK_ROWS):
            part = slice(start, start + BLOCK_ROWS)
            weights = self.bootstrap.weights(rows[part]).numpy()  # [samples, block]
            transposed = np.concatenate([np.ones((weights.shape[1], 1)), weights.T], 1)
            values, part_keys = block[part], keys[part]
            bounds = np.flatnonzero(np.diff(part_keys)) + 1
            for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), len(part_keys)], strict=True):
                self._add(int(part_keys[a]), transposed[a:b].T @ values[a:b])

    def merge(self, other: GroupedMoments) -> None:
        if other.shift is None:
            return
        if self.shift is None:
            self.shift = other.shift
        d = other.shift - self.shift
        for key, sums in other.groups.items():
            self._add(key, _recentre(sums, d, self.n_features))

    def _add(self, key: int, sums: np.ndarray) -> None:
        if key in self.groups:
            self.groups[key] = self.groups[key] + sums
        else:
            self.groups[key] = sums.copy()

    def counts(self) -> dict[int, float]:
        """Rows per group key (the point weights)."""
        return {key: float(sums[0, 0]) for key, sums in self.groups.items()}

    def scaled(self, keys: Iterable[int], per_unit: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of these groups: their count [samples + 1] and each feature's scaled
        sensitivity [samples + 1, features] (std over those rows x mean |a| when ``per_unit``,
        else mean |a|), replicate 0 being the point estimate."""
        f = self.n_features
        picked = [self.groups[k] for k in keys if k in self.groups]
        if not picked:
            return torch.zeros(1), torch.zeros(1, f)
        sums = torch.from_numpy(np.sum(picked, axis=0))
        w = sums[:, :1]
        s1, s2, sa = sums[:, 1 : 1 + f], sums[:, 1 + f : 1 + 2 * f], sums[:, 1 + 2 * f :]
        mean_abs = sa / w.clamp_min(1)
        if not per_unit:
            return w[:, 0], mean_abs
        var = (s2 - s1**2 / w.clamp_min(1)) / (w - 1).clamp_min(1)
        return w[:, 0], var.clamp_min(0).sqrt() * mean_abs


def _recentre(sums: np.ndarray, d: np.ndarray, f: int) -> np.ndarray:
    """Sums around centre a moved to centre c, d = a - c: sum w(x-c) = s1 + w d and
    sum w(x-c)^2 = s2 + 2 d s1 + w d^2 (|a| sums do not depend on the centre)."""
    w, s1, s2 = sums[:, :1], sums[:, 1 : 1 + f], sums[:, 1 + f : 1 + 2 * f]
    return np.concatenate([w, s1 + w * d, s2 + 2 * d * s1 + w * d**2, sums[:, 1 + 2 * f :]], 1)


def shares(scaled: torch.Tensor) -> torch.Tensor:
    """[samples, features] scaled sensitivities -> shares (rows summing to 1, zeros stay 0)."""
    total = scaled.sum(1, keepdim=True)
    return torch.where(total > 0, scaled / total.clamp_min(1e-300), torch.zeros_like(scaled))


# --- the label's support: an additive ridge fit -----------------------------------------------


class LabelGram:
    """Sum of b b' over rows with b = [1, x - c, (x - c)^2, y - c_y] (float64, [2F + 2]^2)."""

    def __init__(self, n_features: int):
        self.n_features = n_features
        self.shift: torch.Tensor | None = None  # [F + 1]: the features' centre, then the label's
        self.gram = torch.zeros(2 * n_features + 2, 2 * n_features + 2, dtype=torch.float64)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x: float [rows, features]; y: float [rows] (finite)."""
        if not len(y):
            return
        xy = torch.cat([x.detach().to("cpu", torch.float64),
                        y.detach().to("cpu", torch.float64)[:, None]], 1)
        if self.shift is None:
            self.shift = xy.mean(0)
        basis = _basis(xy - self.shift, self.n_features)
        self.gram += basis.T @ basis

    def merge(self, other: LabelGram) -> None:
        if other.shift is None:
            return
        if self.shift is None:
            self.shift = other.shift
        t = _rebase(other.shift - self.shift, self.n_features)
        self.gram += t @ other.gram @ t.T

    @property
    def rows(self) -> int:
        return int(round(float(self.gram[0, 0])))

    def centred(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gram matrix moved to centre on the exact means (so the fit does not depend on
        which chunk came first), and the means [F + 1]."""
        if self.shift is None:  # set by the first update
            raise RuntimeError("evidence: no rows were accumulated")
        n = self.gram[0, 0]
        f = self.n_features
        first = self.gram[0, 1:] / n  # means of (x - c), (x - c)^2, y - c_y
        offset = torch.cat([first[:f], first[2 * f : 2 * f + 1]])  # mean - shift
        t = _rebase(-offset, f)
        return t @ self.gram @ t.T, self.shift + offset


def _basis(centred: torch.Tensor, f: int) -> torch.Tensor:
    """[rows, F + 1] centred (x, y) -> [rows, 2F + 2] basis [1, x, x^2, y]."""
    x, y = centred[:, :f], centred[:, f:]
    return torch.cat([torch.ones_like(y), x, x**2, y], 1)


def _rebase(d: torch.Tensor, f: int) -> torch.Tensor:
    """T with basis around centre c = T @ basis around centre a, for d = a - c ([F + 1]):
    x - c = (x - a) + d and (x - c)^2 = (x - a)^2 + 2 d (x - a) + d^2."""
    size = 2 * f + 2
    t = torch.eye(size, dtype=torch.float64)
    dx, dy = d[:f], d[f]
    idx = torch.arange(f)
    t[1 + idx, 0] = dx
    t[1 + f + idx, 0] = dx**2
    t[1 + f + idx, 1 + idx] = 2 * dx
    t[size - 1, 0] = dy
    return t


@dataclass
class Evidence:
    """Per feature, how much the label's additive fit on the audit rows leans on it.

    ``support``: the std of the feature's fitted part (linear + square term, label stds),
    less its expected size under no relation at all; ``noise``: that expected size (the
    spread a feature unrelated to the label shows); shares divide by the summed support.
    """

    support: np.ndarray  # [features]
    noise: np.ndarray  # [features]
    rows: int

    @property
    def share(self) -> np.ndarray:
        total = self.support.sum()
        return self.support / total if total > 0 else np.zeros_like(self.support)

    def share_high(self, z: float) -> np.ndarray:
        """An upper bound of each share: support + z x noise over the summed support."""
        total = self.support.sum()
        if total <= 0:
            return np.ones_like(self.support)
        high: np.ndarray = np.minimum(1.0, (self.support + z * self.noise) / total)
        return high

    def share_low(self, z: float) -> np.ndarray:
        """A lower bound of each share: support - z x noise (at least 0) over the summed
        support. Above 0, the label's fit shows the feature carries information about the
        label on these rows."""
        total = self.support.sum()
        if total <= 0:
            return np.zeros_like(self.support)
        low: np.ndarray = np.maximum(0.0, self.support - z * self.noise) / total
        return low


def additive_evidence(gram: LabelGram, ridge: float) -> Evidence | None:
    """The additive ridge fit of the standardized label on every standardized feature and
    its square, from the Gram matrix alone. None when it cannot be fit: fewer rows than
    twice the features plus 3, or a label that does not vary."""
    f = gram.n_features
    n = gram.rows
    if gram.shift is None or n < 2 * f + 3:
        return None
    centred, _ = gram.centred()
    cov = (centred[1:, 1:] - torch.outer(centred[0, 1:], centred[0, 1:]) / n) / (n - 1)
    sd = cov.diagonal().clamp_min(0).sqrt()
    if not bool(sd[-1] > 0):
        return None
    # A constant feature's columns are left out. The square of a 0/1 feature is collinear with
    # it but kept: the ridge splits the weight and the feature's part is their sum.
    usable = sd[:-1] > 1e-12 * sd[:-1].max().clamp_min(1e-300)
    keep = usable.nonzero().flatten()
    corr = cov / torch.outer(sd, sd).clamp_min(1e-300)
    r = corr[keep][:, keep]
    c = corr[keep, -1]
    a = r + ridge * torch.eye(len(keep), dtype=torch.float64)
    a_inv = torch.linalg.inv(a)
    beta_kept = a_inv @ c
    resid = float(1 - 2 * beta_kept @ c + beta_kept @ r @ beta_kept)
    dof = max(n - 1 - len(keep), 1)
    # Standardized columns: X'X = (n - 1) R, so Cov(beta) = s^2 / (n - 1) A^-1 R A^-1 with the
    # residual variance s^2 = resid (n - 1) / dof.
    covariance_kept = max(resid, 0.0) / dof * (a_inv @ r @ a_inv)
    beta = torch.zeros(2 * f, dtype=torch.float64)
    beta[keep] = beta_kept
    cov_beta = torch.zeros(2 * f, 2 * f, dtype=torch.float64)
    cov_beta[keep[:, None], keep[None, :]] = covariance_kept
    support, noise = np.zeros(f), np.zeros(f)
    for j in range(f):
        part = torch.tensor([j, f + j])
        cj = corr[part][:, part] * torch.outer(usable[part], usable[part]).double()
        bj = beta[part]
        size = float(bj @ cj @ bj)
        expected = float((cj @ cov_beta[part][:, part]).trace())
        support[j] = math.sqrt(max(size - expected, 0.0))
        noise[j] = math.sqrt(max(expected, 0.0))
    return Evidence(support=support, noise=noise, rows=n)
