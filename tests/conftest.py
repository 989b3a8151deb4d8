"""Shared fixtures: every test starts from the same seeds, on the CPU."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from models import N_FEATURES


@pytest.fixture(autouse=True)
def _outside_github_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    """This suite may itself run in GitHub Actions: the CLI must not append to that job's
    summary or print annotations there, and tests asserting exact output expect neither.
    Tests of that integration set these variables themselves."""
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def x() -> torch.Tensor:
    """float64 [11, 4]: 11 rows, an odd count so that chunks of 3 and 7 leave remainders."""
    generator = torch.Generator().manual_seed(123)
    return torch.randn(11, N_FEATURES, generator=generator, dtype=torch.float64)
