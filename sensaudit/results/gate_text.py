"""A gate in one line of words, and the finding that explains it: what --quiet, the GitHub
annotations, junit.xml and the HTML report say about each gate, whatever check produced it.

One wording everywhere, one unit per quantity: shares and rates in %, changes of a share in
points, score figures in score units; lists as plain text, never a Python repr."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module before torch (checks import it)
    from sensaudit.checks.base import CheckResult, Gate, Notice

# Limits are said by the gate's limit text, and names by its subject: not repeated as figures.
_NOT_FIGURES = frozenset({"feature", "output", "threshold", "max_share", "max_rank",
                          "max_violation_rate", "max_off_rate", "max_ratio", "max_relative_gap",
                          "limit", "passed", "score"})
# (words, unit) per figure a check reports; "%" shares and rates, "points" a change of a share.
_WORDS: dict[str, tuple[str, str]] = {
    "share": ("share", "%"), "rank": ("rank", ""),
    "evidence_share": ("label's support", "%"), "evidence_low": ("support at least", "%"),
    "evidence_high": ("support at most", "%"),
    "reliance_gap": ("share over its support", "points"),
    "share_misscored": ("share on misscored rows", "%"),
    "share_rest": ("share on the other rows", "%"),
    "contrast": ("misscored minus rest", "points"),
    "contrast_low": ("its interval from", "points"), "contrast_high": ("to", "points"),
    "probe_share": ("share measured by a finite step", "%"),
    "score_change": ("mean score change", ""), "gradient_predicts": ("gradient predicts", ""),
    "gradient_misses": ("gradient misses", ""), "probe_step": ("step", ""),
    "violation_rate": ("violation rate", "%"),
    "mean_shift": ("mean shift", ""), "p95_shift": ("95th-percentile shift", ""),
    "max_shift": ("largest shift", ""), "epsilon": ("attack budget (std)", ""),
    "off_rate": ("off rate", "%"), "mean_relative_error": ("mean relative error", "%"),
    "relative_gap": ("relative gap", "%"), "step_std": ("step (std)", ""),
}


def figures(details: dict[str, Any]) -> str:
    """The figures behind a gate or warning, in words ("share 39.0%, rank 1"). A check that
    explains its verdict in sentences (``reasons``) is quoted by those sentences alone."""
    reasons = details.get("reasons")
    if reasons:
        return "; ".join(str(r) for r in reasons)
    parts = []
    for key, value in details.items():
        if value is None or key in _NOT_FIGURES or key.startswith("min_"):
            continue
        if isinstance(value, bool):
            if value:
                parts.append(key.replace("_", " "))
            continue
        words, unit = _WORDS.get(key, (key.replace("_", " "), "%" if _is_share(key) else ""))
        parts.append(f"{words} {quantity(value, unit)}")
    return ", ".join(parts)


def quantity(value: Any, unit: str) -> str:
    """A number in its unit: "%" a fraction as a percentage, "points" a change of a share in
    percentage points, "" as it is (4 significant digits)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "not measured" if math.isnan(value) else str(value)
    if unit == "%":
        return f"{value:.1%}"
    if unit == "points":
        return f"{value * 100:+.1f} points"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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
    over = f"; over {quantity(limit, '%')}" if isinstance(limit, (int, float)) else ""
    return f"{subject(notice, multi_output)}: {shown}{over} ({notice.check})"


def increase_line(feature: str, delta_share: float, margin: float) -> str:
    """A declared proxy's share grown past compare.max_proxy_share_increase, in points."""
    return (f"{feature}: share grew by {delta_share * 100:.1f} points; limit an increase of at "
            f"most {margin * 100:.1f} points (compare.max_proxy_share_increase)")


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


def _is_share(key: str) -> bool:
    return "share" in key or key.endswith("_rate")
