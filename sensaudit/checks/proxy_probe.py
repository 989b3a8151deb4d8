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
with the smallest hash of their row number, so it merges across chunks and workers and is the
same on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..engine import Model, as_output_matrix, scores_and_jacobian
from ..stats import _splitmix64

# Enough rows to see a step crossed: a threshold inside the data's bulk is crossed by a
# half-std step on roughly 10-20% of rows each way, i.e. dozens of the 256; few enough that
# probing costs less than one chunk of the audit.
SAMPLE_ROWS = 256
# The step, in the feature's standard deviations. Half a std is a typical change of the feature
# (the share is about 1-std changes), large enough to cross a step inside the data and an
# integer feature's rounding (std >= 2), small enough that a smooth model's curvature changes
# the first-order prediction by a modest factor, not by BLIND_FACTOR.
STEP_STD = 0.5
# A feature constant in the data has no spread to scale by: it is moved by 10% of its value, and
# by at least 1.0 (a 0/1 flag set to 0 everywhere is moved to the other level).
CONSTANT_STEP_RELATIVE = 0.1
CONSTANT_STEP_MIN = 1.0
# Blind when the score moves BLIND_FACTOR times more than the gradient predicts. Curvature,
# ReLU kinks and saturation move a smooth model's ratio within about 0.2..3 at a half-std step
# (measured on random and trained tanh/ReLU/GELU/sigmoid MLPs: tests/test_proxy_probe.py);
# a blind gradient predicts 0 (detach, steps) or a small fraction of a step function's jump.
BLIND_FACTOR = 10.0
# ... and only when that movement matters: measured by the finite step, the proxy would hold
# at least 1% of the score's sensitivity. Below that, no share limit anyone sets could fail.
MATERIAL_SHARE = 0.01
# A finite difference of float scores carries rounding of about eps x |score| on each side.
ROUNDING_FACTOR = 64


class ProbeSample:
    """The audited rows the probe moves: the ``keep`` with the smallest row-number hash.
    Mergeable: the same rows whatever the chunks or workers."""

    def __init__(self, keep: int = SAMPLE_ROWS):
        self.keep = keep
        self.keys = np.empty(0, dtype=np.uint64)
        self.x: torch.Tensor | None = None  # [rows, features], CPU, the model's dtype

    def update(self, rows: np.ndarray, x: torch.Tensor, finite: torch.Tensor) -> None:
        """rows: int64 row numbers; x: the model's inputs; finite: bool [rows], the rows the
        audit's statistics use."""
        mask = finite.detach().cpu().numpy().astype(bool)
        if not mask.any():
            return
        with np.errstate(over="ignore"):
            keys = _splitmix64(np.asarray(rows, dtype=np.int64)[mask].astype(np.uint64))
        self._add(keys, x.detach()[torch.from_numpy(mask).to(x.device)].cpu())

    def merge(self, other: ProbeSample) -> None:
        if other.x is not None:
            self._add(other.keys, other.x)

    def _add(self, keys: np.ndarray, x: torch.Tensor) -> None:
        if self.x is not None:
            keys = np.concatenate([self.keys, keys])
            x = torch.cat([self.x, x.to(self.x.dtype)])
        order = np.argsort(keys, kind="stable")[: self.keep]
        self.keys, self.x = keys[order], x[torch.from_numpy(order)]


@dataclass
class ProbeFigures:
    """One (output, proxy) probed: ``moved`` and ``predicted`` are mean |score change| over
    the sample rows and both ways, observed and by gradient x step."""

    output: str
    feature: str
    constant: bool  # no spread in the audited rows: the data cannot show the proxy's effect
    step: float  # in the feature's units
    rows: int
    moved: float
    predicted: float
    probe_share: float  # the share the proxy would hold if the finite step measured it
    blind: bool  # the score moves materially where the gradient sees (almost) nothing

    @property
    def ratio(self) -> float:
        if self.predicted > 0:
            return self.moved / self.predicted
        return float("inf") if self.moved > 0 else 1.0


def probe(model: Model, x: torch.Tensor, columns: dict[str, int], std: torch.Tensor,
          scaled: torch.Tensor, outputs: list[str]) -> list[ProbeFigures]:
    """Probe each feature of ``columns`` (name -> column) on the sample ``x`` (the model's
    device and dtype). std: float64 [features], the data's; scaled: float64 [outputs,
    features], the ranking's scaled sensitivities (the score movement every other feature's
    typical change makes, to judge what is material)."""
    with torch.no_grad():
        base = as_output_matrix(model(x), x.shape[0])
    _, gradient = scores_and_jacobian(model, x)
    eps = torch.finfo(x.dtype).eps if x.dtype.is_floating_point else 0.0
    total = scaled.sum(1)  # [outputs]
    found = []
    for name, j in columns.items():
        constant = not bool(std[j] > 0)
        if constant:
            step = max(CONSTANT_STEP_RELATIVE * abs(float(x[0, j])), CONSTANT_STEP_MIN)
        else:
            step = STEP_STD * float(std[j])
        moved = torch.zeros(base.shape[1], dtype=torch.float64, device=x.device)
        predicted = torch.zeros_like(moved)
        for sign in (1.0, -1.0):
            shifted = x.clone()
            shifted[:, j] = x[:, j] + sign * step
            # The step the model actually gets, after rounding to its dtype (a large value
            # may not move at all).
            actual_step = (shifted[:, j] - x[:, j]).double()  # [rows]
            with torch.no_grad():
                changed = as_output_matrix(model(shifted), x.shape[0])
            change = (changed - base).double()
            noise = ROUNDING_FACTOR * eps * (base.abs() + changed.abs()).double()
            change = torch.where(change.abs() > noise, change, torch.zeros_like(change))
            moved += change.abs().mean(0)
            predicted += (gradient[:, :, j].double() * actual_step[:, None]).abs().mean(0)
        moved, predicted = (moved / 2).cpu(), (predicted / 2).cpu()
        for o, output in enumerate(outputs):
            # The proxy's sensitivity as the finite step measures it, in the ranking's units
            # (score change for a typical, one-std change), against every other feature's; a
            # constant proxy's step stands for its typical change.
            effect = float(moved[o]) if constant else float(moved[o]) / STEP_STD
            others = max(float(total[o] - scaled[o, j]), 0.0)
            share = effect / (others + effect) if effect > 0 else 0.0
            gap = float(moved[o]) > BLIND_FACTOR * float(predicted[o])
            found.append(ProbeFigures(
                output=output, feature=name, constant=constant, step=step, rows=x.shape[0],
                moved=float(moved[o]), predicted=float(predicted[o]), probe_share=share,
                blind=share > MATERIAL_SHARE and (constant or gap)))
    return found
