"""The oldest torch sensaudit runs on, and a clear error for an older one.

torch 2.8 is the floor because the model loader's safety checks read the archive layout that
``torch.export.save`` writes from 2.8 on (``<name>/models/*.json`` with the graph,
``<name>/data/...`` with the weights): :func:`sensaudit.inputs.pt2_safety.check_archive`
inspects that JSON for shape expressions and operators before ``torch.export.load`` evaluates
them. torch 2.6 and 2.7 write and read the older layout (``serialized_exported_program.json``
at the archive root), which those checks do not read, so an older torch would load a .pt2 with
the checks silently skipped. ``torch.export.passes.move_to_device_pass`` (torch 2.5) and
``torch.load(weights_only=True)`` are older than that floor.

Nothing here imports torch at module level: the CLI checks the version only when it is about
to use torch, so ``--help`` stays fast.
"""

from __future__ import annotations

import re

from sensaudit.core.errors import SensauditError

MIN_TORCH = (2, 8)
MIN_TORCH_TEXT = ".".join(map(str, MIN_TORCH))


class UnsupportedTorch(SensauditError):
    """The installed torch is older than :data:`MIN_TORCH` (exit code 2: fix the set-up)."""


def parse_version(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string: '2.13.0+cpu' -> (2, 13), '2.9.0a0' -> (2, 9).

    Compared as numbers, so 2.10 is newer than 2.8 (as text it would sort first)."""
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a torch version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def unsupported_reason(version: str) -> str | None:
    """Why this torch version cannot run sensaudit, or None when it can."""
    try:
        found = parse_version(version)
    except ValueError:
        return None  # a source build with an odd version string: let it try
    if found >= MIN_TORCH:
        return None
    return (f"sensaudit needs torch {MIN_TORCH_TEXT} or newer, found torch {version}: "
            f"the .pt2 safety checks read the archive layout torch.export.save writes from "
            f"{MIN_TORCH_TEXT} on. Upgrade it: pip install 'torch>={MIN_TORCH_TEXT}'")


def require_supported_torch() -> None:
    """Raise :class:`UnsupportedTorch` when the installed torch is too old."""
    import torch

    reason = unsupported_reason(torch.__version__)
    if reason is not None:
        raise UnsupportedTorch(reason)
