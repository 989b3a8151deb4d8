"""GitHub Actions: the job summary and the annotations a workflow shows for a run.

- ``$GITHUB_STEP_SUMMARY`` (set on every Actions runner): ``run`` and ``compare`` append their
  markdown report to it, so the verdict, the table and the findings show on the run's page.
- ``GITHUB_ACTIONS=true``: each failed gate becomes an ``::error`` workflow command and each
  warning a ``::warning``, shown on the run and in the pull request's checks.

Pure functions: the CLI prints what they return.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sensaudit.core.text_safety import github_data, github_property, visible
from sensaudit.results.gate_text import finding_for, gate_line, increase_line, notice_line

if TYPE_CHECKING:
    from sensaudit.results.audit_result import AuditResult
    from sensaudit.results.comparison import ComparisonResult


def in_actions(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def append_summary(env: Mapping[str, str], markdown: str) -> str | None:
    """Append to the job summary when ``GITHUB_STEP_SUMMARY`` names a file; returns why it
    could not, or None."""
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    try:
        with Path(target).open("a", encoding="utf-8") as handle:
            handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as exc:
        return f"cannot append to $GITHUB_STEP_SUMMARY ({target}): {exc.strerror or exc}"
    return None


def audit_annotations(result: AuditResult, config: Path | None = None) -> list[str]:
    """``::error`` per failed gate (with its finding), ``::warning`` per warning, and an
    ``::error`` when non-finite rows fail the audit. ``config`` is the file they point at."""
    multi = len(result.outputs) > 1
    lines = []
    for gate in result.gates.flags:
        finding = finding_for(gate, result.checks, multi)
        # The message's two lines are sensaudit's; a newline in a name shows as "\n".
        lines.append(command("error", f"sensaudit: {gate.check} failed for {gate.subject}",
                             visible(gate_line(gate, multi))
                             + (f"\n{visible(finding)}" if finding else ""), config))
    for notice in result.gates.warnings:
        lines.append(command("warning", f"sensaudit: {notice.check} warning for "
                                        f"{notice.subject}",
                             notice_line(notice, multi), config))
    if result.nonfinite_rows and not result.nonfinite_allowed:
        lines.append(command("error", "sensaudit: non-finite rows",
                             f"{result.nonfinite_rows:,} rows gave non-finite scores or "
                             "gradients (audit.allow_nonfinite is false)", config))
    return lines


def comparison_annotations(result: ComparisonResult, config: Path | None = None) -> list[str]:
    lines = audit_annotations(result.new, config)
    for increase in result.proxy_increases:
        lines.append(command("error", f"sensaudit: {increase.feature}'s share grew",
                             increase_line(increase.feature, increase.delta_share,
                                           increase.margin), config))
    return lines


def command(kind: str, title: str, message: str, file: Path | None = None) -> str:
    """One workflow command line, escaped as the runner expects (a newline in a feature name
    must not end the command early; text_safety has the rules)."""
    properties = [f"title={github_property(title)}"]
    if file is not None:
        properties.insert(0, f"file={github_property(str(file))}")
    return f"::{kind} {','.join(properties)}::{github_data(message)}"
