"""What the `sensaudit` command shows: the consoles, the results, the progress bar, GitHub output.

The commands in :mod:`sensaudit.cli.app` call the library, then hand its results here: the audit's
and the comparison's tables, the one-line gates of ``--quiet``, and, in GitHub Actions, the job
summary and annotations. Text quoted from the user's files (feature names, ids, paths) is
never read as rich markup, and its control characters (terminal escape sequences, newlines
that would start a forged ``::error`` line in a CI log) are shown escaped (text_safety).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, JustifyMethod
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from sensaudit.cli import github_actions
from sensaudit.core.text_safety import terminal, visible

# Type names only: the results' modules load torch and pandas, which `--help` must not
# (tests/test_cli_start.py checks the import graph).
if TYPE_CHECKING:
    from sensaudit.results.audit_result import AuditResult
    from sensaudit.results.comparison import ComparisonResult


def _console(stderr: bool = False) -> Console:
    """Off a terminal (CI logs, pipes) nothing is wrapped: a log line split at 80 columns
    breaks the paths and feature names people search it for. COLUMNS still sizes tables."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    width = os.environ.get("COLUMNS", "")
    return Console(stderr=stderr, soft_wrap=True,
                   width=int(width) if width.isdigit() else 10_000)


stdout = _console()
stderr = _console(stderr=True)


def _to_github(markdown: str, annotations: list[str]) -> None:
    """The job summary and annotations, when running in GitHub Actions (github_actions)."""
    problem = github_actions.append_summary(os.environ, markdown)
    if problem is not None:
        stderr.print(visible(f"warning: {problem}"), markup=False, highlight=False)
    if github_actions.in_actions(os.environ):
        for line in annotations:
            _plain(line)


def _print_gates(result: AuditResult) -> None:
    """--quiet: every failed gate and warning on one line each."""
    from sensaudit.results.gate_text import gate_line, notice_line

    multi = len(result.outputs) > 1
    for gate in result.gates.flags:
        _plain(f"FAILED {gate_line(gate, multi)}")
    for notice in result.gates.warnings:
        _plain(f"WARNING {notice_line(notice, multi)}")


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "", style="cyan")


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str, int, int | None], None]]:
    # yields the audit's progress callback: progress(stage, rows_done, rows_total)
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), _RowsPerSecond(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    # Off the terminal (CI logs, pipes) a live bar only leaves stray blank lines behind.
    show = not quiet and stderr.is_terminal
    with Progress(*columns, console=stderr, disable=not show, transient=True) as bar:
        tasks: dict[str, TaskID] = {}
        labels = {"audit": "Computing attributions", "examples": "Writing examples",
                  "statistics": "Measuring features", "replay": "Replaying checks",
                  "training": "Reading training rows"}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _print_audit(result: AuditResult, written: list[Path]) -> None:
    for output, group in result.table.groupby("output", sort=False):
        title = "Feature sensitivity" + (f" ({terminal(output)})" if len(result.outputs) > 1
                                         else "")
        table = Table(title=title, title_justify="left")
        # Attribution methods (score units) show their mean |attribution| and mean attribution.
        size, mean = (("scaled sens.", "mean grad") if result.per_unit
                      else ("mean |attr.|", "mean attr."))
        columns: list[tuple[str, JustifyMethod]] = [
            ("rank", "right"), ("feature", "left"), ("share", "right"),
            (size, "right"), (mean, "right"), ("flag", "center")]
        for name, justify in columns:
            table.add_column(name, justify=justify)
        # audit.groups' rows (after the features', ranked among groups and ungrouped
        # features) have no mean gradient: their members' are in other units.
        grouped = "group" in group.columns
        for r in (group if grouped else group.sort_values("rank")).itertuples():
            is_group = grouped and r.group == r.feature
            mean = r.mean_gradient if result.per_unit else r.mean_attribution
            table.add_row(str(r.rank), terminal(r.feature) + (" (group)" if is_group else ""),
                          f"{r.share:.1%}", f"{r.scaled_sensitivity:.4g}",
                          "" if is_group else f"{mean:.4g}",
                          "[red]FLAG[/]" if r.flagged else "")
        stdout.print(table)
    for text in result.findings:
        _plain("- " + text.replace("**", ""))
    if result.nonfinite_rows:
        _plain(f"- {result.nonfinite_rows:,} rows gave non-finite gradients; first ids: "
               f"{', '.join(map(str, result.nonfinite_ids))}")
    for path in written:
        _plain(f"  wrote {path}")


def _plain(text: str) -> None:
    """Print text that quotes files (feature names, ids, paths) without reading it as markup:
    a column named "price[usd]" must print as it is, one named "x\n::error::" on one line."""
    stdout.print(visible(text), markup=False, highlight=False)


def _print_comparison(result: ComparisonResult, written: list[Path]) -> None:
    from sensaudit.results.comparison import (
        INPUTS_NOTE,
        gate_change,
        input_status,
        noise_name,
        rank_move,
        share_cell,
    )

    for output, group in result.table.groupby("output", sort=False):
        title = "Before -> after" + (f" ({terminal(output)})" if len(result.new.outputs) > 1
                                     else "")
        table = Table(title=title, title_justify="left")
        for name in ("feature", "share old", "share new", "change", "rank", "gate"):
            table.add_column(name, justify="left" if name in ("feature", "gate") else "right")
        for r in group.itertuples():
            status = input_status(r)
            change = (status if status != "common"
                      else f"{r.delta_share * 100:+.1f}" + ("*" if r.changed else ""))
            gate = gate_change(r.flagged_old, r.flagged_new)
            gate = f"[{'green' if gate == 'cleared' else 'red'}]{gate}[/]" if gate else ""
            table.add_row(terminal(r.feature), share_cell(r.share_old), share_cell(r.share_new),
                          change, rank_move(r), gate)
        stdout.print(table)
    _plain("change: new share - old share, in share points")
    if "status" in result.table.columns:
        _plain(INPUTS_NOTE)
    if "delta_share_low" in result.table.columns:
        _plain(f"* outside its {result.settings['confidence']:.0%} interval "
               f"({noise_name(result.settings)}) and at least "
               f"{result.settings['min_change']:g} points (compare.min_change)")
        if result.settings.get("noise") == "rows":
            _plain("  Retraining noise is not measured: two trainings of the same model differ "
                   "by more; pass --old-replica/--new-replica.")
    for text in result.findings:
        _plain("- " + text)
    for path in written:
        _plain(f"  wrote {path}")
