"""Checks, one per file, run in this order; each adds gates, warnings and findings.

To add a check, subclass :class:`~sensaudit.checks.base.Check` in a new file and add it to
:data:`CHECKS` with one line (README, "Extending").
"""

from __future__ import annotations

from ..config import AuditSettings
from .base import Check, CheckResult, Gate, Notice, Ranking
from .dominance import Dominance
from .proxies import ProxyLimits

CHECKS: list[type[Check]] = [
    ProxyLimits,
    Dominance,
]


def build_checks(settings: AuditSettings) -> list[Check]:
    """Every registered check the settings ask for."""
    return [check for cls in CHECKS if (check := cls.from_settings(settings)) is not None]


__all__ = ["CHECKS", "Check", "CheckResult", "Gate", "Notice", "Ranking", "build_checks"]
