"""Shared test models: closed-form scorers with known input Jacobians, and misbehaving ones.

Every closed-form model is float64 and has ``expected_jacobian(x)``: x float64 [rows, features]
-> float64 [rows, outputs, features], computed from the formula in its docstring, never by
autograd. Single-output models return [rows]; multi-output models return [rows, outputs].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

N_FEATURES = 4


def _weights(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


class Linear(nn.Module):
    """y = w.x  ->  dy/dx = w, the same in every row."""

    def __init__(self, w: torch.Tensor | None = None, n_features: int = N_FEATURES):
        super().__init__()
        self.w = nn.Parameter(_weights(n_features, seed=1) if w is None else w.double())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w

    def expected_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        w = self.w.detach()
        return w.expand(x.shape[0], 1, w.shape[0]).clone()


class Sigmoid(nn.Module):
    """y = s = sigmoid(w.x + b)  ->  dy/dx = s (1 - s) w."""

    def __init__(self, n_features: int = N_FEATURES):
        super().__init__()
        self.w = nn.Parameter(_weights(n_features, seed=2))
        self.b = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x @ self.w + self.b)

    def expected_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.w.detach(), self.b.detach()
        s = 1 / (1 + torch.exp(-(x @ w + b)))
        return (s * (1 - s))[:, None, None] * w[None, None, :]


class Quadratic(nn.Module):
    """y = x' A x (A not symmetric)  ->  dy/dx = (A + A') x."""

    def __init__(self, n_features: int = N_FEATURES):
        super().__init__()
        self.A = nn.Parameter(_weights(n_features, n_features, seed=3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.A) * x).sum(1)

    def expected_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        a = self.A.detach()
        return (x @ (a + a.T).T).unsqueeze(1)


class MultiOutput(nn.Module):
    """y = W x with W [3, features]  ->  dy/dx = W, the same in every row."""

    def __init__(self, n_features: int = N_FEATURES, n_outputs: int = 3):
        super().__init__()
        self.W = nn.Parameter(_weights(n_outputs, n_features, seed=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W.T

    def expected_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        w = self.W.detach()
        return w.expand(x.shape[0], *w.shape).clone()


class MLP(nn.Module):
    """y = V tanh(U x + c) + d with U [5, features], V [3, 5]  ->  dy/dx = V diag(1 - h^2) U,
    h = tanh(U x + c): nonlinear, multi-output, different in every row."""

    def __init__(self, n_features: int = N_FEATURES, hidden: int = 5, n_outputs: int = 3):
        super().__init__()
        self.U = nn.Parameter(_weights(hidden, n_features, seed=5))
        self.c = nn.Parameter(_weights(hidden, seed=6))
        self.V = nn.Parameter(_weights(n_outputs, hidden, seed=7))
        self.d = nn.Parameter(_weights(n_outputs, seed=8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.U.T + self.c) @ self.V.T + self.d

    def expected_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        u, c, v = self.U.detach(), self.c.detach(), self.V.detach()
        h = torch.tanh(x @ u.T + c)  # [rows, hidden]
        return torch.einsum("oh,rh,hf->rof", v, 1 - h**2, u)


class SteppedMLP(MLP):
    """MLP(x) + floor(x_2) per output: the staircase moves the score by whole steps, and its
    gradient is 0 wherever it exists, so every gradient-based method misses feature 2's
    effect (a blind proxy, which the proxy check's probe must find). dy/dx is MLP's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.U.T + self.c) @ self.V.T + self.d + torch.floor(x[:, 2:3])


CLOSED_FORM = {"linear": Linear, "sigmoid": Sigmoid, "quadratic": Quadratic,
               "multi_output": MultiOutput, "mlp": MLP}


# --- Models that must be refused -------------------------------------------------------------


def batchnorm_in_train_mode(n_features: int = N_FEATURES) -> nn.Module:
    """Linear -> BatchNorm1d -> Linear in training mode: a row's score uses batch statistics."""
    torch.manual_seed(11)
    return nn.Sequential(nn.Linear(n_features, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).double()


def dropout_in_train_mode(n_features: int = N_FEATURES) -> nn.Module:
    """Linear -> Dropout(0.5) -> Linear in training mode: fresh noise on every call."""
    torch.manual_seed(12)
    return nn.Sequential(nn.Linear(n_features, 8), nn.Dropout(0.5), nn.Linear(8, 1)).double()


class BatchCentering(nn.Module):
    """y = (x - mean over the batch of x) . w: deterministic, yet every row depends on the
    others (what BatchNorm in training mode does, without BatchNorm's one-row error)."""

    def __init__(self, n_features: int = N_FEATURES):
        super().__init__()
        self.w = nn.Parameter(_weights(n_features, seed=9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(0)) @ self.w


class Detaching(nn.Module):
    """y = x.detach() @ W: scores with no gradient path to the input. W [features, outputs]."""

    def __init__(self, n_features: int = N_FEATURES, n_outputs: int = 1):
        super().__init__()
        self.n_outputs = n_outputs
        self.W = nn.Parameter(_weights(n_features, n_outputs, seed=10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.detach() @ self.W
        return y.squeeze(1) if self.n_outputs == 1 else y


class Argmax(nn.Module):
    """y = argmax over features of x: integer scores, no gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(dim=1)


class WrongShape(nn.Module):
    """y = x[:, :, None]: [rows, features, 1], not one score vector per row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1)


def save_exported(model: nn.Module, path: Path, n_features: int,
                  dtype: torch.dtype = torch.float32) -> Path:
    """torch.export ``model`` with a dynamic batch dimension and save it to ``path`` (.pt2)."""
    example = (torch.zeros(4, n_features, dtype=dtype),)
    program = torch.export.export(model, example,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path
