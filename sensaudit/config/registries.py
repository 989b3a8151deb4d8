"""The extensions each extension point has registered, as the config reads them.

The registries sit below the config in the layers (the config reads them; they never read the
config), so a method, check or report format added with one registration line is accepted by
the config, with the options it declares (:mod:`sensaudit.settings.options`), with no edit
here.

The registries are imported when first asked, not with this module: they import torch
(seconds), which ``sensaudit --help`` and ``--version`` should not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sensaudit.checks.base import Check
    from sensaudit.methods.base import AttributionMethod
    from sensaudit.reports.base import ReportWriter


def registered(kind: str) -> tuple[str, ...]:
    """The names registered for an extension point: "methods", "checks" or "formats"."""
    if kind == "methods":
        return tuple(methods())
    if kind == "checks":
        return tuple(check.name for check in checks())
    return tuple(formats())


def methods() -> dict[str, type[AttributionMethod]]:
    from sensaudit.methods import METHODS

    return METHODS


def checks() -> list[type[Check]]:
    from sensaudit import checks as registry  # the module: a test may swap its list

    return registry.CHECKS


def formats() -> dict[str, type[ReportWriter]]:
    from sensaudit.reports import WRITERS

    return WRITERS
