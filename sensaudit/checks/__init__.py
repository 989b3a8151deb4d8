"""Checks, one per file, run in this order; each adds gates, warnings and findings.

To add a check, subclass :class:`~sensaudit.checks.base.Check` in a new file and add it to
:data:`CHECKS` with one line (docs/extending.md).
"""

from __future__ import annotations

from sensaudit.checks.base import Check
from sensaudit.checks.completeness import Completeness
from sensaudit.checks.dominance import Dominance
from sensaudit.checks.layer_health import LayerHealth
from sensaudit.checks.linearity import Linearity
from sensaudit.checks.monotonicity import Monotonicity
from sensaudit.checks.one_hot import OneHotLevels
from sensaudit.checks.protected_proxies import ProtectedProxies
from sensaudit.checks.proxies import ProxyLimits
from sensaudit.checks.robustness import Robustness
from sensaudit.checks.suspects import SuspectedProxies
from sensaudit.core.errors import ConfigError
from sensaudit.settings.sections import AuditSettings

CHECKS: list[type[Check]] = [
    ProxyLimits,
    Dominance,
    Monotonicity,
    Robustness,
    OneHotLevels,
    Linearity,
    LayerHealth,
    SuspectedProxies,
    ProtectedProxies,
    Completeness,
]


def build_checks(settings: AuditSettings, source: object) -> list[Check]:
    """Every registered check the settings ask for. A check's own option errors are named
    with the config file (``source``) they came from."""
    built = []
    for cls in CHECKS:
        if cls.config_key is not None and cls.name in settings.checks:
            raise ConfigError(f"{source}: audit.checks.{cls.name}: this check is configured "
                              f"with audit.{cls.config_key}, not in audit.checks")
        try:
            check = cls.from_settings(settings)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        if check is not None:
            built.append(check)
    return built


def data_columns(settings: AuditSettings) -> tuple[tuple[str, str], ...]:
    """The data columns the configured checks read beside the features (audit.protected),
    each once, with the dotted key naming it (:meth:`Check.data_columns`)."""
    found: dict[str, str] = {}
    for cls in CHECKS:
        for name, key in cls.data_columns(settings):
            found.setdefault(name, key)
    return tuple(found.items())


def check_names(settings: AuditSettings, features: tuple[str, ...], source: object) -> None:
    """The feature names every registered check's settings give (proxies, groups,
    expectations, ...) are audited features: checked once the table is open, before any row
    is read (:meth:`Check.check_names`); messages name the config file (``source``)."""
    for cls in CHECKS:
        try:
            cls.check_names(settings, features)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


__all__ = ["CHECKS", "build_checks", "check_names", "data_columns"]
