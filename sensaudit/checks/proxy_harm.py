"""Is the model better on the audited rows without a feature? The confirmation a suspected
proxy needs before it is flagged (:mod:`sensaudit.checks.suspects`).

A proxy helped in training and does not help here: on the audited rows the label does not follow
it, so whatever the model does with it only adds error. Averaging the feature's effect out, the
model's score on row i becomes the mean of f(x_i with x_ij set to v) over the feature's own
values v (its distribution on the audited rows; exactly when it has at most ``LEVELS`` distinct
values, else at ``LEVELS`` of its values at equally spaced quantiles). Logit scores against a
0/1 label are averaged as probabilities, sigmoid(f). For a feature independent of the label and
of the other inputs, that average never has a larger expected loss than f (the squared error is
convex in the averaged quantity: Jensen), and a smaller one whenever f depends on it. A feature
that helps raises the loss when averaged out.

A feature the other inputs predict (compactness error and concavity error in breast-cancer
data: R^2 0.9 and more) set to its values alone makes rows unlike any in the data, where a model
may do anything: averaging whole features out confirmed genuine, tied features as proxies in 4
of 312 benchmark runs (and 19 to 31 of 312 when every feature was tested). So what is averaged
out is the feature's own part: x_ij = t_i + r_ij, with t_i the part a least-squares fit on the
other inputs predicts (shrunk by the fit's adjusted R^2 over its R^2, so on few rows a chance
fit moves nothing) and r the rest, averaged over its levels as above (:func:`own_part`). For a
feature independent of the others t is about 0 and this is the whole-feature average; for a
tied one it asks whether the model does better without what the feature adds to the others,
which is what a proxy's harm is. Features of at most ``LEVELS`` values keep the whole-feature
average (their values are codes a model may index by).

The test: per sampled row, d_i = loss(averaged score) - loss(score); the feature is confirmed
as a proxy when the mean of d is below 0 beyond chance: one-sided, at ``level`` divided by the
number of features tested (Bonferroni), on the normal approximation of the mean (the sample has
tens of rows at least; the t quantile differs by under 2% from 30 rows up). So a feature whose
presence lowers the model's expected loss on the audited population is confirmed with a
probability of about ``level`` at most. About: the candidates were picked on the audited rows,
which include these sampled rows when the audit is small, and the mean's normal approximation is
loose for skewed changes on few rows; the level is nominal, and the discovery benchmark
measures what it gives.

The loss: squared error in the label's units; for a 0/1 label, on the probability (the score
itself when it is one, sigmoid(score) when the scores are logits), the Brier score.

When the test does not confirm a candidate, that may say more about the rows than about the
feature: on few rows, or rows the model scores so surely that the feature moves few of them, no
test can tell. So each test states its power against a pure proxy. With c_i the feature's
effect on row i (the score less its averaged-out score) and p-bar the averaged-out score,
d_i = 2 c_i (y_i - p-bar_i) - c_i^2 exactly (squared loss). For a pure proxy, a feature whose
own part is independent of the label and of the other inputs on these rows, c_i has mean 0
given the rest of the row and the label, so the first term has mean 0 and the mean of d is
-mean(c^2), which the rows measure. The power is the
chance that the test confirms a mean fall of that size, with the spread of d the rows show, on
the same normal approximation; below ``POWER`` the audit says it cannot judge the candidate
rather than clearing it. On the discovery benchmark the stated power matched the rate at which
planted columns were confirmed where the rows are many, and ran high on 89 rows that the model
scores almost surely (docs/checks/suspects.md): a high figure errs towards clearing, so on
such rows a cleared candidate had a weaker test than it says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sensaudit.core.jacobian import Model, as_output_matrix
from sensaudit.stats.normal import normal_cdf, normal_quantile
from sensaudit.stats.row_sample import RowSample

# A feature's effect is averaged over at most this many of its values: exactly its levels when
# it has no more, else the midpoints of LEVELS equal slices of its distribution (the average
# over 16 quantiles of a smooth score is within a few percent of the full one).
LEVELS = 16
# Input values per model call (rows x features): 4,096 rows of 64 features at all 16 levels at
# once; wider data moves fewer levels per call (one at least).
CALL_ELEMENTS = 2**22
# The sample's own salt: unrelated to the charts' and the proxy probe's rows.
SAMPLE_SALT = 0x5A5
# Its values at most (rows x (features + 1) float64: 64 MB): wide data keeps fewer rows, and
# never fewer than MIN_SAMPLE_ROWS.
SAMPLE_ELEMENTS = 2**23
MIN_SAMPLE_ROWS = 256
# A candidate the test did not confirm is cleared only if the test would have confirmed a pure
# proxy of its effect with at least this probability (the usual 80% of study design); below
# it the audit says it cannot judge the candidate on these rows.
POWER = 0.8


class LabelledSample:
    """The labelled rows the test runs on, [x..., label] float64: the same bottom-k sample of
    row numbers whatever the chunks or workers (:class:`RowSample`), of at most ``rows`` rows
    and, for wide data, fewer (sized once the number of features is known)."""

    def __init__(self, rows: int):
        self.rows = rows
        self.sample: RowSample | None = None

    def update(self, rows: np.ndarray, x: np.ndarray, labels: np.ndarray) -> None:
        """rows: int64 [n] row numbers; x: float64 [n, features]; labels: float64 [n]."""
        if self.sample is None:
            self.sample = RowSample(self.keep(x.shape[1]), salt=SAMPLE_SALT)
        wanted = self.sample.wanted(rows)
        self.sample.update(rows[wanted], np.concatenate([x[wanted], labels[wanted, None]],
                                                        axis=1), offered=len(rows))

    def keep(self, n_features: int) -> int:
        return min(self.rows, max(MIN_SAMPLE_ROWS, SAMPLE_ELEMENTS // (n_features + 1)))

    def merge(self, other: LabelledSample) -> None:
        if other.sample is None:
            return
        if self.sample is None:
            self.sample = RowSample(other.sample.keep, salt=SAMPLE_SALT)
        self.sample.merge(other.sample)

    @property
    def values(self) -> np.ndarray | None:
        return self.sample.values if self.sample is not None else None


@dataclass(frozen=True)
class Harm:
    """One feature's loss change when its effect is averaged out, over ``rows`` sampled rows:
    ``base`` the model's mean loss, ``change`` the mean change (negative: better without it),
    ``low``/``high`` its two-sided interval at the test's confidence, ``z`` the test statistic,
    ``confirmed`` whether the fall is beyond chance at the Bonferroni-corrected level,
    ``proxy_change`` the mean change a pure proxy of this effect would show (-mean(c^2)),
    ``power`` the chance that the test confirms a fall of that size and ``predicted`` the share
    of the feature's variance the other inputs predict (its adjusted R^2; 0 when its whole
    value was averaged out)."""

    feature: str
    rows: int
    base: float
    change: float
    low: float
    high: float
    z: float
    confirmed: bool
    proxy_change: float = math.nan
    power: float = math.nan
    predicted: float = 0.0

    @property
    def unjudged(self) -> bool:
        """Not confirmed, by a test too weak to clear it: the rows cannot tell."""
        return not self.confirmed and not self.power >= POWER

    def reason(self, on_probability: bool) -> str:
        """The confirmed fall in words a reviewer can check (``on_probability``: the scores
        are logits against a 0/1 label)."""
        loss = "Brier score on sigmoid(score)" if on_probability else "mean squared error"
        lower, least, most = (-self.change / self.base, -self.high / self.base,
                              -self.low / self.base)
        return (f"the model does better on these rows without it: its {loss} is {lower:.1%} "
                f"lower (interval {least:.1%} to {most:.1%}) on {self.rows:,} labelled rows "
                f"when the feature's effect is averaged out over {self.over()}")

    def over(self) -> str:
        """What the feature's effect was averaged over, in words."""
        if self.predicted <= 0:
            return "its own values"
        return (f"the part of it the other inputs do not predict (they predict "
                f"{self.predicted:.0%} of its variance)")

    def cannot_judge(self, on_probability: bool) -> str:
        """Why an unconfirmed candidate is not cleared either, in words a reviewer can check."""
        loss = "Brier score" if on_probability else "mean squared error"
        return (f"these {self.rows:,} labelled rows cannot tell whether the model does better "
                f"without it: were it a pure proxy (independent of the label and the other "
                f"inputs), averaging its effect out would make the {loss} "
                f"{_relative(self.proxy_change, self.base)}, and the test would see that with "
                f"probability {self.power:.0%} only (estimated from these rows); on these rows "
                f"the {loss} is {_relative(self.change, self.base)} without it (interval: "
                f"{_relative(self.low, self.base)} to {_relative(self.high, self.base)})")


def _relative(change: float, base: float) -> str:
    """A change of the loss in words: as a share of the model's loss ("4.1% lower"), or in
    the loss's units when the model's loss is 0."""
    size = f"{abs(change) / base:.1%}" if base > 0 else f"{abs(change):.4g}"
    return f"{size} {'lower' if change < 0 else 'higher'}"


def losses(scores: torch.Tensor, labels: torch.Tensor, on_probability: bool) -> torch.Tensor:
    """Per-row squared error; on sigmoid(score) when ``on_probability`` (a 0/1 label, logit
    scores), which makes it the Brier score (as it is already for probability scores)."""
    if on_probability:
        scores = torch.sigmoid(scores)
    return (scores - labels) ** 2


def feature_levels(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values a feature's effect is averaged over, and their weights (summing to 1)."""
    values, counts = np.unique(column, return_counts=True)
    if len(values) <= LEVELS:
        return values, counts / counts.sum()
    # Values the feature takes (not interpolated between them: a model may index by them).
    return (np.quantile(column, (np.arange(LEVELS) + 0.5) / LEVELS, method="inverted_cdf"),
            np.full(LEVELS, 1.0 / LEVELS))


def own_part(columns: np.ndarray, j: int) -> tuple[np.ndarray, float]:
    """Feature j's part that the other inputs predict, per row, and the share of its variance
    that part holds (its adjusted R^2, 0 at least). The part: a least-squares fit with an
    intercept on the sampled rows, less its mean, times the adjusted R^2 over the R^2 (so the
    fit's chance part on few rows moves nothing: a feature independent of the others gets
    about 0). Zero, and a share of 0, for a feature of at most ``LEVELS`` values (a model may
    index by them: they are averaged over as they are), when there are not more rows than
    inputs, or when a value is not finite (``audit.allow_nonfinite``)."""
    rows, width = columns.shape
    column = columns[:, j]
    none = np.zeros(rows)
    if (width < 2 or rows <= width + 1 or len(np.unique(column)) <= LEVELS
            or not np.isfinite(columns).all()):
        return none, 0.0
    # Centred columns: the intercept's fit, and a fit whose mean is 0.
    others = np.delete(columns, j, axis=1)
    others = others - others.mean(0)
    centred = column - column.mean()
    fit = others @ np.linalg.lstsq(others, centred, rcond=None)[0]
    total = float(centred @ centred)
    r2 = 1.0 - float((centred - fit) @ (centred - fit)) / total if total > 0 else 0.0
    adjusted = 1.0 - (1.0 - r2) * (rows - 1) / (rows - width)
    if r2 <= 0 or adjusted <= 0:
        return none, 0.0
    return adjusted / r2 * fit, adjusted


def averaged_out(model: Model, x: torch.Tensor, j: int, column: np.ndarray,
                 on_probability: bool = False, tied: np.ndarray | None = None) -> torch.Tensor:
    """[rows]: each row's score (first output) averaged over feature j's own part: with
    ``tied`` (the part the other inputs predict, per row; :func:`own_part`), x_ij is set to
    tied_i + each level of (column - tied); without it, to each level of the column. With
    ``on_probability`` (logit scores, a 0/1 label), the average of sigmoid(score)."""
    tied = np.zeros(len(column)) if tied is None else tied
    values, weights = feature_levels(column - tied)
    rows = x.shape[0]
    total = torch.zeros(rows, dtype=torch.float64)
    per_call = max(1, CALL_ELEMENTS // max(rows * x.shape[1], 1))
    # Rows whose feature is shifted by its tied part, or None: the levels alone.
    row_part = torch.tensor(tied, dtype=x.dtype, device=x.device) if tied.any() else None
    with torch.no_grad():
        for start in range(0, len(values), per_call):
            part = values[start:start + per_call]
            moved = x.repeat(len(part), 1)
            level = torch.tensor(part, dtype=x.dtype, device=x.device).repeat_interleave(rows)
            moved[:, j] = level if row_part is None else level + row_part.repeat(len(part))
            scores = as_output_matrix(model(moved), len(moved))[:, 0].to("cpu", torch.float64)
            scores = scores.reshape(len(part), rows)
            if on_probability:
                scores = torch.sigmoid(scores)
            w = torch.tensor(weights[start:start + len(part)], dtype=torch.float64)
            total += (w[:, None] * scores).sum(0)
    return total


def harm_tests(model: Model, x: torch.Tensor, labels: np.ndarray, features: list[str],
               tested: list[str], level: float, confidence: float,
               on_probability: bool) -> dict[str, Harm]:
    """The loss-change test of each feature in ``tested`` on the sampled rows ``x`` (the
    model's device and dtype) with their ``labels``; Bonferroni over ``len(tested)``."""
    if not tested or len(labels) < 2:
        return {}
    y = torch.from_numpy(np.asarray(labels, dtype=np.float64))
    with torch.no_grad():
        scores = as_output_matrix(model(x), x.shape[0])[:, 0].to("cpu", torch.float64)
    base = losses(scores, y, on_probability)
    probability = torch.sigmoid(scores) if on_probability else scores  # what the loss scores
    columns = x.detach().to("cpu", torch.float64).numpy()
    critical = normal_quantile(1 - level / len(tested))
    z_interval = normal_quantile((1 + confidence) / 2)
    found = {}
    for name in tested:
        j = features.index(name)
        tied, predicted = own_part(columns, j)
        # Already a probability when on_probability: the loss takes it as it is.
        removed = averaged_out(model, x, j, columns[:, j], on_probability, tied)
        # A pure proxy's expected change: minus the mean square of the feature's effect.
        effect = probability - removed
        proxy_change = -float((effect**2).mean())
        # No effect on these rows beyond the model's rounding: nothing a proxy could hide in,
        # and a loss change that is rounding alone (spread 1e-16 around 1e-16 reads as
        # significant), so it counts as none. No spread either (every row's change the same):
        # a test without noise. Either way it cannot miss.
        resolution = 64 * torch.finfo(x.dtype).eps * max(1.0, float(probability.abs().max()))
        no_effect = float(effect.abs().max()) <= resolution
        d = np.zeros(len(y)) if no_effect else (losses(removed, y, False) - base).numpy()
        mean, error = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d))
        z = mean / error if error > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
        power = (normal_cdf(-proxy_change / error - critical) if error > 0 and not no_effect
                 else 1.0)
        found[name] = Harm(feature=name, rows=len(d), base=float(base.mean()), change=mean,
                           low=mean - z_interval * error, high=mean + z_interval * error, z=z,
                           confirmed=z < -critical, proxy_change=proxy_change, power=power,
                           predicted=predicted)
    return found
