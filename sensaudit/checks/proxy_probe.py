"""Can the gradient see a declared proxy? A finite step, on a sample of rows, says.

A proxy gate compares a share of gradient sensitivity (mean |gradient| x the feature's spread)
with a limit. The gradient can be blind to a feature the score depends on, and the gate then
passes at 0%: the feature is constant in the audited rows (its spread is 0, whatever the
model does with it), or the model reaches it through ``detach()``, or through a step (a
comparison, ``round``, ``floor``, ``sign``: a gradient of 0 almost everywhere). Rather than
spot such cases one by one, the probe tests the gradient's own claim: on a fixed sample of the
audited rows, each declared proxy is moved by a finite step each way and the mean observed
score change is compared with the mean first-order prediction, |gradient x step|. Whatever
makes the gradient blind, the observed change is the model's actual response.

Only declared proxies are probed (two model calls each on the sample, and one Jacobian of the
sample): the gate is what a silent pass would betray. The sample is the ``SAMPLE_ROWS`` rows
with the smallest hash of their row number (:class:`sensaudit.stats.row_sample.RowSample`, kept by
the proxy check), so it merges across chunks and workers and is the same on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sensaudit.core.jacobian import Model, as_output_matrix, scores_and_jacobian

# Enough rows to see a step crossed: a threshold inside the data's bulk is crossed by a
# half-std step on roughly 10-20% of rows each way, i.e. dozens of the 256; few enough that
# probing costs less than one chunk of the audit.
SAMPLE_ROWS = 256
# Two steps, in the feature's standard deviations, each way. What the gradient misses is the
# residual, mean |observed change - gradient x step|, against the prediction mean |gradient x
# step|. A smooth model's residual shrinks with the step (curvature: ~step**2, and a ReLU kink
# is within reach of a fraction ~step of the rows), while a blind path's does not (detach: both
# ~step; a step function: crossings ~step), so the small step separates them cleanly. The large
# step catches what the small one may miss in 256 rows: a threshold crossed by few of them, or
# rounding of an integer feature (std >= 2), at the price of a looser limit.
SMALL_STEP_STD = 0.05
STEP_STD = 0.5
# Limits on residual / prediction. On smooth MLPs (tanh, ReLU, GELU, sigmoid, standardised
# inputs) over four data sets, the ratio's 99th percentile is 0.07 and its maximum 0.14 at
# 0.05 std, 0.48 and 0.70 at 0.5 std; a detach() path as large as the visible one gives ~1 or
# more at both. The limits keep a margin of 3.5x and 2x over the largest smooth value seen.
# benchmarks/proxy_probe.py measures the result: no false alarm on 960 gates of 128 smooth
# models with standardised inputs, 6 of 960 on raw inputs (scales of 100 and more, where a
# unit's transition is narrower than 0.05 std of the feature: a kink at the data's scale).
SMALL_STEP_LIMIT = 0.5
STEP_LIMIT = 1.5
# A feature constant in the data has no spread to scale by: it is moved by 10% of its value, and
# by at least 1.0 (a 0/1 flag set to 0 everywhere is moved to the other level).
CONSTANT_STEP_RELATIVE = 0.1
CONSTANT_STEP_MIN = 1.0
# ... and only when that movement matters: measured by the finite step, what the gradient
# misses would hold at least 1% of the score's sensitivity. Below that, no share limit anyone
# sets could fail.
MATERIAL_SHARE = 0.01
# A finite difference of float scores carries rounding of about eps x |score| on each side.
ROUNDING_FACTOR = 64
# Nor is a change a millionth of the scores' own size (mean |score| + their spread) material,
# whatever the other features do: a network saturated on every row has every sensitivity ~0,
# and its scores' last-digit flicker would otherwise count as a whole share.
NEGLIGIBLE = 1e-6


@dataclass
class ProbeFigures:
    """One (output, proxy) probed at the step that judged it: ``moved``, ``predicted`` and
    ``missed`` are mean |score change| over the sample rows and both ways: observed, by
    gradient x step, and |observed - predicted|."""

    output: str
    feature: str
    constant: bool  # no spread in the audited rows: the data cannot show the proxy's effect
    step: float  # in the feature's units
    step_std: float  # in its standard deviations (the constant step counts as one)
    rows: int
    moved: float
    predicted: float
    missed: float
    probe_share: float  # the share what the gradient misses would hold, measured by the step
    blind: bool  # the score moves materially where the gradient does not see it


def probe(model: Model, x: torch.Tensor, columns: dict[str, int], std: torch.Tensor,
          scaled: torch.Tensor, outputs: list[str]) -> list[ProbeFigures]:
    """Probe each feature of ``columns`` (name -> column) on the sample ``x`` (the model's
    device and dtype). std: float64 [features], the data's; scaled: float64 [outputs,
    features], the ranking's scaled sensitivities (the score movement every other feature's
    typical change makes, to judge what is material)."""
    with torch.no_grad():
        base = as_output_matrix(model(x), x.shape[0])
    _, gradient = scores_and_jacobian(model, x)
    total = scaled.sum(1)  # [outputs]
    magnitude = base.double().abs().mean(0) + (base.double().std(0) if len(base) > 1 else 0.0)
    found = []
    for name, j in columns.items():
        if not bool(std[j] > 0):
            step = max(CONSTANT_STEP_RELATIVE * abs(float(x[0, j])), CONSTANT_STEP_MIN)
            trials = [(1.0, step, 0.0)]
        else:
            trials = [(SMALL_STEP_STD, SMALL_STEP_STD * float(std[j]), SMALL_STEP_LIMIT),
                      (STEP_STD, STEP_STD * float(std[j]), STEP_LIMIT)]
        for o, output in enumerate(outputs):
            found.append(_judge(output, name, not bool(std[j] > 0), x.shape[0], [
                (size, step, limit, *_steps(model, x, base, gradient, j, step, o))
                for size, step, limit in trials], float(total[o] - scaled[o, j]),
                NEGLIGIBLE * float(magnitude[o])))
    return found


def _judge(output: str, name: str, constant: bool, rows: int,
           trials: list[tuple[float, float, float, float, float, float]],
           others: float, negligible: float) -> ProbeFigures:
    """The figures of the step that judged the feature: the first that finds it blind, else
    the one whose miss is largest relative to the prediction."""
    best = None
    for size, step, limit, moved, predicted, missed in trials:
        # What the gradient misses (for a constant proxy, all the step moves: the data shows
        # none of it), in the ranking's units (score change for a typical, one-std change; a
        # constant proxy's step stands for its typical change), against every other
        # feature's sensitivity.
        amount = moved if constant else missed
        effect = amount / size
        share = (effect / (max(others, 0.0) + effect) if amount > negligible else 0.0)
        # Only where the gradient understates the change: where it overstates it (a steep
        # transition narrower than the step, a detach() path against the visible one), the
        # share is too large, and a gate on it errs towards failing, never a silent pass.
        blind = share > MATERIAL_SHARE and (constant or (missed > limit * predicted
                                                         and moved > predicted))
        figures = ProbeFigures(output=output, feature=name, constant=constant, step=step,
                               step_std=size, rows=rows, moved=moved, predicted=predicted,
                               missed=missed, probe_share=share, blind=blind)
        if blind:
            return figures
        if best is None or missed * best.predicted > best.missed * predicted:
            best = figures
    if best is None:  # python -O strips asserts: an empty trial list must still be an error
        raise ValueError(f"no probe step was tried for {name!r}")
    return best


def _steps(model: Model, x: torch.Tensor, base: torch.Tensor, gradient: torch.Tensor, j: int,
           step: float, o: int) -> tuple[float, float, float]:
    """Output o's mean |observed|, |predicted| and |observed - predicted| score change for
    column j moved by ``step`` each way."""
    eps = torch.finfo(x.dtype).eps if x.dtype.is_floating_point else 0.0
    moved = predicted = missed = 0.0
    for sign in (1.0, -1.0):
        shifted = x.clone()
        shifted[:, j] = x[:, j] + sign * step
        # The step the model actually gets, after rounding to its dtype (a large value may
        # not move at all).
        actual_step = (shifted[:, j] - x[:, j]).double()
        with torch.no_grad():
            changed = as_output_matrix(model(shifted), x.shape[0])[:, o]
        change = (changed - base[:, o]).double()
        noise = ROUNDING_FACTOR * eps * (base[:, o].abs() + changed.abs()).double()
        change = torch.where(change.abs() > noise, change, torch.zeros_like(change))
        first_order = gradient[:, o, j].double() * actual_step
        moved += float(change.abs().mean()) / 2
        predicted += float(first_order.abs().mean()) / 2
        missed += float((change - first_order).abs().mean()) / 2
    return moved, predicted, missed
