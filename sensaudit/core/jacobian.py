"""Tensors in, Jacobians out: torch only, no I/O, no pandas.

The audited scorers map one row of features to one row of outputs, and in eval mode the rows of
a batch do not interact. That independence is what makes the engine fast: the gradient of
``sum over rows of y[r, j]`` with respect to the batch ``x`` holds, in row ``r``, exactly
``d y[r, j] / d x[r]``. So one backward pass over a batch yields every row's gradient of output
``j``, and the whole ``[rows, outputs, features]`` Jacobian costs ``outputs`` backward passes
or ``features`` forward-mode passes (for several outputs the engine times the strategies on
real chunks and keeps the fastest), instead of a Python loop over rows.
:func:`check_row_independence` guards the assumption.
"""

from __future__ import annotations

import torch
from torch.autograd.functional import jacobian

from sensaudit.core.chunking import CHUNKS, Key
from sensaudit.core.chunking import Model as Model
from sensaudit.core.errors import ModelError, first_line
from sensaudit.core.strategy_tuning import TUNER, clock

STRATEGIES = ("auto", "reverse", "reverse-vmap", "forward", "vmap-jacrev")
_WARM_UP_ROWS = 64  # a strategy's first timed chunk is preceded by this many rows, untimed


def as_output_matrix(y: object, rows: int) -> torch.Tensor:
    """Check a model's output and view it as ``[rows, outputs]``.

    Scorers return ``[rows]`` (one score) or ``[rows, outputs]``; anything else cannot be read
    as one score vector per row.
    """
    if not isinstance(y, torch.Tensor):
        raise ModelError(f"the model returned a {type(y).__name__}; expected a tensor of scores "
                         f"shaped [rows] or [rows, outputs]")
    if not (y.is_floating_point() or y.is_complex()):
        raise ModelError(f"the model returned {y.dtype} scores; expected floating point "
                         "(integer outputs have no gradient)")
    if y.is_complex():
        raise ModelError("the model returned complex scores; expected real floating point")
    if y.dim() == 1 and y.shape[0] == rows:
        return y.unsqueeze(1)
    if y.dim() == 2 and y.shape[0] == rows and y.shape[1] >= 1:
        return y
    raise ModelError(f"the model returned shape {list(y.shape)} for {rows} rows; expected "
                     f"[{rows}] or [{rows}, outputs]")


def scores_and_jacobian(
    model: Model,
    x: torch.Tensor,
    *,
    batch_size: int | None = None,
    strategy: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and per-example input Jacobians of ``model`` at every row of ``x``.

    x: float [rows, features]. Returns (scores [rows, outputs], jacobian [rows, outputs,
    features]), both detached, on x's device and dtype. Rows are processed in chunks of
    ``batch_size`` (default: a fixed rule from the model's memory per row, see
    core/chunking.py) so memory stays bounded. Neither
    ``model`` nor ``x`` is modified: x's ``.grad`` and ``requires_grad`` stay as they were, and
    the model's train/eval mode is not touched.

    strategy: "reverse" runs one forward pass, then one backward pass per output over its
    graph; "reverse-vmap" runs those backward passes as one vmapped call; "forward" runs one
    forward-mode pass per feature; "vmap-jacrev" vectorises each row's own reverse-mode
    Jacobian with torch.func. "auto" uses one backward pass for a scalar output; with several
    outputs, forward mode if features < outputs, otherwise "reverse"; on an accelerator, with
    enough chunks, it times each strategy on two chunks of real rows and keeps the fastest
    (core/strategy_tuning.py).
    """
    if x.dim() != 2:
        raise ModelError(f"expected inputs shaped [rows, features]; got {list(x.shape)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    rows, n_features = x.shape
    if rows == 0:
        raise ModelError("no rows to audit")
    with torch.no_grad():
        n_outputs = as_output_matrix(model(x[:1].detach()), 1).shape[1]
    shape_key: Key = (n_features, n_outputs, str(x.device), x.dtype)
    step = batch_size or CHUNKS.rows(model, shape_key, x, n_outputs)
    starts = list(range(0, rows, step))
    tuning = TUNER.start(model, strategy, shape_key, n_outputs=n_outputs,
                         n_features=n_features, chunks=len(starts))
    # Filled chunk by chunk (the backward loop writes straight into its slice): concatenating
    # chunk results at the end would copy the whole Jacobian once more.
    scores = torch.empty(rows, n_outputs, dtype=x.dtype, device=x.device)
    jacobian_out = torch.empty(rows, n_outputs, n_features, dtype=x.dtype, device=x.device)
    for index, start in enumerate(starts):
        chunk = x[start : start + step].detach()
        out = jacobian_out[start : start + step]
        candidate = tuning.candidate(index)
        if candidate is not None:
            if tuning.first_try(index):
                _chunk_jacobian(model, chunk[:_WARM_UP_ROWS], candidate)  # warm-up, untimed
            began = clock(x.device)
            s, j = _chunk_jacobian(model, chunk, candidate, out)
            tuning.record(index, candidate, (clock(x.device) - began) / chunk.shape[0])
        else:
            s, j = _chunk_jacobian(model, chunk, tuning.strategy, out)
        scores[start : start + step] = s
        if j is not out:
            out.copy_(j)
    return scores, jacobian_out


def input_jacobian(
    model: Model, x: torch.Tensor, *, batch_size: int | None = None, strategy: str = "auto"
) -> torch.Tensor:
    """Per-example input Jacobians: float [rows, outputs, features] for x: float [rows, features].

    Entry ``[r, i, j]`` is d output_i / d feature_j at row r. See :func:`scores_and_jacobian`.
    """
    return scores_and_jacobian(model, x, batch_size=batch_size, strategy=strategy)[1]


def _chunk_jacobian(
    model: Model, x: torch.Tensor, strategy: str, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [rows, outputs], jacobian [rows, outputs, features]) for one chunk; the backward
    loop fills ``out`` when given, other strategies return a new tensor."""
    # x is already detached from the caller's tensor: the caller's .grad is never touched.
    rows = x.shape[0]
    if strategy == "forward":
        with torch.no_grad():
            y = as_output_matrix(model(x), rows)
        try:
            # Without no_grad the forward-mode Jacobian stays attached to the model's parameters
            # (a graph kept alive); forward-mode AD does not need grad mode.
            with torch.no_grad():
                jac = _forward_mode(model, x)
        except RuntimeError as exc:
            if "forward" not in str(exc).lower():
                raise
            strategy = "reverse"  # an op without a forward-mode formula: reverse always works
        else:
            # Forward mode returns silent zeros for a model with no gradient path (it
            # detaches); an all-zero chunk is redone in reverse mode, which raises ModelError
            # for that case and returns the same zeros for a genuinely flat model.
            if bool(jac.any()):
                return y, jac
            strategy = "reverse"
    if strategy == "vmap-jacrev":
        try:
            with torch.enable_grad():
                jac, y = _vmap_jacrev(model, x)
        except Exception:  # noqa: BLE001 - an op without a batching rule, data-dependent flow
            strategy = "reverse"
        else:
            if bool(jac.any()):  # all zeros may mean no gradient path: reverse mode decides
                return y, jac
            strategy = "reverse"
    with torch.enable_grad():
        x = x.requires_grad_(True)
        y = as_output_matrix(model(x), rows)
        if not y.requires_grad:
            raise _no_gradient_path()
        if y.shape[1] == 1:
            # The scalar case: one vector-Jacobian product with ones is one backward pass.
            (grad,) = torch.autograd.grad(y, x, grad_outputs=torch.ones_like(y),
                                          allow_unused=True)
            if grad is None:
                raise _no_gradient_path()
            return y.detach(), grad.unsqueeze(1)
        if strategy == "reverse-vmap":
            try:
                return y.detach(), _reverse_batched(y, x)
            except RuntimeError:
                pass  # an op that cannot be vmapped over its backward: fall back to a loop
        return y.detach(), _reverse_loop(y, x, out)


def _no_gradient_path() -> ModelError:
    # y.requires_grad alone misses a model that detaches its input but has trainable
    # parameters (y still requires grad through them). A None gradient (unlike a zero
    # tensor) means x is not in y's graph.
    return ModelError("the model's output has no gradient path to its input (it detaches, "
                      "casts to integers, or uses argmax/rounding), so its sensitivity "
                      "cannot be measured")


def _basis(y: torch.Tensor) -> torch.Tensor:
    """[outputs, rows, outputs] stack of grad_outputs: slice j selects output j in every row."""
    m = y.shape[1]
    eye = torch.eye(m, dtype=y.dtype, device=y.device)
    return eye.unsqueeze(1).expand(m, y.shape[0], m)


def _reverse_batched(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Every output's backward pass in one vmapped call over the same forward graph."""
    (grads,) = torch.autograd.grad(y, x, grad_outputs=_basis(y), is_grads_batched=True,
                                   retain_graph=True, allow_unused=True)
    if grads is None:
        raise _no_gradient_path()
    return grads.permute(1, 0, 2)  # [outputs, rows, features] -> [rows, outputs, features]


def _reverse_loop(y: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """One backward pass per output over the same forward graph, written into ``out``."""
    m = y.shape[1]
    jac = out if out is not None else torch.empty(x.shape[0], m, x.shape[1], dtype=x.dtype,
                                                  device=x.device)
    for j in range(m):
        # A dense one-hot grad_output: an expanded (stride-0) one slows the matmul backward.
        selector = torch.zeros_like(y)
        selector[:, j] = 1
        (grad,) = torch.autograd.grad(y, x, grad_outputs=selector, retain_graph=j < m - 1,
                                      allow_unused=True)
        if grad is None:
            raise _no_gradient_path()
        jac[:, j] = grad
    return jac


def _forward_mode(model: Model, x: torch.Tensor) -> torch.Tensor:
    """One forward-mode pass per feature, vectorised: shift every row's feature j together.

    With rows independent, d model(x + delta) / d delta_j at delta = 0 is, in row r, the
    derivative of row r's outputs with respect to its own feature j.
    """
    delta = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    jac: torch.Tensor = jacobian(lambda d: model(x + d).reshape(x.shape[0], -1), delta,
                                 strategy="forward-mode", vectorize=True)
    return jac  # [rows, outputs, features]


def _vmap_jacrev(model: Model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's own Jacobian by reverse mode, vectorised over rows with torch.func.vmap.

    Returns (jacobian [rows, outputs, features], scores [rows, outputs]), both detached.
    """
    def one_row(row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(row.unsqueeze(0)).reshape(-1)
        return out, out

    jac, y = torch.func.vmap(torch.func.jacrev(one_row, has_aux=True))(x)
    return jac.detach(), y.detach()


def check_row_independence(model: Model, x: torch.Tensor, *, probe_rows: int = 8) -> None:
    """Refuse models whose output for one row depends on the other rows of its batch.

    BatchNorm in training mode normalises with batch statistics and dropout in training mode
    draws fresh noise: either would make the batched gradients wrong (BatchNorm) or random
    (dropout). Compares a batch's outputs with the same rows scored one at a time.
    """
    rows = min(probe_rows, x.shape[0])
    if rows == 0:
        return
    sample = x[:rows].detach()
    with torch.no_grad():
        batched = as_output_matrix(model(sample), rows)
        again = as_output_matrix(model(sample), rows)
        try:
            alone = torch.cat([as_output_matrix(model(sample[i : i + 1]), 1)
                               for i in range(rows)])
        except ModelError:
            raise
        except Exception as exc:
            # BatchNorm in training mode raises ValueError on a one-row batch: that, too, means
            # the rows of a batch interact.
            raise ModelError(f"the model fails on a batch of one row ({first_line(exc)}), so "
                             "its score for a row depends on the other rows in its batch "
                             "(BatchNorm in training mode?); put the model in eval mode before "
                             "auditing") from None
    finite = torch.isfinite(batched) & torch.isfinite(again)
    if not torch.allclose(batched[finite], again[finite], rtol=1e-4, atol=1e-5):
        raise ModelError("the model gives different scores for the same rows on two calls "
                         "(dropout or other randomness in training mode?); put it in eval mode "
                         "before auditing")
    finite &= torch.isfinite(alone)
    if rows > 1 and not torch.allclose(batched[finite], alone[finite], rtol=1e-4,
                                     atol=1e-5):
        raise ModelError("the model's score for a row depends on the other rows in its batch "
                         "(BatchNorm in training mode?), so per-example gradients would be "
                         "wrong; put the model in eval mode before auditing")


def partial_derivatives(model: Model, x: torch.Tensor, columns: list[int]) -> torch.Tensor:
    """d output_i / d feature_j at every row, for the features in ``columns`` only:
    float [rows, outputs, len(columns)], detached, on x's device and dtype.

    For checks that judge a few features' slopes whatever attribution the audit chose
    (monotonicity): forward mode with one tangent per column costs ``len(columns)`` passes,
    where the full Jacobian would cost one per feature (forward) or per output (reverse);
    reverse mode is used when the outputs are no more than the columns, or when an op has no
    forward-mode formula.
    """
    if not columns:
        return torch.zeros(x.shape[0], 0, 0, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        n_outputs = as_output_matrix(model(x[:1].detach()), 1).shape[1]
    if n_outputs > len(columns):
        basis = torch.zeros(len(columns), x.shape[1], dtype=x.dtype, device=x.device)
        basis[torch.arange(len(columns)), torch.tensor(columns)] = 1
        delta = torch.zeros(len(columns), dtype=x.dtype, device=x.device)
        chunk = x.detach()
        try:
            jac: torch.Tensor  # one input and one output tensor: jacobian returns one Tensor
            with torch.no_grad():  # forward mode needs no graph kept on the parameters
                jac = jacobian(lambda d: model(chunk + d @ basis).reshape(chunk.shape[0], -1),
                               delta, strategy="forward-mode", vectorize=True)
        except RuntimeError as exc:
            if "forward" not in str(exc).lower():
                raise
        else:
            if bool(jac.any()):  # all zeros may mean no gradient path: reverse mode decides
                return jac.detach()
    return scores_and_jacobian(model, x)[1][:, :, columns]
