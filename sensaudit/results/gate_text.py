"""A gate in one line of words, and the finding that explains it: what --quiet, the GitHub
annotations and junit.xml say about each gate, whatever check produced it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module before torch (checks import it)
    from sensaudit.checks.base import CheckResult, Gate, Notice

_LIMIT_KEYS = ("max_", "min_")


def figures(details: dict[str, Any]) -> str:
    """The figures behind a gate or warning ("share 39.0%, rank 1"): limits (max_*, min_*)
    are left to the limit text, shares are shown as percentages."""
    parts = []
    for key, value in details.items():
        if value is None or key.startswith(_LIMIT_KEYS) or key == "threshold":
            continue
        parts.append(f"{key.replace('_', ' ')} {_value(key, value)}")
    return ", ".join(parts)


def subject(item: Gate | Notice, multi_output: bool) -> str:
    return f"{item.subject} ({item.output})" if multi_output else item.subject


def gate_line(gate: Gate, multi_output: bool) -> str:
    """'copy_length: share 39.0%, rank 1; limit share <= 15% (proxy_limits)'."""
    shown = figures(gate.details)
    return (f"{subject(gate, multi_output)}: {shown + '; ' if shown else ''}limit {gate.limit} "
            f"({gate.check})")


def notice_line(notice: Notice, multi_output: bool) -> str:
    shown = figures(notice.details)
    limit = notice.details.get("threshold")
    over = f"; over {_value('share', limit)}" if isinstance(limit, (int, float)) else ""
    return f"{subject(notice, multi_output)}: {shown}{over} ({notice.check})"


def finding_for(item: Gate | Notice, checks: Sequence[CheckResult], multi_output: bool
                ) -> str | None:
    """The finding the item's own check wrote about it (plain text), if any: the first one
    that names its subject in bold (and its output, with several outputs)."""
    for check in checks:
        if check.check != item.check:
            continue
        for text in check.findings:
            if f"**{item.subject}**" in text and (not multi_output or f"'{item.output}'" in text):
                return text.replace("**", "")
    return None


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if "share" in key:
        return f"{value:.1%}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
