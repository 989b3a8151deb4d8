"""The names each extension point has registered, as the config accepts them."""

from __future__ import annotations


def registered(kind: str) -> tuple[str, ...]:
    """The names registered for an extension point: "methods", "checks" or "formats".

    The registries sit below the config in the layers (the config reads them; they never read
    the config), so a method, check or report format added with one registration line is
    accepted by the config with no edit here.

    The registries are imported when first asked, not with this module: they import torch
    (seconds), which ``sensaudit --help`` and ``--version`` should not pay for.
    """
    if kind == "methods":
        from sensaudit.methods import METHODS

        return tuple(METHODS)
    if kind == "checks":
        from sensaudit.checks import CHECKS

        return tuple(check.name for check in CHECKS)
    from sensaudit.reports import WRITERS

    return tuple(WRITERS)
