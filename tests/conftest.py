"""Shared fixtures: every test starts from the same seeds, on the CPU."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from models import N_FEATURES


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
