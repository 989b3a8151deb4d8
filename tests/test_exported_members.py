"""`sensaudit.__all__` lists exactly the public names the package exports (httpx's
tests/test_exported_members.py): a name added to __init__ without __all__, or the reverse,
fails here."""

from __future__ import annotations

import types

import sensaudit

PRIVATE_BUT_EXPORTED = {"__version__"}


def test_all_lists_every_public_name():
    # The names whose modules import torch load on first use: resolve them all first.
    for name in sensaudit.__all__:
        getattr(sensaudit, name)
    exported = {
        name for name, value in vars(sensaudit).items()
        if (not name.startswith("_") or name in PRIVATE_BUT_EXPORTED)
        # Submodules become attributes when imported; they are not part of the flat API.
        and not isinstance(value, types.ModuleType)
    }
    assert sensaudit.__all__ == sorted(exported)


def test_all_names_resolve_and_are_unique():
    assert len(set(sensaudit.__all__)) == len(sensaudit.__all__)
    for name in sensaudit.__all__:
        assert getattr(sensaudit, name) is not None


def test_public_objects_are_defined_in_the_package():
    for name in sensaudit.__all__:
        value = getattr(sensaudit, name)
        if name != "__version__":
            assert value.__module__.startswith("sensaudit."), name


def test_errors_share_one_base():
    for name in ("ConfigError", "DataError", "ModelError", "ModelLoadError", "ReportError"):
        error = getattr(sensaudit, name)
        assert issubclass(error, sensaudit.SensauditError)
        assert error.exit_code == 2
