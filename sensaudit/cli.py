"""The `sensaudit` command: parse, call the library, render with rich, map errors to exit codes.

Exit codes: 0 the audit passed; 1 it ran and a gate failed; 2 bad input (config, data, model),
with a one-line ``Error: ...`` on stderr. Unexpected exceptions keep their traceback: they are
bugs. ``--debug`` shows the traceback of expected errors too.
"""

from __future__ import annotations

import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, JustifyMethod
from rich.markup import escape
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

from ._version import __version__
from .api import run_audit, run_compare
from .compare import ComparisonResult, gate_change
from .config import load_config
from .errors import SensauditError
from .results import AuditResult

EXIT_PASSED, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL_ERROR = 0, 1, 2, 3

app = typer.Typer(
    name="sensaudit",
    help="Audit trained PyTorch scorers by their input sensitivity: per-example Jacobians, "
         "feature rankings and spurious-proxy gates for CI.\n\n"
         "Exit codes: 0 passed, 1 a gate failed, 2 bad input (config, data or model), "
         "3 an internal error (a bug; the traceback is printed).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
stdout = Console()
stderr = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"sensaudit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Audit trained PyTorch scorers by their input sensitivity."""


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML audit config (see configs/).",
                                           show_default=False)],
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="Allow loading whole pickled modules. Unpickling runs code from "
                               "the file: use only for files you trust.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table; "
                                                              "errors and verdict only.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """Audit one model as CONFIG says: rank features by how strongly they move the score, flag
    declared proxies over their limits, and write the reports to `report.dir`.

    Example:

        sensaudit run configs/scorer_v1.yaml

    Relative paths in the config resolve against the config file's folder.
    """
    with _errors(debug):
        cfg = load_config(config)
        with _progress(quiet) as progress:
            result, written = run_audit(cfg, progress=progress,
                                        trust_pickle=True if trust_pickle else None)
    if not quiet:
        _print_audit(result, written)
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    # Non-finite rows can fail an audit with 0 flags: the verdict says so, even with --quiet.
    allowed = " (allowed)" if result.nonfinite_allowed else ""
    nonfinite = (f"{result.nonfinite_rows:,} non-finite row(s){allowed}, "
                 if result.nonfinite_rows else "")
    # data.on_missing: drop says how many rows it skipped, here as in the reports.
    dropped = (f" ({result.rows_dropped:,} dropped for missing values)"
               if result.rows_dropped else "")
    stdout.print(f"Audit {verdict}: {len(result.gates.flags)} flag(s), "
                 f"{len(result.gates.warnings)} warning(s), {nonfinite}{result.rows:,} rows"
                 f"{dropped}; reports in {escape(str(cfg.report.dir))}", highlight=False)
    raise typer.Exit(EXIT_PASSED if result.passed else EXIT_GATE_FAILED)


@app.command()
def compare(
    old: Annotated[Path, typer.Argument(help="The model before (e.g. the deployed one).",
                                        show_default=False)],
    new: Annotated[Path, typer.Argument(help="The model after (e.g. the retrain).",
                                        show_default=False)],
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config: data, proxies, "
                                         "compare settings (its model section is optional).",
                                         show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for comparison.csv/"
                                             ".json/.md (default: the config's report.dir).",
                                             show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Audit these rows instead of "
                                              "the config's data.path.",
                                              show_default=False)] = None,
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="Allow loading whole pickled modules (runs code from the "
                               "files).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")
                     ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """Compare how two versions of a model respond to their inputs, on the same rows: shares
    before and after with bootstrap intervals, rank correlation, per-row agreement, score
    moves. Exits 0 when NEW passes every gate in the config, 1 when it fails one (or a proxy's
    share grew by more than compare.max_proxy_share_increase), 2 on bad input.

    Example:

        sensaudit compare sample_data/scorer_v1.pt2 sample_data/scorer_v2.pt2 \\
            --config configs/scorer_v2.yaml --out reports/compare

    OLD, NEW, --out and --data are relative to the current folder; paths inside the config
    resolve against the config's folder.
    """
    with _errors(debug):
        cfg = load_config(config)
        with _progress(quiet) as progress:
            result, written = run_compare(cfg, old, new, out_dir=out, data_path=data,
                                          progress=progress,
                                          trust_pickle=True if trust_pickle else None)
    if not quiet:
        _print_comparison(result, written)
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    stdout.print(f"Compare {verdict}: new model {len(result.new.gates.flags)} flag(s), "
                 f"{len(result.proxy_increases)} proxy increase(s) over margin, "
                 f"{result.new.rows:,} rows")
    raise typer.Exit(EXIT_PASSED if result.passed else EXIT_GATE_FAILED)


@contextmanager
def _errors(debug: bool):
    """The one error boundary: expected errors become a one-line message and exit code 2."""
    try:
        yield
    except SensauditError as exc:
        if debug:
            raise
        # The message is plain text: file names like "[v2].csv" must not be read as markup.
        # A value quoted from a file ("\x1e", a newline in a column name) must not split the
        # one line a CI log shows: non-printable characters are shown escaped.
        message = "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                          for c in str(exc))
        stderr.print(Text.assemble(("Error:", "bold red"), " ", message), highlight=False,
                     soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except Exception:
        # A bug: keep its traceback, but exit with a code CI cannot take for a failed gate.
        if debug:
            raise
        traceback.print_exc()
        stderr.print("sensaudit hit an internal error (a bug, not your input); please report "
                     "it with the traceback above", markup=False, highlight=False)
        raise typer.Exit(EXIT_INTERNAL_ERROR) from None


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "", style="cyan")


@contextmanager
def _progress(quiet: bool):
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), _RowsPerSecond(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    # Off the terminal (CI logs, pipes) a live bar only leaves stray blank lines behind.
    show = not quiet and stderr.is_terminal
    with Progress(*columns, console=stderr, disable=not show, transient=True) as bar:
        tasks: dict[str, TaskID] = {}
        labels = {"audit": "Computing attributions", "examples": "Writing examples",
                  "statistics": "Measuring features"}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _print_audit(result: AuditResult, written: list[Path]) -> None:
    for output, group in result.table.groupby("output", sort=False):
        title = "Feature sensitivity" + (f" ({escape(output)})" if len(result.outputs) > 1
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
        for r in group.sort_values("rank").itertuples():
            table.add_row(str(r.rank), escape(r.feature), f"{r.share:.1%}",
                          f"{r.scaled_sensitivity:.4g}",
                          f"{r.mean_gradient if result.per_unit else r.mean_attribution:.4g}",
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
    a column named "price[usd]" must print as it is."""
    stdout.print(text, markup=False, highlight=False)


def _print_comparison(result: ComparisonResult, written: list[Path]) -> None:
    for output, group in result.table.groupby("output", sort=False):
        title = "Before -> after" + (f" ({escape(output)})" if len(result.new.outputs) > 1
                                     else "")
        table = Table(title=title, title_justify="left")
        for name in ("feature", "share old", "share new", "change", "rank", "gate"):
            table.add_column(name, justify="left" if name in ("feature", "gate") else "right")
        for r in group.itertuples():
            change = f"{r.delta_share:+.1%}" + ("*" if r.significant else "")
            gate = gate_change(r.flagged_old, r.flagged_new)
            gate = f"[{'green' if gate == 'cleared' else 'red'}]{gate}[/]" if gate else ""
            table.add_row(escape(r.feature), f"{r.share_old:.1%}", f"{r.share_new:.1%}", change,
                          f"{r.rank_old} -> {r.rank_new}", gate)
        stdout.print(table)
    if result.settings.get("bootstrap_samples"):
        _plain("* the change is larger than its bootstrap noise")
    for text in result.findings:
        _plain("- " + text)
    for path in written:
        _plain(f"  wrote {path}")
