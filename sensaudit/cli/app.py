"""The `sensaudit` command: parse, call the library, render with rich, map errors to exit codes.

Exit codes: 0 the audit passed; 1 it ran and a gate failed; 2 bad input (config, data, model),
with a one-line ``Error: ...`` on stderr. Unexpected exceptions keep their traceback: they are
bugs. ``--debug`` shows the traceback of expected errors too.

This module holds the commands and the one error boundary; what they print (tables, progress
bar, GitHub Actions output) is drawn by :mod:`sensaudit.cli.render`.
"""

from __future__ import annotations

import glob
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from sensaudit._version import __version__
from sensaudit.cli import github_actions
from sensaudit.cli.demo import DEFAULT_FOLDER as DEFAULT_DEMO_FOLDER
from sensaudit.cli.demo import story_commands
from sensaudit.cli.overrides import with_overrides
from sensaudit.cli.render import (
    _plain,
    _print_audit,
    _print_comparison,
    _print_gates,
    _progress,
    _to_github,
    stderr,
    stdout,
)
from sensaudit.config.load import load_config
from sensaudit.core.errors import ModelLoadError, SensauditError
from sensaudit.core.text_safety import markdown_line, terminal, visible

# torch, pandas and the pipeline load inside the commands that use them, so `--help` and
# `--version` answer at once (tests/test_cli_start.py checks the import graph).

# Bad input exits 2: every SensauditError's exit_code.
EXIT_PASSED, EXIT_GATE_FAILED, EXIT_INTERNAL_ERROR = 0, 1, 3
TRUST_HELP = ("Trust the model file(s) like code you run: unpickle whole pickled modules and "
              "skip sensaudit's checks of .pt2 and TorchScript files. A file from elsewhere "
              "can then run any code on this machine.")

app = typer.Typer(
    name="sensaudit",
    help="Audit trained PyTorch scorers by their input sensitivity: per-example Jacobians, "
         "feature rankings and spurious-proxy gates for CI.\n\n"
         "Start with `sensaudit init MODEL DATA`, which writes a config to edit, then "
         "`sensaudit run CONFIG`.\n\n"
         "Exit codes: 0 passed, 1 a gate failed, 2 bad input (config, data or model), "
         "3 an internal error (a bug; the traceback is printed).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: flags show as flags (no `<bool>` that reads like a value to pass).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table: each "
                                     "failed gate on one line, then the verdict.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
Formats = Annotated[list[str] | None, typer.Option(
    "--format", "-f", metavar="FORMAT[,FORMAT]",
    help="Report formats instead of report.formats: csv, markdown, json, junit, parquet, png, "
         "html (repeat the flag or separate with commas).", show_default=False)]
DataFile = Annotated[Path | None, typer.Option(
    "--data", "-d", help="Audit these rows instead of the config's data.path.",
    show_default=False)]
Engine = Annotated[str | None, typer.Option(
    "--engine", metavar="local|ray", help="Where to run instead of the config's engine: local "
    "(this process) or ray (a pool of Ray actors, configured by the config's ray section).",
    show_default=False)]


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML audit config (sensaudit init writes "
                                           "one).", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder instead of "
                                             "report.dir.", show_default=False)] = None,
    data: DataFile = None,
    formats: Formats = None,
    engine: Engine = None,
    trust_model_code: Annotated[bool, typer.Option(
        "--trust-model-code", help=TRUST_HELP)] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Audit one model as CONFIG says: rank features by how strongly they move the score, flag
    declared proxies over their limits, and write the reports to report.dir.

    Example:

        sensaudit run sensaudit.yaml --format junit,markdown --out reports/audit

    Relative paths in the config resolve against the config file's folder; --out and --data
    against the current folder. In GitHub Actions the report is appended to the job summary
    and failed gates are annotated.
    """
    with _errors(debug):
        from sensaudit.api import run_audit  # torch: checked for its version here
        from sensaudit.reports.markdown_report import audit_markdown

        cfg = with_overrides(load_config(config), report_dir=out, data_path=data,
                             formats=formats, where="--format", engine=engine)
        with _progress(quiet) as progress:
            result, written = run_audit(
                cfg, progress=progress,
                trust_model_code=True if trust_model_code else None)
    if not quiet:
        _print_audit(result, written)
    else:
        _print_gates(result)
    _to_github(audit_markdown(result), github_actions.audit_annotations(result, config))
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
                 f"{dropped}; reports in {terminal(str(cfg.report.dir))}", highlight=False)
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
    data: DataFile = None,
    formats: Formats = None,
    engine: Engine = None,
    trust_model_code: Annotated[bool, typer.Option(
        "--trust-model-code", help=TRUST_HELP)] = False,
    old_replica: Annotated[list[str] | None, typer.Option(
        "--old-replica", help="OLD retrained with another seed (repeat the option, or give a "
                              "quoted glob): measures retraining noise.",
        show_default=False)] = None,
    new_replica: Annotated[list[str] | None, typer.Option(
        "--new-replica", help="NEW retrained with another seed (repeat, or a quoted glob).",
        show_default=False)] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Compare how two versions of a model respond to their inputs, on the same rows: shares
    before and after, their change in share points with an interval, rank correlation,
    per-row agreement, score moves. The interval is row-sampling noise unless retrained copies
    of either model are given (--old-replica / --new-replica), whose spread adds retraining
    noise; a change is marked only when it is outside its interval and at least
    compare.min_change points. Exits 0 when NEW passes every gate in the config, 1 when it
    fails one (or a proxy's share grew by more than compare.max_proxy_share_increase), 2 on
    bad input.

    Example:

        sensaudit compare deployed.pt2 retrained.pt2 --config sensaudit.yaml --out reports/compare

        sensaudit compare old.pt2 new.pt2 --config audit.yaml \\
            --old-replica 'old_seed*.pt2' --new-replica 'new_seed*.pt2'

    OLD, NEW, the replicas, --out and --data are relative to the current folder; paths inside
    the config resolve against the config's folder.
    """
    with _errors(debug):
        from sensaudit.api import run_compare
        from sensaudit.reports.markdown_report import comparison_markdown

        old_replicas = _expand(old_replica or [], "--old-replica")
        new_replicas = _expand(new_replica or [], "--new-replica")
        cfg = with_overrides(load_config(config), formats=formats, where="--format",
                             engine=engine)
        with _progress(quiet) as progress:
            result, written = run_compare(
                cfg, old, new, old_replicas=old_replicas, new_replicas=new_replicas,
                out_dir=out, data_path=data, progress=progress,
                trust_model_code=True if trust_model_code else None)
    if not quiet:
        _print_comparison(result, written)
    else:
        _print_gates(result.new)
        from sensaudit.results.gate_text import increase_line

        for inc in result.proxy_increases:
            _plain("FAILED " + increase_line(inc.feature, inc.delta_share, inc.margin))
    _to_github(comparison_markdown(result), github_actions.comparison_annotations(result,
                                                                                  config))
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    stdout.print(f"Compare {verdict}: new model {len(result.new.gates.flags)} flag(s), "
                 f"{len(result.proxy_increases)} proxy increase(s) over margin, "
                 f"{result.new.rows:,} rows")
    raise typer.Exit(EXIT_PASSED if result.passed else EXIT_GATE_FAILED)


@app.command()
def init(
    model: Annotated[Path, typer.Argument(help="The model file (.pt2, TorchScript, or a "
                                          "state_dict with model.class added by hand).",
                                          show_default=False)],
    data: Annotated[Path, typer.Argument(help="The rows to audit: CSV or Parquet.",
                                         show_default=False)],
    config: Annotated[Path, typer.Option("--config", "-c", help="Where to write the config; "
                                         "an existing file is never replaced.")
                      ] = Path("sensaudit.yaml"),
    label: Annotated[str | None, typer.Option("--label", help="The data's target column (not "
                                              "a feature).", show_default=False)] = None,
    id: Annotated[str | None, typer.Option("--id", help="The column naming the rows (default: "
                                           "a column named id or *_id).",
                                           show_default=False)] = None,
    debug: Debug = False,
) -> None:
    """Write a commented starter config for MODEL audited on DATA: the features are the input
    names saved in the model file, else the data's numeric columns (less --id and --label),
    checked against the model's input width; columns the model does not take are left out,
    with a comment saying which.

    Example:

        sensaudit init model.pt2 eval.csv --label quality && sensaudit run sensaudit.yaml
    """
    with _errors(debug):
        from sensaudit.cli.starter import starter_config, write_new
        from sensaudit.core.torch_support import require_supported_torch

        require_supported_torch()
        starter = starter_config(model, data, config, label=label, id=id)
        write_new(config, starter.text)
    _plain(f"Wrote {config}: {len(starter.features)} features"
           + (f" ({len(starter.left_out)} numeric column(s) left out: see the comment above "
              "data.features)" if starter.left_out else "")
           + (f", id {starter.id}" if starter.id else "")
           + (f", label {starter.label}" if starter.label else "")
           + f", {starter.outputs} output(s). Declare the proxies in audit.proxies, then run: "
             f"sensaudit run {config}")


@app.command()
def resample(
    train: Annotated[Path, typer.Argument(help="Training data, CSV or Parquet.",
                                          show_default=False)],
    proxy: Annotated[str, typer.Option("--proxy", help="The column that must stop tracking "
                                       "the label.", show_default=False)],
    label: Annotated[str, typer.Option("--label", help="The label column.",
                                       show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write (CSV, or Parquet "
                                      "by its suffix); must not exist.", show_default=False)],
    method: Annotated[str, typer.Option(
        "--method", help="rows: keep a subset of rows; weights: keep every row, add a weight "
        "column; permute: keep every row, shuffle the proxy; residual: keep every row, replace "
        "the proxy by what the label does not explain.")] = "rows",
    weight_column: Annotated[str, typer.Option("--weight-column",
                                               help="Name of the weight column.")] = "weight",
    bins: Annotated[int, typer.Option("--bins", help="Quantile bins of the proxy (and of a "
                                      "continuous label): what rows and weights balance, and "
                                      "the resolution of the mutual information.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the row draw or the "
                                      "shuffle.")] = 0,
    debug: Debug = False,
) -> None:
    """Write training data in which PROXY no longer tracks the label: rows resampled (or
    weighted, --method weights) so every proxy bin holds the label's overall mix, keeping what
    the other features say about the label; or, keeping every row, the proxy shuffled
    (--method permute) or replaced by its residual on the label (--method residual). Prints
    the proxy-label dependence before and after, measured on the file written. Retrain on the
    result, then `sensaudit compare` the old and new model.

    Example:

        sensaudit resample sample_data/ad_copy_train.csv --proxy copy_length \\
            --label quality --out reports/ad_copy_train_resampled.csv
    """
    with _errors(debug):
        from sensaudit.resample import FEW_ROWS, resample_file

        result = resample_file(train, out, proxy=proxy, label=label, bins=bins, seed=seed,
                               method=method, weight_column=weight_column)
    before, after = result.before, result.after
    _plain(f"{proxy} vs {label}: correlation {before.correlation:+.3f} -> "
           f"{after.correlation:+.3f}; mutual information {before.mutual_information:.4f} -> "
           f"{after.mutual_information:.4f} bits ({after.proxy_bins} proxy bins x "
           f"{after.label_classes} label classes, chosen afresh on the file written; "
           f"independent columns would show about {after.chance:.4f} by chance)")
    kind = {"weights": f"every row, weights in column '{weight_column}'",
            "permute": f"every row, {proxy} shuffled across rows",
            "residual": f"every row, {proxy} replaced by its residual on {label}"}.get(
                method, f"{result.output_rows:,} of {result.input_rows:,} rows")
    _plain(f"wrote {out}: {kind}")
    if result.rows is not None and result.output_rows < FEW_ROWS * result.input_rows:
        _plain(f"only {result.output_rows / result.input_rows:.0%} of the rows are left: "
               f"{proxy} is tied strongly to {label}; --method residual keeps every row")
    if after.mutual_information > 2 * after.chance and method in ("rows", "weights"):
        _plain(f"{proxy} still tracks {label} within the --bins {bins} bins (mutual information "
               f"over twice what chance gives): more --bins, or --method residual")


@app.command(help=f"""Copy the sample into DIR and run the find-fix-verify story there: a
scorer (scorer_v1) fails its audit on a proxy nobody declared (copy_length: long ads happened
to be the good ones in its training data), the training data is resampled so that copy_length
no longer tracks quality, the scorer retrained on it (scorer_v2) passes, and compare shows
what the retrain changed. Takes about a minute; then open the reports in a browser:
DIR/reports/scorer_v1/report.html and DIR/reports/compare/comparison.html.

Example:

\b
    sensaudit demo                # into ./sensaudit-demo
    sensaudit demo /tmp/my-demo   # into a folder of your choice

The sample is two scorers, their data (sample_data/) and their audit configs (configs/).
The steps, run inside DIR (type them there to go step by step; the configs, commented,
are a start for your own):

\b
{story_commands()}

DIR must not hold a file the demo copies, nor a reports folder: nothing there is ever
overwritten. Exit codes: 0 the story held (scorer_v1 exit 1, scorer_v2 and compare exit 0);
1 a step gave another verdict; 2 DIR is taken or a step met bad input (its message says
which); 3 a bug.""")
def demo(
    folder: Annotated[Path, typer.Argument(
        metavar="DIR", help="The folder to copy the sample into and run the story in; "
        "created if missing.")] = DEFAULT_DEMO_FOLDER,
    debug: Debug = False,
) -> None:
    with _errors(debug):
        from sensaudit.cli.demo import copy_sample

        copied = copy_sample(folder)
    _plain(f"copied the sample into {folder}: {len(copied)} files in configs/ and sample_data/; "
           "the story runs there")
    from sensaudit.cli.demo import DONE, tell_story

    command = typer.main.get_command(app)

    def invoke(argv: Sequence[str]) -> int:
        code = command.main(list(argv), prog_name="sensaudit", standalone_mode=False)
        return code if isinstance(code, int) else EXIT_PASSED  # resample returns on success

    code, reason = tell_story(folder, invoke, _plain)
    if reason is not None:
        stderr.print(reason, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code)
    prefix = "" if folder == Path(".") else f"{folder}/"
    for line in DONE:
        _plain(line.format(folder=prefix))


def _expand(patterns: list[str], option: str) -> list[Path]:
    """Each value as it is when it names a file or has no wildcard, else the files its glob
    matches (sorted); a pattern matching nothing is bad input."""
    paths: list[Path] = []
    for pattern in patterns:
        if Path(pattern).exists() or not any(c in pattern for c in "*?["):
            paths.append(Path(pattern))
            continue
        matches = [Path(p) for p in sorted(glob.glob(pattern))]
        if not matches:
            raise ModelLoadError(f"{pattern}: no model file matches this pattern ({option})")
        paths.extend(matches)
    return paths


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """The one error boundary: expected errors become a one-line message and exit code 2."""
    try:
        yield
    except SensauditError as exc:
        if debug:
            raise
        # The message is plain text: file names like "[v2].csv" must not be read as markup.
        # A value quoted from a file ("\x1e", a newline in a column name) must not split the
        # one line a CI log shows: non-printable characters are shown escaped.
        message = visible(str(exc))
        stderr.print(Text.assemble(("Error:", "bold red"), " ", message), highlight=False,
                     soft_wrap=True)
        _to_github(f"# sensaudit: ERROR\n\n{markdown_line(message)}\n",
                   [github_actions.command("error", "sensaudit: bad input", message)])
        raise typer.Exit(exc.exit_code) from None
    except Exception:
        # A bug: keep its traceback, but exit with a code CI cannot take for a failed gate.
        if debug:
            raise
        traceback.print_exc()
        stderr.print("sensaudit hit an internal error (a bug, not your input); please report "
                     "it with the traceback above", markup=False, highlight=False)
        raise typer.Exit(EXIT_INTERNAL_ERROR) from None
