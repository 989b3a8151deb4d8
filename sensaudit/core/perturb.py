"""Tensors in, score changes out: the perturbations the checks make. torch only, no I/O.

Like :mod:`sensaudit.core.jacobian`, everything is batched over rows (the audited scorers score rows
independently, so a batch of perturbed copies of many rows is one model call), split into
sub-batches so memory stays bounded:

- :func:`adversarial_shift`: projected gradient ascent and descent of each output within a
  per-feature L-infinity budget and optional bounds;
- :func:`feature_effects`: what each feature's part of a perturbation does alone;
- :func:`finite_steps`: each feature moved by a finite step, each way, one at a time;
- :func:`level_switches`: the one-hot columns of a categorical set to each level in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sensaudit.core.chunking import default_batch_size
from sensaudit.core.jacobian import Model, as_output_matrix

# Projected gradient descent's usual step: 2.5 x budget / steps, so the iterate can cross the
# whole budget and come back (Madry et al. 2018). One step is the fast gradient-sign method.
PGD_STEP_FACTOR = 2.5


@dataclass
class Attack:
    """Per row and output: scores [rows, outputs]; the largest score rise ``up`` and fall
    ``down`` found, both >= 0, [rows, outputs]; the perturbations that reached them,
    ``delta_up`` and ``delta_down`` [rows, outputs, features]."""

    scores: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    delta_up: torch.Tensor
    delta_down: torch.Tensor


def _rows_per_batch(copies: int, n_features: int, device: torch.device) -> int:
    # The sub-batch holds `copies` perturbed copies of each row: size it as the engine sizes
    # one gradient chunk.
    return max(1, default_batch_size(n_features, 1, device) // copies)


def _scores(model: Model, x: torch.Tensor) -> torch.Tensor:
    return as_output_matrix(model(x), x.shape[0])


def adversarial_shift(model: Model, x: torch.Tensor, radius: torch.Tensor, steps: int,
                      lower: torch.Tensor | None = None, upper: torch.Tensor | None = None,
                      n_outputs: int | None = None) -> Attack:
    """The largest change of each output within ``|delta_j| <= radius[j]`` (and ``lower <= x +
    delta <= upper`` when given), by ``steps`` projected gradient-sign steps from delta = 0,
    keeping the best iterate.

    x: [rows, features]; radius, lower, upper: [features] in x's dtype (radius 0 holds a
    feature fixed). Each output is attacked up and down separately: 2 x outputs copies of
    every row, one batch per step.
    """
    rows, features = x.shape
    m = n_outputs if n_outputs is not None else _scores(model, x[:1].detach()).shape[1]
    per_batch = _rows_per_batch(2 * m, features, x.device)
    parts = [_attack(model, part, radius, steps, lower, upper, m)
             for part in x.detach().split(per_batch)]
    return Attack(*(torch.cat(list(tensors)) for tensors in zip(*(
        (p.scores, p.up, p.down, p.delta_up, p.delta_down) for p in parts), strict=True)))


def _attack(model: Model, x: torch.Tensor, radius: torch.Tensor, steps: int,
            lower: torch.Tensor | None, upper: torch.Tensor | None, m: int) -> Attack:
    n, f = x.shape
    copies = 2 * m  # copy c attacks output c % m, upwards for c < m, downwards after
    sign = torch.cat([torch.ones(m), -torch.ones(m)]).to(x.device, x.dtype)[:, None]  # [C, 1]
    output = torch.arange(copies, device=x.device).remainder(m)[:, None, None].expand(
        copies, n, 1)
    low = -radius.expand(n, f)
    high = radius.expand(n, f)
    if lower is not None and upper is not None:
        # Stay inside the bounds, and never further than the budget; a row outside them (it
        # cannot be, for bounds observed on the same rows) keeps delta = 0 feasible.
        low = torch.maximum(low, lower - x).clamp_max(0)
        high = torch.minimum(high, upper - x).clamp_min(0)
    alpha = radius if steps == 1 else radius * (PGD_STEP_FACTOR / steps)
    base = x.unsqueeze(0).expand(copies, n, f)
    delta = torch.zeros(copies, n, f, dtype=x.dtype, device=x.device)
    best_gain = torch.zeros(copies, n, dtype=x.dtype, device=x.device)
    best_delta = torch.zeros_like(delta)
    start: torch.Tensor | None = None
    scores = x.new_zeros(n, m)
    for step in range(steps + 1):
        with torch.enable_grad():
            d = delta.clone().requires_grad_(step < steps)
            y = _scores(model, (base + d).reshape(copies * n, f)).reshape(copies, n, m)
            objective = sign * y.gather(2, output).squeeze(2)  # [C, n]: to maximise
            if start is None:
                start = objective.detach()
                scores = y[0].detach()  # every copy starts at x: any copy's scores are x's
            gain = objective.detach() - start
            better = gain > best_gain
            best_gain = torch.where(better, gain, best_gain)
            best_delta = torch.where(better[:, :, None], delta, best_delta)
            if step == steps:
                break
            (grad,) = torch.autograd.grad(objective.sum(), d)
        delta = torch.minimum(torch.maximum(delta + alpha * grad.sign(), low), high)
    gains = best_gain.T.reshape(n, 2, m)  # [n, direction, outputs]
    deltas = best_delta.permute(1, 0, 2).reshape(n, 2, m, f)
    return Attack(scores=scores, up=gains[:, 0], down=gains[:, 1], delta_up=deltas[:, 0],
                  delta_down=deltas[:, 1])


def feature_effects(model: Model, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The change of output o when only feature j of the row moves by ``delta[r, o, j]``:
    [rows, outputs, features], for delta [rows, outputs, features] (one perturbation per
    output, such as each output's attack)."""
    rows, f = x.shape
    m = delta.shape[1]
    per_batch = _rows_per_batch(m * f + 1, f, x.device)
    return torch.cat([_effects(model, xp, dp) for xp, dp in
                      zip(x.detach().split(per_batch), delta.detach().split(per_batch),
                          strict=True)])


def _effects(model: Model, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    n, f = x.shape
    m = delta.shape[1]
    # Copy (o, j) moves feature j by output o's delta: [m, f, n, f], one column each.
    moves = torch.diag_embed(delta.permute(1, 0, 2)).permute(0, 2, 1, 3)
    batch = torch.cat([x.unsqueeze(0), (x + moves).reshape(m * f, n, f)])
    with torch.no_grad():
        y = _scores(model, batch.reshape(-1, f)).reshape(1 + m * f, n, -1)
    changed = (y[1:] - y[0]).reshape(m, f, n, -1)  # [o, j, rows, outputs]
    own = changed[torch.arange(m), :, :, torch.arange(m)]  # [o, j, rows]: output o's own
    return own.permute(2, 0, 1)


def finite_steps(model: Model, x: torch.Tensor, step: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores [rows, outputs] and the score changes when feature j alone moves by +step[j]
    and by -step[j]: two tensors [rows, outputs, features]."""
    rows, f = x.shape
    per_batch = _rows_per_batch(2 * f + 1, f, x.device)
    outs = [_steps(model, part, step) for part in x.detach().split(per_batch)]
    return tuple(torch.cat(list(t)) for t in zip(*outs, strict=True))  # type: ignore[return-value]


def _steps(model: Model, x: torch.Tensor, step: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, f = x.shape
    shift = torch.diag_embed(step).unsqueeze(1)  # [features, 1, features]
    batch = torch.cat([x.unsqueeze(0), x + shift, x - shift])  # [1 + 2f, n, f]
    with torch.no_grad():
        y = _scores(model, batch.reshape(-1, f)).reshape(1 + 2 * f, n, -1)
    base = y[0]
    plus = (y[1 : 1 + f] - base).permute(1, 2, 0)  # [n, outputs, features]
    minus = (y[1 + f :] - base).permute(1, 2, 0)
    return base, plus, minus


def level_switches(model: Model, x: torch.Tensor, columns: list[int]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [rows, outputs] and the score changes [rows, outputs, levels] when each row's
    one-hot ``columns`` are set to level k (column k 1, the others 0), for every k."""
    rows, f = x.shape
    levels = len(columns)
    per_batch = _rows_per_batch(levels + 1, f, x.device)
    outs = [_switch(model, part, columns) for part in x.detach().split(per_batch)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def _switch(model: Model, x: torch.Tensor, columns: list[int]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    n, f = x.shape
    levels = len(columns)
    batch = x.unsqueeze(0).repeat(levels + 1, 1, 1)  # copy 0 is the row as it is
    index = torch.tensor(columns, device=x.device)
    for k in range(levels):
        batch[k + 1][:, index] = 0
        batch[k + 1][:, columns[k]] = 1
    with torch.no_grad():
        y = _scores(model, batch.reshape(-1, f)).reshape(levels + 1, n, -1)
    return y[0], (y[1:] - y[0]).permute(1, 2, 0)
