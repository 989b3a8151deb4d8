"""Checks, one per file, run in this order; each adds gates, warnings and findings.

To add a check, subclass :class:`~sensaudit.checks.base.Check` in a new file and add it to
:data:`CHECKS` with one line (README, "Extending").
"""

from __future__ import annotations

from ..config import AuditSettings
from ..errors import ConfigError
from .base import Check, CheckResult, Gate, Notice, Ranking
from .completeness import Completeness
from .dominance import Dominance
from .proxies import ProxyLimits

CHECKS: list[type[Check]] = [
    ProxyLimits,
    Dominance,
    Completeness,
]


def build_checks(settings: AuditSettings, source: object) -> list[Check]:
    """Every registered check the settings ask for. A check's own option errors are named
    with the config file (``source``) they came from."""
    built = []
    for cls in CHECKS:
        try:
            check = cls.from_settings(settings)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if check is not None:
            built.append(check)
    return built


__all__ = ["CHECKS", "Check", "CheckResult", "Gate", "Notice", "Ranking", "build_checks"]
